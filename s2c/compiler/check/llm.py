"""LLM calls: `x = llm(options)` and its prompt become an llm node. Its options are literals in
their ranges (functions.LLM_OPTIONS, LLM_RANGES), its prompt is inline or a template= file, and
what the prompt and system message read are its dependencies.
"""
from __future__ import annotations

from typing import Any

from s2c.calls import Sampling
from s2c.compiler import ir
from s2c.compiler.check import static
from s2c.compiler.check.constraint import constraint
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.exprs import lower_expr
from s2c.compiler.check.names import define, node_id, ref_deps
from s2c.compiler.check.prompts import load_template_file, program_refs
from s2c.compiler.tables import LLM_OPTIONS, LLM_RANGES
from s2c.compiler.types import TEXT
from s2c.dsl import ast as A
from s2c.errors import did_you_mean


def lower_llm(ctx: CheckContext, s: A.LLMAssign, scope: Scope, defined_here):
    what = f"prompt of '{s.target}'"
    opts = _options(ctx, s, what, scope)
    prompt = s.prompt
    if "template" in opts:
        if prompt is not None:
            ctx.error("give either an inline prompt or template=, not both", s.span)
        tkw = next(k for k in s.kwargs if k.name == "template")
        prompt = load_template_file(ctx, tkw.value, what) if opts["template"] is not None else None
    elif prompt is None:
        ctx.unreadable_prompt = True
        ctx.error(f"llm call '{s.target}' has no prompt", s.span,
                  f'write: {s.target} = llm(...) """your prompt""" or llm(template="file.j2")')
    refs = program_refs(ctx, prompt, scope, what) if prompt else {}
    system = opts.get("system")
    if system is not None:
        refs.update(program_refs(ctx, system, scope, f"system message of '{s.target}'"))
    n = int(opts.get("n", 1))
    sampling = Sampling(
        temperature=float(opts.get("temperature", 0.0)),
        top_p=float(opts.get("top_p", 1.0)),
        max_tokens=int(opts.get("max_tokens", 256)),
        stop=tuple(opts.get("stop", ())),
        seed=None if opts.get("seed") is None else int(opts["seed"]),
        n=n,
        constraint=constraint(ctx, s, opts),
    )
    mode = str(opts.get("mode", "chat"))
    continues, sample_loop = _continues(ctx, s, scope, mode, system)
    node = ir.Node(
        id=node_id(ctx, s.target, scope, s.span), kind="llm", name=s.target, span=s.span,
        type=TEXT.listed() if n > 1 else TEXT, loops=scope.loops,
        deps=ref_deps(ctx, [*refs.values(), *([ir.NodeRef(continues)] if continues else [])]), prompt=prompt,
        system=system, vars=refs, sampling=sampling, mode=mode, role=str(opts.get("role", "default")),
        continues=continues, continues_sample=sample_loop, origin_program=ctx.program.file,
    )
    define(ctx, s.target, s.span, scope, node, defined_here)


def _continues(ctx: CheckContext, s: A.LLMAssign, scope: Scope, mode: str, system) -> tuple[str | None, str | None]:
    """continue=CALL: the id of the earlier chat call whose conversation this call extends, and
    where CALL is a sample of a sampled call (`for cot in cots: llm(continue=cot)`), the loop whose
    item is that sample."""
    kw = next((k for k in s.kwargs if k.name == "continue"), None)
    if kw is None:
        return None, None
    value = lower_expr(ctx, kw.value, scope)
    sample_loop = _sample_loop(ctx, value, scope)
    if sample_loop is not None:
        target = ctx.nodes[ctx.loops[sample_loop].iterable.node]
    else:
        target = static.llm_call(ctx, value, scope.loops)
    if target is None:
        ctx.error("llm(): continue= names an earlier llm call of this program", kw.value.span,
                  "e.g. continue=draft, continue=cot in `for cot in cots` over a sampled call, or "
                  "continue=at(replies, agent) where replies = [call, ...] is built in a repeat and agent is its index")
        return None, None
    if target.sampling.n > 1 and sample_loop is None:
        problem = (f"'{target.name}' samples n={target.sampling.n} replies, so it has no one conversation to "
                   f"continue; continue each sample: for s in {target.name}: ... = llm(continue=s)")
    elif target.mode != "chat":
        problem = f"'{target.name}' is a completion-mode call; continue= extends a chat"
    elif mode != "chat":
        problem = "this call is in completion mode; continue= extends a chat"
    elif system is not None:
        problem = "a continued chat keeps the system message it started with; drop system= here"
    else:
        return target.id, sample_loop
    ctx.error(f"llm(): cannot continue '{target.name}': {problem}", kw.value.span)
    return None, None


def _sample_loop(ctx: CheckContext, value: ir.IRExpr, scope: Scope) -> str | None:
    """The enclosing loop whose item `value` is, when that loop runs over a sampled llm call's
    replies (n > 1) made outside it."""
    if not (isinstance(value, ir.RefExpr) and isinstance(value.ref, ir.ItemRef)):
        return None
    loop = ctx.loops[value.ref.loop]
    node = ctx.nodes.get(loop.iterable.node) if isinstance(loop.iterable, ir.NodeRef) else None
    if node is None or node.kind != "llm" or node.sampling.n <= 1 or loop.id not in scope.loops:
        return None
    if ir.common_prefix(node.loops, loop.loops) < len(node.loops):
        return None  # the samples of several calls, collected from a loop: not one call's
    return loop.id


def _options(ctx: CheckContext, s: A.LLMAssign, what: str, scope: Scope) -> dict[str, Any]:
    """The call's options as plain values; a bad one is reported and left out (its default applies).
    An option may be an expression known before any data (seed=100 + agent in `repeat 3 as agent`)."""
    opts: dict[str, Any] = {}
    for kw in s.kwargs:
        if kw.name not in LLM_OPTIONS:
            ctx.error(f"llm() has no option '{kw.name}'", kw.span,
                      did_you_mean(kw.name, LLM_OPTIONS) or f"options: {', '.join(LLM_OPTIONS)}")
            continue
        if kw.name in opts:
            ctx.error(f"llm(): '{kw.name}' given twice", kw.span)
        if kw.name == "continue":
            opts["continue"] = True  # resolved by _continues
            continue
        if kw.name == "system":
            if isinstance(kw.value, A.Text):
                opts["system"] = kw.value
            else:
                ctx.error("llm(): system= takes a string (a jinja template)", kw.span)
            continue
        if kw.name == "template" and not isinstance(kw.value, A.Text):
            load_template_file(ctx, kw.value, what)  # reports: template= takes a file name in quotes
            opts["template"] = None
            continue
        v = kw.value
        if isinstance(v, A.ListExpr) and all(isinstance(i, A.Text) for i in v.items):
            opts[kw.name] = tuple(i.value for i in v.items)
        elif isinstance(v, (A.Literal, A.Text)):
            opts[kw.name] = v.value
        elif (known := static.constant(ctx, lower_expr(ctx, v, scope), scope.loops)) is not static.UNKNOWN:
            opts[kw.name] = known
        else:
            ctx.error(f"llm(): option '{kw.name}' must be known before any data: a literal, "
                      "or arithmetic on literals and repeat indices", kw.span)
    _check_ranges(ctx, opts, s)
    return opts


def _check_ranges(ctx: CheckContext, opts: dict[str, Any], s: A.LLMAssign):
    def bad(name, msg):
        kw = next(k for k in s.kwargs if k.name == name)
        ctx.error(f"llm(): {msg}", kw.value.span if hasattr(kw.value, "span") else kw.span)

    for name in ("temperature", "top_p", "max_tokens", "n", "seed"):
        if name not in opts or (name == "seed" and opts[name] is None):  # seed=none: unseeded
            continue
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):  # also `none`: it has no default to mean
            bad(name, f"'{name}' must be a number")
            opts.pop(name)
    if "n" in opts and (opts["n"] < 1 or opts["n"] != int(opts["n"])):
        bad("n", "n must be a whole number >= 1")
        opts.pop("n")
    if "max_tokens" in opts and opts["max_tokens"] < 1:
        bad("max_tokens", "max_tokens must be >= 1")
        opts.pop("max_tokens")
    if "temperature" in opts and opts["temperature"] < 0:
        bad("temperature", "temperature must be >= 0")
        opts.pop("temperature")
    for name, (low, high, whole) in LLM_RANGES.items():
        v = opts.get(name)
        if v is None:
            continue
        if whole and v != int(v):
            bad(name, f"{name} must be a whole number")
            opts.pop(name)
        elif v < low or v > high or (name == "top_p" and v == 0):
            least = "more than" if name == "top_p" else "at least"
            bad(name, f"{name} must be {least} {low} and at most {high}")
            opts.pop(name)
    if "stop" in opts and not (isinstance(opts["stop"], (str, tuple))):
        bad("stop", 'stop must be a string or a list of strings: stop=["\\n\\n"]')
        opts.pop("stop")
    if "role" in opts and not isinstance(opts["role"], str):
        bad("role", 'role must be a name in quotes: role="teacher"')
        opts.pop("role")
    if opts.get("mode", "chat") not in ("chat", "completion"):
        bad("mode", f"mode must be \"chat\" or \"completion\", not {opts['mode']!r}")
        opts.pop("mode")
    if "stop" in opts and isinstance(opts["stop"], str):
        opts["stop"] = (opts["stop"],)
    if opts.get("n", 1) > 1 and opts.get("temperature", 0.0) == 0:
        n = next(k for k in s.kwargs if k.name == "n")
        ctx.warn(f"llm(): n={opts['n']} at temperature 0 gives the same reply {opts['n']} times, so a vote over "
                 "them decides nothing", n.value.span if hasattr(n.value, "span") else n.span,
                 "sample: add temperature=0.7 (or another value above 0)")
