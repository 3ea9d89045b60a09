"""Values of one example while it runs: per node, per instance (loop index tuple).

A node inside loops runs once per item; its instances are keyed by index tuples (`solve` at
`(2,)` is the third criterion's call). Reading a node from outside its loops collects a (nested)
list; reading a loop variable gives the current item. `Failed` values flow through: aggregations
skip them, everything else fails with "depends on failed X".
"""
from __future__ import annotations

from typing import Any

from s2c.calls import Message, Request
from s2c.compiler import ir
from s2c.compiler.failures import Failed, NoMatch, Skipped, TransformError
from s2c.compiler.library import function
from s2c.compiler.system1 import render_request
from s2c.compiler.templates import RENDER_ERRORS


class ExampleValues:
    def __init__(self, cp: ir.CheckedProgram, row: dict):
        self.cp = cp
        self.store: dict[str, dict[tuple, Any]] = {}
        for p in cp.inputs:
            self.store[p.name] = {(): row.get(p.name)}

    # ------------------------------------------------------------ reading
    def lookup(self, ref: ir.Ref, prefix: tuple, ctx_loops: tuple[str, ...]):
        """The value `ref` names, read from inside `ctx_loops` at index `prefix`."""
        read = self.cp.readers.get((ref, ctx_loops))  # memo: (ref, loops) -> reader; ("vars", node) -> its readers
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
        items = self.loop_items(self.cp.loops[node.loops[len(p)]], p, node.id)
        if isinstance(items, Failed):
            return items
        return [self.assemble(node, p + (i,)) for i in range(len(items))]

    def loop_items(self, loop: ir.Loop, p: tuple, node_id: str) -> list | Failed:
        """The list a loop runs over at index `p`; Failed when it failed or is not a list (a JSON
        object or a text from data, which the checker cannot rule out)."""
        items = self.lookup(loop.iterable, p, loop.loops)
        if not isinstance(items, (list, Failed)):
            return Failed(f"'for {loop.var}' needs a list, got {type(items).__name__}", node_id)
        return items

    def instances(self, node: ir.Node) -> list[tuple] | Failed:
        """The index tuples a node runs at, from its loops' iterables (all computed by now)."""
        prefixes: list[tuple] = [()]
        for lid in node.loops:
            loop = self.cp.loops[lid]
            nxt = []
            for p in prefixes:
                items = self.loop_items(loop, p, node.id)
                if isinstance(items, Failed):
                    return items
                nxt.extend(p + (i,) for i in range(len(items)))
            prefixes = nxt
        return prefixes

    def set(self, node_id: str, prefix: tuple, value) -> None:
        self.store.setdefault(node_id, {})[prefix] = value

    # ------------------------------------------------------------ evaluating
    def eval(self, expr: ir.IRExpr, prefix: tuple, ctx_loops: tuple[str, ...], node_id: str,
             extra: dict[str, Any] | None = None):
        """Evaluate a transform expression; Failed when it or what it reads failed. `extra`: values
        for some node names, read instead of the example's (a parse reading `completion`)."""
        key = ("expr", id(expr), ctx_loops, node_id)
        memo = self.cp.readers.get(key)
        if memo is None:  # the memo holds `expr` too, so no other expression can take its id
            memo = self.cp.readers[key] = (expr, _evaluator(self.cp, expr, ctx_loops, node_id))
        return memo[1](self, prefix, extra)

    def request(self, node: ir.Node, prefix: tuple, adapter: str | None = None) -> Request | Failed:
        """The request one instance of an llm node sends: its prompt rendered on this example's
        values, after the conversation it continues (continue=). Skipped where its scan iteration
        has no item; Failed where what it reads failed or the template fails on these values."""
        if node.guard is not None:
            g = self.lookup(ir.NodeRef(node.guard), prefix, node.loops)
            if isinstance(g, Failed):
                return depends_on(g)
        history: tuple[Message, ...] = ()
        if node.continues is not None:
            prev = self.cp.nodes[node.continues]
            p = prefix[:len(prev.loops)]
            earlier = self.request(prev, p)
            reply = self.computed(prev.id, p)
            bad = earlier if isinstance(earlier, Failed) else find_failed(reply)
            if bad is not None:
                return depends_on(bad)
            history = earlier.messages + (Message("assistant", reply),)
        variables = self.template_vars(node, prefix)
        if isinstance(variables, Failed):
            return variables
        try:
            return render_request(node, variables, adapter, history)
        except RENDER_ERRORS as e:  # on this example's values: {{ x.y }} on text, an index out of range
            return Failed(f"template error: {type(e).__name__}: {e}", node.id)

    def template_vars(self, node: ir.Node, prefix: tuple) -> dict[str, Any] | Failed:
        reads = self.cp.readers.get(("vars", node.id))  # the node's readers, found once per program
        if reads is None:
            reads = self.cp.readers[("vars", node.id)] = [(var, _reader(self.cp, ref, node.loops))
                                                          for var, ref in node.vars.items()]
        out = {}
        for var, read in reads:
            v = read(self, prefix)
            if type(v) is not str:  # most values are text: nothing to look into
                bad = find_failed(v)
                if bad is not None:
                    return depends_on(bad)
            out[var] = v
        return out


def _evaluator(cp: ir.CheckedProgram, expr: ir.IRExpr, ctx_loops: tuple[str, ...], node_id: str):
    """A transform expression as a function of (values, index, extra), worked out once per program
    and place, as _reader does for references: the dispatch on the expression's kind and the
    function lookups happen here, not on every evaluation."""
    if isinstance(expr, ir.Const):
        value = expr.value
        return lambda vals, prefix, extra: value
    if isinstance(expr, ir.RefExpr):
        ref = expr.ref
        if not isinstance(ref, ir.NodeRef):
            read = _reader(cp, ref, ctx_loops)
            return lambda vals, prefix, extra: read(vals, prefix)
        name = ref.node  # read from `extra` when it has the name (a parse's `completion` is no node)
        read = _reader(cp, ref, ctx_loops) if name in cp.nodes else (
            lambda vals, prefix: vals.lookup(ref, prefix, ctx_loops))
        return lambda vals, prefix, extra: extra[name] if extra and name in extra else read(vals, prefix)
    if isinstance(expr, ir.ListE):
        parts = [_evaluator(cp, i, ctx_loops, node_id) for i in expr.items]

        def list_of(vals, prefix, extra):
            items = [part(vals, prefix, extra) for part in parts]
            bad = next((i for i in items if isinstance(i, Failed)), None)
            return bad or items
        return list_of
    if isinstance(expr, ir.LoopIndex):
        level = ctx_loops.index(expr.loop)
        return lambda vals, prefix, extra: prefix[level]
    if isinstance(expr, ir.Pick):
        items_of = _evaluator(cp, expr.items, ctx_loops, node_id)
        then = _evaluator(cp, expr.then, ctx_loops, node_id)
        otherwise = None if expr.otherwise is None else _evaluator(cp, expr.otherwise, ctx_loops, node_id)
        index = expr.index

        def pick(vals, prefix, extra):
            items = items_of(vals, prefix, extra)
            if isinstance(items, Failed):
                return carried(items, node_id)
            if index < len(items):
                return then(vals, prefix, extra)
            if otherwise is None:
                return Skipped(f"not run: the list has {len(items)} items, this is item {index + 1}", node_id)
            return otherwise(vals, prefix, extra)
        return pick
    if isinstance(expr, ir.FnCall):
        fn = function(expr.fn)
        impl, aggregates = fn.impl, fn.aggregates
        args = [_evaluator(cp, a, ctx_loops, node_id) for a in expr.args]
        kwargs = [(k, _evaluator(cp, v, ctx_loops, node_id)) for k, v in expr.kwargs]

        def call(vals, prefix, extra):
            a = [arg(vals, prefix, extra) for arg in args]
            kw = {k: arg(vals, prefix, extra) for k, arg in kwargs}
            for v in (*a, *kw.values()):
                bad = v if isinstance(v, Failed) else None
                if bad is None and not aggregates:
                    bad = find_failed(v)
                if bad is not None:
                    return carried(bad, node_id)
            try:
                return impl(*a, **kw)
            except NoMatch as e:
                return Failed(f"{_called(expr)}: {e}", node_id, unparsed=True)
            except TransformError as e:
                return Failed(f"{_called(expr)}: {e}", node_id)
            except (TypeError, ValueError, AttributeError) as e:
                return Failed(f"{_called(expr)}: {type(e).__name__}: {e}", node_id)
        return call
    raise TypeError(expr)  # a bug in s2c


def _called(call: ir.FnCall) -> str:
    """How a failure names the function or operator that failed: `lines()`, `'+'`."""
    return f"{call.fn}()" if call.fn.isidentifier() else f"'{call.fn}'"


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


def carried(bad: Failed, node_id: str) -> Failed:
    """A failure met while evaluating `node_id`: within one node the first reason stays as it is;
    from another node it becomes "depends on"."""
    return bad if bad.node == node_id else depends_on(bad)


def depends_on(bad: Failed) -> Failed:
    """What a value that reads a failed one becomes (unparsed stays unparsed, skipped skipped)."""
    if isinstance(bad, Skipped):
        return bad
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
        kind = "skipped" if isinstance(v, Skipped) else "unparsed" if v.unparsed else "failed"
        return {kind: v.reason, "node": v.node}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v



_FAILED = "\x00failed"  # the JSON tag of a Failed value in a stored state (no data key starts with NUL)


def encode(v):
    """A value as JSON that `decode` turns back into the same value (Failed included)."""
    if isinstance(v, Skipped):
        return {_FAILED: [v.reason, v.node, v.unparsed, "skipped"]}
    if isinstance(v, Failed):
        return {_FAILED: [v.reason, v.node, v.unparsed]}
    if isinstance(v, list):
        return [encode(x) for x in v]
    return v


def decode(v):
    if isinstance(v, dict) and _FAILED in v:
        reason, node, unparsed, *skipped = v[_FAILED]
        return (Skipped if skipped else Failed)(reason, node, unparsed)
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def dump_state(values: ExampleValues) -> dict:
    """An example's per-instance values as JSON: {node: [[index, value], ...]}."""
    return {nid: [[list(p), v if type(v) is str else encode(v)] for p, v in inst.items()]  # mostly text
            for nid, inst in values.store.items()}


def load_state(cp: ir.CheckedProgram, data: dict) -> ExampleValues:
    vals = ExampleValues.__new__(ExampleValues)
    vals.cp = cp
    vals.store = {nid: {tuple(p): decode(v) for p, v in inst} for nid, inst in data.items()}
    return vals
