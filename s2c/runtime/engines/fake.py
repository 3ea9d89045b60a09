"""A scripted engine for unit tests: replies come from a function or from substring rules.

    engine = FakeEngine({"capital of France": "Paris", "2+2": ["4", "four"]})
    engine.generate([Request(prompt="What is 2+2?", sampling=Sampling(n=2))])
    # -> [[Completion("4", 4, 1), Completion("four", 4, 1)]]

Token counts are whitespace word counts. Stop strings and max_tokens are honoured the way a real
engine honours them (text cut at the first stop string; at most max_tokens words, finish_reason
"length"), so code above the engine sees realistic completions. Every request received is kept
in `.calls` and the size of every generate() call in `.batches`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from s2c.calls import Constraint
from s2c.runtime.engines.base import (
    CONSTRAINT_KINDS,
    BatchStream,
    Completion,
    EngineError,
    EngineFailure,
    Request,
    Result,
)

Script = Callable[[Request, int], str]
Rules = Mapping[str, "str | Sequence[str]"]
Matcher = Callable[[Request], bool] | Iterable[str] | None


def request_text(request: Request) -> str:
    """Everything the model would read, as one string (what rules and matchers search)."""
    if request.messages is not None:
        return "\n".join(m.content for m in request.messages)
    return request.prompt or ""


def echo(request: Request, sample_index: int) -> str:
    """The default script: repeat the last message (or the prompt's last line)."""
    if request.messages:
        return request.messages[-1].content
    lines = (request.prompt or "").strip().splitlines()
    return lines[-1] if lines else ""


def _matches(matcher: Matcher, request: Request) -> bool:
    if matcher is None:
        return False
    if callable(matcher):
        return bool(matcher(request))
    text = request_text(request)
    return any(s in text for s in matcher)


class FakeEngine(BatchStream):
    name = "fake"
    constraints = CONSTRAINT_KINDS  # a scripted reply outside a call's constraint fails the call

    def __init__(
        self,
        script: Script | Rules | None = None,
        *,
        default: str | None = None,
        fail: Matcher = None,
        raise_on: Matcher = None,
        exception: type[Exception] = EngineError,
        model: str | None = None,
        roles: dict[str, str] | None = None,
    ):
        """`script(request, sample_index) -> reply`, or rules {substring: reply or [replies]}.

        With rules, the first substring (in insertion order) found in the request text wins; a
        list of replies is indexed by sample_index, the sample's index within its call (cycling). No rule matching is a test bug:
        LookupError, unless `default` is given. No script: reply `default`, or echo the request. `fail` (predicate or substrings) turns matching
        requests into EngineFailure; `raise_on` makes generate() raise `exception` instead.
        """
        if script is None:
            self._script: Script = echo if default is None else (lambda request, i: default)
        elif callable(script):
            self._script = script
        else:
            self._script = self._rules_script(dict(script), default)
        self._fail = fail
        self._raise_on = raise_on
        self._exception = exception
        self._models = {"default": model or "fake", **(roles or {})}
        self.calls: list[Request] = []
        self.batches: list[int] = []
        self.closed = False

    @staticmethod
    def _rules_script(rules: dict[str, str | Sequence[str]], default: str | None) -> Script:
        def script(request: Request, sample_index: int) -> str:
            text = request_text(request)
            for needle, reply in rules.items():
                if needle in text:
                    return reply if isinstance(reply, str) else reply[sample_index % len(reply)]
            if default is not None:
                return default
            raise LookupError(f"FakeEngine: no rule matches this request:\n{text}")

        return script

    def model_id(self, role: str = "default") -> str:
        return "fake:" + self._models.get(role, self._models["default"])

    def role_models(self) -> dict[str, str]:
        return {role: self.model_id(role) for role in self._models}

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        self.batches.append(len(requests))
        self.calls.extend(requests)
        for request in requests:
            if _matches(self._raise_on, request):
                raise self._exception(f"FakeEngine: scripted crash on {request_text(request)[:80]!r}")
        return [self._serve(request) for request in requests]

    def _serve(self, request: Request) -> Result:
        if _matches(self._fail, request):
            return EngineFailure(f"scripted failure on {request_text(request)[:80]!r}")
        prompt_tokens = len(request_text(request).split())
        replies = [_shape(self._script(request, request.first + i), request, prompt_tokens) for i in range(request.sampling.n)]
        c = request.sampling.constraint
        outside = next((r.text for r in replies if c is not None and not in_language(c, r.text)), None)
        if outside is not None:  # a real engine could not have written it: the script is wrong
            return EngineFailure(f"fake: the scripted reply {outside[:60]!r} is not in {c.describe()}")
        return replies

    def close(self) -> None:
        self.closed = True


def in_language(c: Constraint, text: str) -> bool:
    """Whether `text` is a reply the constraint allows (what a constrained engine writes)."""
    if c.kind == "choice":
        return text in c.spec
    if c.kind == "regex":
        return re.fullmatch(c.spec, text) is not None
    try:
        value = json.loads(text)
    except ValueError:
        return False
    schema = json.loads(c.spec)
    return isinstance(value, dict) and set(value) == set(schema["required"])


def _shape(reply: str, request: Request, prompt_tokens: int) -> Completion:
    """Apply stop strings and max_tokens to a scripted reply, as a real engine would."""
    cut = [reply.find(s) for s in request.sampling.stop if s and s in reply]
    if cut:
        reply = reply[: min(cut)]
    words = reply.split()
    if len(words) > request.sampling.max_tokens:
        words = words[: request.sampling.max_tokens]
        return Completion(" ".join(words), prompt_tokens, len(words), "length")
    return Completion(reply, prompt_tokens, len(words), "stop")
