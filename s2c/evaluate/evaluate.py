"""s2c eval: System 1, System 2 and distilled System 1 side by side on the same held-out inputs.

Every system runs through the same executor, each into its own run folder under --out (so
retries, --refresh, --max-errors, progress, traces and token counts are the runtime's):

    system2/          the program itself (#tokens count every intermediate call)
    system1/          the System-1 program (compiler/system1.py) on the base model
    <adapter name>/   the same program with the adapter on every request; a cascade-trained
                      adapter runs the cascade (rationale, then answer), as compile's after=
    merged/           with --merge-adapters: each adapter merged into its base (`s2c export`),
                      in a folder named by the adapter's weights, served as a model of its own

Scoring: on System 2 each metric scores its own answer expression. System 1 writes one
completion, and the eval section's `parse` turns it into its one answer: every metric scores
that answer against its own gold field. swap_inconsistency runs every system on the swapped
copy of each input too and maps the answer back.
"""
from __future__ import annotations

import json
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from s2c.compiler import ir
from s2c.compiler.failures import Failed
from s2c.compiler.system1 import ANSWER, system1_program
from s2c.distill.curate import value_of
from s2c.distill.write import jsonl_line
from s2c.errors import S2Error
from s2c.evaluate import stats
from s2c.evaluate.metrics import Scores
from s2c.runtime.model import adapter_digest, adapter_weights
from s2c.runtime.run import exit_code
from s2c.runtime.store import ExampleResult, RunStore
from s2c.runtime.values import find_failed, to_json


@dataclass
class SystemResult:
    name: str
    kind: str  # system1 | system2 | distilled
    adapter: str | None
    merged: str | None  # the adapter merged into its base, the model that answered (--merge-adapters)
    metrics: dict[str, float | None]
    mean_generated_tokens: float
    n: int
    unparsed: int  # inputs whose answer could not be read (failed or unparsed)
    run_dir: Path
    exit: int = 0  # its run's exit code: run.EXIT_ALL_FAILED when every example failed
    outcomes: dict[str, bytearray] = field(default_factory=dict)  # per metric, a byte per input (metrics.Scores)
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # per metric (stats.py)
    tokens_ci: tuple[float, float] | None = None  # of mean_generated_tokens

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "adapter": self.adapter, "merged": self.merged,
                "metrics": self.metrics,
                "ci": {k: stats.rounded(v) for k, v in self.ci.items()},
                "mean_generated_tokens": round(self.mean_generated_tokens, 2),
                "mean_generated_tokens_ci": stats.rounded(self.tokens_ci, 2), "n": self.n,
                "unparsed": self.unparsed, "run_dir": str(self.run_dir)}


@dataclass(frozen=True)
class System:
    """One system to evaluate: what runs, and how its answer is read for a metric."""

    name: str
    kind: str
    program: ir.CheckedProgram
    adapter: str | None = None
    merged: str | None = None  # the adapter merged into its base: requests go to this model, adapter-less

    def answer(self, metric: ir.MetricIR, res: ExampleResult):
        if self.kind == "system2":
            if metric.answer is None:
                return Failed("the metric names no answer", "eval")
            return value_of(metric.answer, res)
        return res.state.lookup(ir.NodeRef(ANSWER), (), ())


def systems_for(cp: ir.CheckedProgram, adapters: list[tuple[str, str]], *, system1: bool, system2: bool,
                max_tokens: int) -> list[System]:
    out = []
    if system1:
        out.append(System("System 1", "system1", system1_program(cp, cascade=False, max_tokens=max_tokens)))
    if system2:
        if not any(m.answer is not None for m in cp.metrics):
            raise S2Error(f"program '{cp.name}' has no eval metric with an answer", cp.program.header.span,
                          hint="add: eval:\n    metric normalized_match(OUTPUT, GOLD_FIELD)")
        out.append(System("System 2", "system2", cp))
    for name, path in adapters:
        cascade = adapter_format(path) == "cascade"
        out.append(System(name, "distilled", system1_program(cp, cascade=cascade, max_tokens=max_tokens), path))
    return out


def run_dir_name(system: System) -> str:
    """system1/, system2/, or the adapter's name as a folder name (distilled-system-1/)."""
    if system.kind != "distilled":
        return system.kind
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", system.name.lower()).strip("-")


def evaluate_system(cp: ir.CheckedProgram, system: System, rows: list[tuple[str, dict]], runner,
                    out: Path) -> SystemResult:
    """Run `system` on `runner` (with its adapter on every request) into OUT/<system>, and score it."""
    swap = next((m.perturbation for m in cp.metrics if m.perturbation is not None), None)

    def inputs():
        for ex_id, row in rows:
            yield ex_id, row
            if swap:
                yield ex_id + swap.suffix, swap.apply(ex_id, row)[0], {"source": ex_id, "variant": swap.suffix,
                                                                       "info": {}}

    run_dir = out / run_dir_name(system)
    adapter = None if system.merged else system.adapter
    given = runner.options.given if system.kind == "system2" else {}  # teacher outputs stand for System 2 only
    outcome = runner.with_options(adapter=adapter, given=given).execute(system.program, inputs(), run_dir,
                                                           meta={"system": system.name})
    scores = Scores(cp.metrics, len(rows))
    tokens = array("q")  # generated tokens per input, for the CI of their mean
    store = RunStore.open(run_dir, system.program)
    unreadable = 0
    positions = (i for i, (ex_id, _) in enumerate(rows))  # the store keeps the inputs' order, maybe with gaps
    with open(run_dir / "answers.jsonl", "w", encoding="utf-8") as answers:
        for res in store.originals():
            i = next((j for j in positions if rows[j][0] == res.id), None)
            if i is None:  # a bug: execute stores what it was given, in that order
                raise RuntimeError(f"{run_dir}: example {res.id!r} is not among the inputs, or out of their order")
            tokens.append(res.generated_tokens)
            other = store.get(res.id + swap.suffix) if swap else None
            first = None
            for m in cp.metrics:
                a = system.answer(m, res)
                first = a if first is None else first
                if m.perturbation is not None:
                    b = None if other is None else system.answer(m, other)
                    scores.add_pair(m, i, a, None if b is None or find_failed(b) else m.perturbation.map_back(b, {}))
                else:
                    scores.add(m, i, a, res.trace.gold.get(m.gold))
            unreadable += find_failed(first) is not None
            answers.write(jsonl_line({"example_id": res.id, "answer": to_json(first)}, default=str))
    store.close()
    outcomes = scores.by_label()
    return SystemResult(system.name, system.kind, system.adapter, system.merged, scores.result(),
                        sum(tokens) / max(1, len(tokens)), len(tokens), unreadable, run_dir,
                        exit_code(outcome.summary), outcomes, {k: stats.metric_ci(o) for k, o in outcomes.items()},
                        stats.bootstrap_ci(tokens))


def merge_adapter(system: System, folder: Path, log=print) -> System:
    """The system with its adapter merged into its base model (`s2c export`'s merge), under
    `folder`/NAME-DIGEST, DIGEST from the adapter's weights: an adapter trained again gets a folder
    of its own, and an existing folder of the same digest is reused (export writes it whole or not
    at all; the call cache tells model folders apart by what they hold, runtime/model.py)."""
    from s2c.train.export import export

    if not adapter_weights(system.adapter):
        raise S2Error(f"--adapter {system.adapter}: no adapter weights (adapter_model.safetensors) to merge",
                      hint="pass the folder `s2c train` wrote, or its adapter/ subfolder")
    merged = folder / f"{run_dir_name(system)}-{adapter_digest(system.adapter)[:12]}"
    if not merged.exists():
        export(system.adapter, merged, log=log)
    return System(system.name, system.kind, system.program, system.adapter, str(merged))


def adapter_format(adapter: str) -> str | None:
    """The distill format an adapter was trained on, as `s2c train` recorded it next to it."""
    for cfg in (Path(adapter) / "train_config.json", Path(adapter).parent / "train_config.json"):
        if cfg.exists():
            try:
                return json.loads(cfg.read_text()).get("format")
            except ValueError:
                return None
    return None


def resolve_adapter(path: str) -> str:
    p = Path(path)
    if (p / "adapter_config.json").exists():
        return str(p)
    if (p / "adapter" / "adapter_config.json").exists():
        return str(p / "adapter")
    raise S2Error(f"--adapter {path}: no LoRA adapter there (no adapter_config.json)",
                  hint="pass the folder `s2c train` wrote, or its adapter/ subfolder")
