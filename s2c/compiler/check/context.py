"""What every check pass shares: the program being checked, the graph being built, and the
diagnostics collected so far (CheckContext), and what names mean at one point of a body (Scope).

A used program is checked in a context of its own (`CheckContext.for_used`) that writes into the
same graph, so its values are inlined under a prefix (`best/choose`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from s2c.compiler import ir
from s2c.dsl import ast as A
from s2c.errors import Diagnostic, Span

# `use NAME [from "PATH"]` -> (the program, its path); raises FileNotFoundError, IsADirectoryError
# or S2Error (s2c.compiler.pipeline.resolver)
Resolver = Callable[[str, str | None, A.Program], tuple[A.Program, str]]


@dataclass
class CheckContext:
    program: A.Program
    resolver: Resolver | None
    stack: tuple[str, ...]  # files of the programs being checked, outermost first: this one last
    sources: dict[str, str]  # file -> text, for quoting a diagnostic's line
    nodes: dict[str, ir.Node] = field(default_factory=dict)  # the graph, in definition order
    loops: dict[str, ir.Loop] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # node ids something reads
    outputs: dict[str, ir.Ref] = field(default_factory=dict)
    input_names: set[str] = field(default_factory=set)
    gold_names: set[str] = field(default_factory=set)
    programs: dict[str, A.Program] = field(default_factory=dict)  # used programs by name
    broken_programs: set[str] = field(default_factory=set)  # used programs already reported as unusable
    unreadable_prompt: bool = False  # a prompt could not be read: "never used" would be a guess
    read_too_early: set[Span] = field(default_factory=set)  # definitions read where they have no value yet
    scan_locals: dict[str, Span | None] = field(default_factory=dict)  # names a scan's body keeps to each iteration
    local_block: dict[str, str] = field(default_factory=dict)  # of those, the ones a "while" or an "if" keeps
    diags: list[Diagnostic] = field(default_factory=list)

    @classmethod
    def for_program(cls, program: A.Program, resolver: Resolver | None) -> CheckContext:
        return cls(program, resolver, (program.file,), {program.file: program.source})

    def for_used(self, sub: A.Program) -> CheckContext:
        """The context a used program's body is checked in: its own names, this graph."""
        return CheckContext(sub, self.resolver, self.stack + (sub.file,), {sub.file: sub.source},
                            nodes=self.nodes, loops=self.loops, input_names={p.name for p in sub.inputs},
                            gold_names={g.id for g in sub.golds})

    def error(self, msg: str, span: Span | None, hint: str | None = None):
        self.diags.append(Diagnostic("error", msg, span, hint))

    def warn(self, msg: str, span: Span | None, hint: str | None = None):
        self.diags.append(Diagnostic("warning", msg, span, hint))

    def mark_used(self, ref: ir.Ref):
        if isinstance(ref, ir.NodeRef):
            self.used.add(ref.node)


@dataclass
class Scope:
    """What names mean at one point: name -> Ref, plus the enclosing loops."""

    names: dict[str, ir.Ref]
    loops: tuple[str, ...]
    prefix: str  # node id prefix of an inlined program ("best/")
    suffix: str  # node id suffix of a repeat iteration ("#2")
    once: bool = False  # inside a repeat over budget: each repeat's body is checked once, not unrolled
