"""Names: each value is defined once, under a stable id taken from the source (`draft#2` in a
repeat, `best/choose` in a used program, `x@7` for a second repeat refining `x`); a name that
means nothing here gets the error that says what it is instead (a gold field, a program, a typo).
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext, Scope
from s2c.errors import Span, did_you_mean


def node_id(ctx: CheckContext, name: str, scope: Scope, span: Span | None = None) -> str:
    nid = f"{scope.prefix}{name}{scope.suffix}"
    if scope.suffix and span and nid in ctx.nodes:  # a second repeat refining the same name
        nid = f"{nid}@{span.line}"
    return nid


def define(ctx: CheckContext, name: str, span, scope: Scope, node: ir.Node, defined_here: set[str]):
    """Add `node` to the graph as `name`, unless the name is taken here (reported)."""
    if name in defined_here:
        _taken(ctx, name, span, scope)
        return
    if name in ctx.gold_names:  # else `metric m(answer, answer)` would read two different things
        ctx.error(f"'{name}' is a gold field; a value of the program needs another name", span,
                  f"e.g. '{name}_pred' or 'final'")
        return
    if name in scope.names and not scope.suffix:  # a repeat iteration refines its earlier value
        _taken(ctx, name, span, scope)
        return
    defined_here.add(name)
    ctx.nodes[node.id] = node
    scope.names[name] = ir.NodeRef(node.id)


def _taken(ctx: CheckContext, name: str, span, scope: Scope):
    what = "an input" if name in ctx.input_names and not scope.prefix else "already defined"
    ctx.error(f"'{name}' is {what}", span, "each name is assigned once (use repeat to refine a value)")


def undefined(ctx: CheckContext, name: str, span, scope: Scope, extra=None):
    """Report a name that is not defined at this point, saying what it is if it is something."""
    known = set(scope.names) | set(extra or {})
    if name in ctx.gold_names:
        ctx.error(
            f"'{name}' is a gold field: only keep rules and metrics may read it",
            span,
            "a program (or System-1 prompt) that reads the gold label leaks the answer",
        )
    elif name in ctx.programs:
        ctx.error(f"'{name}' is a program; call it with its inputs: {name}(...)", span)
    else:
        ctx.error(f"undefined name '{name}'", span, did_you_mean(name, known))


def ref_deps(ctx: CheckContext, refs) -> tuple[str, ...]:
    """The node ids that reading `refs` depends on, in order, once each."""
    out: list[str] = []
    for r in refs:
        if isinstance(r, ir.NodeRef):
            out.append(r.node)
        else:  # a loop item depends on the loop's iterable (and its enclosing loops' iterables)
            loop = ctx.loops[r.loop]
            out.extend(ref_deps(ctx, [loop.iterable]))
    return tuple(dict.fromkeys(out))
