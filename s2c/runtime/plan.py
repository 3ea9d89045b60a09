"""How the runtime reads and computes a program's values, worked out once per run: between the IR and values.py.

A run reads the same references and evaluates the same transform expressions millions of times.
The dispatch on a reference's or an expression's kind, the loop levels and the library lookups
are done once per program and place, here, into closures of (values, index[, extra]). The plan
belongs to the runtime: an Executor makes one per run, a RunStore one for the program it reads
back, and the IR holds nothing of it.

    plan = Plan(cp)                               # BSM's checked program, once per run
    read = plan.reader(ir.NodeRef("solve"), ())   # solve, read from outside its loop over criteria
    read(values, ())                              # one example's solve replies, one per criterion
"""
from __future__ import annotations

from typing import Any, Callable

from s2c.compiler import ir
from s2c.compiler.failures import Failed, NoMatch, Skipped, TransformError
from s2c.compiler.library import function
from s2c.runtime.values import carried, depends_on, find_failed

Reader = Callable[[Any, tuple], Any]  # (ExampleValues, index) -> value
Evaluator = Callable[[Any, tuple, "dict | None"], Any]  # (ExampleValues, index, extra) -> value


class Plan:
    """One program's readers and evaluators, each built on first use and kept for the plan's life.

    values.py reads the dicts first and calls the methods only on a miss: a hit costs no call."""

    def __init__(self, cp: ir.CheckedProgram):
        self.cp = cp
        self.readers: dict[tuple[ir.Ref, tuple[str, ...]], Reader] = {}  # (ref, loops read from)
        self.evaluators: dict[tuple[int, tuple[str, ...], str], Evaluator] = {}  # (id(expr), loops, node)
        self.var_readers: dict[str, list[tuple[str, Reader]]] = {}  # llm node -> (template variable, reader)
        self._exprs: list[ir.IRExpr] = []  # each expression evaluated, held so that its id is never reused

    def reader(self, ref: ir.Ref, loops: tuple[str, ...]) -> Reader:
        read = self.readers[(ref, loops)] = _reader(self.cp, ref, loops)
        return read

    def evaluator(self, expr: ir.IRExpr, loops: tuple[str, ...], node_id: str) -> Evaluator:
        self._exprs.append(expr)
        fn = self.evaluators[(id(expr), loops, node_id)] = _evaluator(self.cp, expr, loops, node_id)
        return fn

    def template_readers(self, node: ir.Node) -> list[tuple[str, Reader]]:
        reads = self.var_readers[node.id] = [(var, _reader(self.cp, ref, node.loops)) for var, ref in node.vars.items()]
        return reads


def _evaluator(cp: ir.CheckedProgram, expr: ir.IRExpr, ctx_loops: tuple[str, ...], node_id: str) -> Evaluator:
    """A transform expression as a function of (values, index, extra), as _reader does for
    references: the dispatch on the expression's kind and the function lookups happen here, not
    on every evaluation."""
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

        def list_of(vals, prefix, extra):  # a list keeps its failed elements (docs: Failed and unparsed)
            return [part(vals, prefix, extra) for part in parts]
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
    if isinstance(expr, ir.Gate):
        cond = _evaluator(cp, expr.cond, ctx_loops, node_id)
        after = None if expr.after is None else _evaluator(cp, expr.after, ctx_loops, node_id)
        what, negate = expr.what, expr.negate

        def gate(vals, prefix, extra):
            if after is not None:
                before = after(vals, prefix, extra)
                if before is not True:  # the round before did not run: neither does this one
                    return before if isinstance(before, Skipped) else Skipped(f"{what}: not run", node_id)
            c = cond(vals, prefix, extra)
            if isinstance(c, Failed):  # a condition that cannot be read is false
                holds, why = False, f"the condition {'was skipped' if isinstance(c, Skipped) else 'failed'} ({c.reason})"
            else:
                holds, why = c is True, "the condition was false"
            if negate:
                holds, why = not holds, "the condition was true" if holds else why
            return True if holds else Skipped(f"{what}: not run, {why}", node_id)
        return gate
    if isinstance(expr, ir.When):
        gate_of = _evaluator(cp, expr.gate, ctx_loops, node_id)
        then = _evaluator(cp, expr.then, ctx_loops, node_id)
        otherwise = None if expr.otherwise is None else _evaluator(cp, expr.otherwise, ctx_loops, node_id)

        def when(vals, prefix, extra):
            g = gate_of(vals, prefix, extra)  # a gate's True, or a scan's item: ran
            if not isinstance(g, Failed):
                return then(vals, prefix, extra)
            if otherwise is not None:
                return otherwise(vals, prefix, extra)
            return g if isinstance(g, Skipped) else depends_on(g)
        return when
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


def _reader(cp: ir.CheckedProgram, ref: ir.Ref, ctx_loops: tuple[str, ...]) -> Reader:
    """How to read `ref` from inside `ctx_loops`: a function of (values, index)."""
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
