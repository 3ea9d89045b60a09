"""What scores an answer: keep rules (distill's filters), eval's metrics and its parse line, and
the perturbed copies that `consistent` and `swap_inconsistency` compare with. These are the only
parts of a program that may read gold fields.
"""
from __future__ import annotations

from typing import Any

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.exprs import bind_args, lower_expr
from s2c.compiler.check.types import expr_type
from s2c.compiler.perturb import from_rule
from s2c.compiler.tables import KEEP_RULES, METRICS
from s2c.dsl import ast as A
from s2c.errors import did_you_mean


def _known(ctx: CheckContext, call: A.Call, table: dict, what: str, plural: str):
    """The parameters of a keep rule or metric by its name; None (reported) for an unknown name."""
    params = table.get(call.func)
    if params is None:
        ctx.error(f"unknown {what} '{call.func}'", call.func_span,
                  did_you_mean(call.func, table) or f"{plural}: {', '.join(table)}")
    return params


def lower_keep(ctx: CheckContext, k: A.Keep, scope: Scope) -> ir.KeepIR | None:
    """`scope`: the program's top level, after its body."""
    rule = k.rule
    params = _known(ctx, rule, KEEP_RULES, "keep rule", "rules")
    if params is None:
        return None
    args, kwargs = bind_args(ctx, rule, params, f"keep {rule.func}()")
    golds = {g: ir.NodeRef(f"gold:{g}") for g in ctx.gold_names}
    out: dict[str, Any] = {}
    for name, e in (args | kwargs).items():
        if name in ("answer", "samples"):
            out[name] = lower_expr(ctx, e, scope)
            if name == "samples" and not expr_type(ctx, out[name], ()).is_list:
                ctx.error("keep majority(): samples must be a list (e.g. an llm with n > 1)", e.span)
        elif name == "gold":
            if not (isinstance(e, A.Name) and e.id in ctx.gold_names):
                ctx.error("keep matches(): gold must name a gold field", getattr(e, "span", rule.span),
                          f"gold fields: {', '.join(sorted(ctx.gold_names)) or '(none; declare: gold NAME)'}")
            else:
                out["gold"] = e.id
        else:
            val = lower_expr(ctx, e, scope, extra=golds)
            if not isinstance(val, ir.Const):
                ctx.error(f"keep {rule.func}(): '{name}' must be a literal", getattr(e, "span", rule.span))
                continue
            out[name] = val.value
    if rule.func == "majority" and "min_share" in out:
        v = out["min_share"]
        if not isinstance(v, (int, float)) or not 0 <= v <= 1:
            ctx.error("keep majority(): min_share must be between 0 and 1", rule.span)
    pert = None
    if rule.func == "consistent" and check_perturbation(ctx, out, rule):
        pert = from_rule(out)
    return ir.KeepIR(rule.func, k.span, out, pert)


def check_perturbation(ctx: CheckContext, out: dict, rule: A.Call) -> bool:
    """True when `out` describes a valid perturbation (errors are reported)."""
    swap, shuffle = out.get("swap"), out.get("shuffle")
    if (swap is None) == (shuffle is None):
        ctx.error("consistent() needs exactly one perturbation: swap=[\"a\", \"b\"] or shuffle=\"field\"",
                  rule.span)
        return False
    before = len(ctx.diags)
    if swap is not None:
        if not (isinstance(swap, list) and len(swap) == 2 and all(isinstance(x, str) for x in swap)):
            ctx.error('swap= takes two input names in quotes: swap=["response_a", "response_b"]', rule.span)
        else:
            for f in swap:
                if f not in ctx.input_names:
                    ctx.error(f"swap=: '{f}' is not an input", rule.span, did_you_mean(f, ctx.input_names))
    if shuffle is not None and not isinstance(shuffle, str):
        ctx.error('shuffle= takes one input name in quotes: shuffle="choices"', rule.span)
    elif shuffle is not None and shuffle not in ctx.input_names:
        ctx.error(f"shuffle=: '{shuffle}' is not an input", rule.span, did_you_mean(str(shuffle), ctx.input_names))
    m = out.get("map")
    if m is not None and not (isinstance(m, dict) and all(isinstance(v, str) for v in m.values())):
        ctx.error('map= takes a dictionary of labels: {"A": "B", "B": "A", "C": "C"}', rule.span)
    return len(ctx.diags) == before


def lower_eval(ctx: CheckContext, scope: Scope) -> tuple[list[ir.MetricIR], ir.IRExpr | None]:
    """The eval section's metrics, and its parse line (which reads only `completion`)."""
    e = ctx.program.eval
    if e is None:
        return [], None
    metrics, parse = [], None
    for item in e.items:
        if isinstance(item, A.Parse):
            if parse is not None:
                ctx.error("eval has two parse = ... lines", item.span)
            parse = lower_expr(ctx, item.value, Scope({}, (), "", ""), extra={"completion": ir.NodeRef("completion")})
            continue
        metric = _lower_metric(ctx, item, scope)
        if metric is not None:
            metrics.append(metric)
    return metrics, parse


def _lower_metric(ctx: CheckContext, item: A.Metric, scope: Scope) -> ir.MetricIR | None:
    call = item.call
    params = _known(ctx, call, METRICS, "metric", "metrics")
    if params is None:
        return None
    args, kwargs = bind_args(ctx, call, params, f"metric {call.func}()")
    got = args | kwargs
    answer = lower_expr(ctx, got["answer"], scope) if "answer" in got else None
    gold = None
    if "gold" in got:
        g = got["gold"]
        if isinstance(g, A.Name) and g.id in ctx.gold_names:
            gold = g.id
        else:
            ctx.error(f"metric {call.func}(): the second argument must name a gold field",
                      getattr(g, "span", call.span),
                      f"gold fields: {', '.join(sorted(ctx.gold_names)) or '(none; declare: gold NAME)'}")
    options = {}
    for name, v in got.items():
        if name in ("answer", "gold"):
            continue
        val = lower_expr(ctx, v, scope)
        if not isinstance(val, ir.Const):
            ctx.error(f"metric {call.func}(): '{name}' must be a literal", getattr(v, "span", call.span))
            continue
        options[name] = val.value
    pert = None
    if call.func == "swap_inconsistency" and "swap" in options:
        swap = {"swap": options["swap"], "map": options.get("map")}
        if check_perturbation(ctx, swap, call):
            pert = from_rule(swap)
    return ir.MetricIR(call.func, item.span, answer, gold, options, pert)
