"""Types: what a reference or an expression is (a text, a number, a list of them...) at a point
in the loops, and whether an argument has the kind its parameter needs.

A value defined inside a loop is a single value inside it and a list outside it: `type_of` counts
the loops the reader does not share with the value (`verdict` in `for cot in cots:` is a
list[text] after the loop).
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.check.constraint import json_fields, json_source
from s2c.compiler.check.context import CheckContext
from s2c.compiler.library import function
from s2c.compiler.types import ANY, JSON, NUMBER, TEXT, Param, Type
from s2c.dsl import ast as A

PARAM_TYPES = {"text": TEXT, "number": NUMBER, "list": TEXT.listed()}  # input declarations


def type_of(ctx: CheckContext, ref: ir.Ref, loops: tuple[str, ...]) -> Type:
    if isinstance(ref, ir.ItemRef):
        loop = ctx.loops[ref.loop]
        return type_of(ctx, loop.iterable, loop.loops).elem()
    node = ctx.nodes.get(ref.node)
    if node is None:  # `completion` in eval's parse, a gold field in a keep rule
        return TEXT
    common = ir.common_prefix(node.loops, loops)
    return node.type.listed(len(node.loops) - common)


def expr_type(ctx: CheckContext, e: ir.IRExpr, loops) -> Type:
    if isinstance(e, ir.Const):
        v = e.value
        if isinstance(v, bool):
            return Type("bool")
        if isinstance(v, (int, float)):
            return NUMBER
        if isinstance(v, list):  # [] joins any list: its elements' type comes from what is added
            return expr_type(ctx, ir.Const(v[0]), loops).listed() if v else ANY.listed()
        if isinstance(v, dict):
            return JSON
        return TEXT if isinstance(v, str) else ANY
    if isinstance(e, ir.RefExpr):
        return type_of(ctx, e.ref, loops)
    if isinstance(e, ir.ListE):
        return (expr_type(ctx, e.items[0], loops) if e.items else TEXT).listed()
    if isinstance(e, ir.LoopIndex):
        return NUMBER
    if isinstance(e, (ir.Pick, ir.When)):
        t = expr_type(ctx, e.then, loops)
        return t if t.base != "any" or e.otherwise is None else expr_type(ctx, e.otherwise, loops)
    if isinstance(e, ir.Gate):
        return BOOL
    if isinstance(e, ir.FnCall):
        if e.fn == "get" and len(e.args) == 2 and isinstance(e.args[1], ir.Const):
            fields = json_fields(json_source(ctx, e.args[0]))  # a json= call's declared field
            if fields and e.args[1].value in fields:
                return fields[e.args[1].value]
        fn = function(e.fn)
        ts = [expr_type(ctx, a, loops) for a in e.args]
        ts += [expr_type(ctx, v, loops) for _, v in e.kwargs]
        try:
            return fn.result(ts)
        except IndexError:
            return ANY
    raise TypeError(f"unknown IR expression {e!r}")  # a bug in s2c, not user input


def check_arg(ctx: CheckContext, prm: Param, value: ir.IRExpr, loops, func: str, src: A.Expr):
    """Report an argument of the wrong kind for its parameter (a list for a text, a text for a number...)."""
    if prm.kind == "literal":
        if not isinstance(value, ir.Const):
            ctx.error(f"{func}(): '{prm.name}' must be a literal, written in the program", src.span)
        return
    t = expr_type(ctx, value, loops)
    span = getattr(src, "span", None)
    if prm.kind == "list" and not t.is_list:
        ctx.error(f"{func}(): '{prm.name}' needs a list, but this is a single {t}", span,
                  "a list comes from llm(n=...), lines(), a for loop, or a list input")
    elif prm.kind in ("text", "number", "scalar") and t.depth > 0:
        ctx.error(f"{func}(): '{prm.name}' needs a single value, but this is a {t}", span,
                  "to apply it to each element, use: for x in LIST: y = " + func + "(x, ...)")
    elif prm.kind == "bool" and (t.depth > 0 or t.base not in ("bool", "any")):
        ctx.error(f"{func} needs true or false, but this is {'a text' if t == TEXT and not t.depth else 'a ' + str(t)}", span,
                  'compare it: x == "yes", n > 3, contains(x, "done")')
    elif prm.kind == "number" and t.base in ("text", "bool"):
        ctx.error(f"{func}(): '{prm.name}' needs a number, but this is {_a(t)}", span,
                  "write the number without quotes" if isinstance(src, A.Text)
                  else "read a number from a text with number(...)")
    elif prm.kind == "text" and t.base in ("number", "bool"):
        ctx.error(f"{func}(): '{prm.name}' needs a text, but this is {_a(t)}", span,
                  'write it in quotes: "..."' if isinstance(src, A.Literal) else "make it a text with wrap(...)")
    elif prm.at_least is not None and isinstance(value, ir.Const) and t.base == "number" \
            and (value.value != int(value.value) or value.value < prm.at_least):
        ctx.error(f"{func}(): '{prm.name}' must be a whole number >= {prm.at_least}", span)


def _a(t: Type) -> str:
    return "text" if t.base == "text" else f"a {t.base}"
