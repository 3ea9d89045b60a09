"""Unrolled rounds nothing reads. A `while` (or `repeat`, `scan`) is unrolled into copies of its
body, and the last round's trailing statements may feed only the round after it, which does not
exist: Self-Refine's loop `draft = refine(...); feedback = check(draft)` ends with a feedback no
one reads. Such copies (ids with `#k`), and the values s2c made that only they read (the name
carried out of the loop), are dropped after checking, so no call is made, counted or drawn for
them. Values the user wrote once (no `#`) are never dropped: an unread one gets the "never used"
warning instead.
"""
from __future__ import annotations

import dataclasses

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext


def _refs(obj, out: set[str]):
    """Every node id `obj` (an IR value: expressions, tasks, keep rules, metrics) refers to."""
    if isinstance(obj, ir.NodeRef):
        out.add(obj.node)
    elif isinstance(obj, ir.Loop):
        _refs(obj.iterable, out)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _refs(getattr(obj, f.name), out)
    elif isinstance(obj, (list, tuple, set)):
        for x in obj:
            _refs(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _refs(x, out)


def node_refs(obj) -> set[str]:
    """The node ids an IR value refers to."""
    _refs(obj, out := set())
    return out


def unread_rounds(ctx: CheckContext, tasks: list[ir.TaskIR], keeps: list[ir.KeepIR], metrics: list[ir.MetricIR]):
    roots: set[str] = set()
    for x in (ctx.outputs, tasks, keeps, metrics):
        _refs(x, roots)
    live: set[str] = set()
    todo = list(roots)
    while todo:
        nid = todo.pop()
        if nid in live or nid not in ctx.nodes:
            continue
        live.add(nid)
        node = ctx.nodes[nid]
        todo.extend(node.deps)
        todo.extend(n for n in (node.guard, node.continues) if n)
        for lid in node.loops:
            _refs(ctx.loops[lid].iterable, deps := set())
            todo.extend(deps)
    dead = {nid for nid, node in ctx.nodes.items()
            if nid not in live and ("#" in nid.rsplit("/", 1)[-1] or node.internal)}
    readers: dict[str, set[str]] = {}
    for node in ctx.nodes.values():
        for d in node.deps:
            readers.setdefault(d, set()).add(node.id)
    changed = True
    while changed:  # a copy some value outside the set reads stays
        keep = {nid for nid in dead if readers.get(nid, set()) - dead}
        dead -= keep
        changed = bool(keep)
    for nid in dead:
        del ctx.nodes[nid]
