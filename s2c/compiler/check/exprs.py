"""Expressions: a literal, a name, a list, a dictionary or a function call becomes an IR
expression; names resolve in the scope, calls bind their arguments to the function's parameters
and each argument is checked against its parameter's kind (types.py, regex.py).
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.check.constraint import json_fields, json_source
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.names import undefined
from s2c.compiler.check.regex import check_regex
from s2c.compiler.check.types import check_arg, expr_type
from s2c.compiler.library import FUNCTIONS, OPERATORS
from s2c.compiler.types import NUMBER, TEXT, Param, Type
from s2c.dsl import ast as A
from s2c.errors import did_you_mean


def lower_expr(ctx: CheckContext, e: A.Expr, scope: Scope, *, extra: dict[str, ir.Ref] | None = None) -> ir.IRExpr:
    """`extra`: names readable here besides the scope's (`completion` in eval's parse, gold fields
    in a keep rule's options)."""
    if isinstance(e, A.Literal):
        return ir.Const(e.value)
    if isinstance(e, A.Text):
        return ir.Const(e.value)
    if isinstance(e, A.ListExpr):
        items = tuple(lower_expr(ctx, i, scope, extra=extra) for i in e.items)
        if all(isinstance(i, ir.Const) for i in items):
            return ir.Const([i.value for i in items])
        return ir.ListE(items)
    if isinstance(e, A.DictExpr):
        out = {}
        for k, v in e.pairs:
            kv, vv = lower_expr(ctx, k, scope), lower_expr(ctx, v, scope)
            if not (isinstance(kv, ir.Const) and isinstance(vv, ir.Const)):
                ctx.error("dictionary keys and values must be literals", k.span)
                continue
            if isinstance(kv.value, (list, dict)):  # a key is looked up by its value: one value
                ctx.error("a dictionary key must be a single value: text, a number, true, false or none",
                          k.span, 'e.g. map={"A": "B", "B": "A"}')
                continue
            out[kv.value] = vv.value
        return ir.Const(out)
    if isinstance(e, A.Name):
        ref = (extra or {}).get(e.id) or scope.names.get(e.id)
        if ref is None:
            undefined(ctx, e.id, e.span, scope, extra)
            return ir.Const(None)
        ctx.mark_used(ref)
        return ir.RefExpr(ref)
    if isinstance(e, A.Call):
        return lower_call(ctx, e, scope, extra)
    if isinstance(e, A.BinOp):
        return lower_binop(ctx, e, scope, extra)
    if isinstance(e, A.Not):
        x = lower_expr(ctx, e.operand, scope, extra=extra)
        check_arg(ctx, OPERATORS["not"].params[0], x, scope.loops, "'not'", e.operand)
        return ir.FnCall("not", (x,))
    raise TypeError(f"unknown expression {e!r}")  # a bug in s2c, not user input


def lower_call(ctx: CheckContext, call: A.Call, scope: Scope, extra=None) -> ir.IRExpr:
    fn = FUNCTIONS.get(call.func)
    if fn is None:
        if call.func in ctx.programs:
            ctx.error(
                f"program '{call.func}' can only be called as a whole statement: x = {call.func}(...)",
                call.func_span,
            )
        else:
            candidates = list(FUNCTIONS) + list(ctx.programs)
            hint = did_you_mean(call.func, candidates)
            if call.func == "llm":
                hint = 'llm(...) is a statement of its own: x = llm(...) """prompt"""'
            ctx.error(f"unknown function '{call.func}'", call.func_span, hint or "see docs/language.md#functions")
        for a in (*call.args, *(k.value for k in call.kwargs)):
            lower_expr(ctx, a, scope, extra=extra)
        return ir.Const(None)
    args, kwargs = bind_args(ctx, call, fn.params, f"{call.func}()")
    given = args | kwargs
    lowered = {p: lower_expr(ctx, v, scope, extra=extra) for p, v in given.items()}
    for prm in fn.params:
        if prm.name in lowered:
            check_arg(ctx, prm, lowered[prm.name], scope.loops, call.func, given[prm.name])
    if fn.name in ("regex", "regex_all") and "pattern" in lowered:
        check_regex(ctx, call.func, lowered, given)
    if fn.name == "get" and "key" in lowered:
        _check_field(ctx, lowered, given)
    pos = tuple(lowered[p.name] for p in fn.params if p.name in args)
    kws = tuple((p.name, lowered[p.name]) for p in fn.params if p.name in kwargs)
    return ir.FnCall(fn.name, pos, kws)


def _check_field(ctx: CheckContext, lowered: dict[str, ir.IRExpr], src: dict[str, A.Expr]):
    """get(x, "field") on a json= call's reply: the field must be one the call declares."""
    node = json_source(ctx, lowered["value"])
    key = lowered["key"]
    if node is None or not (isinstance(key, ir.Const) and isinstance(key.value, str)):
        return
    fields = json_fields(node)
    if key.value not in fields:
        ctx.error(f"get(): '{node.name}' has no field '{key.value}'", src["key"].span,
                  did_you_mean(key.value, fields) or f"its json= fields: {', '.join(fields)}")


COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


def lower_binop(ctx: CheckContext, e: A.BinOp, scope: Scope, extra=None) -> ir.IRExpr:
    """`a OP b`: numbers for every arithmetic operator, `+` also joins two texts or two lists;
    a comparison takes two single values (an order: two numbers or two texts); and / or take
    true or false."""
    a, b = lower_expr(ctx, e.left, scope, extra=extra), lower_expr(ctx, e.right, scope, extra=extra)
    ta, tb = (expr_type(ctx, x, scope.loops) for x in (a, b))
    if e.op in ("and", "or"):
        for x, side in ((a, e.left), (b, e.right)):
            check_arg(ctx, OPERATORS[e.op].params[0], x, scope.loops, f"'{e.op}'", side)
        return ir.FnCall(e.op, (a, b))
    if e.op in COMPARISONS:
        for t, side in ((ta, e.left), (tb, e.right)):
            if t.depth:
                ctx.error(f"'{e.op}' compares single values, but this is a {t}", getattr(side, "span", e.span),
                          "compare one element (first(xs), at(xs, 0)) or a count: count(xs) > 0")
                return ir.FnCall(e.op, (a, b))
        if e.op not in ("==", "!=") and "any" not in (ta.base, tb.base) and \
                not (ta.base == tb.base and ta.base in ("number", "text")):
            ctx.error(f"'{e.op}' orders two numbers or two texts, not {_a(ta)} and {_a(tb)}", e.span,
                      "read a number from a text with number(...)" if "number" in (ta.base, tb.base) else None)
        return ir.FnCall(e.op, (a, b))
    if "any" not in (ta.base, tb.base):
        if e.op == "+" and not _addable(ta, tb):
            if tb.depth and not ta.depth and ta.base == "text":  # memory = "" then memory + [x]
                hint = ('a list starts as [], not "": set it to [] before the loop, then add to it: '
                        "xs = xs + [x]")
            elif ta.depth and not tb.depth or tb.depth and not ta.depth:
                hint = "to add one value to a list, put it in a list: xs + [x]"
            elif "number" in (ta.base, tb.base):
                hint = 'to join a number to a text, make it a text: wrap(n) + "..."'
            else:
                hint = "+ adds two numbers, or joins two texts or two lists"
            ctx.error(f"'+' cannot join {_a(ta)} and {_a(tb)}", e.span, hint)
        elif e.op != "+":
            for t, side in ((ta, e.left), (tb, e.right)):
                if t != NUMBER:
                    ctx.error(f"'{e.op}' needs two numbers, but this is {_a(t)}", getattr(side, "span", e.span),
                              "read a number from a text with number(...)" if t == TEXT else None)
                    break
    return ir.FnCall(e.op, (a, b))


def _addable(ta: Type, tb: Type) -> bool:
    if ta.depth != tb.depth:
        return False
    if ta.depth:  # two lists: of the same kind of element
        return ta.base == tb.base or "any" in (ta.base, tb.base)
    return ta.base == tb.base and ta.base in ("number", "text")


def _a(t: Type) -> str:
    return f"a {t}" if t.depth or t.base != "text" else "a text"


def bind_args(ctx: CheckContext, call: A.Call, params: tuple[Param, ...], what: str):
    """Positional and keyword arguments -> {param: expr}; report unknown/missing/extra."""
    names = [p.name for p in params]
    args: dict[str, A.Expr] = {}
    kwargs: dict[str, A.Expr] = {}
    if len(call.args) > len(params):
        ctx.error(f"{what} takes at most {len(params)} argument(s), got {len(call.args)}",
                  getattr(call.args[len(params)], "span", call.span))
    for p, a in zip(params, call.args):
        args[p.name] = a
    unknown = False
    for kw in call.kwargs:
        if kw.name not in names:
            ctx.error(f"{what} has no parameter '{kw.name}'", kw.span,
                      did_you_mean(kw.name, names) or f"its parameters: {', '.join(names)}")
            unknown = True
        elif kw.name in args or kw.name in kwargs:
            ctx.error(f"{what}: '{kw.name}' given twice", kw.span)
        else:
            kwargs[kw.name] = kw.value
    for p in params:
        if p.required and p.name not in args and p.name not in kwargs and not unknown:
            ctx.error(f"{what} needs its '{p.name}' argument", call.span)
    return args, kwargs
