"""s2c: compile System-2 LLM programs into System-1 training data.

    >>> import s2c
    >>> prog = s2c.load("bsm.s2")      # parse + check + graph; raises s2c.CheckError on errors
    >>> prog.graph.number_of_nodes() > 0
    True
"""
from __future__ import annotations

__version__ = "0.1.0"

from s2c.errors import CheckError, Diagnostic, S2Error


def load(path, *, warnings_ok: bool = True):
    """Parse, check and build the graph of a `.s2` program (a path or a built-in name)."""
    from s2c.compiler.pipeline import load_program

    return load_program(path)


__all__ = ["load", "S2Error", "CheckError", "Diagnostic", "__version__"]
