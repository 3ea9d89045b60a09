"""Check a parsed program and lower it into the flat IR (s2c.compiler.ir).

Every problem is collected as a Diagnostic with a span; nothing stops at the first error except
syntax errors (which the parser raises). The passes live in this package's modules, one concern
each, and share one CheckContext (context.py); they run in this order:

    body.lower_body        declarations (`use`: uses.py), then each statement: names (names.py),
                           expressions and their types (exprs.py, types.py, regex.py), llm calls
                           and their prompts (llm.py, prompts.py), repeat within the unrolling
                           budget (budget.py), used programs inlined
    distill.lower_distill  System-1 tasks, which may read program inputs only; keep rules
    scoring.lower_eval     metrics and the parse line, which alone may read gold fields
    lint.unused            inputs and values nothing reads
    constraint.unconstrained_parses  calls only a parse reads, with no constraint (constraint.py)
    prune.unread_rounds    unrolled copies nothing reads (a while's last feedback) are dropped

    >>> from s2c.compiler.pipeline import check_file
    >>> [d.message for d in check_file("bsm.s2").diagnostics]
    []
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.check import body, constraint, distill, lint, prune, scoring
from s2c.compiler.check.budget import MAX_LLM_NODES, MAX_NODES, MAX_REPEAT
from s2c.compiler.check.context import CheckContext, Resolver, Scope
from s2c.dsl import ast as A
from s2c.errors import Diagnostic

__all__ = ["MAX_LLM_NODES", "MAX_NODES", "MAX_REPEAT", "check"]


def check(program: A.Program, *, resolver: Resolver | None = None) -> ir.CheckedProgram:
    """`resolver` finds the programs a `use` names (s2c.compiler.pipeline.resolver)."""
    ctx = CheckContext.for_program(program, resolver)
    scope = Scope({}, (), "", "")
    body.lower_body(ctx, scope)
    tasks, keeps, fmt = distill.lower_distill(ctx, scope)
    metrics, parse = scoring.lower_eval(ctx, scope)
    lint.unused(ctx)
    constraint.unconstrained_parses(ctx, tasks)
    if not any(d.severity == "error" for d in ctx.diags):
        prune.unread_rounds(ctx, tasks, keeps, metrics)
    return ir.CheckedProgram(
        program=program, nodes=ctx.nodes, loops=ctx.loops, outputs=ctx.outputs, inputs=program.inputs,
        golds=tuple(g.id for g in program.golds), tasks=tasks, keeps=keeps, format=fmt,
        metrics=metrics, parse=parse, diagnostics=sorted(ctx.diags, key=Diagnostic.sort_key), sources=ctx.sources,
    )
