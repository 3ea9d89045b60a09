"""What an expression is known to be when the program is checked, before any data: a constant
(`agent` in `repeat 3 as agent`, `agent + 1`), a list whose elements are known expressions
(`replies = replies + [reply]` in an unrolled repeat), or the one llm call it names
(`continue=at(replies, agent)`). `repeat` unrolls, so these are known statically; values that
come from data are not.
"""
from __future__ import annotations

from typing import Any

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext
from s2c.compiler.failures import TransformError
from s2c.compiler.library import OPERATORS

UNKNOWN = object()


def _node(ctx: CheckContext, e: ir.IRExpr, loops: tuple[str, ...]) -> ir.Node | None:
    """The node a reference names, when it is read as one value here (not collected from a loop)."""
    if not (isinstance(e, ir.RefExpr) and isinstance(e.ref, ir.NodeRef)):
        return None
    node = ctx.nodes.get(e.ref.node)
    if node is None or ir.common_prefix(node.loops, loops) < len(node.loops):
        return None
    return node


def constant(ctx: CheckContext, e: ir.IRExpr, loops: tuple[str, ...]) -> Any:
    """The value of `e` if it is known before any data, else UNKNOWN."""
    if isinstance(e, ir.Const):
        return e.value
    node = _node(ctx, e, loops)
    if node is not None:
        return constant(ctx, node.expr, loops) if node.kind == "transform" and node.expr is not None else UNKNOWN
    if isinstance(e, ir.FnCall) and e.fn in OPERATORS and not e.kwargs:
        args = [constant(ctx, a, loops) for a in e.args]
        if UNKNOWN in args:
            return UNKNOWN
        try:
            return OPERATORS[e.fn].impl(*args)
        except TransformError:
            return UNKNOWN
    return UNKNOWN


def items(ctx: CheckContext, e: ir.IRExpr, loops: tuple[str, ...]) -> list[ir.IRExpr] | None:
    """The elements of a list known element by element before any data, else None."""
    if isinstance(e, ir.ListE):
        return list(e.items)
    if isinstance(e, ir.Const):
        return [ir.Const(v) for v in e.value] if isinstance(e.value, list) else None
    node = _node(ctx, e, loops)
    if node is not None:
        return items(ctx, node.expr, loops) if node.kind == "transform" and node.expr is not None else None
    if isinstance(e, ir.FnCall) and e.fn == "+":
        a, b = (items(ctx, x, loops) for x in e.args)
        return None if a is None or b is None else a + b
    return None


def llm_call(ctx: CheckContext, e: ir.IRExpr, loops: tuple[str, ...]) -> ir.Node | None:
    """The llm node `e` names: `draft`, a value that is `draft`, or `at(calls, k)` / `first(calls)`
    / `last(calls)` of a list of calls known before any data, with k a constant."""
    node = _node(ctx, e, loops)
    if node is not None:
        if node.kind == "llm":
            return node
        return llm_call(ctx, node.expr, loops) if node.kind == "transform" and node.expr is not None else None
    if isinstance(e, ir.FnCall) and e.fn in ("at", "first", "last") and e.args:
        xs = items(ctx, e.args[0], loops)
        if not xs:
            return None
        if e.fn == "at":
            k = constant(ctx, e.args[1], loops) if len(e.args) > 1 else UNKNOWN
            if isinstance(k, bool) or not isinstance(k, (int, float)) or k != int(k) or not 0 <= k < len(xs):
                return None
            return llm_call(ctx, xs[int(k)], loops)
        return llm_call(ctx, xs[0] if e.fn == "first" else xs[-1], loops)
    return None
