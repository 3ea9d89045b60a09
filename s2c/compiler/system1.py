"""System 1 as a program, and the one function that turns a node and its values into a request.

`render_request` renders every model call s2c makes: System 2's calls in the executor, System 1's
calls (base model and adapters) in eval, and the prompt of every training row compile writes.
So a training row and the eval request for the same input are the same bytes.

A distill task lowers to an LLM node named after it (`task_node`): its System-1 prompt over the
program's inputs and, for a task that follows others (`after="rationale"`), what was written for
them. `system1_program` chains the tasks System 1 runs at inference into a program the executor
runs like any other:

    cascod.s2, cascade:   question -> rationale (llm) -> rationale/text -> answer (llm)
                          -> completion -> parsed          output: parsed
    bsm.s2:               question, response_a, response_b -> judge (llm) -> completion -> parsed

The eval section's `parse` reads `completion` (the last task's text); with no parse the answer
is the stripped completion.
"""
from __future__ import annotations

from s2c.calls import Message, Request, Sampling
from s2c.compiler import ir
from s2c.compiler.templates import render
from s2c.compiler.types import TEXT
from s2c.errors import S2Error

COMPLETION, ANSWER = "completion", "parsed"


def render_request(node: ir.Node, variables: dict, adapter: str | None = None,
                   history: tuple[Message, ...] = ()) -> Request:
    """The request for one instance of an LLM node; `history`, the conversation it continues
    (continue=: the earlier call's messages and its reply). Raises templates.RENDER_ERRORS on bad data."""
    prompt = render(node.prompt.value, variables)
    system = render(node.system.value, variables) if node.system is not None else None
    if node.mode == "chat":
        msgs = history + ((Message("system", system),) if system is not None else ()) + (Message("user", prompt),)
        return Request(messages=msgs, sampling=node.sampling, role=node.role, adapter=adapter)
    return Request(prompt=(system + "\n\n" if system else "") + prompt, sampling=node.sampling, role=node.role,
                   adapter=adapter)


def text_of(task: str) -> str:
    """The node that holds what was written for `task`, as a later task's prompt reads it."""
    return f"{task}/text"


def const_of(name: str) -> str:
    """The node that holds a constant a System-1 prompt reads (a few-shot block)."""
    return f"const/{name}"


def task_node(cp: ir.CheckedProgram, task: ir.TaskIR, sampling: Sampling | None = None) -> ir.Node:
    """A task as an LLM node: reads the program's inputs, its constants and the tasks it follows."""
    variables: dict[str, ir.Ref] = {p.name: ir.NodeRef(p.name) for p in cp.inputs}
    variables.update({name: ir.NodeRef(const_of(name)) for name, _ in task.constants})
    variables.update({name: ir.NodeRef(text_of(name)) for name in task.after})
    return ir.Node(id=task.name, kind="llm", name=task.name, span=task.span, type=TEXT,
                   deps=tuple(dict.fromkeys(r.node for r in variables.values())), prompt=task.prompt,
                   system=task.system, vars=variables, sampling=sampling or Sampling(), mode="chat",
                   origin_program=cp.program.file)


def answer_chain(cp: ir.CheckedProgram, cascade: bool) -> list[ir.TaskIR]:
    """The tasks System 1 runs at inference, in order: the first task; for a cascade-trained
    model the last task and every task it follows (after=), transitively."""
    if not cp.tasks:
        raise S2Error(f"program '{cp.name}' has no distill section, so it has no System-1 prompt",
                      cp.program.header.span)
    by_name = {t.name: t for t in cp.tasks}
    last = cp.tasks[-1] if cascade else cp.tasks[0]
    need, todo = set(), [last.name]
    while todo:
        name = todo.pop()
        if name not in need:
            need.add(name)
            todo.extend(by_name[name].after)
    chain = [t for t in cp.tasks if t.name in need]
    for t in chain:
        if t.each is not None:
            raise S2Error(f"task '{t.name}' runs once per item of a list, so System 1 cannot answer with it "
                          "at inference", t.span, hint="put the task System 1 answers with first in distill:")
    return chain


def system1_program(cp: ir.CheckedProgram, *, cascade: bool, max_tokens: int) -> ir.CheckedProgram:
    """System 1 (greedy, `max_tokens`) as a checked program with one output, `parsed`."""
    from s2c.compiler.graph import with_graph

    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    nodes: dict[str, ir.Node] = {n.id: n for n in cp.nodes.values() if n.kind == "input"}
    chain = answer_chain(cp, cascade)
    for task in chain:
        for name, value in task.constants:
            nodes[const_of(name)] = _transform(const_of(name), ir.Const(value), task.span)
        for name in task.after:
            nodes[text_of(name)] = _transform(text_of(name), ir.FnCall("strip", (ir.RefExpr(ir.NodeRef(name)),)),
                                              task.span)
        nodes[task.name] = task_node(cp, task, sampling)
    nodes[COMPLETION] = _transform(COMPLETION, ir.RefExpr(ir.NodeRef(chain[-1].name)), chain[-1].span)
    parse = cp.parse if cp.parse is not None else ir.FnCall("strip", (ir.RefExpr(ir.NodeRef(COMPLETION)),))
    nodes[ANSWER] = _transform(ANSWER, parse, cp.program.header.span)
    return with_graph(ir.CheckedProgram(
        program=cp.program, nodes=nodes, loops={}, outputs={ANSWER: ir.NodeRef(ANSWER)}, inputs=cp.inputs,
        golds=cp.golds, tasks=chain, keeps=[], format=cp.format, metrics=cp.metrics, parse=cp.parse,
        diagnostics=[], sources=cp.sources))


def _transform(nid: str, expr: ir.IRExpr, span) -> ir.Node:
    deps = tuple(dict.fromkeys(r.node for r in ir.refs_of(expr) if isinstance(r, ir.NodeRef)))
    return ir.Node(id=nid, kind="transform", name=nid, span=span, type=TEXT, deps=deps, expr=expr)
