"""One finished example's trace record: what the executor writes to the run store as an example
finishes, and what `s2c trace`, `s2c report`, compile and eval read back (runtime/store.py). A
msgspec Struct, built in C once per example and encoded to the same JSON a dict of these keys
would be; a store written before `failed_at` and `engine_calls` existed reads with their defaults.
"""
from __future__ import annotations

from typing import Any

import msgspec


class Trace(msgspec.Struct, kw_only=True):
    example_id: str
    status: str  # ok | failed | unparsed
    inputs: dict[str, Any]  # the program's inputs, as the row gave them
    gold: dict[str, Any]  # the gold fields the program declares
    outputs: dict[str, Any]  # each output's value, as JSON
    failed: dict[str, str]  # node -> why it failed
    failed_at: str | None = None  # where the outputs' failure began
    nodes: dict[str, Any]  # node id -> {"kind", "instances": [{"index", "prompt"/"messages", "completions", "value"}]}
    prompt_tokens: int
    generated_tokens: int
    engine_calls: int = 0

    def to_json(self) -> dict:
        """The record as plain JSON-able values (the report embeds it so)."""
        return msgspec.to_builtins(self)


decode = msgspec.json.Decoder(Trace).decode
