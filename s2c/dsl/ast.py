"""AST of a .s2 program: plain frozen dataclasses, each with the source span it came from.

Spans are excluded from equality (`compare=False`) so that a parse -> print -> parse round trip
can be checked with `==`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Union

from s2c.errors import Span

# ---------------------------------------------------------------- limits of the language
# Documented in docs/language.md#limits. Each keeps s2c's recursive stages (the tree transformer, the
# checker, jinja's parser and code generator) far from Python's recursion limit, and each is far
# beyond what a program written by hand needs.
MAX_BLOCK_DEPTH = 16  # for / repeat inside one another; also {% if %}, {% for %}... in a template
#                       (the Python code jinja generates allows 20 nested loops)
MAX_EXPR_DEPTH = 32  # calls, lists and dicts inside one another; in a template also brackets,
#                      filters, attributes and operators (jinja's parser takes ~14 frames a level)
MAX_USE_DEPTH = 8  # programs using programs using programs...: each level inlines a whole checker
MAX_NUMBER = 10**15  # the size of a number literal: exact as a float; no option or argument needs more


def _span():
    return field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------- text with a source map
@dataclass(frozen=True)
class Text:
    """A string literal. `origin[i]` = (file line, column of character 0) of line i of `value`,
    so errors found inside a jinja template point into the .s2 file."""

    value: str
    long: bool = field(default=False, compare=False)  # written as a triple-quoted block
    origin: tuple[tuple[int, int], ...] = field(default=(), compare=False, repr=False)
    span: Span | None = _span()

    def locate(self, line: int, col: int = 1) -> tuple[int, int]:
        """Template line/col (1-based) -> file line/col."""
        if not self.origin:
            return (self.span.line, self.span.col) if self.span else (1, 1)
        i = min(max(line, 1), len(self.origin)) - 1
        fline, fcol = self.origin[i]
        return fline, fcol + col - 1


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Name:
    id: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Literal:
    value: Any  # str | int | float | bool | None   (strings are `Text`)
    span: Span | None = _span()


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class DictExpr:
    pairs: tuple[tuple["Expr", "Expr"], ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Expr", ...] = ()
    kwargs: tuple[Kwarg, ...] = ()
    span: Span | None = _span()
    func_span: Span | None = _span()

    def kwarg(self, name: str) -> "Expr | None":
        return next((k.value for k in self.kwargs if k.name == name), None)


@dataclass(frozen=True)
class BinOp:
    """`left OP right`: + - * / // % on numbers; + also joins two texts or two lists; the
    comparisons == != < <= > >=; and, or."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True)
class Not:
    """`not operand`."""

    operand: "Expr"
    span: Span | None = _span()


Expr = Union[Name, Literal, Text, ListExpr, DictExpr, Call, BinOp, Not]


# ---------------------------------------------------------------- declarations and statements
@dataclass(frozen=True)
class Header:
    name: str
    description: Text
    span: Span | None = _span()


@dataclass(frozen=True)
class Param:
    name: str
    type: str = "text"  # text | list | number
    span: Span | None = _span()


@dataclass(frozen=True)
class InputDecl:
    params: tuple[Param, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class GoldDecl:
    names: tuple[Name, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class UseDecl:
    name: str
    path: Text | None = None
    span: Span | None = _span()


@dataclass(frozen=True)
class LLMAssign:
    """`target = llm(options) \"\"\"prompt\"\"\"`"""

    target: str
    kwargs: tuple[Kwarg, ...]
    prompt: Text | None
    span: Span | None = _span()

    def kwarg(self, name: str) -> Expr | None:
        return next((k.value for k in self.kwargs if k.name == name), None)


@dataclass(frozen=True)
class Assign:
    target: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class For:
    """`for var in iterable:`, or `for index, var in enumerate(iterable):` (index set)."""

    var: str
    iterable: Expr
    body: tuple["Stmt", ...]
    span: Span | None = _span()
    index: str | None = None


@dataclass(frozen=True)
class Repeat:
    """`repeat count:`, or `repeat count as index:`."""

    count: int
    body: tuple["Stmt", ...]
    span: Span | None = _span()
    index: str | None = None


@dataclass(frozen=True)
class Scan:
    """`scan var in iterable up to bound:` (or `scan index, var in enumerate(iterable) up to bound:`):
    the body runs once per item, in order, each iteration reading the values the last one left."""

    var: str
    iterable: Expr
    bound: int
    body: tuple["Stmt", ...]
    span: Span | None = _span()
    index: str | None = None


@dataclass(frozen=True)
class While:
    """`while cond up to bound:`: at most `bound` rounds, each run only while `cond` (read before
    it, on the values the round before left) is true."""

    cond: Expr
    bound: int
    body: tuple["Stmt", ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class If:
    """`if cond:` then `else:` (orelse empty without it)."""

    cond: Expr
    body: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True)
class Output:
    name: str
    value: Expr | None = None
    span: Span | None = _span()


Stmt = Union[LLMAssign, Assign, For, Repeat, Scan, While, If]
STATEMENTS = (LLMAssign, Assign, For, Repeat, Scan, While, If)  # what may stand in a program's body


@dataclass(frozen=True)
class Task:
    """`task NAME(target=…, weight=…, system=…) \"\"\"System-1 prompt\"\"\"`"""

    name: str
    kwargs: tuple[Kwarg, ...]
    prompt: Text | None
    span: Span | None = _span()

    def kwarg(self, name: str) -> Expr | None:
        return next((k.value for k in self.kwargs if k.name == name), None)


@dataclass(frozen=True)
class TaskFor:
    var: str
    iterable: Expr
    tasks: tuple[Task, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Keep:
    rule: Call
    span: Span | None = _span()


@dataclass(frozen=True)
class Distill:
    format: str | None
    items: tuple[Union[Task, TaskFor, Keep], ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Metric:
    call: Call
    span: Span | None = _span()


@dataclass(frozen=True)
class Parse:
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class Eval:
    items: tuple[Union[Metric, Parse], ...]
    span: Span | None = _span()


Item = Union[InputDecl, GoldDecl, UseDecl, LLMAssign, Assign, For, Repeat, Scan, Output, Distill, Eval]


@dataclass(frozen=True)
class Program:
    file: str = field(compare=False)
    header: Header
    items: tuple[Item, ...]
    source: str = field(default="", compare=False, repr=False)

    # convenience views -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.header.name

    @property
    def inputs(self) -> tuple[Param, ...]:
        return tuple(p for i in self.items if isinstance(i, InputDecl) for p in i.params)

    @property
    def golds(self) -> tuple[Name, ...]:
        return tuple(n for i in self.items if isinstance(i, GoldDecl) for n in i.names)

    @property
    def outputs(self) -> tuple[Output, ...]:
        return tuple(i for i in self.items if isinstance(i, Output))

    @property
    def distill(self) -> Distill | None:
        return next((i for i in self.items if isinstance(i, Distill)), None)

    @property
    def eval(self) -> Eval | None:
        return next((i for i in self.items if isinstance(i, Eval)), None)


def dump(node: Any, indent: int = 0) -> str:
    """A stable, span-free text dump of an AST (the golden parse files)."""
    pad = "  " * indent
    if isinstance(node, Text):
        return f"{pad}Text{'(long)' if node.long else ''} {node.value!r}"
    if is_dataclass(node):
        parts = [f"{pad}{type(node).__name__}"]
        for f in fields(node):
            if not f.compare or f.name == "source":
                continue
            v = getattr(node, f.name)
            if isinstance(v, tuple) and v and not isinstance(v[0], (str, int, float)):
                parts.append(f"{pad}  {f.name}:")
                for x in v:
                    if isinstance(x, tuple):  # dict pairs
                        parts.append(dump(x[0], indent + 2))
                        parts.append(dump(x[1], indent + 3))
                    else:
                        parts.append(dump(x, indent + 2))
            elif is_dataclass(v):
                parts.append(f"{pad}  {f.name}:")
                parts.append(dump(v, indent + 2))
            elif v not in (None, (), ""):
                parts.append(f"{pad}  {f.name}: {v!r}")
        return "\n".join(parts)
    return f"{pad}{node!r}"
