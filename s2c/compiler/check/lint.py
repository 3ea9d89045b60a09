"""Lint: warnings about a program that checks, but does less than it says: inputs and values
that nothing reads (but not one read where it has no value yet: that is an error already).
"""
from __future__ import annotations

from s2c.compiler.check.context import CheckContext
from s2c.errors import Span


def unused(ctx: CheckContext):
    """Warn about the program's own inputs and values that nothing reads (its used programs'
    are theirs to warn about), once per statement however often a repeat copied it."""
    for loop in ctx.loops.values():  # a loop reads its iterable
        ctx.mark_used(loop.iterable)
    if ctx.unreadable_prompt:  # a prompt could not be read: what it reads is a guess
        return
    warned: set[Span | None] = set()
    for node in ctx.nodes.values():
        if node.internal or node.origin_program != ctx.program.file or node.id in ctx.used:
            continue
        if node.span in ctx.read_too_early:  # an error says where it is read too early
            continue
        if node.kind == "input":
            ctx.warn(f"input '{node.name}' is never used", node.span)
        elif ("#" not in node.id or node.id.endswith("#1")) and node.span not in warned:
            warned.add(node.span)
            ctx.warn(f"value '{node.name}' is never used", node.span,
                     "use it, make it an output, or remove it")
