"""What one model call is, shared by the compiler (which renders calls), the runtime (which sends
them) and distill (which writes them as training rows): sampling, messages, a request, its
completions.

The compiler builds `Request`s without importing the runtime; engines convert `Sampling` to their
own parameters at their boundary only.

A message, a request and a completion are made once per call, so they are frozen msgspec Structs:
built in C, 0.3 us for a message and its request where frozen dataclasses took 1.4 us (their
__init__ sets each field through object.__setattr__), a few percent of s2c's per-call overhead.
Otherwise they behave as frozen dataclasses do (fields, equality, hashing, pickling); use
`msgspec.structs.replace` for a changed copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import msgspec


@dataclass(frozen=True)
class Constraint:
    """What a call's reply must be, enforced by the engine while it decodes (constrained decoding):
    one of `choice`'s texts, a full match of `regex`, or JSON valid under the schema `json` (its
    canonical JSON text, so that the constraint hashes and keys the cache)."""

    kind: str  # choice | regex | json
    spec: str | tuple[str, ...]

    def to_dict(self) -> dict:
        return {self.kind: list(self.spec) if self.kind == "choice" else self.spec}

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice=[" + ", ".join(f'"{c}"' for c in self.spec) + "]"
        return f"{self.kind}={self.spec}" if self.kind == "json" else f'regex="{self.spec}"'


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    constraint: Constraint | None = None

    def to_dict(self) -> dict:
        d = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
             "stop": list(self.stop), "seed": self.seed, "n": self.n}
        if self.constraint is not None:  # absent otherwise: unconstrained calls keep their cache keys
            d["constraint"] = self.constraint.to_dict()
        return d


class Message(msgspec.Struct, frozen=True):
    role: str  # "system" | "user" | "assistant"
    content: str


class Request(msgspec.Struct, frozen=True):
    """One model call. Chat mode sends `messages`; completion mode sends the raw `prompt`."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    role: str = "default"  # the program's model role (e.g. "teacher", "judge")
    adapter: str | None = None  # a LoRA adapter directory, where the engine supports it
    # the index of its first sample within its call: a call drawn in parts (the rest of a cached
    # call, an early stop's waves) asks for samples first .. first+n-1. A seeded engine draws
    # sample i with seed + i, so sample i is the same however the call was split
    first: int = 0

    def sample_seed(self) -> int | None:
        """The seed of its first sample: sampling.seed + first (None: unseeded)."""
        s = self.sampling.seed
        return None if s is None else s + self.first

    @property
    def mode(self) -> str:
        return "chat" if self.messages is not None else "completion"

    def payload(self) -> dict:
        """What the model sees, as plain JSON (used for cache keys, traces and training rows)."""
        if self.messages is not None:
            return {"messages": [{"role": m.role, "content": m.content} for m in self.messages]}
        return {"prompt": self.prompt}


class Completion(msgspec.Struct, frozen=True):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    cached_tokens: int = 0  # prompt tokens the engine's prefix cache served (vLLM reports them)


@dataclass(frozen=True)
class EngineFailure:
    """A request the engine could not serve (after its own retries)."""

    reason: str


Result = list[Completion] | EngineFailure  # n completions, or why there are none
