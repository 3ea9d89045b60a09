"""Nodes given from data (`--given NODE=COLUMN`): an llm node whose replies already exist (a
released teacher's chains of thought, a saved trace) is read from a column of each row instead of
being generated. Everything downstream runs as usual; the node stays an intermediate for the leak
check, the call cache is neither read nor written for it, and its trace says "given".

A node is named by its id, as `s2c graph` prints it: the program name (`cots`), `name#i` for the
i-th round of a `repeat` (`draft#2`), `use/name` inside a used program. The column holds the
node's value in each row, shaped as the node is:
  - a text for a call with n=1, a list of exactly n texts for a call with n > 1;
  - inside `for` loops, one such value per item, in the loop's order: a list (a list of lists for
    two loops), whose length must be the number of items the loop has in that row.
"""
from __future__ import annotations

from collections.abc import Mapping

from s2c.compiler import ir
from s2c.compiler.failures import Failed
from s2c.errors import S2Error, did_you_mean


def check_given(cp: ir.CheckedProgram, given: Mapping[str, str]) -> dict[str, str]:
    """The given map (node id -> column), each node checked to be an llm node of `cp`."""
    llm = {n.id for n in cp.llm_nodes()}
    for node, column in given.items():
        if node in llm:
            continue
        if node in cp.nodes:
            raise S2Error(f"--given {node}={column}: '{node}' is a {cp.nodes[node].kind} node, not an llm call",
                          hint="only a model call's replies can be given; its readers then compute from them")
        raise S2Error(f"--given {node}={column}: the program has no llm node '{node}'",
                      hint=did_you_mean(node, sorted(llm)) or f"its llm nodes: {', '.join(sorted(llm))}")
    return dict(given)


def describe_shape(node: ir.Node) -> str:
    one = "a text" if node.sampling.n == 1 else f"a list of {node.sampling.n} texts"
    for _ in node.loops:
        one = f"a list (one per loop item) of {one.removeprefix('a ')}"
    return one


def row_problem(node: ir.Node, column: str, value) -> str | None:
    """Why this row's given value cannot be the node's value (None: it can). Loop lengths are
    checked when the node runs, where the loop's items are known."""
    if value is None:
        return f"given column '{column}' (node '{node.id}') is missing or null"
    bad = _shape_error(value, len(node.loops), node.sampling.n)
    if bad:
        return f"given column '{column}' (node '{node.id}') should be {describe_shape(node)}: {bad}"
    return None


def _shape_error(value, depth: int, n: int) -> str | None:
    if depth:
        if not isinstance(value, list):
            return f"got {_kind(value)}"
        for i, v in enumerate(value):
            bad = _shape_error(v, depth - 1, n)
            if bad:
                return f"item {i}: {bad}"
        return None
    if n == 1:
        return None if isinstance(value, str) else f"got {_kind(value)}"
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        return f"got {_kind(value)}"
    if len(value) != n:
        return f"got {len(value)} texts"
    return None


def _kind(value) -> str:
    if isinstance(value, list):
        return "a list" + ("" if all(isinstance(x, str) for x in value) else " holding non-texts")
    return {str: "a text", bool: "a boolean", int: "a number", float: "a number", dict: "an object"}.get(
        type(value), type(value).__name__)


def value_at(node: ir.Node, column: str, value, p: tuple, loops: list[tuple[str, int]]):
    """The given value of the node's instance at loop index `p` (`loops`: each enclosing loop's
    variable and its number of items at that index), or Failed when the column has not one value
    per loop item."""
    for i, (var, size) in zip(p, loops):
        if len(value) != size:
            return Failed(f"given column '{column}' has {len(value)} values for the {size} items of "
                          f"'for {var}'", node.id)
        value = value[i]
    return value


class NoEngine:
    """The engine of a run whose every llm call is given: it serves nothing, and nothing imports
    an inference package or resolves a model for it. A request reaching it is a bug in s2c."""

    name = "none"
    constraints: frozenset[str] = frozenset()

    def model_id(self, role: str = "default") -> str:
        return "none (every call given)"

    def submit(self, tag, request) -> None:
        raise RuntimeError(f"a run whose every llm call is given sent a request (role {request.role})")

    def collect(self, max_seconds: float | None = None) -> list:
        return []

    def pending(self) -> int:
        return 0

    def generate(self, requests) -> list:
        raise RuntimeError("a run whose every llm call is given asked for completions")

    def batch_state(self) -> None:
        return None

    def spread(self) -> None:
        return None

    def close(self) -> None:
        pass
