"""s2c compile: run a System-2 program (with its perturbed copies), curate, emit System-1 rows.

    rows -> with_perturbed (keep consistent) -> execute (run store) -> for each example in the
    store: judge (keep rules) -> build_rows (format) -> DatasetWriter (split, atomic) -> card

Every original example's verdict goes to curation.jsonl, one line each, in input order:
    {"example_id", "verdict": kept | dropped | failed | unparsed, "rule", "reason", "node"}
(`s2c trace --dropped` and `s2c report` read it; report.json holds the counts).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from s2c.compiler import ir
from s2c.compiler.early_stop import EarlyStop, early_stops
from s2c.compiler.normalize import normalize
from s2c.distill.curate import CurationReport, judge, needs_copies, with_curation
from s2c.distill.rows import as_text, build_rows
from s2c.distill.write import DatasetWriter, jsonl_line
from s2c.errors import S2Error
from s2c.runtime.gold import GoldTally
from s2c.runtime.store import RunStore
from s2c.runtime.summary import RunSummary
from s2c.runtime.values import find_failed

SKEW = 0.8  # a kept-label share above this is reported (a judge that always says A is position-biased)
MAX_LABELS = 1000  # distinct kept labels counted: free-text targets would make this grow with the data


@dataclass
class DistillResult:
    """What `s2c compile` wrote: the System-1 rows (`dataset`, a datasets.DatasetDict), the
    curation report, the System-2 run's summary, and the folder they are in."""

    out: Path
    sizes: dict[str, dict]  # split -> {"rows": ..., "examples": ...}
    report: dict  # counts kept, dropped per rule, failed, labels, warnings (report.json)
    meta: dict
    summary: RunSummary  # the System-2 run's (OUT/run/summary.json)

    @property
    def dataset(self):
        """The splits as a datasets.DatasetDict of TRL prompt-completion rows."""
        import datasets

        was_off = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a bar per split ("Generating train split") for reading a small file
        try:
            return datasets.DatasetDict({split: datasets.Dataset.from_json(str(self.out / f"{split}.jsonl"))
                                         for split in self.sizes})
        finally:
            if not was_off:
                datasets.enable_progress_bars()

    def save(self, path: str | os.PathLike) -> Path:
        """Copy the dataset folder to `path`: the same files, byte for byte, as `s2c compile
        --out PATH` writes (the System-2 run under run/ too, so `s2c trace` and `s2c report` work
        there)."""
        import shutil

        dest = Path(path)
        if dest.exists() and any(dest.iterdir()):
            raise S2Error(f"{dest}: exists and is not empty", hint="save to a new folder")
        shutil.copytree(self.out, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".s2c.lock"))
        # meta.json and the card name the run folder, as `s2c compile --out PATH` would have: PATH/run
        old, new = str(self.out / "run"), str(dest / "run")
        meta = json.loads((dest / "meta.json").read_text(encoding="utf-8"))
        meta["run_dir"] = new
        (dest / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        card = (dest / "README.md").read_text(encoding="utf-8")
        card = card.replace(f"traces in `{old}`", f"traces in `{new}`").replace(f"`s2c trace {old} ", f"`s2c trace {new} ")
        (dest / "README.md").write_text(card, encoding="utf-8")
        return dest

    def push_to_hub(self, repo_id: str, **kwargs):
        """datasets' own DatasetDict.push_to_hub, unchanged. Untested: no hub can be reached from
        the machines s2c is built and tested on."""
        return self.dataset.push_to_hub(repo_id, **kwargs)

    def __repr__(self) -> str:
        r = self.report
        return (f"<s2c.DistillResult {self.out}: {r['inputs']} inputs, {r['kept']} kept; "
                + ", ".join(f"{k} {v['rows']} rows" for k, v in self.sizes.items()) + ">")

    @property
    def rows(self) -> dict[str, list[dict]]:
        """The written rows, read back from the split files (for small datasets and tests)."""
        return {name: [json.loads(line) for line in open(self.out / f"{name}.jsonl", encoding="utf-8")]
                for name in self.sizes}


def run_id_for(cp: ir.CheckedProgram, data: str, model: str, n: int) -> str:
    """The System-2 run's identity, in every row it produced (the same under every --curation)."""
    h = hashlib.sha256(json.dumps([cp.program.source, data, model, n]).encode()).hexdigest()
    return f"{cp.name}-{h[:10]}"


def with_perturbed(cp: ir.CheckedProgram, rows: list[tuple[str, dict]], seed: int):
    """Each row, then its perturbed copies (ID~swap), tagged with what maps their answers back."""
    for ex_id, row in rows:
        yield ex_id, row
        for suffix, p in cp.perturbations.items():
            prow, info = p.apply(ex_id, row, seed)
            yield ex_id + suffix, prow, {"source": ex_id, "variant": suffix, "info": info}


@dataclass(frozen=True)
class DistillSettings:
    """How `s2c compile` turns a run into a dataset (one value, passed whole; the CLI's flags)."""

    data: str = "data"  # the data's name, recorded in every row's run id and in meta.json
    format: str | None = None  # the row format; None: the one the distill section declares
    seed: int = 0  # perturbations and the validation split
    val_split: float = 0.0  # the share of examples in validation.jsonl
    curation: str = "program"  # program (the keep rules), none, or gold (curate.CURATIONS)
    # make no call that cannot change the dataset (lossless): a sampled call stops drawing once its
    # decision is made, and a perturbed copy runs only where its original's verdict reads it
    early_stop: bool = True


def distill_program(cp: ir.CheckedProgram, rows: list[tuple[str, dict]], runner, out: str | Path,
                    settings: DistillSettings = DistillSettings(), *, skipped: list[str] = ()) -> DistillResult:
    """Run `cp` (and its perturbed copies) on `runner` into OUT/run, curate, write the dataset folder."""
    out = Path(out)
    curation, seed, val_split, data = settings.curation, settings.seed, settings.val_split, settings.data
    cp = with_curation(cp, curation)
    fmt = settings.format or cp.format
    model = runner.model_id("default")
    run_id = run_id_for(cp, data, model, len(rows))
    if settings.early_stop:  # sampled calls only a vote and a majority rule read, and copies no verdict reads
        runner = runner.with_options(
            early_stop={nid: plan for nid, plan in early_stops(cp, fmt).items() if isinstance(plan, EarlyStop)},
            needs_copies=functools.partial(needs_copies, cp) if cp.perturbations else None)
    outcome = runner.execute(cp, with_perturbed(cp, rows, seed), out / "run", skipped=skipped,
                             meta={"data": data, "run_id": run_id})
    report = CurationReport()
    problems: list[str] = []
    writer = DatasetWriter(out, val_split, seed)
    # where the program has no gold metric to read its answer, a kept label is the answer task's
    # completion: the first task's, or in a cascade the last one's (the rationale comes first)
    label_task = (cp.tasks[-1] if fmt == "cascade" else cp.tasks[0]).name if cp.tasks else None
    store = RunStore.open(out / "run", cp)
    verdicts = VerdictLog(out)
    tally = next(iter(GoldTally.for_program(cp)), None)  # the first gold metric reads the label
    for res in store.originals():
        report.inputs += 1
        answer = tally.answer(res) if tally is not None else None  # scored, and a kept example's label
        scored = tally.score(res, answer) if tally is not None else None
        if not res.ok:
            node = res.failed_at
            (report.unparsed if res.status == "unparsed" else report.failed)[node] += 1
            verdicts.add(res.id, res.status, reason=res.failed.get(node), node=node)
            continue
        perturbed = {s: other for s in cp.perturbations if (other := store.get(res.id + s)) is not None}
        v = judge(cp, res, perturbed)
        if not v.keep:
            report.dropped[v.rule] += 1
            report.reasons[reason_class(v.reason)] += 1
            verdicts.add(res.id, "dropped", rule=v.rule, reason=v.reason)
            continue
        if v.element_mask is not None:
            report.elements_dropped += v.element_mask.count(False)
        new = build_rows(cp, res, v, fmt, run_id, problems)
        if not new:
            report.failed["distill target"] += 1
            verdicts.add(res.id, "failed", reason="no row could be built from the distill target",
                         node="distill target")
            continue
        report.kept += 1
        verdicts.add(res.id, "kept")
        writer.add(new)
        if tally is not None:
            tally.keep(scored)
        label = _label(tally, answer, new, label_task)
        if label is not None and len(report.labels) < MAX_LABELS:
            report.labels[normalize(label)[:40]] += 1
    if tally is not None and tally.scored:
        report.gold = tally.as_dict()
    _label_warning(report)
    s = outcome.summary
    kept_rows = sum(writer.tasks[t][0] for t in writer.tasks)
    tokens = {
        "generated": s.generated_tokens, "prompt": s.prompt_tokens,
        "per_input": s.generated_tokens / max(1, report.inputs),
        "per_kept_row": s.generated_tokens / max(1, kept_rows),
        "engine_calls": s.engine_calls, "cache_hits": s.cache_hits, "engine_generated": s.engine_generated_tokens,
    }
    if s.prices is not None:  # USD: what this compile paid, and what the dataset cost to make
        tokens["cost"] = {"paid": round(s.cost, 6), "made": round(s.cost_made, 6),
                          "per_kept_row": round(s.cost_made / max(1, kept_rows), 6)}
    meta = {
        "program": cp.name, "program_file": cp.program.file, "format": fmt, "data": data,
        "engine": runner.engine_name, "model": model, "run_id": run_id, "run_dir": str(out / "run"),
        "seed": seed, "val_split": val_split, "curation": curation, "perturbations": sorted(cp.perturbations),
        "tokens": tokens,
        "row_problems": problems[:200],
    }
    rep = report.as_dict()
    verdicts.close()
    sizes = writer.close(meta, rep)
    return DistillResult(out, sizes, rep, {**meta, "rows": {k: v["rows"] for k, v in sizes.items()}}, s)


CURATION = "curation.jsonl"


class VerdictLog:
    """curation.jsonl: each original example's verdict, written as it is judged and renamed into
    place at the end (a compile stopped half-way leaves no partial file under the final name)."""

    def __init__(self, out: Path):
        self.path = out / CURATION
        self.tmp = out / f".{CURATION}.tmp"
        self.f = open(self.tmp, "w", encoding="utf-8")

    def add(self, example_id: str, verdict: str, *, rule: str | None = None, reason: str | None = None,
            node: str | None = None) -> None:
        self.f.write(jsonl_line({"example_id": example_id, "verdict": verdict, "rule": rule, "reason": reason,
                                 "node": node}))

    def close(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)


def read_verdicts(folder: Path) -> dict[str, dict] | None:
    """A compiled dataset's verdicts by example id, or None when `folder` has no curation.jsonl."""
    path = Path(folder) / CURATION
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return {(rec := json.loads(line))["example_id"]: rec for line in f if line.strip()}


def reason_class(reason: str | None) -> str:
    """Group reasons for the report: drop the per-example detail in parentheses."""
    if not reason:
        return "?"
    return reason.split(" (")[0]


def _label(tally: GoldTally | None, answer, rows: list[dict], task: str | None) -> str | None:
    """A kept example's label for the distribution: its answer as the gold metric reads it, else
    the answer task's completion."""
    if tally is not None:
        return None if find_failed(answer) is not None else as_text(answer)
    return next((r["completion"][0]["content"] for r in rows if r["task"] == task), None)


def _label_warning(report: CurationReport) -> None:
    total = sum(report.labels.values())
    if total >= 4 and len(report.labels) >= 1:
        label, n = report.labels.most_common(1)[0]
        if n / total > SKEW and len(report.labels) < 20:
            report.warnings.append(
                f"kept targets are skewed: {n}/{total} ({n / total:.0%}) are '{label}'. A judge that always "
                "answers the same label is position-biased; distilling that bias is what keep consistent(swap=...) "
                "exists to stop")
