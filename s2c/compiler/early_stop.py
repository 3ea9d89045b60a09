"""Which sampled calls a compile may stop drawing early, and the rule that says when (lossless).

A call sampled n times (`cots = llm(n=6, temperature=0.7)`) is often read only through a vote
and a majority keep rule over a value computed per sample:

    for cot in cots:
        sample = lower(regex(cot, "(yes|no)"))      # per sample: reads its own cot and nothing drawn later
    final = vote(sample)                             # the winner
    keep majority(sample, min_share=0.6)             # kept: a strict winner with >= 60 % of the valid samples

Then the samples not drawn yet cannot change anything the compile makes once the vote's winner
and the rule's verdict are the same whatever they turn out to be (any answer, or a failed
parse). The executor draws such a call in waves and stops there (`decided`); the samples it left
undrawn read as Skipped ("not drawn"), which votes and keep rules leave out as they leave out a
failed sample. With each sample seeded by its index (executor), sample i of a wave is sample i of
a run that drew them all, so the dataset is the same, byte for byte.

`early_stops` decides, from the IR, which calls qualify: every reader of the samples, and of the
values computed per sample, must be one of those two aggregates. A training row, an output, a
metric, another call or any other function reading the samples (`cot` format's rationale, USC's
judge, `vote_share`, `count`) makes the call draw all n, and `s2c graph` says why.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import networkx as nx

from s2c.compiler import ir
from s2c.compiler.check.prune import node_refs
from s2c.compiler.failures import Failed
from s2c.compiler.normalize import normalize


@dataclass(frozen=True)
class EarlyStop:
    """One sampled call that may stop early, and what its samples decide."""

    node: str  # the llm node sampled n times
    maps: tuple[str, ...]  # transforms computed per sample (inside loops over it), in dataflow order
    votes: tuple[str, ...]  # values vote(...) reads (the node itself or one of `maps`)
    majorities: tuple[tuple[str, float], ...]  # (value, min_share) of each keep majority(...)

    @property
    def values(self) -> set[str]:
        """Every value its decision reads, one key per sample each."""
        return {*self.votes, *(m for m, _ in self.majorities)}

    def describe(self) -> str:
        parts = [f"vote({v})" for v in self.votes] + [f"keep majority({v}, min_share={s:g})" for v, s in self.majorities]
        return "stops drawing once " + " and ".join(parts) + " cannot change"


def early_stops(cp: ir.CheckedProgram, fmt: str | None = None) -> dict[str, EarlyStop | str]:
    """For each llm call sampled n > 1 times at a temperature above 0: its EarlyStop, or why it
    draws all n. `fmt`: the row format the compile writes (the program's by default): the `cot`
    format's rationale is read only there."""
    fmt = fmt or cp.format
    out: dict[str, EarlyStop | str] = {}
    for node in cp.llm_nodes():
        s = node.sampling
        if s.n > 1 and s.temperature > 0:
            out[node.id] = _plan(cp, node, fmt)
    return out


def _plan(cp: ir.CheckedProgram, x: ir.Node, fmt: str) -> EarlyStop | str:
    g = cp.graph
    if x.loops:
        return "it runs inside a loop"
    over = {lid for lid, loop in cp.loops.items() if loop.iterable == ir.NodeRef(x.id) and not loop.loops}
    before = nx.ancestors(g, x.id) | {x.id}
    maps: list[str] = []
    members = {x.id}
    todo = [x.id]
    while todo:  # the values computed per sample: transforms inside a loop over the samples
        for succ in g.successors(todo.pop()):
            node = cp.nodes[succ]
            if succ in members or len(node.loops) != 1 or node.loops[0] not in over:
                continue
            if node.kind != "transform":
                return f"'{node.name}' ({_line(node)}) is a call made per sample"
            members.add(succ)
            maps.append(succ)
            todo.append(succ)
    for m in maps:
        late = [p for p in g.predecessors(m) if p not in members and p not in before]
        if late:
            return f"'{cp.nodes[m].name}' ({_line(cp.nodes[m])}) reads '{cp.nodes[late[0]].name}', made after the samples"
    votes: list[str] = []
    for m in members:
        for succ in g.successors(m):
            if succ in members:
                continue
            node = cp.nodes[succ]
            if node.kind == "transform" and not node.loops and _is_vote(node.expr, members):
                votes.append(node.expr.args[0].ref.node)
                continue
            return f"'{node.name}' ({_line(node)}) reads every sample"
    majorities: list[tuple[str, float]] = []
    for k in cp.keeps:
        samples = k.args.get("samples") if k.rule == "majority" else None
        if isinstance(samples, ir.RefExpr) and isinstance(samples.ref, ir.NodeRef) and samples.ref.node in members:
            majorities.append((samples.ref.node, float(k.args.get("min_share", 0.5))))
        elif _reads(k, members):
            return f"keep {k.rule} ({_line(k)}) reads the samples"
    for t in cp.row_tasks(fmt):
        read = [t.target, t.each, t.constants] + ([t.rationale] if fmt == "cot" else [])
        if _reads(read, members):
            return f"the training rows of task {t.name} ({_line(t)}) read the samples (format {fmt})"
    for name, ref in cp.outputs.items():
        if _reads(ref, members):
            return f"output {name} is read from the samples"
    for m in cp.metrics:
        if _reads(m, members):
            return f"metric {m.name} ({_line(m)}) reads the samples"
    if not votes and not majorities:
        return "nothing decides from its samples"
    order = {n: i for i, n in enumerate(nx.topological_sort(g))}
    return EarlyStop(x.id, tuple(sorted(maps, key=order.get)), tuple(sorted(set(votes))), tuple(majorities))


def _is_vote(expr, members: set[str]) -> bool:
    return (isinstance(expr, ir.FnCall) and expr.fn == "vote" and len(expr.args) == 1 and not expr.kwargs
            and isinstance(expr.args[0], ir.RefExpr) and isinstance(expr.args[0].ref, ir.NodeRef)
            and expr.args[0].ref.node in members)


def _reads(obj, members: set[str]) -> bool:
    return bool(node_refs(obj) & members)


def _line(obj) -> str:
    span = getattr(obj, "span", None)
    return f"line {span.line}" if span else "?"


# ---------------------------------------------------------------- the rule
# A value per drawn sample, as votes compare it (`key`): its normalized text, or None where it failed.
Keys = list


def key(value) -> str | None:
    return None if isinstance(value, Failed) else normalize(value)


def vote_decided(keys: Keys, undrawn: int) -> bool:
    """Whether vote()'s winner (the most common valid value, the first seen among ties) is the same
    whatever the undrawn samples are."""
    counts, first = _tally(keys)
    if not counts:
        return undrawn == 0
    lead = _leader(counts, first)
    top = counts[lead]
    if undrawn > top:  # a value not seen yet could overtake it (a tie with it goes to the leader: seen first)
        return False
    return all(c + undrawn < top or (c + undrawn == top and first[lead] < first[k])
               for k, c in counts.items() if k != lead)


def majority_decided(keys: Keys, undrawn: int, min_share: float) -> bool:
    """Whether keep majority(min_share)'s verdict (a strict winner holding at least min_share of the
    valid samples) is the same whatever the undrawn samples are."""
    counts, _ = _tally(keys)
    valid = sum(counts.values())
    ranked = sorted(counts.values(), reverse=True) + [0, 0]
    top, second = ranked[0], ranked[1]
    if top > second + undrawn and top / (valid + undrawn) >= min_share:
        return True  # kept: even if every undrawn sample is valid and goes elsewhere
    # dropped for sure when no value, seen or new, could be kept with every undrawn sample its own
    return not any(c + undrawn > max((o for k, o in counts.items() if k != key), default=0)
                   and (c + undrawn) / (valid + undrawn) >= min_share
                   for key, c in [*counts.items(), (None, 0)])


def decided(plan: EarlyStop, keys: dict[str, Keys], undrawn: int) -> bool:
    """Whether nothing the plan's aggregates decide can change (`keys`: each value's keys)."""
    return all(vote_decided(keys[v], undrawn) for v in plan.votes) and \
        all(majority_decided(keys[v], undrawn, share) for v, share in plan.majorities)


def next_wave(plan: EarlyStop, keys: dict[str, Keys], undrawn: int) -> int:
    """How many samples to draw next: the fewest after which the aggregates could all be decided
    (if every new sample agreed with the leader, or each differed, or each failed), or all that
    are left."""
    need = 1
    for v in plan.values:
        ks = keys[v]
        counts, first = _tally(ks)
        lead = _leader(counts, first) if counts else "\0new"
        shares = [s for m, s in plan.majorities if m == v]
        for k in range(need, undrawn + 1):
            if any(all(majority_decided(ks + extra, undrawn - k, s) for s in shares)
                   and (v not in plan.votes or vote_decided(ks + extra, undrawn - k))
                   for extra in ([lead] * k, [f"\0new{i}" for i in range(k)], [None] * k)):
                need = k
                break
        else:
            return undrawn
    return need


def _leader(counts: Counter, first: dict):
    """vote()'s winner so far: the most common key, the first seen among ties."""
    top = max(counts.values())
    return min((k for k, c in counts.items() if c == top), key=first.get)


def _tally(keys: Keys) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    first: dict = {}
    for i, k in enumerate(keys):
        if k is not None:
            counts[k] += 1
            first.setdefault(k, i)
    return counts, first
