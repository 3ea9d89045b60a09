"""Build the execution DAG (networkx) of a checked program, its stages and static estimates.

    branch (stage 1)  ->  criteria  ->  solve [for criterion, <= 5]  (stage 2)  ->  merge (stage 3)

Nodes are inputs, LLM calls and transforms; edges are data dependencies. The stage of a node is
the number of LLM calls on the longest path up to and including it: calls in one stage can run
together. Estimates are per input: LLM calls, and the most tokens a run can generate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from s2c.compiler import ir
from s2c.errors import Diagnostic


@dataclass(frozen=True)
class Estimate:
    calls: int  # LLM requests per input, counting samples; unbounded loops count as `assumed`
    max_generated_tokens: int
    bounded: bool  # False when some fan-out has no static bound
    assumed: int  # the length assumed for an unbounded list


def list_bound(cp: ir.CheckedProgram, expr: ir.IRExpr | None, ref: ir.Ref | None = None) -> int | None:
    """A static upper bound on the length of a list value, or None when there is none."""
    if ref is not None:
        if isinstance(ref, ir.ItemRef):
            return None
        node = cp.nodes[ref.node]
        if node.kind == "llm":
            base = node.sampling.n if node.sampling and node.sampling.n > 1 else None
        elif node.kind == "transform":
            base = list_bound(cp, node.expr)
        else:
            base = None
        return base
    if isinstance(expr, ir.Const):
        return len(expr.value) if isinstance(expr.value, (list, tuple)) else None
    if isinstance(expr, ir.ListE):
        return len(expr.items)
    if isinstance(expr, ir.RefExpr):
        if isinstance(expr.ref, ir.NodeRef):
            node = cp.nodes[expr.ref.node]
            if node.loops:  # a collected list: product of its loops (approximation for one level)
                return _loop_product(cp, node.loops)
        return list_bound(cp, None, expr.ref)
    if isinstance(expr, ir.FnCall):
        if expr.fn == "take":
            k = expr.args[1] if len(expr.args) > 1 else dict(expr.kwargs).get("k")
            inner = list_bound(cp, expr.args[0]) if expr.args else None
            kv = k.value if isinstance(k, ir.Const) and isinstance(k.value, (int, float)) else None
            if kv is None:
                return inner
            return int(kv) if inner is None else min(int(kv), inner)
        return None
    return None


def _loop_product(cp, loops: tuple[str, ...], assume: int | None = None) -> int | None:
    total = 1
    for lid in loops:
        b = list_bound(cp, None, cp.loops[lid].iterable)
        if b is None:
            if assume is None:
                return None
            b = assume
        total *= b
    return total


def estimate(cp: ir.CheckedProgram, assume: int = 5) -> Estimate:
    calls = tokens = 0
    bounded = True
    for node in cp.llm_nodes():
        fan = _loop_product(cp, node.loops)
        if fan is None:
            bounded = False
            fan = _loop_product(cp, node.loops, assume)
        n = node.sampling.n * fan
        calls += n
        tokens += n * node.sampling.max_tokens
    return Estimate(calls, tokens, bounded, assume)


def _carried_out_of(node: ir.Node) -> str:
    """The block a carried name leaves (`solved@22`: "the scan at line 22"): what a reader of it
    gets is the value the last step that ran left, or the branch taken's."""
    e = node.expr
    while isinstance(e, ir.When) and isinstance(e.gate, ir.RefExpr) and isinstance(e.gate.ref, ir.NodeRef):
        kind = e.gate.ref.node.split("@")[0]
        if kind in ("while", "if", "else"):
            return f"the {'if' if kind == 'else' else kind} at line {node.id.rsplit('@', 1)[1]}"
        break
    return f"the scan at line {node.id.rsplit('@', 1)[1]}"


def build_graph(cp: ir.CheckedProgram) -> nx.DiGraph:
    g = nx.DiGraph(name=cp.name)
    for node in cp.nodes.values():
        attrs = {
            "kind": node.kind,
            "name": node.name,
            "file": node.span.file if node.span else cp.program.file,
            "line": node.span.line if node.span else 0,
            "loops": [cp.loops[l].var for l in node.loops],
            "fanout": [_describe_loop(cp, l) for l in node.loops],
            "type": str(node.type),
        }
        if node.kind == "llm":
            s = node.sampling
            gated = node.guard is not None and isinstance(cp.nodes[node.guard].expr, ir.Gate)
            attrs.update(n=s.n, max_tokens=s.max_tokens, temperature=s.temperature, role=node.role, mode=node.mode,
                         continues=node.continues or "", scan_item="" if gated else node.guard or "")
            if gated:  # only then: graphs without while or if stay as they were
                attrs["runs_if"] = node.guard
            if s.constraint is not None:  # only then: graphs of unconstrained programs stay as they were
                attrs["constraint"] = s.constraint.describe()
        attrs["internal"] = node.internal
        if node.kind == "transform" and isinstance(node.expr, ir.FnCall):
            attrs["fn"] = node.expr.fn
        if isinstance(node.expr, ir.Gate):  # a while round's or an if branch's gate
            attrs["gate"] = node.expr.what
        elif node.carried:
            attrs["carried"] = _carried_out_of(node)
        g.add_node(node.id, **attrs)
    # edge kinds: "data" (reads the value), "continues" (extends that call's conversation),
    # "loop" (runs once per item of that list, without reading it otherwise)
    for node in cp.nodes.values():
        for d in node.deps:
            g.add_edge(d, node.id, kind="continues" if d == node.continues else "data")
        for lid in node.loops:  # a node in a loop depends on the loop's iterable
            it = cp.loops[lid].iterable
            if isinstance(it, ir.NodeRef) and it.node != node.id and not g.has_edge(it.node, node.id):
                g.add_edge(it.node, node.id, kind="loop")
    if not nx.is_directed_acyclic_graph(g):  # cannot happen from a checked program: a bug
        cycle = nx.find_cycle(g)
        cp.diagnostics.append(Diagnostic("error", f"internal: the graph has a cycle {cycle}"))
    stage: dict[str, int] = {}
    for nid in nx.topological_sort(g):
        base = max((stage[p] for p in g.predecessors(nid)), default=0)
        stage[nid] = base + (1 if g.nodes[nid]["kind"] == "llm" else 0)
        g.nodes[nid]["stage"] = stage[nid]
    est = estimate(cp)
    g.graph.update(calls_per_input=est.calls, max_generated_tokens_per_input=est.max_generated_tokens,
                   bounded=est.bounded, stages=max(stage.values(), default=0))
    if any(isinstance(n.expr, ir.Gate) for n in cp.nodes.values()):
        g.graph["conditional"] = True  # while / if: the calls counted are the most a run makes
    if cp.perturbations:  # compile also runs each input's perturbed copies (BSM's swap): only then
        g.graph["compile_copies"] = 1 + len(cp.perturbations)
    return g


def with_graph(cp: ir.CheckedProgram) -> ir.CheckedProgram:
    """`cp` with its graph, as a new CheckedProgram: the checked program is never changed after.
    A sampled call says whether a compile may stop drawing it early, and why not."""
    from s2c.compiler.early_stop import EarlyStop, early_stops

    out = replace(cp, graph=build_graph(cp))
    for nid, plan in early_stops(out).items():
        out.graph.nodes[nid]["early_stop"] = plan.describe() if isinstance(plan, EarlyStop) else f"none: {plan}"
    return out


def _describe_loop(cp: ir.CheckedProgram, loop_id: str) -> str:
    loop = cp.loops[loop_id]
    b = list_bound(cp, None, loop.iterable)
    src = loop.iterable.node if isinstance(loop.iterable, ir.NodeRef) else cp.loops[loop.iterable.loop].var
    return f"for {loop.var} in {src}" + (f" (<= {b})" if b is not None else "")


def stages(g: nx.DiGraph) -> list[list[str]]:
    """LLM calls grouped by stage, in topological order."""
    out: dict[int, list[str]] = {}
    for nid in nx.topological_sort(g):
        if g.nodes[nid]["kind"] == "llm":
            out.setdefault(g.nodes[nid]["stage"], []).append(nid)
    return [out[k] for k in sorted(out)]
