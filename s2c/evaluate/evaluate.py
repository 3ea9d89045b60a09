"""s2c eval: System 1, System 2 and distilled System 1 side by side on the same held-out inputs.

System 2 is the program itself (every intermediate call counted in #tokens). System 1 is the
base model given the program's System-1 prompt (the first distill task's, rendered by the same
code that wrote the training rows); a distilled System 1 is the same with a LoRA adapter. A
cascade-trained adapter (CasCoD) answers in two passes: rationale, then answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from s2c.compiler import ir
from s2c.compiler.functions import Failed
from s2c.distill.curate import evaluate as eval_expr
from s2c.distill.perturb import Perturbation
from s2c.distill.rows import system1_messages
from s2c.errors import S2Error
from s2c.evaluate.metrics import inconsistency, score
from s2c.runtime.cache import call_key, engine_model
from s2c.runtime.engines.base import EngineError, EngineFailure, Message, Request, Sampling
from s2c.runtime.run import execute
from s2c.runtime.values import ExampleValues


@dataclass
class SystemResult:
    name: str
    kind: str  # system1 | system2 | distilled
    adapter: str | None
    metrics: dict[str, float | None]
    mean_generated_tokens: float
    n: int
    unparsed: int
    predictions: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "adapter": self.adapter, "metrics": self.metrics,
                "mean_generated_tokens": round(self.mean_generated_tokens, 2), "n": self.n,
                "unparsed": self.unparsed}


def swap_of(cp: ir.CheckedProgram) -> Perturbation | None:
    for m in cp.metrics:
        if m.name == "swap_inconsistency":
            return Perturbation("swap", tuple(m.options["swap"]), m.options.get("map"))
    return None


def metric_values(cp, answers: list, swapped: list | None, rows) -> dict[str, float | None]:
    out = {}
    for m in cp.metrics:
        if m.name == "swap_inconsistency":
            out[m.name] = None if swapped is None else inconsistency(answers, swapped)
        else:
            out[m.name] = score(m.name, answers, [r.get(m.gold) for _, r in rows])
    return out


def parse_completion(cp: ir.CheckedProgram, text: str, row: dict):
    if cp.parse is None:
        return text.strip()
    vals = ExampleValues(cp, row)
    return vals.eval(cp.parse, (), (), "parse", extra={"completion": text})


def run_system2(cp, rows, engine, out: Path, *, cache, chunk_size, console, progress) -> SystemResult:
    swap = swap_of(cp)
    all_rows = list(rows)
    if swap:
        all_rows += [(i + swap.suffix, swap.apply(i, r)[0]) for i, r in rows]
    outcome = execute(cp, all_rows, engine, out / "system2", cache=cache, chunk_size=chunk_size,
                      console=console, progress=progress)
    by_id = {r.id: r for r in outcome.results}
    metric = next((m for m in cp.metrics if m.answer is not None), None)
    if metric is None:
        raise S2Error(f"program '{cp.name}' has no eval metric", cp.program.header.span,
                      hint="add: eval:\n    metric normalized_match(OUTPUT, GOLD_FIELD)")

    def answer(res):
        return Failed("missing", "?") if res is None else eval_expr(metric.answer, res, cp)

    answers = [answer(by_id.get(i)) for i, _ in rows]
    swapped = None
    if swap:
        swapped = [swap.map_back(a, {}) if not isinstance(a, Failed) else a
                   for a in (answer(by_id.get(i + swap.suffix)) for i, _ in rows)]
    tokens = [by_id[i].generated_tokens for i, _ in rows if i in by_id]
    return SystemResult("System 2", "system2", None, metric_values(cp, answers, swapped, rows),
                        sum(tokens) / max(1, len(tokens)), len(rows), sum(isinstance(a, Failed) for a in answers),
                        answers)


def _generate(engine, requests: list[Request], cache, chunk_size: int):
    """Batched, cached single-sample generation; returns (text or Failed, generated tokens)."""
    out: list = [None] * len(requests)
    misses = []
    for i, r in enumerate(requests):
        key = call_key(engine_model(engine, r.role), r)
        hit = cache.get(key, 1)
        if 0 in hit:
            out[i] = (hit[0].text, hit[0].completion_tokens)
        else:
            misses.append((i, key))
    for start in range(0, len(misses), chunk_size):
        chunk = misses[start:start + chunk_size]
        try:
            results = engine.generate([requests[i] for i, _ in chunk])
        except EngineError:
            raise  # the engine cannot run at all: stop and say why, as a run does
        except Exception as e:  # noqa: BLE001 - recorded per example, the evaluation goes on
            results = [EngineFailure(f"{type(e).__name__}: {e}")] * len(chunk)
        puts = []
        for (i, key), res in zip(chunk, results):
            if isinstance(res, EngineFailure):
                out[i] = (Failed(f"engine: {res.reason}", "system1"), 0)
            else:
                out[i] = (res[0].text, res[0].completion_tokens)
                puts.append((key, 0, res[0], engine.model_id(requests[i].role)))
        cache.put_many(puts)
    return out


def run_system1(cp, rows, engine, name: str, adapter: str | None, *, cache, chunk_size, max_tokens,
                cascade: bool = False) -> SystemResult:
    swap = swap_of(cp)
    variants = [rows]
    if swap:
        variants.append([(i + swap.suffix, swap.apply(i, r)[0]) for i, r in rows])
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    answers_by_variant, tokens = [], []
    for k, vrows in enumerate(variants):
        texts, toks = _answer_pass(cp, vrows, engine, adapter, sampling, cache, chunk_size, cascade)
        answers = [t if isinstance(t, Failed) else parse_completion(cp, t, r) for t, (_, r) in zip(texts, vrows)]
        answers_by_variant.append(answers)
        if k == 0:
            tokens = toks
    answers = answers_by_variant[0]
    swapped = None
    if swap:
        swapped = [a if isinstance(a, Failed) else swap.map_back(a, {}) for a in answers_by_variant[1]]
    return SystemResult(name, "system1" if adapter is None else "distilled", adapter,
                        metric_values(cp, answers, swapped, rows), sum(tokens) / max(1, len(tokens)), len(rows),
                        sum(isinstance(a, Failed) for a in answers), answers)


def _answer_pass(cp, rows, engine, adapter, sampling, cache, chunk_size, cascade):
    task = cp.tasks[0]
    inputs = [{p.name: r[p.name] for p in cp.inputs} for _, r in rows]
    reqs = [_request(system1_messages(task, x), sampling, adapter) for x in inputs]
    first = _generate(engine, reqs, cache, chunk_size)
    if not cascade or len(cp.tasks) < 2:
        return [t for t, _ in first], [n for _, n in first]
    # CasCoD: the rationale System 1 wrote becomes part of the answer step's prompt
    second_task = cp.tasks[1]
    reqs2 = []
    for x, (rat, _) in zip(inputs, first):
        if isinstance(rat, Failed):
            reqs2.append(None)
            continue
        msgs = system1_messages(second_task, {**x, **{task.name: rat.strip()}})
        reqs2.append(_request(msgs, sampling, adapter))
    live = [r for r in reqs2 if r is not None]
    second = iter(_generate(engine, live, cache, chunk_size))
    texts, toks = [], []
    for (rat, n1), r in zip(first, reqs2):
        if r is None:
            texts.append(rat)
            toks.append(n1)
        else:
            t, n2 = next(second)
            texts.append(t)
            toks.append(n1 + n2)
    return texts, toks


def _request(messages: list[dict], sampling: Sampling, adapter: str | None) -> Request:
    return Request(messages=tuple(Message(m["role"], m["content"]) for m in messages), sampling=sampling,
                   adapter=adapter)


def adapter_format(adapter: str) -> str | None:
    """The distill format an adapter was trained on (from s2c train's config), if known."""
    for cfg in (Path(adapter) / "train_config.json", Path(adapter).parent / "train_config.json"):
        if cfg.exists():
            try:
                conf = json.loads(cfg.read_text())
            except ValueError:
                return None
            ds = conf.get("dataset") or conf.get("dataset_dir")
            if ds and (Path(ds) / "meta.json").exists():
                return json.loads((Path(ds) / "meta.json").read_text()).get("format")
            return conf.get("format")
    return None


def resolve_adapter(path: str) -> str:
    p = Path(path)
    if (p / "adapter_config.json").exists():
        return str(p)
    if (p / "adapter" / "adapter_config.json").exists():
        return str(p / "adapter")
    raise S2Error(f"--adapter {path}: no LoRA adapter there (no adapter_config.json)",
                  hint="pass the folder `s2c train` wrote, or its adapter/ subfolder")
