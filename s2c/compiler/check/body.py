"""A program body, lowered in order: declarations (inputs, gold fields, uses), then each statement
into nodes: assignments, llm calls (llm.py), `for` loops, `repeat` unrolled once per iteration and
`scan` once per possible item (within budget.py's limits), calls of used programs inlined, and outputs.
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.check.budget import MAX_REPEAT, within_budget
from s2c.compiler.check.context import CheckContext, Scope
from s2c.compiler.check.exprs import lower_expr
from s2c.compiler.check.llm import lower_llm
from s2c.compiler.check.names import define, node_id, ref_deps, undefined
from s2c.compiler.check.types import PARAM_TYPES, expr_type, type_of
from s2c.compiler.check.uses import bind_call, resolve
from s2c.compiler.types import ANY, BOOL, NUMBER
from s2c.dsl import ast as A
from s2c.errors import Span


def lower_body(ctx: CheckContext, scope: Scope):
    """The program's declarations and statements, into ctx's graph; its outputs into ctx.outputs.
    `scope` is the top level's (empty) or, for a used program, its inputs bound by the call."""
    declare(ctx)
    if not scope.names:  # top level: inputs are nodes
        for prm in ctx.program.inputs:
            nid = prm.name
            ctx.nodes.setdefault(nid, ir.Node(nid, "input", prm.name, prm.span, PARAM_TYPES[prm.type],
                                              origin_program=ctx.program.file))
            scope.names[prm.name] = ir.NodeRef(nid)
    defined: set[str] = set(scope.names)
    for item in ctx.program.items:
        if isinstance(item, A.Output):
            lower_output(ctx, item, scope, defined)
        elif isinstance(item, A.STATEMENTS):
            lower_stmts(ctx, [item], scope, defined)
    if not ctx.program.outputs:
        ctx.error(f"program '{ctx.program.name}' has no output", ctx.program.header.span,
                  "declare the System-2 answer with: output NAME")


def declare(ctx: CheckContext):
    seen: dict[str, Span | None] = {}
    for item in ctx.program.items:
        if isinstance(item, A.InputDecl):
            for prm in item.params:
                if prm.name in seen:
                    ctx.error(f"input '{prm.name}' is declared twice", prm.span)
                seen[prm.name] = prm.span
                ctx.input_names.add(prm.name)
        elif isinstance(item, A.GoldDecl):
            for g in item.names:
                if g.id in seen:
                    ctx.error(f"'{g.id}' is declared twice", g.span)
                seen[g.id] = g.span
                ctx.gold_names.add(g.id)
        elif isinstance(item, A.UseDecl):
            resolve(ctx, item)


def lower_output(ctx: CheckContext, o: A.Output, scope: Scope, defined):
    if o.name in ctx.outputs:
        ctx.error(f"output '{o.name}' is declared twice", o.span)
        return
    if o.value is not None:
        lower_assign(ctx, A.Assign(o.name, o.value, o.span), scope, defined)
    ref = scope.names.get(o.name)
    if ref is None:
        undefined(ctx, o.name, o.span, scope)
        return
    ctx.mark_used(ref)
    ctx.outputs[o.name] = ref


def lower_stmts(ctx: CheckContext, stmts, scope: Scope, defined_here: set[str]):
    for s in stmts:
        if isinstance(s, A.LLMAssign):
            lower_llm(ctx, s, scope, defined_here)
        elif isinstance(s, A.Assign):
            lower_assign(ctx, s, scope, defined_here)
        elif isinstance(s, A.For):
            lower_for(ctx, s, scope, defined_here)
        elif isinstance(s, A.Repeat):
            lower_repeat(ctx, s, scope, defined_here)
        elif isinstance(s, A.Scan):
            lower_scan(ctx, s, scope, defined_here)
        elif isinstance(s, A.While):
            lower_while(ctx, s, scope, defined_here)
        elif isinstance(s, A.If):
            lower_if(ctx, s, scope, defined_here)


def lower_assign(ctx: CheckContext, s: A.Assign, scope: Scope, defined_here):
    if isinstance(s.value, A.Call) and s.value.func in ctx.programs:
        lower_use(ctx, s, scope, defined_here)
        return
    if isinstance(s.value, A.Call) and s.value.func in ctx.broken_programs:
        define_opaque(ctx, s, scope, defined_here)
        return
    expr = lower_expr(ctx, s.value, scope)
    t = expr_type(ctx, expr, scope.loops)
    deps = ref_deps(ctx, ir.refs_of(expr))
    node = ir.Node(id=node_id(ctx, s.target, scope, s.span), kind="transform", name=s.target, span=s.span,
                   type=t, loops=scope.loops, deps=deps, expr=expr, origin_program=ctx.program.file)
    define(ctx, s.target, s.span, scope, node, defined_here)


def loop_list(ctx: CheckContext, s: A.For | A.Scan, scope: Scope) -> ir.IRExpr:
    """The list a `for` or `scan` runs over: `xs`, or `enumerate(xs)` when it names the index too."""
    what = "for" if isinstance(s, A.For) else "scan"
    iterable = s.iterable
    is_enumerate = isinstance(iterable, A.Call) and iterable.func == "enumerate"
    if is_enumerate:
        if len(iterable.args) != 1 or iterable.kwargs:
            ctx.error("enumerate() takes one list: enumerate(xs)", iterable.span)
            for a in (*iterable.args, *(k.value for k in iterable.kwargs)):
                lower_expr(ctx, a, scope)  # still read: one mistake, one message
            return ir.Const([])
        iterable = iterable.args[0]
    if s.index is not None and not is_enumerate:
        ctx.error(f"'{what} {s.index}, {s.var} in ...' needs enumerate(...)", s.iterable.span,
                  f"write: {what} {s.index}, {s.var} in enumerate(LIST)")
    elif s.index is None and is_enumerate:
        ctx.error(f"enumerate(...) gives an index and an item: '{what} i, {s.var} in enumerate(...)'", s.iterable.span,
                  f"or drop enumerate: {what} {s.var} in LIST")
    if s.index is not None and s.index == s.var:
        ctx.error(f"'{s.index}' names both the index and the item", s.span)
    it = lower_expr(ctx, iterable, scope)
    t = expr_type(ctx, it, scope.loops)
    if not t.is_list:
        ctx.error(f"'{what} {s.var} in ...' needs a list, but this is a single {t}", iterable.span,
                  "a list comes from llm(n=...), lines(), regex_all(), or a list input")
    return it


def internal_value(ctx: CheckContext, nid: str, name: str, expr: ir.IRExpr, t, loops, span, deps=None):
    """A value s2c defines for the program (a loop's index or item, a scan's list): never
    reported as unused, and not traced."""
    ctx.nodes[nid] = ir.Node(nid, "transform", name, span, t, loops,
                             ref_deps(ctx, ir.refs_of(expr)) if deps is None else deps, expr=expr,
                             internal=True, origin_program=ctx.program.file)
    ctx.used.add(nid)
    return ir.NodeRef(nid)


def lower_for(ctx: CheckContext, s: A.For, scope: Scope, defined_here):
    it = loop_list(ctx, s, scope)
    t = expr_type(ctx, it, scope.loops)
    loop_id = node_id(ctx, s.var, scope) if not scope.loops else f"{scope.loops[-1]}.{s.var}"
    if loop_id in ctx.loops:  # a second loop with the same variable: its id names its line
        loop_id = f"{loop_id}@{s.span.line if s.span else len(ctx.loops)}"
    if isinstance(it, ir.RefExpr):
        iterable = it.ref
    else:  # an expression: give it a node of its own so the runtime can index it
        nid = f"{loop_id}.items"
        ctx.nodes[nid] = ir.Node(nid, "transform", f"{s.var} items", s.iterable.span, t, scope.loops,
                                 ref_deps(ctx, ir.refs_of(it)), expr=it, internal=True,
                                 origin_program=ctx.program.file)
        ctx.used.add(nid)
        iterable = ir.NodeRef(nid)
    if s.var in scope.names:
        ctx.error(f"loop variable '{s.var}' shadows an existing name", s.span)
    loop = ir.Loop(loop_id, s.var, iterable, scope.loops, s.span)
    ctx.loops[loop_id] = loop
    inner = Scope(dict(scope.names), scope.loops + (loop_id,), scope.prefix, scope.suffix, scope.once)
    inner.names[s.var] = ir.ItemRef(loop_id)
    if s.index is not None:
        if s.index in scope.names:
            ctx.error(f"loop index '{s.index}' shadows an existing name", s.span)
        inner.names[s.index] = internal_value(ctx, f"{loop_id}.{s.index}", s.index, ir.LoopIndex(loop_id), NUMBER,
                                              inner.loops, s.span)
    body_defined: set[str] = set()
    lower_stmts(ctx, s.body, inner, body_defined)
    for name in sorted(body_defined):  # visible after the body; sorted: errors in a stable order
        if name in defined_here:
            ctx.error(f"'{name}' is already defined", s.span)
        defined_here.add(name)
        scope.names[name] = inner.names[name]


def unrollable(ctx: CheckContext, s: A.Repeat | A.Scan | A.While, count: int, too_few: str, head: str) -> bool:
    """A repeat's count or a scan's bound is at least 1 and at most MAX_REPEAT (reported if not)."""
    if count < 1:
        ctx.error(too_few, s.span)
        return False
    if count > MAX_REPEAT:
        ctx.error(f"{head}: at most {MAX_REPEAT} iterations are unrolled", s.span)
        return False
    return True


def report_once(ctx: CheckContext, first: int, start: int):
    """Drop diagnostics from `start` on that an earlier iteration (from `first`) already reported:
    each mistake in an unrolled body once, not once per iteration."""
    seen = {(d.message, d.span) for d in ctx.diags[first:start]}
    ctx.diags[start:] = [d for d in ctx.diags[start:] if (d.message, d.span) not in seen]


def lower_repeat(ctx: CheckContext, s: A.Repeat, scope: Scope, defined_here):
    if not unrollable(ctx, s, s.count, "repeat needs a count >= 1", f"repeat {s.count}"):
        return
    # An outer repeat budgeted this one. Over budget, the body is still checked, once.
    once = scope.once or (not scope.suffix and not within_budget(ctx, s))
    for i in range(1, (1 if once else s.count) + 1):
        inner = Scope(scope.names, scope.loops, scope.prefix, f"{scope.suffix}#{i}", once)
        if s.index is not None:  # a constant per iteration: 0, 1, ...
            if i == 1 and s.index in scope.names:
                ctx.error(f"repeat index '{s.index}' shadows an existing name", s.span)
            inner.names[s.index] = internal_value(ctx, node_id(ctx, s.index, inner, s.span), s.index,
                                                  ir.Const(i - 1), NUMBER, scope.loops, s.span)
        iteration_defined: set[str] = set()
        n_diags = len(ctx.diags)
        lower_stmts(ctx, s.body, inner, iteration_defined)
        if i > 1:
            report_once(ctx, 0, n_diags)
        defined_here |= iteration_defined
    if s.index is not None:  # the index names the iteration, inside it only
        scope.names.pop(s.index, None)


def lower_scan(ctx: CheckContext, s: A.Scan, scope: Scope, defined_here):
    """`scan x in xs up to K:` unrolls K iterations; iteration j reads item j and the values the
    iteration before it left. An iteration past the list's end makes no call (its values are
    Skipped). Names assigned in the body that were defined before it are carried: after the scan
    each holds the value the last iteration that ran left (or its value before the scan)."""
    it = loop_list(ctx, s, scope)
    if not unrollable(ctx, s, s.bound, "scan needs a bound >= 1: scan x in xs up to 5", f"scan up to {s.bound}"):
        return
    if s.var in scope.names or (s.index and s.index in scope.names):
        ctx.error(f"scan variable '{s.var if s.var in scope.names else s.index}' shadows an existing name", s.span)
    once = scope.once or (not scope.suffix and not within_budget(ctx, s))
    t = expr_type(ctx, it, scope.loops)
    base = node_id(ctx, s.var, scope, s.span)
    if f"{base}.items" in ctx.nodes:
        base = f"{base}@{s.span.line if s.span else len(ctx.nodes)}"
    items = ir.RefExpr(internal_value(ctx, f"{base}.items", f"{s.var} items", ir.FnCall("at_most", (it, ir.Const(s.bound))),
                                      t, scope.loops, s.iterable.span))
    names = dict(scope.names)  # what each iteration starts from: the last one's carried values
    carried: dict[str, list[tuple[int, ir.Ref]]] = {}  # outer name -> (iteration, its value there)
    n_diags = len(ctx.diags)
    for j in range(1 if once else s.bound):
        inner = Scope(dict(names), scope.loops, scope.prefix, f"{scope.suffix}#{j + 1}", once)
        item = internal_value(ctx, node_id(ctx, s.var, inner, s.span), s.var,
                              ir.Pick(items, j, ir.FnCall("at", (items, ir.Const(j))), None), t.elem(),
                              scope.loops, s.span)
        inner.names[s.var] = item
        if s.index is not None:
            inner.names[s.index] = internal_value(ctx, node_id(ctx, s.index, inner, s.span), s.index, ir.Const(j),
                                                  NUMBER, scope.loops, s.span, deps=(item.node,))
        before = set(ctx.nodes)
        iteration_defined: set[str] = set()
        k = len(ctx.diags)
        lower_stmts(ctx, s.body, inner, iteration_defined)
        if j:
            report_once(ctx, n_diags, k)
        guard_block(ctx, ctx.nodes.keys() - before, item.node, wrap_transforms=False)  # no call past the list's end
        _carry(ctx, scope, inner, iteration_defined, names, carried, j, s.span, "scan")
    for name, steps in carried.items():  # the value the last iteration that ran left
        value: ir.IRExpr = ir.RefExpr(scope.names[name])
        for j, ref in steps:
            value = ir.Pick(items, j, ir.RefExpr(ref), value)
        nid = f"{node_id(ctx, name, scope)}@{s.span.line if s.span else len(ctx.nodes)}"
        node = ir.Node(nid, "transform", name, s.span, type_of(ctx, steps[-1][1], scope.loops), scope.loops,
                       ref_deps(ctx, ir.refs_of(value)), expr=value, internal=True,
                       origin_program=ctx.program.file)
        ctx.nodes[nid] = node
        scope.names[name] = ir.NodeRef(nid)
        for _, ref in steps:
            ctx.mark_used(ref)


def lower_use(ctx: CheckContext, s: A.Assign, scope: Scope, defined_here):
    """`x = prog(input=value, ...)`: prog's body inlined under the prefix `x/`, x its output."""
    call: A.Call = s.value  # type: ignore[assignment]
    prefix = f"{node_id(ctx, s.target, scope, s.span)}/"
    bound = bind_call(ctx, call, scope, prefix)
    if bound is None:
        define_opaque(ctx, s, scope, defined_here)
        return
    sub = ctx.programs[call.func]
    child = ctx.for_used(sub)  # inline into the same graph
    lower_body(child, Scope(dict(bound), scope.loops, prefix, ""))
    ctx.sources.update(child.sources)
    ctx.used |= child.used
    ctx.diags += [d for d in child.diags if d.severity == "error"]
    out_ref = child.outputs.get(sub.outputs[0].name)
    if out_ref is None:
        define_opaque(ctx, s, scope, defined_here)
        return
    ctx.mark_used(out_ref)
    if isinstance(out_ref, ir.NodeRef):
        node = ir.Node(node_id(ctx, s.target, scope, s.span), "transform", s.target, s.span,
                       type_of(ctx, out_ref, scope.loops), scope.loops, (out_ref.node,),
                       expr=ir.RefExpr(out_ref), origin_program=ctx.program.file)
        define(ctx, s.target, s.span, scope, node, defined_here)


def define_opaque(ctx: CheckContext, s: A.Assign, scope: Scope, defined_here):
    """The result of a call that could not be checked: defined, of unknown type, so that one
    mistake gives one error."""
    node = ir.Node(node_id(ctx, s.target, scope, s.span), "transform", s.target, s.span, ANY, scope.loops,
                   expr=ir.Const(None), origin_program=ctx.program.file)
    define(ctx, s.target, s.span, scope, node, defined_here)
    ctx.used.add(node.id)


def _carry(ctx: CheckContext, scope: Scope, inner: Scope, defined: set[str], names: dict, carried: dict,
           key, span, block: str):
    """After one iteration of a scan or round of a while: a name defined before the loop is carried
    into the next (`names`) and out of the loop (`carried[name]`: (key, value) per iteration); the
    iteration's own names are not visible after the loop (a located error if read)."""
    for name in defined & set(scope.names):
        names[name] = inner.names[name]
        carried.setdefault(name, []).append((key, inner.names[name]))
    for name in defined - set(scope.names):
        node = ctx.nodes.get(getattr(inner.names[name], "node", ""))
        ctx.scan_locals.setdefault(name, node.span if node else span)
        if block != "scan":
            ctx.local_block[name] = block


def guard_block(ctx: CheckContext, new: set[str], gate: str, wrap_transforms: bool = True):
    """The nodes a block (a scan iteration, a while round, an if branch) made run only where its
    `gate` ran: an llm node makes no call (its guard), a transform is Skipped. An llm node inside
    a nested block already has that block's guard, a node also new here: that guard is gated."""
    def gated(node: ir.Node):
        node.expr = ir.When(ir.RefExpr(ir.NodeRef(gate)), node.expr, None)
        node.deps = tuple(dict.fromkeys((*node.deps, gate)))

    for nid in sorted(new):
        node = ctx.nodes[nid]
        if node.kind == "llm":
            if node.guard is None:
                node.guard = gate
            elif node.guard in new and node.guard != gate:
                gated(ctx.nodes[node.guard])
            node.deps = tuple(dict.fromkeys((*node.deps, gate)))
        elif wrap_transforms and node.kind == "transform" and nid != gate and not node.id.endswith(".items"):
            gated(node)


def condition(ctx: CheckContext, e: A.Expr, scope: Scope, word: str) -> ir.IRExpr:
    """A while's or an if's condition: true or false (a comparison, contains(), and/or/not)."""
    c = lower_expr(ctx, e, scope)
    t = expr_type(ctx, c, scope.loops)
    if t.depth or t.base not in ("bool", "any"):
        ctx.error(f"the condition of {word} must be true or false, but this is "
                  f"{'a ' + str(t) if t.depth or t.base != 'text' else 'a text'}", getattr(e, "span", None),
                  'compare it: x == "yes", n > 3, contains(x, "done"), and combine with and / or / not')
    return c


def gate_node(ctx: CheckContext, nid: str, word: str, gate: ir.Gate, span, loops) -> str:
    """The value that says whether a while round or an if branch ran (True, or Skipped with why):
    traced, drawn in the graph, never reported unused."""
    ctx.nodes[nid] = ir.Node(nid, "transform", word, span, BOOL, loops, ref_deps(ctx, ir.refs_of(gate)),
                             expr=gate, origin_program=ctx.program.file)
    ctx.used.add(nid)
    return nid


def lower_while(ctx: CheckContext, s: A.While, scope: Scope, defined_here):
    """`while COND up to K:` unrolls K rounds. Round j runs when round j-1 ran and COND, read on the
    values round j-1 left, is true; the rounds after one that did not run make no call (their
    values are Skipped). Names assigned in the body that were defined before it are carried: after
    the loop each holds the value of the last round that ran (or its value before the loop)."""
    if not unrollable(ctx, s, s.bound, "while needs a bound >= 1: while CONDITION up to 5", f"while up to {s.bound}"):
        return
    once = scope.once or (not scope.suffix and not within_budget(ctx, s))
    line = s.span.line if s.span else len(ctx.nodes)
    names = dict(scope.names)  # what each round starts from: the last one's carried values
    carried: dict[str, list[tuple[str, ir.Ref]]] = {}  # outer name -> (round's gate, its value there)
    prev: str | None = None
    n_diags = len(ctx.diags)
    for j in range(1 if once else s.bound):
        inner = Scope(dict(names), scope.loops, scope.prefix, f"{scope.suffix}#{j + 1}", once)
        k = len(ctx.diags)
        cond = condition(ctx, s.cond, inner, "while")
        gate = gate_node(ctx, f"{scope.prefix}while@{line}{scope.suffix}#{j + 1}", "while",
                         ir.Gate(cond, None if prev is None else ir.RefExpr(ir.NodeRef(prev)), False,
                                 f"round {j + 1} of the while at line {line}"), s.span, scope.loops)
        before = set(ctx.nodes)
        round_defined: set[str] = set()
        lower_stmts(ctx, s.body, inner, round_defined)
        if j:
            report_once(ctx, n_diags, k)
        guard_block(ctx, ctx.nodes.keys() - before, gate)
        _carry(ctx, scope, inner, round_defined, names, carried, gate, s.span, "while")
        prev = gate
    for name, steps in carried.items():  # the value the last round that ran left
        value: ir.IRExpr = ir.RefExpr(scope.names[name])
        for gate, ref in steps:
            value = ir.When(ir.RefExpr(ir.NodeRef(gate)), ir.RefExpr(ref), value)
        _merged(ctx, name, value, steps[-1][1], scope, s.span, line)


def lower_if(ctx: CheckContext, s: A.If, scope: Scope, defined_here):
    """`if COND:` / `else:`: both branches are lowered, each made to run only where it is taken
    (COND true, else false; a condition that failed counts as false). A name assigned in the
    branches holds, after the if, the value of the branch that ran (or its value before the if, for
    a branch that does not assign it); a name that only one branch assigns, and nothing before the
    if, has no value after it."""
    cond = condition(ctx, s.cond, scope, "if")
    line = s.span.line if s.span else len(ctx.nodes)
    branches = []
    for word, body, negate in (("if", s.body, False), ("else", s.orelse, True)):
        if not body:
            continue
        gate = gate_node(ctx, f"{scope.prefix}{word}@{line}{scope.suffix}", word,
                         ir.Gate(cond, None, negate, f"the {word} branch at line {line}"), s.span, scope.loops)
        inner = Scope(dict(scope.names), scope.loops, scope.prefix, f"{scope.suffix}@{word}{line}", scope.once)
        before = set(ctx.nodes)
        branch_defined: set[str] = set()
        lower_stmts(ctx, body, inner, branch_defined)
        guard_block(ctx, ctx.nodes.keys() - before, gate)
        branches.append((gate, inner, branch_defined))
    assigned = sorted(set().union(*(b[2] for b in branches)))
    for name in assigned:
        refs = [inner.names[name] if name in defined else scope.names.get(name) for _, inner, defined in branches]
        if len(branches) < 2:
            refs.append(scope.names.get(name))
        if any(r is None for r in refs):  # one branch only, nothing before: no value after the if
            node = ctx.nodes.get(getattr(next(r for r in refs if r is not None), "node", ""))
            ctx.scan_locals.setdefault(name, node.span if node else s.span)
            ctx.local_block[name] = "if"
            continue
        value = ir.When(ir.RefExpr(ir.NodeRef(branches[0][0])), ir.RefExpr(refs[0]), ir.RefExpr(refs[1]))
        if name not in scope.names:
            defined_here.add(name)
        _merged(ctx, name, value, refs[0], scope, s.span, line)


def _merged(ctx: CheckContext, name: str, value: ir.IRExpr, like: ir.Ref, scope: Scope, span, line: int):
    """The value a while or an if leaves in `name` after it, as a node `name@LINE`."""
    nid = f"{node_id(ctx, name, scope)}@{line}"
    node = ir.Node(nid, "transform", name, span, type_of(ctx, like, scope.loops), scope.loops,
                   ref_deps(ctx, ir.refs_of(value)), expr=value, internal=True, origin_program=ctx.program.file)
    ctx.nodes[nid] = node
    scope.names[name] = ir.NodeRef(nid)
    for ref in ir.refs_of(value):
        ctx.mark_used(ref)
