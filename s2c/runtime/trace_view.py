"""Read one example's trace from a run folder and render it as a rich tree."""
from __future__ import annotations

import json
from pathlib import Path

from s2c.errors import S2Error


def find_trace(run: Path, example: str | None) -> dict:
    """One example's trace from a run folder's store (the first example in input order by default)."""
    from s2c.runtime.store import RunStore

    store = RunStore.open(run)
    try:
        ids = store.ids(limit=None if example else 1)
        if not ids:
            raise S2Error(f"{run}: the run has no finished example yet")
        rec = store.find_trace(example or ids[0])
        if rec is None:
            from s2c.errors import did_you_mean

            raise S2Error(f"no example '{example}' in {run}",
                          hint=did_you_mean(example, ids) or f"first ids: {', '.join(ids[:5])}")
        return rec
    finally:
        store.close()


def _cut(text, full: bool, n: int = 300) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    s = s.replace("[", "\\[")  # rich markup
    return s if full or len(s) <= n else s[:n] + f"… [dim](+{len(s) - n} chars, --full)[/]"


def render_trace(rec: dict, node: str | None = None, full: bool = False):
    from rich.tree import Tree

    status = {"ok": "[green]ok[/]", "unparsed": "[yellow]unparsed[/]"}.get(rec["status"], "[red]failed[/]")
    root = Tree(f"[bold]example {rec['example_id']}[/] {status} · {rec.get('engine_calls', 0)} engine calls · "
                f"{rec.get('generated_tokens', 0)} generated tokens")
    inputs = root.add("[bold]inputs[/]")
    for k, v in rec.get("inputs", {}).items():
        inputs.add(f"{k}: {_cut(v, full, 200)}")
    nodes = rec.get("nodes", {})
    if node is not None and node not in nodes:
        raise S2Error(f"no node '{node}' in this trace", hint=f"nodes: {', '.join(nodes)}")
    for nid, tr in nodes.items():
        if node is not None and nid != node:
            continue
        insts = tr.get("instances", [])
        br = root.add(f"[bold cyan]{nid}[/] [dim]{tr['kind']} · {len(insts)} instance(s)[/]")
        for inst in insts:
            idx = inst.get("index") or []
            label = f"[magenta]{nid}{idx}[/]" if idx else f"[magenta]{nid}[/]"
            ib = br.add(label) if (len(insts) > 1 or idx) else br
            if "messages" in inst:
                for m in inst["messages"]:
                    ib.add(f"[dim]{m['role']}:[/] {_cut(m['content'], full)}")
            elif "prompt" in inst:
                ib.add(f"[dim]prompt:[/] {_cut(inst['prompt'], full)}")
            for j, c in enumerate(inst.get("completions", [])):
                tag = f"sample {j}" if len(inst["completions"]) > 1 else "completion"
                ib.add(f"[green]{tag}:[/] {_cut(c, full)}")
            if "value" in inst:
                ib.add(f"[yellow]value:[/] {_cut(inst['value'], full)}")
            if inst.get("error"):
                ib.add(f"[red]error:[/] {inst['error']}")
            if "generated_tokens" in inst:
                ib.add(f"[dim]tokens: {inst.get('prompt_tokens', 0)} prompt, {inst['generated_tokens']} generated"
                       f"{', cached' if inst.get('cached') else ''}[/]")
    if node is None:
        out = root.add("[bold green]outputs[/]")
        for k, v in rec.get("outputs", {}).items():
            out.add(f"{k}: {_cut(v, full)}")
        for k, v in (rec.get("gold") or {}).items():
            root.add(f"[bold]gold[/] {k}: {_cut(v, full)}")
        for k, v in rec.get("failed", {}).items():
            root.add(f"[red]failed[/] {k}: {v}")
    return root
