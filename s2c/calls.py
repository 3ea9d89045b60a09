"""What one model call is, shared by the compiler (which renders calls), the runtime (which sends
them) and distill (which writes them as training rows): sampling, messages, a request, its
completions.

The compiler builds `Request`s without importing the runtime; engines convert `Sampling` to their
own parameters at their boundary only.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "stop": list(self.stop), "seed": self.seed, "n": self.n}


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Request:
    """One model call. Chat mode sends `messages`; completion mode sends the raw `prompt`."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    role: str = "default"  # the program's model role (e.g. "teacher", "judge")
    adapter: str | None = None  # a LoRA adapter directory, where the engine supports it

    @property
    def mode(self) -> str:
        return "chat" if self.messages is not None else "completion"

    def payload(self) -> dict:
        """What the model sees, as plain JSON (used for cache keys, traces and training rows)."""
        if self.messages is not None:
            return {"messages": [{"role": m.role, "content": m.content} for m in self.messages]}
        return {"prompt": self.prompt}


@dataclass(frozen=True)
class Completion:
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
