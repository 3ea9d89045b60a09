"""Regex literals: `regex(...)` and `regex_all(...)` patterns are compiled at check time, so a bad
one fails the check (pointing at the bad character) and not every example at run time; a `group=`
past the pattern's groups is reported too.
"""
from __future__ import annotations

import re

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext
from s2c.dsl import ast as A
from s2c.errors import Span, source_lines


def check_regex(ctx: CheckContext, func: str, lowered: dict[str, ir.IRExpr], src: dict[str, A.Expr]):
    """Compile a regex literal now, so that a bad one fails the check and not every example."""
    pattern = lowered["pattern"]
    if not (isinstance(pattern, ir.Const) and isinstance(pattern.value, str)):
        if isinstance(pattern, ir.Const):  # not a literal: check_arg reported it
            ctx.error(f"{func}(): 'pattern' must be a string (a regular expression in quotes)",
                      src["pattern"].span)
        return
    try:
        rx = re.compile(pattern.value)
    except re.error as e:
        regex_error(ctx, f"{func}()", e, src["pattern"])
        return
    except OverflowError as e:  # a{99999999999}
        ctx.error(f"{func}(): bad regular expression: {e}", src["pattern"].span)
        return
    except RecursionError:  # only nesting makes the regex parser recurse this deep
        ctx.error(f"{func}(): regular expression nested too deeply", src["pattern"].span)
        return
    group = lowered.get("group")
    if "group" in src and isinstance(group, ir.Const) and isinstance(group.value, int) \
            and not isinstance(group.value, bool) and group.value > rx.groups:
        has = f"only {rx.groups}" if rx.groups else "no"
        ctx.error(f"{func}(): group={group.value}, but the pattern has {has} group{'s' * (rx.groups != 1)}",
                  src["group"].span, "group=0 is the whole match; each (...) in the pattern is a group")


def regex_error(ctx: CheckContext, what: str, e: re.error, lit: A.Expr):
    """Report a pattern that does not compile, at the bad character where it can be found."""
    ctx.error(f"{what}: bad regular expression: {e.msg}" + (f" (at {e.pos + 1})" if e.pos else ""),
              _regex_span(lit, e.pos, ctx.sources),
              "Python's re syntax; to match a special character itself, put \\ before it")


def _regex_span(lit: A.Expr, pos: int | None, sources: dict[str, str]) -> Span | None:
    """The character of a regex literal an error is at, when the literal is written as its value
    (one line, no escapes); else the whole literal."""
    span = lit.span
    if not (isinstance(lit, A.Text) and span and not lit.long and pos is not None and span.end_line == span.line):
        return span
    line = source_lines(sources.get(span.file, ""))[span.line - 1:span.line] or [""]
    written = line[0][span.col - 1 : (span.end_col or 1) - 1]
    quote = written.find('"') + 1
    if written[quote:-1] != lit.value:
        return span
    col = span.col + quote + pos
    return Span(span.file, span.line, col, span.line, col + 1)
