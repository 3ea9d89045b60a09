"""Used programs: `use NAME [from "PATH"]` finds the program (through the context's resolver) and
refuses cycles and composition past A.MAX_USE_DEPTH; a call `x = NAME(input=value, ...)` must
bind each of its inputs by name, to a value of the input's kind, and the program must have
exactly one output. (Inlining a well-formed call's body is body.lower_use.)
"""
from __future__ import annotations

from pathlib import Path

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.exprs import lower_expr
from s2c.compiler.check.names import ref_deps
from s2c.compiler.check.types import PARAM_TYPES, expr_type
from s2c.dsl import ast as A
from s2c.errors import Diagnostic, S2Error, did_you_mean


def resolve(ctx: CheckContext, item: A.UseDecl):
    """Add the program a `use` names to ctx.programs, or report why it cannot be used."""
    if item.name in ctx.programs:
        ctx.error(f"program '{item.name}' is already used", item.span)
        return
    if ctx.resolver is None:
        ctx.error(f"cannot resolve 'use {item.name}' here", item.span)
        return
    where = item.path.span if item.path else item.span
    try:
        sub, path = ctx.resolver(item.name, item.path.value if item.path else None, ctx.program)
    except FileNotFoundError as e:
        ctx.error(f"program '{item.name}' not found", where, str(e))
        ctx.broken_programs.add(item.name)
        return
    except IsADirectoryError as e:
        ctx.error(f"use {item.name}: {e}", where, f'name the program file: use {item.name} from "lib/{item.name}.s2"')
        ctx.broken_programs.add(item.name)
        return
    except S2Error as e:  # the used program does not parse, or cannot be read
        d = e.diagnostic
        if d.span is None:  # nothing to point at in that file: point at the `use` line
            d = Diagnostic(d.severity, f"use {item.name}: {d.message}", where, d.hint)
        ctx.diags.append(d)
        ctx.broken_programs.add(item.name)
        return
    if Path(path).resolve() in {Path(p).resolve() for p in ctx.stack}:  # "d/../a.s2" is a.s2
        chain = " -> ".join(Path(p).name for p in (*ctx.stack, path))
        ctx.error(f"program composition has a cycle: {chain}", item.span)
        ctx.broken_programs.add(item.name)
        return
    if len(ctx.stack) >= A.MAX_USE_DEPTH:
        chain = " -> ".join(Path(p).name for p in (*ctx.stack, path))
        ctx.error(f"programs compose at most {A.MAX_USE_DEPTH} deep: {chain}", item.span,
                  "use the innermost programs directly from an outer one")
        ctx.broken_programs.add(item.name)
        return
    ctx.sources[path] = sub.source
    ctx.programs[item.name] = sub


def bind_call(ctx: CheckContext, call: A.Call, scope: Scope, prefix: str) -> dict[str, ir.Ref] | None:
    """The used program's inputs -> what the call binds them to (an argument that is not a name
    gets an internal node `prefix + input`); None when the call has a mistake (reported)."""
    sub = ctx.programs[call.func]
    n_errors = len(ctx.diags)
    if call.args:
        ctx.error(f"program '{call.func}' takes its inputs by name: {call.func}(name=value, ...)",
                  call.args[0].span)
        for a in (*call.args, *(k.value for k in call.kwargs)):
            lower_expr(ctx, a, scope)
        return None
    sub_inputs = {p.name: p for p in sub.inputs}
    bound: dict[str, ir.Ref] = {}
    for kw in call.kwargs:
        if kw.name not in sub_inputs:
            ctx.error(f"program '{call.func}' has no input '{kw.name}'", kw.span,
                      did_you_mean(kw.name, sub_inputs) or f"its inputs: {', '.join(sub_inputs)}")
            lower_expr(ctx, kw.value, scope)
            continue
        expr = lower_expr(ctx, kw.value, scope)
        t = expr_type(ctx, expr, scope.loops)
        want = PARAM_TYPES[sub_inputs[kw.name].type]
        if want.is_list != t.is_list and t.base not in ("any", "json"):
            ctx.error(f"input '{kw.name}' of '{call.func}' is a {sub_inputs[kw.name].type}, "
                      f"but this is a {'list' if t.is_list else 'single value'}", kw.value.span)
        if isinstance(expr, ir.RefExpr):
            bound[kw.name] = expr.ref
        else:
            nid = f"{prefix}{kw.name}"
            ctx.nodes[nid] = ir.Node(nid, "transform", kw.name, kw.span, t, scope.loops,
                                     ref_deps(ctx, ir.refs_of(expr)), expr=expr, internal=True,
                                     origin_program=ctx.program.file)
            ctx.used.add(nid)
            bound[kw.name] = ir.NodeRef(nid)
    misspelled = any(k.name not in sub_inputs for k in call.kwargs)
    for name in sub_inputs:
        if name not in bound and name not in {k.name for k in call.kwargs} and not misspelled:
            ctx.error(f"program '{call.func}' needs its input '{name}'", call.span)
    if len(sub.outputs) != 1:
        ctx.error(f"program '{call.func}' has {len(sub.outputs)} outputs; a used program must have exactly one",
                  call.func_span)
    return None if len(ctx.diags) > n_errors else bound
