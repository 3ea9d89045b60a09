"""Training rows in TRL's conversational prompt-completion format, from kept examples.

What System 1 sees is only its own prompt: the task's System-1 template rendered over the
program's inputs (the checker guarantees it reads nothing else). The completion is the task's
target (the System-2 output y); the intermediates z are dropped.

Formats:
  system1    the first task: completion = target                 (the paper's distillation)
  label      the first task: completion = the label alone (eval's parse applied to target)
  cot        the first task: completion = rationale + target      (the Std-CoT baseline)
  multitask  every task, each row with its task name and weight (Mind's Mirror)
  cascade    every task in order, weights (1-α) and α             (CasCoD)
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.failures import Failed
from s2c.compiler.system1 import render_request, task_node
from s2c.distill.curate import Verdict
from s2c.errors import S2Error
from s2c.runtime.store import ExampleResult
from s2c.runtime.values import find_failed


def tasks_for(cp: ir.CheckedProgram, fmt: str) -> list[ir.TaskIR]:
    """The tasks format `fmt` writes rows for; `cot` without a rationale is refused, with a hint."""
    if fmt == "cot":
        main = cp.tasks[0]
        if main.rationale is None:
            raise S2Error(f"format 'cot' needs a rationale: add rationale=VALUE to task '{main.name}'",
                          main.span, hint=_rationale_hint(cp, main))
    return cp.row_tasks(fmt)


def _rationale_hint(cp: ir.CheckedProgram, task: ir.TaskIR) -> str:
    """A rationale= for this program's own names: the text before the marker its target is cut
    after (`final = after(cot, "Answer:")` -> `before(cot, "Answer:")`), else the shape of one."""
    def name(e):
        return cp.nodes[e.ref.node].name if isinstance(e, ir.RefExpr) and isinstance(e.ref, ir.NodeRef) else None

    target, todo, seen = name(task.target) or "...", [task.target], 0
    while todo and seen < 50:
        e, seen = todo.pop(), seen + 1
        if isinstance(e, ir.FnCall) and e.fn in ("after", "regex") and len(e.args) == 2 and name(e.args[0]) \
                and isinstance(e.args[1], ir.Const) and isinstance(e.args[1].value, str):
            marker = e.args[1].value if e.fn == "after" else e.args[1].value.split("(")[0]
            if marker.strip():
                return f"e.g. task {task.name}(target={target}, rationale=before({name(e.args[0])}, {marker!r}))" \
                    .replace("'", '"')
        if isinstance(e, ir.RefExpr) and isinstance(e.ref, ir.NodeRef):
            node = cp.nodes.get(e.ref.node)
            if node is not None and node.kind == "transform" and node.expr is not None:
                todo.append(node.expr)
        elif isinstance(e, ir.FnCall):
            todo.extend(e.args)
    return f"e.g. task {task.name}(target={target}, rationale=before(CALL, \"MARKER\")): the reasoning " \
        "that comes before the answer in an llm call's reply"


def as_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def build_rows(cp: ir.CheckedProgram, res: ExampleResult, verdict: Verdict, fmt: str, run_id: str,
               problems: list[str]) -> list[dict]:
    vals = res.state
    inputs = res.row
    out = []
    # (task, loop index) -> that row's completion: a later task with after="task" reads it
    # (in Mind's Mirror each evaluate row reads the explain row of the same CoT)
    written: dict[tuple[str, tuple], str] = {}
    for task in tasks_for(cp, fmt):
        if task.each is None:
            slots: list[tuple[tuple, tuple]] = [((), ())]
        else:
            items = vals.lookup(task.each.iterable, (), ())
            if isinstance(items, Failed) or not isinstance(items, list):
                problems.append(f"{res.id}: task {task.name}: its list failed")
                continue
            mask = verdict.element_mask
            slots = [((i,), (task.each.id,)) for i in range(len(items))
                     if mask is None or len(mask) != len(items) or mask[i]]
        for prefix, loops in slots:
            target = vals.eval(task.target, prefix, loops, f"task {task.name}")
            bad = find_failed(target)
            if bad is not None:
                problems.append(f"{res.id}: task {task.name}{list(prefix) or ''}: target failed ({bad.reason})")
                continue
            completion = as_text(target)
            if fmt == "label" and cp.parse is not None:
                lab = vals.eval(cp.parse, (), (), "parse", extra={"completion": completion})
                if not isinstance(lab, Failed):
                    completion = as_text(lab)
            if fmt == "cot":
                rat = vals.eval(task.rationale, prefix, loops, f"task {task.name}")
                if find_failed(rat) is not None:
                    problems.append(f"{res.id}: task {task.name}: rationale failed")
                    continue
                completion = f"{as_text(rat)}\n{completion}"
            earlier = {name: written.get((name, prefix)) for name in task.after}
            if any(v is None for v in earlier.values()):
                problems.append(f"{res.id}: task {task.name}{list(prefix) or ''}: the task it follows has no row")
                continue
            written[(task.name, prefix)] = completion
            out.append(make_row(cp, task, {**inputs, **dict(task.constants), **earlier}, completion, res.id, run_id))
    return out


def make_row(cp: ir.CheckedProgram, task: ir.TaskIR, variables: dict, completion: str, example_id: str,
             run_id: str) -> dict:
    """One training row. Its prompt is the request System 1 gets at inference for the same input,
    rendered by the same function from the same node (compiler/system1.py)."""
    request = render_request(task_node(cp, task), variables)
    return {
        "prompt": request.payload()["messages"],
        "completion": [{"role": "assistant", "content": completion}],
        "task": task.name,
        "weight": task.weight,
        "example_id": example_id,
        "run_id": run_id,
    }
