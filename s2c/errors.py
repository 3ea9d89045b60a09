"""User-facing errors: a location, a message, the source line with a caret, and a hint.

A user's mistake is an `S2Error` (printed without a traceback); a bug in s2c keeps its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of a source file. Lines and columns are 1-based; end is exclusive."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning"
    message: str
    span: Span | None = None
    hint: str | None = None

    def sort_key(self):
        s = self.span
        return (s.file, s.line, s.col) if s else ("", 0, 0)

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error: msg`, then the source line with a caret, then the hint."""
        head = f"{self.span}: " if self.span else ""
        out = [f"{head}{self.severity}: {self.message}"]
        if self.span and source is not None:
            lines = source_lines(source)
            if 1 <= self.span.line <= len(lines):
                text = lines[self.span.line - 1].translate(_LINE_BREAKS)
                gutter = str(self.span.line)
                pad = " " * len(gutter)
                width = 1
                if self.span.end_line == self.span.line and self.span.end_col:
                    width = max(1, self.span.end_col - self.span.col)
                out.append(f"{pad} |")
                out.append(f"{gutter} | {text}")
                out.append(f"{pad} | {' ' * (self.span.col - 1)}{'^' * width}")
        if self.hint:
            out.append(f"  = hint: {self.hint}")
        return "\n".join(out)


class S2Error(Exception):
    """A mistake in user input (program, data, flags), with a location where there is one."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.diagnostic = Diagnostic("error", message, span, hint)

    def render(self, source: str | None = None) -> str:
        return self.diagnostic.render(source)


class CheckError(S2Error):
    """A program failed its checks; carries every diagnostic, in source order."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.sources = sources or {}
        errors = [d for d in self.diagnostics if d.severity == "error"]
        first = errors[0] if errors else self.diagnostics[0]
        super().__init__(first.message, first.span, first.hint)

    def render(self, source: str | None = None) -> str:
        return render_all(self.diagnostics, self.sources)


class MissingExtra(S2Error):
    """An optional package is not installed; the message names the extra of s2c that installs it."""


def require(module: str, extra: str, what: str, *, install: str | None = None, error: type = MissingExtra):
    """`importlib.import_module(module)`, or `error` (one line: what needs which package, and the
    pip command) when `module` or the package it is in is not installed. Any other failure of the
    import, a missing dependency of that package included, propagates as it is: that is a broken
    install, not a missing extra. `install` replaces `pip install 's2c[extra]'` in the message."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not e.name or not (module == e.name or module.startswith(e.name + ".")):
            raise
        install = install or f"pip install 's2c[{extra}]'"
        raise error(f"{what} needs {e.name}, which is not installed: {install}") from e


def source_lines(source: str) -> list[str]:
    """The lines of a source file as the lexer counts them: split at "\\n" only (not at a form feed,
    U+2028 or U+0085, which `str.splitlines` also breaks at), so line N is the line errors name."""
    lines = [line.removesuffix("\r") for line in source.split("\n")]
    return lines[:-1] if lines and not lines[-1] else lines  # like splitlines: no line after the last "\n"


# Characters that end a line for str.splitlines (and for a terminal) but not for the lexer: shown as
# a space in a quoted line, so the quote stays one line and the caret stays under its column.
_LINE_BREAKS = str.maketrans({c: " " for c in "\t\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def render_all(diagnostics: list[Diagnostic], sources: dict[str, str]) -> str:
    parts = [d.render(sources.get(d.span.file) if d.span else None) for d in diagnostics]
    n_err = sum(d.severity == "error" for d in diagnostics)
    n_warn = len(diagnostics) - n_err
    if diagnostics:
        parts.append(f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
    return "\n".join(parts)


def did_you_mean(name: str, candidates) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
