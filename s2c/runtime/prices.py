"""What calls cost: prices per model, given by the user (s2c ships no price table: providers change
theirs, and a stale table would report wrong money with confidence).

A price file is TOML (or JSON of the same shape), one table per model, in US dollars per million
tokens:

    ["gpt-4o-mini"]
    input = 0.15          # prompt tokens
    cached_input = 0.075  # prompt tokens the provider served from its prompt cache (default: input)
    output = 0.60         # generated tokens
    batch_input = 0.075   # with a provider's batch API (default: input)
    batch_output = 0.30   # (default: output)

or flags: `--price gpt-4o-mini=input:0.15,output:0.6,cached_input:0.075` (repeatable; a flag wins
over the file). A model is named as the engine names it (`gpt-4o-mini`), or by its whole identity
as summary.json's `models` shows it (`gpt-4o-mini@https://api.openai.com/v1`) when the same name
costs differently on two servers.

    >>> p = Prices.parse({"m": {"input": 1.0, "output": 2.0}})
    >>> p.for_model("m@http://x/v1").cost(prompt=1_000_000, cached=0, generated=500_000)
    2.0
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from s2c.errors import S2Error

PER = 1_000_000  # prices are per million tokens
FIELDS = ("input", "cached_input", "output", "batch_input", "batch_output")


@dataclass(frozen=True)
class Price:
    """One model's prices, USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, prompt: int, cached: int, generated: int, batch: bool = False) -> float:
        """USD for a call of `prompt` prompt tokens (`cached` of them from the provider's prompt
        cache) and `generated` tokens."""
        inp = self.batch_input if batch and self.batch_input is not None else self.input
        out = self.batch_output if batch and self.batch_output is not None else self.output
        cached_price = self.cached_input if self.cached_input is not None else inp
        return ((prompt - cached) * inp + cached * cached_price + generated * out) / PER

    def worst(self, prompt_chars: int, max_out: int) -> float:
        """The most a request is expected to cost, for a budget: its prompt at 3 characters a
        token (fewer than most tokenizers need), and every sample at max_tokens."""
        return self.cost(math.ceil(prompt_chars / 3), 0, max_out)


class Prices:
    """Prices by model name or identity."""

    def __init__(self, table: dict[str, Price]):
        self.table = table

    @classmethod
    def parse(cls, data: dict, where: str = "prices") -> Prices:
        table = {}
        for model, entry in data.items():
            if not isinstance(entry, dict):
                raise S2Error(f"{where}: '{model}' must be a table of prices (input = ..., output = ...)")
            unknown = sorted(set(entry) - set(FIELDS))
            if unknown:
                raise S2Error(f"{where}: '{model}' has no price '{unknown[0]}'", hint=f"prices: {', '.join(FIELDS)}")
            missing = [f for f in ("input", "output") if f not in entry]
            if missing:
                raise S2Error(f"{where}: '{model}' needs '{missing[0]}' (USD per million tokens)")
            for k, v in entry.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise S2Error(f"{where}: '{model}' {k} = {v!r}: a number of US dollars per million tokens, >= 0")
            table[str(model)] = Price(**{k: float(v) for k, v in entry.items()})
        return cls(table)

    @classmethod
    def load(cls, path: str | Path | None = None, flags: list[str] = ()) -> Prices | None:
        """The file's prices (TOML, or JSON by its suffix), then the --price flags over them;
        None when neither gives one."""
        table: dict[str, Price] = {}
        if path is not None:
            p = Path(path)
            try:
                text = p.read_text(encoding="utf-8")
            except OSError as e:
                raise S2Error(f"--prices {p}: {e.strerror or e}") from None
            try:
                data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
            except (ValueError, tomllib.TOMLDecodeError) as e:
                raise S2Error(f"--prices {p}: {e}", hint="a TOML table per model: [\"gpt-4o-mini\"] input = 0.15 "
                                                         "output = 0.6") from None
            table |= cls.parse(data, str(p)).table
        for flag in flags:
            model, sep, spec = flag.partition("=")
            entry: dict[str, float] = {}
            try:
                for part in spec.split(","):
                    name, _, value = part.partition(":")
                    entry[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not model:
                raise S2Error(f"--price {flag}: write MODEL=input:USD,output:USD (per million tokens)",
                              hint="e.g. --price gpt-4o-mini=input:0.15,output:0.6,cached_input:0.075")
            table |= cls.parse({model: entry}, f"--price {flag}").table
        return cls(table) if table else None

    def for_model(self, model_id: str) -> Price | None:
        """The price of a model by its identity (`name@url`) or its name."""
        return self.table.get(model_id) or self.table.get(model_id.split("@", 1)[0])

    def as_dict(self) -> dict:
        return {m: {f.name: getattr(p, f.name) for f in fields(p) if getattr(p, f.name) is not None}
                for m, p in self.table.items()}
