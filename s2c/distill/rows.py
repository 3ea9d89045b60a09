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
from s2c.compiler.functions import Failed
from s2c.compiler.templates import render
from s2c.distill.curate import Verdict
from s2c.errors import S2Error
from s2c.runtime.executor import ExampleResult
from s2c.runtime.values import find_failed


def tasks_for(cp: ir.CheckedProgram, fmt: str) -> list[ir.TaskIR]:
    if fmt in ("multitask", "cascade"):
        return list(cp.tasks)
    if fmt == "cot":
        main = cp.tasks[0]
        if main.rationale is None:
            raise S2Error(f"format 'cot' needs a rationale: add rationale=VALUE to task '{main.name}'",
                          main.span, hint="e.g. task answer(target=answer, rationale=before(cot, \"Final answer:\"))")
    return cp.tasks[:1]


def as_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def build_rows(cp: ir.CheckedProgram, res: ExampleResult, verdict: Verdict, fmt: str, run_id: str,
               problems: list[str]) -> list[dict]:
    vals = res.state
    inputs = {p.name: res.row[p.name] for p in cp.inputs}
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
            out.append(make_row(task, {**inputs, **earlier}, completion, res.id, run_id))
    return out


def make_row(task: ir.TaskIR, inputs: dict, completion: str, example_id: str, run_id: str) -> dict:
    messages = []
    if task.system is not None:
        messages.append({"role": "system", "content": render(task.system.value, inputs)})
    messages.append({"role": "user", "content": render(task.prompt.value, inputs)})
    return {
        "prompt": messages,
        "completion": [{"role": "assistant", "content": completion}],
        "task": task.name,
        "weight": task.weight,
        "example_id": example_id,
        "run_id": run_id,
    }


def system1_messages(task: ir.TaskIR, inputs: dict) -> list[dict]:
    """The exact prompt System 1 gets at inference (same code as the training rows)."""
    return make_row(task, inputs, "", "", "")["prompt"]
