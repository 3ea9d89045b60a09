"""Prompts: a jinja template, inline or read from a template= file next to the program, is analyzed
statically (s2c.compiler.templates.analyze); its syntax errors and problems are mapped back to the
.s2 file's line and column, and its free variables are resolved to the values they read.
"""
from __future__ import annotations

import re
import stat
from pathlib import Path

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.names import defined_later
from s2c.compiler.templates import analyze
from s2c.dsl import ast as A
from s2c.errors import Span, did_you_mean, source_lines


def template_vars(ctx: CheckContext, text: A.Text, what: str) -> list[tuple[str, Span]]:
    """Report the template's errors; its free variables, each where it is first used."""
    info = analyze(text)
    if info.syntax_error:
        msg, line = info.syntax_error
        fl, fc = text.locate(line, _jinja_error_col(msg, text.value, line))
        src_line = _source_line(ctx, text, fl)
        fc += len(src_line) - len(src_line.lstrip()) if src_line and fc == 1 else 0
        ctx.error(f"{what}: template syntax error: {msg}", Span(_file_of(ctx, text), fl, fc))
        ctx.unreadable_prompt = True
        return []
    for p in info.problems:
        fl, fc = text.locate(p.line, p.col)
        ctx.error(f"{what}: {p.message}", Span(_file_of(ctx, text), fl, fc, fl, fc + p.width), p.hint)
    if not info.complete:  # its variables are unknown: "never used" would be a guess
        ctx.unreadable_prompt = True
    out = []
    for var, (tl, tc) in info.variables.items():
        fl, fc = text.locate(tl, tc)
        out.append((var, Span(_file_of(ctx, text), fl, fc, fl, fc + len(var))))
    return out


def program_refs(ctx: CheckContext, text: A.Text, scope: Scope, what: str) -> dict[str, ir.Ref]:
    """A program prompt's variables -> the values they read (each one reported if it reads nothing)."""
    refs = {}
    for var, span in template_vars(ctx, text, what):
        ref = scope.names.get(var)
        if ref is None:
            if var in ctx.gold_names:
                ctx.error(f"{what} reads gold field '{var}'", span,
                          "only keep rules and metrics may read gold fields")
            elif not defined_later(ctx, var, span, what):
                ctx.error(f"{what} uses undefined variable '{var}'", span, did_you_mean(var, scope.names))
            continue
        ctx.mark_used(ref)
        refs[var] = ref
    return refs


def _file_of(ctx: CheckContext, text: A.Text) -> str:
    return text.span.file if text.span else ctx.program.file


def _source_line(ctx: CheckContext, text: A.Text, line: int) -> str:
    src = ctx.sources.get(_file_of(ctx, text), "")
    lines = source_lines(src)
    return lines[line - 1] if 0 < line <= len(lines) else ""


# jinja names some tokens in words; what they look like in a template
_JINJA_TOKENS = {"end of print statement": "}}", "end of statement block": "%}"}


def _jinja_error_col(msg: str, template: str, line: int) -> int:
    """jinja reports a line only: find the offending token of "unexpected 'X'" / "got 'X'" in it."""
    lines = template.split("\n")
    code = lines[line - 1] if 0 < line <= len(lines) else ""
    for m in re.finditer(r"(?:unexpected|got) '([^']+)'", msg):
        tok = _JINJA_TOKENS.get(m.group(1), m.group(1))
        i = code.find(tok)
        if i >= 0:
            return i + 1
    return 1


def load_template_file(ctx: CheckContext, value: A.Expr, what: str) -> A.Text | None:
    """`template="judge.j2"`: the file next to the program, as a prompt whose lines are its own."""
    if not (isinstance(value, A.Text)):
        ctx.error(f"{what}: template= takes a file name in quotes", getattr(value, "span", None))
        ctx.unreadable_prompt = True
        return None
    path = Path(ctx.program.file).parent / value.value
    try:
        body = _read_regular_file(path)
    except (FileNotFoundError, NotADirectoryError):
        ctx.error(f"{what}: template file '{value.value[:80]}' not found next to the program", value.span,
                  f"looked for {str(path)[:200]}")
        ctx.unreadable_prompt = True
        return None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        ctx.error(f"{what}: cannot read template file '{value.value[:80]}': {reason}", value.span)
        ctx.unreadable_prompt = True
        return None
    ctx.sources[str(path)] = body
    lines = body.rstrip("\n").split("\n")
    return A.Text("\n".join(lines), True, tuple((i + 1, 1) for i in range(len(lines))),
                  Span(str(path), 1, 1))


def _read_regular_file(path: Path) -> str:
    """A UTF-8 text file's content. Else FileNotFoundError (also for a name with a NUL in it),
    IsADirectoryError, OSError for a device or pipe (/dev/zero would be read forever, /dev/stdin
    would wait for input), or UnicodeDecodeError."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # a NUL in the name: no such file can exist
        raise FileNotFoundError(2, "No such file", str(path)) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(0, "not a regular file", str(path))
    return path.read_text(encoding="utf-8")
