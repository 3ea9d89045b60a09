"""The checked, flat form of a program: nodes with stable ids, resolved references and types.

`check` lowers the AST into this: `repeat` is unrolled (`draft#2`), used programs are inlined
(`best/choose`), every name is resolved to a node or a loop item, and every value is typed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from s2c.calls import Sampling
from s2c.compiler.perturb import Perturbation
from s2c.compiler.types import Type
from s2c.dsl import ast as A
from s2c.errors import Diagnostic, Span

if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True)
class NodeRef:
    node: str


@dataclass(frozen=True)
class ItemRef:
    loop: str


Ref = Union[NodeRef, ItemRef]


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class RefExpr:
    ref: Ref


@dataclass(frozen=True)
class FnCall:
    fn: str
    args: tuple["IRExpr", ...]
    kwargs: tuple[tuple[str, "IRExpr"], ...] = ()


@dataclass(frozen=True)
class ListE:
    items: tuple["IRExpr", ...]


@dataclass(frozen=True)
class LoopIndex:
    """The 0-based position of the current item of a loop (`i` in `for i, x in enumerate(xs)`)."""

    loop: str


@dataclass(frozen=True)
class Pick:
    """A value of a `scan` iteration: `then` when the list has an item at `index`, else
    `otherwise` (the value from before the iteration), or Skipped where `otherwise` is None. Only the
    branch taken is read."""

    items: "IRExpr"
    index: int
    then: "IRExpr"
    otherwise: "IRExpr | None"


@dataclass(frozen=True)
class Gate:
    """Whether a `while` round or an `if` branch runs: True, or Skipped (the reason) when it does
    not. `after` is the gate of the round before (None for the first): a round runs only after one
    that ran. The condition counts as true only when it computed to true: one that failed or is
    unparsed is false (a loop stops rather than spend calls on a value it cannot read), and
    `negate` (the else branch) takes the branch the condition did not."""

    cond: "IRExpr"
    after: "IRExpr | None"
    negate: bool
    what: str  # "round 2 of the while at 12:1", "the if's branch at 20:1", "the else at 22:1"


@dataclass(frozen=True)
class When:
    """`then` where the gate ran (a Gate's True, or a scan's item), else `otherwise` (the value
    from before the while or if), or the gate's Skipped where `otherwise` is None. Only the branch
    taken is read."""

    gate: "IRExpr"
    then: "IRExpr"
    otherwise: "IRExpr | None"


IRExpr = Union[Const, RefExpr, FnCall, ListE, LoopIndex, Pick, Gate, When]


@dataclass(frozen=True)
class Loop:
    id: str
    var: str
    iterable: Ref  # resolved in the loop's parent context
    loops: tuple[str, ...]  # the enclosing loops (outermost first), this one excluded
    span: Span | None = None


@dataclass
class Node:
    id: str  # stable: the source name, `#i` per repeat iteration, `prefix/` per inlined program
    kind: str  # input | llm | transform
    name: str  # the name as written
    span: Span | None
    type: Type  # of one instance (an llm with n > 1 is a list)
    loops: tuple[str, ...] = ()  # loop ids, outermost first: the node runs once per item
    deps: tuple[str, ...] = ()  # node ids it reads
    # llm
    prompt: A.Text | None = None
    system: A.Text | None = None
    vars: dict[str, Ref] = field(default_factory=dict)  # template variable -> what it reads
    sampling: Sampling | None = None
    mode: str = "chat"
    role: str = "default"
    continues: str | None = None  # an earlier llm node whose conversation (messages + reply) this call extends
    continues_sample: str | None = None  # where `continues` sampled n > 1 replies: the loop over them whose item is the reply
    guard: str | None = None  # a scan iteration's item node: no call is made where it is Skipped
    # transform
    expr: IRExpr | None = None
    internal: bool = False  # created by s2c (inlined bindings, loop iterables), not the user
    origin_program: str = ""  # the program file it was written in

    @property
    def carried(self) -> bool:
        """A name carried out of a scan, while or if (`draft@28`): internal, but what the program's
        name holds after the block, so graphs draw it and traces record it."""
        return self.internal and isinstance(self.expr, (Pick, When)) and "@" in self.id


@dataclass
class TaskIR:
    name: str
    span: Span | None
    prompt: A.Text
    system: A.Text | None
    target: IRExpr
    target_type: Type
    weight: float
    each: Loop | None = None  # one row per item of this loop (for x in list: task ...)
    rationale: IRExpr | None = None  # for the `cot` format: completion = rationale + target
    # tasks whose output this prompt reads ({{ name }}): in a row, their target for the same
    # input and item; at inference, what System 1 wrote for them first (a cascade)
    after: tuple[str, ...] = ()
    # values the prompt reads that are known before any data (a few-shot block): (name, value)
    constants: tuple[tuple[str, object], ...] = ()


@dataclass
class KeepIR:
    rule: str  # majority | consistent | matches
    span: Span | None
    args: dict[str, Any]  # resolved: IRExpr for values, plain python for options
    perturbation: Perturbation | None = None  # consistent: the perturbed copy it compares with


@dataclass
class MetricIR:
    name: str
    span: Span | None
    answer: IRExpr | None
    gold: str | None  # gold field
    options: dict[str, Any] = field(default_factory=dict)
    perturbation: Perturbation | None = None  # swap_inconsistency: the swapped copy


@dataclass(frozen=True)
class CheckedProgram:
    """What `check` returns; `graph.with_graph` returns a copy that holds its graph too. Frozen:
    later stages make new objects (dataclasses.replace) and keep their own state outside it."""

    program: A.Program
    nodes: dict[str, Node]  # in definition order
    loops: dict[str, Loop]
    outputs: dict[str, Ref]
    inputs: tuple[A.Param, ...]
    golds: tuple[str, ...]
    tasks: list[TaskIR]
    keeps: list[KeepIR]
    format: str
    metrics: list[MetricIR]
    parse: IRExpr | None  # reads `completion`
    diagnostics: list[Diagnostic]
    sources: dict[str, str]
    graph: nx.DiGraph | None = None  # the dataflow graph: None from check, set by graph.with_graph

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def perturbations(self) -> dict[str, Perturbation]:
        """The perturbed copies compile runs (suffix -> perturbation), from the keep rules."""
        return {k.perturbation.suffix: k.perturbation for k in self.keeps if k.perturbation}

    def row_tasks(self, fmt: str) -> list[TaskIR]:
        """The tasks a row format writes: every task for multitask and cascade, else the first."""
        return list(self.tasks) if fmt in ("multitask", "cascade") else self.tasks[:1]

    def llm_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "llm"]


def refs_of(expr: IRExpr) -> list[Ref]:
    if isinstance(expr, RefExpr):
        return [expr.ref]
    if isinstance(expr, FnCall):
        return [r for a in (*expr.args, *(v for _, v in expr.kwargs)) for r in refs_of(a)]
    if isinstance(expr, ListE):
        return [r for a in expr.items for r in refs_of(a)]
    if isinstance(expr, Pick):
        return [r for a in (expr.items, expr.then, expr.otherwise) if a is not None for r in refs_of(a)]
    if isinstance(expr, LoopIndex):
        return [ItemRef(expr.loop)]  # the position is known once the loop's list is
    if isinstance(expr, Gate):
        return [r for a in (expr.cond, expr.after) if a is not None for r in refs_of(a)]
    if isinstance(expr, When):
        return [r for a in (expr.gate, expr.then, expr.otherwise) if a is not None for r in refs_of(a)]
    return []


def common_prefix(a: tuple, b: tuple) -> int:
    """How many enclosing loops two loop stacks share (outermost first)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def metric_labels(metrics: list[MetricIR]) -> list[str]:
    """Each metric's name in tables and results.json: the metric's name, or, where one metric
    appears on several lines, `name#k` (in the eval section's order)."""
    names = [m.name for m in metrics]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}#{seen[name]}")
    return out
