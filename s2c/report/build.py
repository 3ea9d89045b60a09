"""Build the HTML report of a run folder, a compiled dataset folder or an eval folder.

    locate(path) -> Sources     which kind of folder, which run store holds the traces, the program
    collect(sources) -> Report  tables, charts and the examples (an index, and traces in chunks)
    render(report) -> str       one HTML file: no network at view time, no script from elsewhere

The file stays small and opens fast at 10,000 examples because only the index (id, status,
verdict, gold, output: a few hundred bytes an example) is parsed on load; each example's trace
and System-1 rows sit in gzip-compressed chunks of CHUNK examples that the page inflates with
the browser's own DecompressionStream when one of them is opened. The list is paginated.

Figures are SVG drawn by matplotlib; the program's graph is laid out by networkx
(multipartite layout over the graph's topological generations, left to right).
"""
from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from s2c.compiler import ir
from s2c.errors import S2Error
from s2c.report.trace_view import AnswerChecker, open_folder, open_store
from s2c.runtime.store import FILE

CHUNK = 200  # examples per compressed trace chunk
SHORT = 160  # characters of an output or gold value kept in the index


@dataclass
class Sources:
    kind: str  # "run" | "compile" | "eval"
    root: Path
    run_dir: Path  # the run store whose traces the report shows
    checker: AnswerChecker  # the program the run executed (the graph), and how an answer is scored
    notes: list[str] = field(default_factory=list)  # what the report could not show, and why

    @property
    def cp(self) -> ir.CheckedProgram | None:
        return self.checker.program


@dataclass
class Report:
    title: str
    kind: str
    facts: list[tuple[str, str]]  # (label, value) lines at the top
    graph_svg: str | None
    node_table: list[dict]  # one row per node of summary.json (+ total)
    curation: dict | None  # report.json of a compiled dataset
    labels_svg: str | None
    eval_results: dict | None  # results.json of an eval
    eval_metrics: list[str]  # its metric names, in order
    eval_svg: str | None
    index: list[dict]  # one small record per example, in input order
    chunks: list[str]  # base64 of gzip(JSON list of {trace, system1, answers}), CHUNK examples each
    notes: list[str]


def locate(path: str | Path) -> Sources:
    root = Path(path)
    if not root.is_dir():
        raise S2Error(f"{root}: no such folder", hint="pass a run folder, a compiled dataset or an eval folder")
    if (root / "results.json").exists():
        runs = [root / "system2"] + sorted(p.parent for p in root.glob(f"*/{FILE}"))
        run_dir, kind = next((p for p in runs if (p / FILE).exists()), None), "eval"
        if run_dir is None:
            raise S2Error(f"{root}: an eval folder without any system's run store", hint="re-run s2c eval")
    elif (root / FILE).exists() or (root / "run" / FILE).exists():
        folder = open_folder(root)  # trace's resolution: a run, or a compiled dataset as DIR or DIR/run
        run_dir, kind, root = folder.run, "compile" if folder.compiled else "run", folder.compiled or folder.run
    else:
        raise S2Error(f"{root} is not a run, compiled dataset or eval folder (no run.sqlite, meta.json or "
                      "results.json in it)", hint="pass the --out of s2c run, s2c compile or s2c eval")
    store = open_store(run_dir)  # a damaged run.sqlite is a located error, not a traceback
    try:
        checker = AnswerChecker(store.meta())
    finally:
        store.close()
    note = checker.program_note and f"{checker.program_note}: no graph, no correct/incorrect"
    return Sources(kind, root, run_dir, checker, [note] if note else [])


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise S2Error(f"{path}: not valid JSON ({e})", hint="the file was damaged; re-run the command that wrote it")


def collect(src: Sources) -> Report:
    from s2c.distill.build import read_verdicts

    summary = _read_json(src.run_dir / "summary.json")
    notes = list(src.notes)
    if summary is None:
        notes.append(f"{src.run_dir}/summary.json is missing (a run stopped before its end): no node table")
    curation = _read_json(src.root / "report.json") if src.kind == "compile" else None
    results = _read_json(src.root / "results.json") if src.kind == "eval" else None
    meta = _read_json(src.root / "meta.json") if src.kind == "compile" else None
    verdicts = read_verdicts(src.root) if src.kind == "compile" else None
    if src.kind == "compile" and verdicts is None:
        notes.append("this dataset was compiled before curation.jsonl existed: no kept/dropped per example")
    program = (summary or {}).get("program") or (meta or {}).get("program") or (results or {}).get("program", "?")
    index, chunks = [], []
    for k, group in enumerate(_chunked(_examples(src, verdicts, results), CHUNK)):
        for j, (entry, detail) in enumerate(group):
            index.append({"i": k * CHUNK + j, **entry})
        chunks.append(_pack([detail for _, detail in group]))
    metrics = list(dict.fromkeys(n for s in (results or {}).get("systems", []) for n in s["metrics"]))
    return Report(
        title=f"{program} · {src.kind} · {src.root.name}",
        kind=src.kind,
        facts=_facts(src, summary, meta, results),
        graph_svg=graph_svg(src.cp) if src.cp else None,
        node_table=_node_table(summary) if summary else [],
        curation=curation,
        labels_svg=labels_svg(curation["label_distribution"]) if curation and curation.get("label_distribution") else None,
        eval_results=results,
        eval_metrics=metrics,
        eval_svg=_eval_svg(results, metrics, program) if results and results.get("systems") else None,
        index=index,
        chunks=chunks,
        notes=notes,
    )


def _facts(src: Sources, summary, meta, results) -> list[tuple[str, str]]:
    s = summary or {}
    facts = [("folder", str(src.root)), ("program", f"{s.get('program', '?')} ({s.get('program_file', '?')})"),
             ("data", str(s.get("data") or (meta or {}).get("data") or (results or {}).get("data", "?"))),
             ("engine", f"{s.get('engine', '?')} · {', '.join(f'{k}={v}' for k, v in (s.get('models') or {}).items())}")]
    if summary:
        facts.append(("examples", f"{s['examples']}: {s['ok']} ok, {s['failed']} failed, {s['unparsed']} unparsed"))
        tokens = (f"{s['generated_tokens']:,} ({s['generated_tokens_per_example']:,.1f} per example), "
                  f"{s['engine_calls']:,} engine calls, {s['cache_hits']:,} cache hits, {s['wall_seconds']:.1f} s")
        facts.append(("generated tokens", tokens))
        paid = sum(n.get("engine_generated_tokens", 0) for n in s["nodes"].values())
        if s["cache_hits"] and any("engine_generated_tokens" in n for n in s["nodes"].values()):
            facts.append(("served from the cache", f"{s['cache_hits']:,} calls, {s['generated_tokens'] - paid:,} generated "
                          f"tokens paid when they were made; this run paid {s['engine_calls']:,} engine calls, "
                          f"{paid:,} generated tokens"))
    if meta:
        facts.append(("rows", ", ".join(f"{k}: {v}" for k, v in meta.get("rows", {}).items())))
    if src.kind == "eval":
        facts.append(("traces shown", f"{src.run_dir.name} (System 2's run, with every system's answer)"))
    return facts


def _node_table(summary: dict) -> list[dict]:
    rows = [{"node": nid, **{k: s.get(k) for k in ("engine_calls", "cache_hits", "prompt_tokens",
                                                    "generated_tokens", "seconds", "failed", "unparsed")}}
            for nid, s in summary["nodes"].items()]
    rows.append({"node": "total", "engine_calls": summary["engine_calls"], "cache_hits": summary["cache_hits"],
                 "prompt_tokens": summary["prompt_tokens"], "generated_tokens": summary["generated_tokens"],
                 "seconds": summary["wall_seconds"], "failed": f"{summary['failed']} ex",
                 "unparsed": f"{summary['unparsed']} ex"})
    return rows


def _examples(src: Sources, verdicts: dict | None, results: dict | None) -> Iterator[tuple[dict, dict]]:
    """(index entry, detail) per original example, in input order."""
    from s2c.distill.build import reason_class
    from s2c.runtime.store import RunStore

    system1 = _system1_rows(src.root) if src.kind == "compile" else {}
    answers = _answers(src.root) if src.kind == "eval" else {}
    checker = src.checker
    metric = checker.metrics[0] if checker.metrics else None
    store = RunStore.open(src.run_dir, checker.system.program if checker.system else None)
    try:
        rows = store.originals() if checker.system else ((None, t) for t in store.traces(originals=True))
        for res in rows:
            res, trace = (res, res.trace) if checker.system else res
            ex_id = trace.example_id
            gold = trace.gold
            checks = checker.check(res) if checker.system else None
            correct = next((c.correct for c in checks or () if c.correct is not None), None)
            v = (verdicts or {}).get(ex_id) or {}
            entry = {"id": ex_id, "status": trace.status, "verdict": v.get("verdict"), "reason": v.get("reason"),
                     "group": reason_class(v["reason"]) if v.get("verdict") == "dropped" and v.get("reason") else None,
                     "gold": _short(gold), "output": _short(trace.outputs), "correct": correct,
                     "tokens": trace.generated_tokens}
            detail = {"trace": trace.to_json(), "system1": system1.get(ex_id, [])}
            if answers:
                scored = metric is not None and gold.get(metric.gold) not in (None, "")
                detail["answers"] = {name: {"answer": a, "correct": _correct(metric, a, gold[metric.gold]) if scored
                                            else None} for name, a in answers.get(ex_id, {}).items()}
            yield entry, detail
    finally:
        store.close()


def _correct(metric: ir.MetricIR, answer, gold) -> bool:
    """An eval system's answer as answers.jsonl holds it (a failure is {"failed"/"unparsed": ...})."""
    from s2c.compiler.normalize import correct

    if isinstance(answer, dict) and ({"failed", "unparsed"} & answer.keys()):
        return False
    return correct(metric.name, answer, gold)


def _short(value) -> str:
    if not value:
        return ""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return s if len(s) <= SHORT else s[:SHORT] + "…"


def _system1_rows(folder: Path) -> dict[str, list[dict]]:
    """A compiled dataset's rows by example id (every split; a multi-task format has several)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.name == "curation.jsonl":
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                out.setdefault(row["example_id"], []).append(
                    {"split": path.stem, "task": row.get("task"), "weight": row.get("weight"),
                     "prompt": row["prompt"], "completion": row["completion"]})
    return out


def _answers(folder: Path) -> dict[str, dict]:
    path = folder / "predictions.jsonl"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        return {(rec := json.loads(line)).pop("example_id"): rec for line in f if line.strip()}


def _chunked(items: Iterator, n: int) -> Iterator[list]:
    group = []
    for it in items:
        group.append(it)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def _pack(details: list[dict]) -> str:
    raw = json.dumps(details, ensure_ascii=False, default=str, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


# ------------------------------------------------------------------ figures

def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    import matplotlib.pyplot as plt

    return plt


def graph_svg(cp: ir.CheckedProgram) -> str:
    """The program's graph left to right: inputs, then each generation of nodes that only read
    earlier ones. networkx lays it out; matplotlib draws it."""
    import networkx as nx

    from s2c.compiler.render import label

    plt = _pyplot()
    g = cp.graph.copy()
    layers = list(nx.topological_generations(g))
    for depth, layer in enumerate(layers):
        for nid in layer:
            g.nodes[nid]["layer"] = depth
    pos = nx.multipartite_layout(g, subset_key="layer")
    width = max(len(x) for x in layers)
    fig, ax = plt.subplots(figsize=(max(4.0, 2.4 * len(layers)), max(1.6, 0.9 * width + 0.6)))
    colors = {"llm": "#cfe3ff", "transform": "#eeeeee", "input": "#fff4cc"}
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=14, edge_color="#888888",
                           node_size=2600, node_shape="s")
    for nid, (x, y) in pos.items():
        kind = g.nodes[nid]["kind"]
        ax.text(x, y, label(g, nid).replace(" ", "\n", 1), ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4" if kind != "llm" else "square,pad=0.4",
                      "fc": colors.get(kind, "#ffffff"), "ec": "#333333" if kind == "llm" else "#999999",
                      "lw": 1.4 if kind == "llm" else 0.8})
    ax.set_axis_off()
    ax.margins(0.15, 0.25)
    return _svg(fig)


def labels_svg(distribution: dict[str, int], top: int = 20) -> str:
    plt = _pyplot()
    items = list(distribution.items())[:top]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(items) + 1))
    ax.barh([k or "(empty)" for k, _ in items][::-1], [v for _, v in items][::-1], color="#4a7bd0")
    ax.set_xlabel("kept examples")
    ax.set_title("label distribution of kept targets" + (f" (top {top})" if len(distribution) > top else ""))
    return _svg(fig)


def _eval_svg(results: dict, metrics: list[str], title: str) -> str:
    from s2c.evaluate.report import chart

    _pyplot()
    buf = io.BytesIO()
    chart(buf, results["systems"], metrics, title)
    text = buf.getvalue().decode("utf-8")
    return text[text.index("<svg"):]


# ------------------------------------------------------------------ HTML

def render(report: Report) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("s2c", "report"), autoescape=True)
    return env.get_template("report.html").render(r=report, chunk_size=CHUNK)


def write_report(path: str | Path, out: str | Path | None = None) -> tuple[Path, Report]:
    report = collect(locate(path))
    dest = Path(out) if out else Path(path) / "report.html"
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(dest)
    return dest, report
