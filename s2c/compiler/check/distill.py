"""The distill section: System-1 tasks (a prompt, a target, options), per item when inside
`for x in LIST:`, chained by after= into a cascade, in a training format. A System-1 prompt may
read program inputs only: System 1 runs without System 2, and must not see the gold label.
Keep rules are scoring.py's.
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.check import static
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.exprs import lower_expr
from s2c.compiler.check.prompts import load_template_file, template_vars
from s2c.compiler.check.scoring import lower_keep
from s2c.compiler.check.types import expr_type
from s2c.compiler.tables import DISTILL_FORMATS, TASK_OPTIONS
from s2c.compiler.types import TEXT
from s2c.dsl import ast as A
from s2c.errors import did_you_mean

Earlier = dict[str, "ir.Loop | None"]  # tasks defined so far -> the loop each runs in (for after=)


def lower_distill(ctx: CheckContext, scope: Scope) -> tuple[list[ir.TaskIR], list[ir.KeepIR], str]:
    """`scope`: the program's top level, after its body."""
    d = ctx.program.distill
    tasks: list[ir.TaskIR] = []
    keeps: list[ir.KeepIR] = []
    if d is None:
        return tasks, keeps, "system1"
    fmt = d.format or "system1"
    if fmt not in DISTILL_FORMATS:
        ctx.error(f"unknown distill format '{fmt}'", d.span,
                  did_you_mean(fmt, DISTILL_FORMATS) or f"formats: {', '.join(DISTILL_FORMATS)}")
    names: Earlier = {}
    for item in d.items:
        if isinstance(item, A.Task):
            tasks.append(lower_task(ctx, item, scope, None, names))
        elif isinstance(item, A.TaskFor):
            it = lower_expr(ctx, item.iterable, scope)
            t = expr_type(ctx, it, ())
            if not t.is_list:
                ctx.error(f"'for {item.var} in ...' needs a list, but this is a single {t}", item.iterable.span)
            if not isinstance(it, ir.RefExpr):
                ctx.error("a distill loop runs over a named value", item.iterable.span,
                          "name it first: xs = ...; then: for x in xs:")
                continue
            loop = distill_loop(ctx, item, it.ref)
            inner = Scope(dict(scope.names), (loop.id,), "", "")
            inner.names[item.var] = ir.ItemRef(loop.id)
            for task in item.tasks:
                tasks.append(lower_task(ctx, task, inner, loop, names))
        elif isinstance(item, A.Keep):
            k = lower_keep(ctx, item, scope)
            if k:
                keeps.append(k)
    if not any(isinstance(i, (A.Task, A.TaskFor)) for i in d.items):
        ctx.error("distill section has no task", d.span, 'add: task NAME(target=VALUE) """System-1 prompt"""')
    return tasks, keeps, fmt


def distill_loop(ctx: CheckContext, item: A.TaskFor, iterable: ir.Ref) -> ir.Loop:
    """A distill loop over the list a top-level program loop runs over is that same loop, so
    values computed per item in the program (`for cot in cots: verdict = ...`) are single
    values inside it. Any other list gets a loop of its own."""
    same = [l for l in ctx.loops.values() if not l.loops and l.iterable == iterable
            and not l.id.startswith("distill.")]
    if same:
        return next((l for l in same if l.var == item.var), same[0])
    loop = ir.Loop(f"distill.{item.var}", item.var, iterable, (), item.span)
    ctx.loops[loop.id] = loop
    return loop


def task_after(ctx: CheckContext, t: A.Task, loop: ir.Loop | None, earlier: Earlier) -> tuple[str, ...]:
    """`after="explain"`: this task's prompt may read {{ explain }}, the output of an earlier
    task, which System 1 writes itself at inference (a cascade: question -> rationale ->
    answer). In a training row it is that task's target for the same input and item."""
    kw = next((k for k in t.kwargs if k.name == "after"), None)
    if kw is None:
        return ()
    v = kw.value
    items = v.items if isinstance(v, A.ListExpr) else (v,)
    if not all(isinstance(i, A.Text) for i in items):
        ctx.error('task(): after= takes the name of an earlier task in quotes: after="rationale"',
                  getattr(v, "span", kw.span))
        return ()
    out = []
    for i in items:
        name = i.value
        if name == t.name:
            ctx.error(f"task '{t.name}' cannot come after itself", i.span)
        elif name not in earlier:
            ctx.error(f"after=: no earlier task '{name}'", i.span,
                      did_you_mean(name, earlier) or "after= names a task defined above this one")
        elif earlier[name] is not None and earlier[name] is not loop:
            ctx.error(f"after=: task '{name}' runs once per item of '{earlier[name].var}'; "
                      f"task '{t.name}' must be in the same for loop", i.span)
        else:
            out.append(name)
    return tuple(out)


def lower_task(ctx: CheckContext, t: A.Task, scope: Scope, loop: ir.Loop | None, names: Earlier) -> ir.TaskIR:
    what = f"System-1 prompt of task '{t.name}'"
    if t.name in names:
        ctx.error(f"task '{t.name}' is defined twice", t.span)
    after = task_after(ctx, t, loop, names)
    opts = {kw.name: kw for kw in t.kwargs}
    for kw in t.kwargs:
        if kw.name not in TASK_OPTIONS:
            ctx.error(f"task has no option '{kw.name}'", kw.span,
                      did_you_mean(kw.name, TASK_OPTIONS) or f"options: {', '.join(TASK_OPTIONS)}")
    prompt = t.prompt
    if "template" in opts:
        prompt = load_template_file(ctx, opts["template"].value, what)
    if prompt is None:
        ctx.error(f"task '{t.name}' has no System-1 prompt", t.span)
        prompt = A.Text("")
    constants = check_system1_prompt(ctx, prompt, scope, what, names, after)
    system = None
    if "system" in opts:
        if isinstance(opts["system"].value, A.Text):
            system = opts["system"].value
            constants |= check_system1_prompt(ctx, system, scope, f"system message of task '{t.name}'", names,
                                              after)
        else:
            ctx.error("task(): system= takes a string", opts["system"].span)
    target: ir.IRExpr = ir.Const(None)
    ttype = TEXT
    if "target" not in opts:
        ctx.error(f"task '{t.name}' needs target=VALUE (what System 1 learns to output)", t.span)
    else:
        target = lower_expr(ctx, opts["target"].value, scope)
        ttype = expr_type(ctx, target, scope.loops)
        if ttype.depth > 0:
            ctx.error(f"target of task '{t.name}' is a {ttype}: a training row needs one value",
                      opts["target"].value.span, "to emit one row per element, wrap the task in: for x in LIST:")
    weight = 1.0
    if "weight" in opts:
        v = opts["weight"].value
        if isinstance(v, A.Literal) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool) \
                and v.value >= 0:
            weight = float(v.value)
        else:
            ctx.error("task(): weight must be a number >= 0", getattr(v, "span", opts["weight"].span))
    rationale = None
    if "rationale" in opts:
        rationale = lower_expr(ctx, opts["rationale"].value, scope)
        if expr_type(ctx, rationale, scope.loops).depth > 0:
            ctx.error(f"rationale of task '{t.name}' is a list: a training row needs one value",
                      opts["rationale"].value.span)
    names.setdefault(t.name, loop)
    return ir.TaskIR(t.name, t.span, prompt, system, target, ttype, weight, loop, rationale, after=after,
                     constants=tuple(sorted(constants.items())))


def check_system1_prompt(ctx: CheckContext, text: A.Text, scope: Scope, what: str, earlier: Earlier,
                         after: tuple[str, ...]) -> dict[str, object]:
    """A System-1 prompt reads program inputs (marked used), the outputs of the tasks in `after`,
    which System 1 writes first, and constants: values known before any data (a few-shot block
    written in the program), returned by name so the prompt carries them. Anything else is reported."""
    constants: dict[str, object] = {}
    for var, span in template_vars(ctx, text, what):
        if var in after:  # the output of an earlier task, written by System 1 itself
            continue
        if var in ctx.input_names and var in scope.names:
            ctx.mark_used(scope.names[var])
        elif var in ctx.gold_names:
            ctx.error(f"{what} reads gold field '{var}'", span,
                      "a System-1 prompt that reads the gold label leaks the answer")
        elif var in earlier:
            ctx.error(f"{what} reads the output of task '{var}' without after=\"{var}\"", span,
                      f'System 1 writes it first at inference: add after="{var}" to the task')
        elif var in scope.names and (value := static.constant(ctx, ir.RefExpr(scope.names[var]), scope.loops)) \
                is not static.UNKNOWN:
            ctx.mark_used(scope.names[var])
            constants[var] = value
        elif var in scope.names:
            ctx.error(f"{what} reads intermediate '{var}'; a System-1 prompt may read program inputs "
                      "and constants only",
                      span, "otherwise System 1 would need System 2 to run first; "
                      f"inputs: {', '.join(sorted(ctx.input_names))}")
        else:
            ctx.error(f"{what} uses undefined variable '{var}'", span, did_you_mean(var, ctx.input_names))
    return constants
