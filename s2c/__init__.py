"""s2c: compile System-2 LLM programs into System-1 training data.

    >>> import s2c
    >>> prog = s2c.Program.load("bsm.s2")      # parse + check + graph; raises s2c.CheckError on errors
    >>> prog.graph.number_of_nodes() > 0
    True

The API (s2c/api.py, docs/python.md): Program, Data, Engine, run, distill, train, evaluate. Its
names are imported on first use, so `import s2c` stays instant.
"""
from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

from s2c.errors import CheckError, Diagnostic, MissingExtra, S2Error

_API = ("Program", "Data", "Engine", "EngineSettings", "RunSettings", "EvalSettings", "EvalResult", "check", "run",
        "distill", "train", "evaluate", "estimate")
_TYPES = {"DistillSettings": "s2c.distill.build", "DistillResult": "s2c.distill.build",
          "TrainSettings": "s2c.train.sft", "TrainResult": "s2c.train.sft", "RunOutcome": "s2c.runtime.run",
          "RunOptions": "s2c.runtime.executor", "HttpOptions": "s2c.runtime.engines.http",
          "Prices": "s2c.runtime.prices"}


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module("s2c.api"), name)
    if name in _TYPES:
        return getattr(importlib.import_module(_TYPES[name]), name)
    raise AttributeError(f"module 's2c' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`s2c` itself. Its functions distill, train and evaluate share their names with the packages
    s2c.distill, s2c.train and s2c.evaluate, and importing a package sets it as an attribute of its
    parent: without this, `s2c.distill` would be the package as soon as anything imported it (the
    API does). The packages stay in sys.modules, so `from s2c.distill.build import X` is unchanged."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["S2Error", "CheckError", "Diagnostic", "MissingExtra", "__version__", *_API, *_TYPES]
