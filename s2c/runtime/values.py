"""Values of one example while it runs: per node, per instance (loop index tuple).

A node inside loops runs once per item; its instances are keyed by index tuples (`solve` at
`(2,)` is the third criterion's call). Reading a node from outside its loops collects a (nested)
list; reading a loop variable gives the current item. `Failed` values flow through: aggregations
skip them, everything else fails with "depends on failed X".
"""
from __future__ import annotations

from typing import Any

from s2c.compiler import functions as F
from s2c.compiler import ir
from s2c.compiler.functions import Failed, NoMatch, TransformError


class ExampleValues:
    def __init__(self, cp: ir.CheckedProgram, row: dict):
        self.cp = cp
        self.store: dict[str, dict[tuple, Any]] = {}
        for p in cp.inputs:
            self.store[p.name] = {(): row.get(p.name)}

    # ------------------------------------------------------------ reading
    def lookup(self, ref: ir.Ref, prefix: tuple, ctx_loops: tuple[str, ...]):
        """The value `ref` names, read from inside `ctx_loops` at index `prefix`."""
        read = self.cp.readers.get((ref, ctx_loops))
        if read is None:
            read = self.cp.readers[(ref, ctx_loops)] = _reader(self.cp, ref, ctx_loops)
        return read(self, prefix)

    def computed(self, node_id: str, p: tuple):
        """One instance's value; reading one not yet computed is a bug in the scheduler."""
        inst = self.store.get(node_id)
        if inst is None or p not in inst:
            raise KeyError(f"{node_id}{list(p)} read before it was computed")
        return inst[p]

    def assemble(self, node: ir.Node, p: tuple):
        if len(p) == len(node.loops):
            return self.computed(node.id, p)
        loop = self.cp.loops[node.loops[len(p)]]
        items = self.lookup(loop.iterable, p, loop.loops)
        if isinstance(items, Failed):
            return items
        return [self.assemble(node, p + (i,)) for i in range(len(items))]

    def instances(self, node: ir.Node) -> list[tuple] | Failed:
        """The index tuples a node runs at, from its loops' iterables (all computed by now)."""
        prefixes: list[tuple] = [()]
        for lid in node.loops:
            loop = self.cp.loops[lid]
            nxt = []
            for p in prefixes:
                items = self.lookup(loop.iterable, p, loop.loops)
                if isinstance(items, Failed):
                    return items
                if not isinstance(items, list):
                    return Failed(f"'for {loop.var}' needs a list, got {type(items).__name__}", node.id)
                nxt.extend(p + (i,) for i in range(len(items)))
            prefixes = nxt
        return prefixes

    def set(self, node_id: str, prefix: tuple, value) -> None:
        self.store.setdefault(node_id, {})[prefix] = value

    # ------------------------------------------------------------ evaluating
    def eval(self, expr: ir.IRExpr, prefix: tuple, ctx_loops: tuple[str, ...], node_id: str,
             extra: dict[str, Any] | None = None):
        """Evaluate a transform expression; Failed when it or what it reads failed."""
        if isinstance(expr, ir.Const):
            return expr.value
        if isinstance(expr, ir.RefExpr):
            if extra and isinstance(expr.ref, ir.NodeRef) and expr.ref.node in extra:
                return extra[expr.ref.node]
            return self.lookup(expr.ref, prefix, ctx_loops)
        if isinstance(expr, ir.ListE):
            items = [self.eval(i, prefix, ctx_loops, node_id, extra) for i in expr.items]
            bad = next((i for i in items if isinstance(i, Failed)), None)
            return bad or items
        if isinstance(expr, ir.FnCall):
            fn = F.FUNCTIONS[expr.fn]
            args = [self.eval(a, prefix, ctx_loops, node_id, extra) for a in expr.args]
            kwargs = {k: self.eval(v, prefix, ctx_loops, node_id, extra) for k, v in expr.kwargs}
            for v in (*args, *kwargs.values()):
                bad = v if isinstance(v, Failed) else None
                if bad is None and not fn.aggregates:
                    bad = find_failed(v)
                if bad is not None:  # within one node, keep the first reason as it is
                    return bad if bad.node == node_id else depends_on(bad)
            try:
                return fn.impl(*args, **kwargs)
            except NoMatch as e:
                return Failed(f"{expr.fn}(): {e}", node_id, unparsed=True)
            except TransformError as e:
                return Failed(f"{expr.fn}(): {e}", node_id)
            except (TypeError, ValueError, AttributeError) as e:
                return Failed(f"{expr.fn}(): {type(e).__name__}: {e}", node_id)
        raise TypeError(expr)  # a bug in s2c

    def template_vars(self, node: ir.Node, prefix: tuple) -> dict[str, Any] | Failed:
        out = {}
        for var, ref in node.vars.items():
            v = self.lookup(ref, prefix, node.loops)
            if type(v) is not str:  # most values are text: nothing to look into
                bad = find_failed(v)
                if bad is not None:
                    return depends_on(bad)
            out[var] = v
        return out


def _reader(cp: ir.CheckedProgram, ref: ir.Ref, ctx_loops: tuple[str, ...]):
    """How to read `ref` from inside `ctx_loops`, worked out once per program and place (a
    run reads the same references millions of times): a function of (values, index)."""
    if isinstance(ref, ir.NodeRef):
        node = cp.nodes[ref.node]
        k = ir.common_prefix(node.loops, ctx_loops)
        if k < len(node.loops):  # read from outside some of its loops: a (nested) list
            return lambda vals, prefix: vals.assemble(node, prefix[:k])
        nid = node.id
        return lambda vals, prefix: vals.computed(nid, prefix[:k])
    loop = cp.loops[ref.loop]
    level = ctx_loops.index(loop.id)
    iterable = _reader(cp, loop.iterable, loop.loops)

    def item(vals, prefix):
        items = iterable(vals, prefix[:level])
        return items if isinstance(items, Failed) else items[prefix[level]]
    return item


def depends_on(bad: Failed) -> Failed:
    """What a value that reads a failed one becomes (unparsed stays unparsed)."""
    return Failed(f"depends on failed '{bad.node}'", bad.node, bad.unparsed)


def find_failed(v) -> Failed | None:
    if isinstance(v, Failed):
        return v
    if isinstance(v, list):
        for x in v:
            f = find_failed(x)
            if f is not None:
                return f
    return None


def to_json(v):
    """Values as JSON for people (Failed -> {"failed": reason, "node": id})."""
    if isinstance(v, Failed):
        return {"unparsed" if v.unparsed else "failed": v.reason, "node": v.node}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v



_FAILED = "\x00failed"  # the JSON tag of a Failed value in a stored state (no data key starts with NUL)


def encode(v):
    """A value as JSON that `decode` turns back into the same value (Failed included)."""
    if isinstance(v, Failed):
        return {_FAILED: [v.reason, v.node, v.unparsed]}
    if isinstance(v, list):
        return [encode(x) for x in v]
    return v


def decode(v):
    if isinstance(v, dict) and _FAILED in v:
        reason, node, unparsed = v[_FAILED]
        return Failed(reason, node, unparsed)
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def dump_state(values: ExampleValues) -> dict:
    """An example's per-instance values as JSON: {node: [[index, value], ...]}."""
    return {nid: [[list(p), encode(v)] for p, v in inst.items()] for nid, inst in values.store.items()}


def load_state(cp: ir.CheckedProgram, data: dict) -> ExampleValues:
    vals = ExampleValues.__new__(ExampleValues)
    vals.cp = cp
    vals.store = {nid: {tuple(p): decode(v) for p, v in inst} for nid, inst in data.items()}
    return vals
