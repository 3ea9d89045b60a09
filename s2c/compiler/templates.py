"""Prompts are jinja2 templates, rendered in jinja's sandbox with undefined names as errors.

`analyze` finds a template's free variables statically (jinja2.meta) and where each is first
used, so errors point into the .s2 file, not into the template string. It also finds what would
fail on the first render: unknown filters and tests, `loop` outside a `{% for %}`, and nesting
deeper than the language's limits (past them jinja's recursive parser and the Python code it
generates break).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from s2c.dsl.ast import MAX_BLOCK_DEPTH, MAX_EXPR_DEPTH, Text
from s2c.errors import did_you_mean

# Names jinja itself provides inside templates.
JINJA_BUILTINS = {"loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none"}


# What a template may read of `loop` in a {% for %}: plain numbers, flags and the items themselves.
LOOP_FIELDS = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
                         "depth0", "previtem", "nextitem"})


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox, with `loop.index0` and its kind read directly: the sandbox's
    safety checks on them (what it would allow anyway) were half the cost of rendering a prompt
    with a {% for %} (BSM's merge: 24 -> 12 us)."""

    def getattr(self, obj, attribute):
        if type(obj) is LoopContext and attribute in LOOP_FIELDS:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


@functools.lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return _Sandbox(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


# Rendering a prompt with user data can fail on that data ({{ x.field }} on text, {{ xs[3] }} on a
# short list, {{ n + 1 }} on text): a failure of that example's value, not a bug in s2c.
RENDER_ERRORS = (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError)


@functools.lru_cache(maxsize=4096)
def compiled(source: str):
    template = environment().from_string(source)
    # jinja keeps a template's globals as a ChainMap over the environment's, and copies them into
    # every render's context: iterating a ChainMap is slow Python, half of rendering BSM's merge
    # prompt (17.6 -> 9 us). The environment's globals never change after it is made: a plain dict.
    template.globals = dict(template.globals)
    return template


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
class Problem:
    """A mistake in a template that parses, at a template position (1-based)."""

    message: str
    line: int
    col: int
    width: int = 1
    hint: str | None = None


@dataclass(frozen=True)
class TemplateInfo:
    variables: dict[str, tuple[int, int]]  # free variable -> template (line, col), 1-based; read-only
    syntax_error: tuple[str, int] | None  # message, template line
    problems: tuple[Problem, ...] = ()
    complete: bool = True  # False when the variables could not all be found (a problem hides them)


def analyze(text: Text) -> TemplateInfo:
    return _analyze(text.value)


@functools.lru_cache(maxsize=4096)  # a prompt in `repeat 64:` is analyzed once, not 64 times
def _analyze(source: str) -> TemplateInfo:
    env = environment()
    lines = source.split("\n")
    try:
        too_deep = _lexed_too_deep(source, lines)
        if too_deep:  # jinja's parser would run out of stack before saying anything useful
            return TemplateInfo({}, None, (too_deep,), complete=False)
        tree = env.parse(source)
    except TemplateSyntaxError as e:
        return TemplateInfo({}, (e.message or "template syntax error", e.lineno or 1))
    except RecursionError:  # past the lexed limits, only nesting makes jinja's parser recurse this deep
        return TemplateInfo({}, None, (_deep_problem("expression", 1, 1),), complete=False)
    problems = _tree_problems(tree, lines)
    if any(p.message.startswith("template nested") for p in problems):
        return TemplateInfo({}, None, problems, complete=False)
    try:
        names = meta.find_undeclared_variables(tree) - JINJA_BUILTINS
    except TemplateSyntaxError as e:  # TemplateAssertionError: what jinja's code generator refuses
        if problems:  # an unknown filter or test, reported above with its position
            return TemplateInfo({}, None, problems, complete=False)
        return TemplateInfo({}, (e.message or "template error", e.lineno or 1))
    where: dict[str, tuple[int, int]] = {}
    for lineno, kind, value in env.lex(source):
        if kind == "name" and value in names and value not in where:
            line = lines[lineno - 1] if lineno - 1 < len(lines) else ""
            m = re.search(r"(?<![\w.])" + re.escape(value) + r"(?!\w)", _code_only(line))
            where[value] = (lineno, (m.start() + 1) if m else 1)
    for n in names:
        where.setdefault(n, (1, 1))
    return TemplateInfo(dict(sorted(where.items(), key=lambda kv: kv[1])), None, problems)


# ---------------------------------------------------------------- nesting limits
# Tags that open a block closed by {% end... %}; `set` only without `=` ({% set x %}...{% endset %}).
_BLOCK_TAGS = {"if", "for", "macro", "call", "filter", "with", "block", "autoescape", "set"}
_OPEN, _CLOSE = "([{", ")]}"


def _deep_problem(what: str, line: int, col: int) -> Problem:
    if what == "block":
        return Problem(f"template nested too deeply: blocks nest at most {MAX_BLOCK_DEPTH} deep", line, col, 2,
                       "flatten the {% if %} / {% for %} blocks, or compute a value in the program first")
    return Problem(f"template nested too deeply: expressions nest at most {MAX_EXPR_DEPTH} deep", line, col, 1,
                   "compute the value in the program (x = ...) and print it with {{ x }}")


def _nth(line: str, token: str, n: int) -> int:
    """The column (1-based) of the n-th occurrence of `token` in a line, else 1."""
    i = -1
    for _ in range(n):
        i = line.find(token, i + 1)
        if i < 0:
            return 1
    return i + 1


def _lexed_too_deep(source: str, lines: list[str]) -> Problem | None:
    """Brackets and blocks past the limits, found with jinja's lexer (which does not recurse)."""
    brackets = blocks = 0
    tag, assigns = None, False
    seen: dict[tuple[int, str], int] = {}  # (line, token) -> how many so far: where the caret goes
    for lineno, kind, value in environment().lex(source):
        if kind in ("block_begin", "operator"):
            key = (lineno, value)
            seen[key] = seen.get(key, 0) + 1
        if kind == "block_begin":
            tag, assigns, begin = "", False, (lineno, _nth(_line(lines, lineno), value, seen[(lineno, value)]))
        elif kind == "name" and tag == "":
            tag = value
            blocks -= value.startswith("end")
        elif kind == "operator" and value == "=":
            assigns = True
        elif kind == "block_end":
            if tag in _BLOCK_TAGS and not (tag == "set" and assigns):
                blocks += 1
                if blocks > MAX_BLOCK_DEPTH:
                    return _deep_problem("block", *begin)
            tag = None
        elif kind == "operator" and value in _OPEN:
            brackets += 1
            if brackets > MAX_EXPR_DEPTH:
                return _deep_problem("expression", lineno, _nth(_line(lines, lineno), value, seen[(lineno, value)]))
        elif kind == "operator" and value in _CLOSE:
            brackets = max(0, brackets - 1)
    return None


# Statements that hold a body of others, and expressions that are not leaves: what "nested" counts.
_BLOCK_NODES = (nodes.If, nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.With, nodes.Block,
                nodes.AssignBlock, nodes.Scope, nodes.ScopedEvalContextModifier)
_LEAVES = (nodes.Name, nodes.Const, nodes.TemplateData)


def _tree_problems(tree: nodes.Template, lines: list[str]) -> tuple[Problem, ...]:
    """Unknown filters and tests, `loop` outside a for body, nesting past the limits (an iterative
    walk: operator chains and filter chains nest without brackets)."""
    env = environment()
    out: list[Problem] = []
    loop_assigned = False  # {% set loop = ... %}: then `loop` is a variable like any other
    stack: list[tuple[nodes.Node, int, int, bool]] = [(tree, 0, 0, False)]
    while stack:
        node, exprs, blocks, in_loop = stack.pop()
        exprs += isinstance(node, nodes.Expr) and not isinstance(node, _LEAVES)
        blocks += isinstance(node, _BLOCK_NODES)
        line = getattr(node, "lineno", 1) or 1
        if exprs > MAX_EXPR_DEPTH or blocks > MAX_BLOCK_DEPTH:
            return (_deep_problem("expression" if exprs > MAX_EXPR_DEPTH else "block", line,
                                  _find(lines, line, r"\{[{%]")),)
        if isinstance(node, (nodes.Filter, nodes.Test)) and node.name:
            known = env.filters if isinstance(node, nodes.Filter) else env.tests
            if node.name not in known:
                out.append(_unknown(node, known, lines))
        elif isinstance(node, nodes.Name) and node.name == "loop" and node.ctx == "load" and not in_loop:
            out.append(Problem("'loop' is only defined inside a {% for %} block", line,
                               _find(lines, line, r"(?<![\w.])loop(?!\w)"), 4,
                               "loop.index, loop.first, ... describe the jinja for loop around them"))
        elif isinstance(node, nodes.Name) and node.name == "loop":
            loop_assigned |= node.ctx == "store"
        elif isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            tag = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from",
                   nodes.Extends: "extends"}[type(node)]
            out.append(Problem(f"{{% {tag} %}} cannot load other templates in a prompt", line,
                               _find(lines, line, r"\{%-?\s*" + tag), 2,
                               'a prompt is one template; to keep it in a file, write llm(template="file.j2")'))
        children = [(c, in_loop) for c in node.iter_child_nodes()]
        if isinstance(node, nodes.For):  # loop is defined in the body only, not in iter, test or else
            body = {id(n) for n in node.body}
            children = [(c, id(c) in body) for c, _ in children]
        stack.extend((c, exprs, blocks, inner) for c, inner in reversed(children))
    if loop_assigned:
        out = [p for p in out if not p.message.startswith("'loop'")]
    return tuple(sorted(out, key=lambda p: (p.line, p.col)))


def _unknown(node: nodes.Filter | nodes.Test, known, lines: list[str]) -> Problem:
    kind = "filter" if isinstance(node, nodes.Filter) else "test"
    where = (r"(?:\|\s*|filter\s+)(" if kind == "filter" else r"\bis\s+(?:not\s+)?(") + re.escape(node.name) + r")\b"
    hint = did_you_mean(node.name, known) or \
        f"see jinja's list: https://jinja.palletsprojects.com/en/stable/templates/#list-of-builtin-{kind}s"
    return Problem(f"unknown {kind} '{node.name}'", node.lineno, _find(lines, node.lineno, where, group=1),
                   len(node.name), hint)


def _line(lines: list[str], n: int) -> str:
    return lines[n - 1] if 0 < n <= len(lines) else ""  # jinja also counts a lone \r as a line break


def _find(lines: list[str], line: int, pattern: str, group: int = 0) -> int:
    """The column of a pattern in a template line's code, else in its text (a tag over several
    lines has code without its {{ on the line), else 1."""
    m = re.search(pattern, _code_only(_line(lines, line))) or re.search(pattern, _line(lines, line))
    return m.start(group) + 1 if m else 1


def _code_only(line: str) -> str:
    """Blank out the literal text of a template line, keeping {{ }} / {% %} parts in place."""
    out = [" "] * len(line)
    for m in re.finditer(r"\{\{.*?(\}\}|$)|\{%.*?(%\}|$)", line):
        out[m.start() : m.end()] = line[m.start() : m.end()]
    return "".join(out)
