"""Prompts are jinja2 templates, rendered in jinja's sandbox with undefined names as errors.

`analyze` finds a template's free variables statically (jinja2.meta) and where each is first
used, so errors point into the .s2 file, not into the template string.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from s2c.dsl.ast import Text

# Names jinja itself provides inside templates.
JINJA_BUILTINS = {"loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none"}


@functools.lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False
    )
    return env


# Rendering a prompt with user data can fail on that data ({{ x.field }} on text, {{ xs[3] }} on a
# short list, {{ n + 1 }} on text): a failure of that example's value, not a bug in s2c.
RENDER_ERRORS = (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError)


@functools.lru_cache(maxsize=4096)
def compiled(source: str):
    return environment().from_string(source)


@functools.lru_cache(maxsize=4096)
def renderer(source: str):
    """The function that renders `source`. Most prompts are text with bare `{{ name }}` holes;
    those are joined directly, which is what jinja does for them (str() of each value, no
    autoescape, StrictUndefined) without building a jinja Context per call (a quarter of
    s2c's per-call CPU on the zero-latency bench). Everything else goes through jinja."""
    body = environment().parse(source).body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and all(
            isinstance(n, (nodes.TemplateData, nodes.Name)) for n in body[0].nodes):
        parts = [(False, n.data) if isinstance(n, nodes.TemplateData) else (True, n.name) for n in body[0].nodes]
        return functools.partial(_join, parts)
    if not body:
        return lambda variables: ""
    template = compiled(source)
    return lambda variables: template.render(variables)


def _join(parts: list[tuple[bool, str]], variables: dict) -> str:
    out = []
    for is_name, x in parts:
        if not is_name:
            out.append(x)
        elif x in variables:
            out.append(str(variables[x]))
        else:
            raise UndefinedError(f"'{x}' is undefined")
    return "".join(out)


def render(source: str, variables: dict) -> str:
    return renderer(source)(variables)


@dataclass(frozen=True)
class TemplateInfo:
    variables: dict[str, tuple[int, int]]  # free variable -> template (line, col), 1-based
    syntax_error: tuple[str, int] | None  # message, template line


def analyze(text: Text) -> TemplateInfo:
    env = environment()
    try:
        tree = env.parse(text.value)
    except TemplateSyntaxError as e:
        return TemplateInfo({}, (e.message or "template syntax error", e.lineno or 1))
    names = meta.find_undeclared_variables(tree) - JINJA_BUILTINS
    lines = text.value.split("\n")
    where: dict[str, tuple[int, int]] = {}
    for lineno, kind, value in env.lex(text.value):
        if kind == "name" and value in names and value not in where:
            line = lines[lineno - 1] if lineno - 1 < len(lines) else ""
            m = re.search(r"(?<![\w.])" + re.escape(value) + r"(?!\w)", _code_only(line))
            where[value] = (lineno, (m.start() + 1) if m else 1)
    for n in names:
        where.setdefault(n, (1, 1))
    return TemplateInfo(dict(sorted(where.items(), key=lambda kv: kv[1])), None)


def _code_only(line: str) -> str:
    """Blank out the literal text of a template line, keeping {{ }} / {% %} parts in place."""
    out = [" "] * len(line)
    for m in re.finditer(r"\{\{.*?(\}\}|$)|\{%.*?(%\}|$)", line):
        out[m.start() : m.end()] = line[m.start() : m.end()]
    return "".join(out)
