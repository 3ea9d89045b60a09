"""`s2c trace`: pick examples from a run folder, check each answer against its gold value, and
render each example's execution as a rich tree (the tree on stdout, status lines on stderr).

What RUN may be: a run folder (`s2c run --out`, an eval's DIR/system1 ...), or a compiled dataset
folder (`s2c compile --out DIR`: DIR or DIR/run), whose curation.jsonl gives each example's verdict.

Which examples are shown:
    --example ID   that one
    (default)      the first original example in input order whose status is ok (an example
                   that worked is the one that shows what the program does); the first one when
                   none is ok. A line on stderr says which was picked and why.
    --failed       the examples whose status is failed or unparsed, as summary.json counts them
                   (perturbed copies included), in input order, the first --limit (10; 0: all)
    --dropped      the original examples curation dropped, with the rule and its reason, in input
                   order, the first --limit (10; 0: all); needs a compiled dataset folder
Nothing to show for --failed or --dropped is an answer, not an error: a line on stderr, exit 0.

Right or wrong: every eval metric with a gold field scores the example as `s2c eval` does
(`evaluate.System.answer`, `metrics.correct`), with the program rebuilt from the file the run's
meta names. System 2 (run, compile, eval's system2/) answers with each metric's answer
expression; a System-1 run of eval (system1/, an adapter's folder) with its `parsed` node
(compiler/system1.py ANSWER). A perturbed copy (ID~swap) is not scored: its gold belongs to the
original input (eval scores copies only through swap_inconsistency). With no such metric the
gold is shown alone; also when the program file does not load or no longer fits the run, and
then a line on stderr says why. (The run's meta holds the program's path, not its source: a
program edited since the run but with the same nodes is scored as it is now.)
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from s2c.compiler import ir
from s2c.compiler.system1 import ANSWER, system1_program
from s2c.distill.build import CURATION, read_verdicts
from s2c.errors import S2Error, did_you_mean
from s2c.evaluate.evaluate import System
from s2c.compiler.normalize import correct
from s2c.runtime.store import FILE, ExampleResult, RunStore
from s2c.runtime.trace import Trace
from s2c.runtime.values import find_failed, to_json

DEFAULT_LIMIT = 10  # --failed / --dropped: enough to see a pattern, few enough to read
NOT_OK = ("failed", "unparsed")
FOLDER_HINT = ("pass the folder `s2c run --out` wrote, a compiled dataset (`s2c compile --out DIR`: DIR or DIR/run), "
               "or one system of an eval (DIR/system1, DIR/system2)")


@dataclass(frozen=True)
class Selection:
    """Which examples `s2c trace` shows (at most one of example, failed, dropped)."""

    example: str | None = None
    failed: bool = False
    dropped: bool = False
    limit: int | None = None  # for failed / dropped: None is DEFAULT_LIMIT, 0 is all


@dataclass(frozen=True)
class Folder:
    """RUN resolved: the run store's folder, and the compiled dataset folder around it, if any."""

    run: Path
    compiled: Path | None = None


def open_folder(path: Path) -> Folder:
    """A run folder, a compiled dataset folder (DIR or DIR/run), or a run.sqlite; S2Error otherwise."""
    if not path.exists():
        raise S2Error(f"no folder {path}", hint=FOLDER_HINT)
    if path.is_file():
        if path.name != FILE:
            raise S2Error(f"{path} is a file, not a run folder", hint=FOLDER_HINT)
        path = path.parent
    if (path / FILE).exists():
        around = path.parent
        compiled = path.name == "run" and ((around / CURATION).exists() or (around / "meta.json").exists())
        return Folder(path, around if compiled else None)
    if (path / "run" / FILE).exists():
        return Folder(path / "run", path)
    runs = sorted(p.name for p in path.iterdir() if (p / FILE).exists())
    if runs:  # an eval folder: one run per system
        raise S2Error(f"{path} holds {len(runs)} runs ({', '.join(runs)}): trace one of them",
                      hint=f"s2c trace {path / runs[0]}")
    raise S2Error(f"{path} is not a run folder: it has no {FILE}", hint=FOLDER_HINT)


def open_store(run: Path, cp: ir.CheckedProgram | None = None) -> RunStore:
    """The run store, read-only; S2Error when run.sqlite is not one."""
    store = RunStore.open(run, cp)
    try:
        store.meta()
    except sqlite3.DatabaseError as e:  # not SQLite, or SQLite without a run store's tables
        store.close()
        raise S2Error(f"{Path(run) / FILE} is not a readable run store ({e})",
                      hint="rerun the command that wrote it: completed calls replay from the cache") from None
    return store


def pick_default(store: RunStore) -> tuple[str, str]:
    """The example shown when none is named, and why: the first ok original, else the first original."""
    n = sum(store.status_counts(originals=True).values())
    if not n:
        raise S2Error(f"{store.path.parent}: the run has no finished example yet")
    ok = store.ids(1, statuses=("ok",), originals=True)
    if ok:
        return ok[0], f"the first ok example of {n}"
    return store.ids(1, originals=True)[0], f"no example of {n} is ok: the first one"


def get_trace(store: RunStore, ex_id: str) -> Trace:
    rec = store.find_trace(ex_id)
    if rec is None:
        ids = store.ids()
        raise S2Error(f"no example '{ex_id}' in {store.path.parent}",
                      hint=did_you_mean(ex_id, ids) or f"first ids: {', '.join(ids[:5])}")
    return rec


def find_trace(run: Path, example: str | None) -> Trace:
    """One example's trace from a run folder's store (by default the one `pick_default` picks)."""
    store = open_store(open_folder(Path(run)).run)
    try:
        return get_trace(store, example if example is not None else pick_default(store)[0])
    finally:
        store.close()


# ------------------------------------------------------------------ right or wrong
def run_program(meta: dict) -> tuple[ir.CheckedProgram | None, str | None]:
    """The program a run executed, rebuilt from the file its meta names (as the file is now), or
    None and why not."""
    file, name = meta.get("program_file"), meta.get("program")
    if not file:
        return None, "the run's meta names no program file"
    from s2c.compiler.pipeline import load_program

    try:
        cp = load_program(file)
    except S2Error as e:
        return None, f"the run's program {file} does not load ({e.diagnostic.message})"
    if cp.name != name:
        return None, f"{file} now holds program '{cp.name}', not the run's '{name}'"
    return cp, None


@dataclass(frozen=True)
class AnswerCheck:
    """One eval metric on one example, scored as `s2c eval` scores it."""

    metric: str
    gold_field: str
    gold: Any
    answered_by: str  # "output final", or the expression the metric reads
    answer: Any  # a value, or a Failed when the answer could not be read
    correct: bool | None  # None: no gold value, so not scored (eval skips it too)


class AnswerChecker:
    """Scores examples with the program the run's meta names (`program_file`), rebuilt from its
    file as it is now. `system` is None when nothing is checked; `note` then says why, if it is
    not simply that the program has no metric with a gold field."""

    def __init__(self, meta: dict):
        self.system: System | None = None
        self.metrics: list[ir.MetricIR] = []
        self.program, self.program_note = run_program(meta)
        self.note = self.program_note and f"the gold is shown without a check: {self.program_note}"
        cp = self.program
        if cp is None:
            return
        system1 = meta.get("system") not in (None, "System 2")  # eval's System 1, or an adapter's name
        self.metrics = [m for m in cp.metrics if m.gold and m.perturbation is None and (system1 or m.answer)]
        if self.metrics:
            # System 1 reads only the ANSWER node, the same in a cascade's program: cascade=False will do
            program = system1_program(cp, cascade=False, max_tokens=1) if system1 else cp
            self.system = System(meta.get("system") or "System 2", "system1" if system1 else "system2", program)

    def check(self, res: ExampleResult) -> list[AnswerCheck] | None:
        """Each metric on `res`; None (and a note) when the run's nodes no longer fit the program.
        None for a perturbed copy (ID~swap): its gold is the original input's, so eval scores it only
        through swap_inconsistency."""
        if res.variant:
            return None
        program = self.system.program
        if self.system.kind == "system2":
            fits = {n: tr["kind"] for n, tr in res.trace.nodes.items()} == \
                {n.id: n.kind for n in program.nodes.values() if n.kind != "input"}
        else:
            fits = ANSWER in res.trace.nodes
        if not fits:
            self.note = (f"the gold is shown without a check: {program.program.file} has changed since this run "
                         "(its nodes differ from the run's)")
            return None
        out = []
        for m in self.metrics:
            answer, gold = self.system.answer(m, res), res.trace.gold.get(m.gold)
            by = ANSWER if self.system.kind == "system1" else _expr_text(m.answer)
            out.append(AnswerCheck(m.name, m.gold, gold, f"output {by}" if by in program.outputs else by, answer,
                                   None if gold in (None, "") else correct(m.name, answer, gold)))
        return out


def _expr_text(e: ir.IRExpr) -> str:
    if isinstance(e, ir.RefExpr):
        return e.ref.node if isinstance(e.ref, ir.NodeRef) else e.ref.loop
    if isinstance(e, ir.FnCall):
        args = [_expr_text(a) for a in e.args] + [f"{k}={_expr_text(v)}" for k, v in e.kwargs]
        return f"{e.fn}({', '.join(args)})"
    if isinstance(e, ir.ListE):
        return f"[{', '.join(_expr_text(a) for a in e.items)}]"
    return json.dumps(e.value, ensure_ascii=False)


# ------------------------------------------------------------------ which examples
def show(path: Path, sel: Selection, *, node: str | None, full: bool, out, log) -> int:
    """`s2c trace`: the selected examples' trees on `out`, which ones and why on `log`."""
    if sel.limit is not None and not (sel.failed or sel.dropped):
        raise S2Error("--limit says how many examples --failed or --dropped show", hint="add --failed or --dropped")
    if sel.limit is not None and sel.limit < 0:
        raise S2Error(f"--limit {sel.limit}: expected a count, 0 or more (0 shows all)")
    folder = open_folder(Path(path))
    verdicts = _verdicts(folder, required=sel.dropped)
    store = open_store(folder.run)
    meta = store.meta()
    store.close()
    checker = AnswerChecker(meta)  # the program, to open the store with: values are read through it
    store = open_store(folder.run, checker.system.program if checker.system else None)
    try:
        if not sum(store.status_counts().values()):
            raise S2Error(f"{folder.run}: the run has no finished example yet")
        ids = _select(store, folder, verdicts, sel, log)
        if checker.note:
            log(Text.assemble(("note", "yellow"), f": {checker.note}"))
        for i, ex_id in enumerate(ids):
            rec = get_trace(store, ex_id)
            checks, note = None, checker.note
            if checker.system is not None:
                checks = checker.check(store.get(ex_id))
                if checker.note != note:
                    log(Text.assemble(("note", "yellow"), f": {checker.note}"))
            if i:
                out.print()
            out.print(render_trace(rec, node, full, checks=checks, verdict=_verdict_of(ex_id, verdicts)))
    finally:
        store.close()
    return 0


def _select(store: RunStore, folder: Folder, verdicts: dict | None, sel: Selection, log) -> list[str]:
    limit = DEFAULT_LIMIT if sel.limit is None else sel.limit or None
    if sel.example is not None:
        return [sel.example]
    if sel.failed:
        return _failed(store, limit, log)
    if sel.dropped:
        return _dropped(verdicts, limit, log)
    ex_id, why = pick_default(store)
    others = "--example ID, --failed" + (", --dropped" if folder.compiled else "")
    log(f"showing example {ex_id} ({why}; {others} to pick others)")
    return [ex_id]


def _failed(store: RunStore, limit: int | None, log) -> list[str]:
    counts = store.status_counts()
    total, bad = sum(counts.values()), {s: counts.get(s, 0) for s in NOT_OK}
    if not sum(bad.values()):
        log(f"no example failed or was unparsed: all {total} are ok")
        return []
    ids = store.ids(limit, statuses=NOT_OK)
    n = sum(bad.values())
    log(f"{n} of {total} examples have no output: {bad['failed']} failed, {bad['unparsed']} unparsed; "
        + _showing(len(ids), n))
    return ids


def _dropped(verdicts: dict[str, dict], limit: int | None, log) -> list[str]:
    dropped = [ex_id for ex_id, v in verdicts.items() if v["verdict"] == "dropped"]
    if not dropped:
        kinds = Counter(v["verdict"] for v in verdicts.values())
        log(f"curation dropped no example: {', '.join(f'{k} {kind}' for kind, k in kinds.items())}")
        return []
    rules = Counter(verdicts[i]["rule"] for i in dropped)
    ids = dropped[:limit] if limit else dropped
    log(f"{len(dropped)} of {len(verdicts)} examples were dropped by curation "
        f"({', '.join(f'rule {r}: {k}' for r, k in rules.most_common())}); " + _showing(len(ids), len(dropped)))
    return ids


def _showing(k: int, n: int) -> str:
    return f"showing all {n}" if k == n else f"showing the first {k} (--limit N for more, --limit 0 for all)"


def _verdicts(folder: Folder, required: bool) -> dict[str, dict] | None:
    """The compile folder's verdicts by example id; with `required` (--dropped), S2Error when none."""
    verdicts = read_verdicts(folder.compiled) if folder.compiled else None
    if verdicts is None and required:
        if folder.compiled is None:
            raise S2Error(f"--dropped needs a compiled dataset folder: {folder.run} is a run with no {CURATION} "
                          "beside it (a plain run drops nothing; --failed shows the examples that failed)",
                          hint="pass the folder of `s2c compile PROGRAM --data ... --out DIR` (DIR or DIR/run)")
        raise S2Error(f"{folder.compiled} has no {CURATION}: it was compiled before compile wrote one",
                      hint="compile it again with the same command: completed calls replay from the cache")
    return verdicts


def _verdict_of(ex_id: str, verdicts: dict | None) -> tuple[dict, str | None] | None:
    """The example's curation verdict; a perturbed copy (ID~swap) has its original's, named."""
    if not verdicts:
        return None
    if ex_id in verdicts:
        return verdicts[ex_id], None
    source = ex_id.rsplit("~", 1)[0]
    return (verdicts[source], source) if "~" in ex_id and source in verdicts else None


def _cut(text, full: bool, n: int = 300) -> Text:
    """`text` (JSON for a value that is not a string) as it is, cut at `n` characters unless `full`."""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    if full or len(s) <= n:
        return Text(s)
    return Text.assemble(s[:n], "… ", (f"(+{len(s) - n} chars, --full)", "dim"))


def render_trace(rec: Trace, node: str | None = None, full: bool = False, *, checks: list[AnswerCheck] | None = None,
                 verdict: tuple[dict, str | None] | None = None):
    """The example's tree: inputs, each node's instances, outputs, then gold (scored by `checks`
    where given) and the curation `verdict` (with the original's id for a perturbed copy). Every
    label is a `Text`: ids, prompts, outputs and errors print as they are, on any console."""
    from rich.tree import Tree

    status = {"ok": ("ok", "green"), "unparsed": ("unparsed", "yellow")}.get(rec.status, ("failed", "red"))
    root = Tree(Text.assemble((f"example {rec.example_id}", "bold"), " ", status,
                              f" · {rec.engine_calls} engine calls · {rec.generated_tokens} generated tokens"))
    inputs = root.add(Text("inputs", "bold"))
    for k, v in rec.inputs.items():
        inputs.add(Text.assemble(f"{k}: ", _cut(v, full, 200)))
    nodes = rec.nodes
    if node is not None and node not in nodes:
        raise S2Error(f"no node '{node}' in this trace", hint=f"nodes: {', '.join(nodes)}")
    for nid, tr in nodes.items():
        if node is not None and nid != node:
            continue
        insts = tr.get("instances", [])
        given = f" · given from column '{tr['given']}'" if tr.get("given") else ""
        br = root.add(Text.assemble((nid, "bold cyan"), " ", (f"{tr['kind']} · {len(insts)} instance(s){given}", "dim")))
        for inst in insts:
            idx = inst.get("index") or []
            ib = br.add(Text(f"{nid}{idx}" if idx else nid, "magenta")) if (len(insts) > 1 or idx) else br
            if "messages" in inst:
                for m in inst["messages"]:
                    ib.add(Text.assemble((f"{m['role']}:", "dim"), " ", _cut(m["content"], full)))
            elif "prompt" in inst:
                ib.add(Text.assemble(("prompt:", "dim"), " ", _cut(inst["prompt"], full)))
            for j, c in enumerate(inst.get("completions", [])):
                tag = f"sample {j}" if len(inst["completions"]) > 1 else "completion"
                ib.add(Text.assemble((f"{tag}:", "green"), " ", _cut(c, full)))
            value = inst.get("value")
            skipped = inst.get("skipped") or (value.get("skipped") if isinstance(value, dict) else None)
            if skipped:  # a round after the while stopped, the branch not taken, a scan past its list
                ib.add(Text.assemble(("skipped:", "dim"), " ", (skipped, "dim")))
            elif "value" in inst:
                ib.add(Text.assemble(("value:", "yellow"), " ", _cut(inst["value"], full)))
            if inst.get("error"):
                ib.add(Text.assemble(("error:", "red"), f" {inst['error']}"))
            if "generated_tokens" in inst:
                ib.add(Text(f"tokens: {inst.get('prompt_tokens', 0)} prompt, {inst['generated_tokens']} generated"
                            f"{', cached' if inst.get('cached') else ''}", "dim"))
    if node is None:
        out = root.add(Text("outputs", "bold green"))
        for k, v in rec.outputs.items():
            out.add(Text.assemble(f"{k}: ", _cut(v, full)))
        for k, v in rec.failed.items():
            root.add(Text.assemble(("failed", "red"), f" {k}: ", _cut(v, full)))
    for c in checks or ():
        root.add(_check_line(c, full))
    scored = {c.gold_field for c in checks or ()}
    for k, v in rec.gold.items():
        if k not in scored:
            root.add(Text.assemble(("gold", "bold"), f" {k}: ", _cut(v, full)))
    if verdict is not None:
        root.add(_verdict_line(*verdict))
    return root


def _check_line(c: AnswerCheck, full: bool) -> Text:
    bad = find_failed(c.answer)
    answer = (Text.assemble(f"({'unparsed' if bad.unparsed else 'failed'}: ", _cut(bad.reason, full), ")", style="red")
              if bad is not None else _cut(to_json(c.answer), full))
    score = (Text("not scored: no gold value", "dim") if c.correct is None
             else Text("✓ correct", "green") if c.correct else Text("✗ incorrect", "red"))
    gold = Text("(none)", "dim") if c.gold is None else _cut(c.gold, full)
    return Text.assemble(("gold", "bold"), f" {c.gold_field}: ", gold, f" · {c.answered_by}: ", answer, " · ", score,
                         f" ({c.metric})")


def _verdict_line(v: dict, original: str | None) -> Text:
    who = Text.assemble(("curation", "bold"), f" (with its original {original})" if original else "")
    reason = v.get("reason") or ""
    if v["verdict"] == "kept":
        return Text.assemble(who, ": ", ("kept", "green"), " (its rows are in the dataset)")
    if v["verdict"] == "dropped":
        return Text.assemble(who, ": ", ("dropped", "yellow"), f" by rule {v.get('rule')}: {reason}")
    where = f" at {v['node']}" if v.get("node") else ""
    return Text.assemble(who, ": ", (v["verdict"], "red"), where + (f": {reason}" if reason else ""))
