"""The unrolling budget: what a program may unroll into (docs/language.md#limits). `repeat` copies
its body, and nested repeats multiply: three levels of `repeat 64` are 262,144 calls and minutes of
checking. The budget is checked before a repeat unrolls, from the statements it would copy,
counting the programs they use as the size those inline into.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from s2c.compiler.check.context import CheckContext
from s2c.dsl import ast as A
from s2c.errors import S2Error

MAX_REPEAT = 64  # iterations of one repeat
MAX_LLM_NODES = 1_000  # LLM calls in the unrolled program (a call in a for loop counts once)
MAX_NODES = 10_000  # values of any kind in the unrolled program

Size = tuple[int, int]  # (LLM calls, values)


def within_budget(ctx: CheckContext, s: A.Repeat | A.Scan | A.While) -> bool:
    """Report a repeat or scan that would unroll past MAX_LLM_NODES or MAX_NODES, before it unrolls."""
    sizes: dict[Path, Size] = {}
    calls, values = _unrolled([s], lambda name: _program_size(ctx, ctx.programs.get(name), sizes, 1))
    have_calls = sum(n.kind == "llm" for n in ctx.nodes.values())
    for what, planned, have, limit in (("LLM calls", calls, have_calls, MAX_LLM_NODES),
                                       ("values", values, len(ctx.nodes), MAX_NODES)):
        if have + planned > limit:
            before = f" after the {have:,} before it" if have else ""
            loop = f"repeat {s.count}" if isinstance(s, A.Repeat) else \
                f"{'while' if isinstance(s, A.While) else 'scan'} up to {s.bound}"
            ctx.error(f"{loop} unrolls into {planned:,} {what}{before}; "
                      f"a program may have at most {limit:,}", s.span,
                      "lower the repeat counts (nested repeats multiply), or sample once with llm(n=...)")
            return False
    return True


def _program_size(ctx: CheckContext, sub: A.Program | None, sizes: dict[Path, Size], depth: int) -> Size | None:
    """(LLM calls, values) a used program inlines into, its own `use`s included (read here, as
    checking them waits until it is inlined); None for a name that is not a usable program."""
    if sub is None:
        return None
    key = Path(sub.file).resolve()
    if key not in sizes:
        sizes[key] = (0, 1)  # while counting it: a cycle, which its own check reports
        used: dict[str, A.Program] = {}
        for u in (i for i in sub.items if isinstance(i, A.UseDecl)):
            if depth < A.MAX_USE_DEPTH and ctx.resolver is not None:
                try:
                    used[u.name] = ctx.resolver(u.name, u.path.value if u.path else None, sub)[0]
                except (OSError, S2Error):  # reported when that program is checked
                    pass
        stmts = [i for i in sub.items if isinstance(i, A.STATEMENTS)]
        calls, values = _unrolled(stmts, lambda n: _program_size(ctx, used.get(n), sizes, depth + 1))
        sizes[key] = (calls, values + len(sub.inputs))
    return sizes[key]


def _unrolled(stmts, size_of: Callable[[str], Size | None]) -> Size:
    """(LLM calls, values) that statements become once every repeat is unrolled; `size_of(name)`
    is that of a used program, or None when `name` is not one."""
    calls = values = 0
    for s in stmts:
        c, v = 0, 1
        if isinstance(s, A.LLMAssign):
            c = 1
        elif isinstance(s, A.For):
            c, v = _unrolled(s.body, size_of)
            v += 1  # the items of the loop
        elif isinstance(s, A.If):  # both branches, and a gate for each
            c1, v1 = _unrolled(s.body, size_of)
            c2, v2 = _unrolled(s.orelse, size_of)
            c, v = c1 + c2, v1 + v2 + 2
        elif isinstance(s, (A.Repeat, A.Scan, A.While)):  # a scan unrolls once per item, up to its bound
            c, v = _unrolled(s.body, size_of)
            v += isinstance(s, A.While)  # its gate, per round
            count = s.count if isinstance(s, A.Repeat) else s.bound
            k = count if 1 <= count <= MAX_REPEAT else 0
            # a repeat with a bad count is reported, not unrolled; the visit still counts, so that
            # 64 x 64 x 64 x 64 repeats around a `repeat 0` are over budget, not 16.7M visits
            c, v = (k * c, k * v) if k else (0, 1)
        elif isinstance(s, A.Assign) and isinstance(s.value, A.Call):
            c, v = size_of(s.value.func) or (0, 0)
            v += 1
        calls, values = calls + c, values + v
    return calls, values
