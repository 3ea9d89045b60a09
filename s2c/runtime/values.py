"""Values of one example while it runs: per node, per instance (loop index tuple).

A node inside loops runs once per item; its instances are keyed by index tuples (`solve` at
`(2,)` is the third criterion's call). Reading a node from outside its loops collects a (nested)
list; reading a loop variable gives the current item. `Failed` values flow through: aggregations
skip them, everything else fails with "depends on failed X".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from s2c.calls import Message, Request
from s2c.compiler import ir
from s2c.compiler.failures import Failed, Skipped
from s2c.compiler.system1 import render_request
from s2c.compiler.templates import RENDER_ERRORS

if TYPE_CHECKING:
    from s2c.runtime.plan import Plan


class ExampleValues:
    """One example's values, read and computed through its run's plan (shared by every example)."""

    def __init__(self, plan: Plan, row: dict):
        self.plan = plan
        self.cp = plan.cp
        self.store: dict[str, dict[tuple, Any]] = {}
        for p in plan.cp.inputs:
            self.store[p.name] = {(): row.get(p.name)}

    # ------------------------------------------------------------ reading
    def lookup(self, ref: ir.Ref, prefix: tuple, ctx_loops: tuple[str, ...]):
        """The value `ref` names, read from inside `ctx_loops` at index `prefix`."""
        read = self.plan.readers.get((ref, ctx_loops))
        if read is None:
            read = self.plan.reader(ref, ctx_loops)
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
        evaluate = self.plan.evaluators.get((id(expr), ctx_loops, node_id))
        if evaluate is None:
            evaluate = self.plan.evaluator(expr, ctx_loops, node_id)
        return evaluate(self, prefix, extra)

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
            if node.continues_sample is not None and not isinstance(reply, Failed):  # one of its samples
                reply = reply[prefix[node.loops.index(node.continues_sample)]]
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
        reads = self.plan.var_readers.get(node.id)
        if reads is None:
            reads = self.plan.template_readers(node)
        out = {}
        for var, read in reads:
            v = read(self, prefix)
            if type(v) is not str:  # most values are text: nothing to look into
                bad = find_failed(v)
                if bad is not None:
                    return depends_on(bad)
            out[var] = v
        return out


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


def load_state(plan: Plan, data: dict) -> ExampleValues:
    vals = ExampleValues.__new__(ExampleValues)
    vals.plan, vals.cp = plan, plan.cp
    vals.store = {nid: {tuple(p): decode(v) for p, v in inst} for nid, inst in data.items()}
    return vals
