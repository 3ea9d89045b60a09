"""Render a program's graph: a rich tree (default), graphviz dot, mermaid, node-link JSON."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from s2c.compiler.graph import stages
from s2c.compiler.ir import CheckedProgram


def label(g: nx.DiGraph, nid: str) -> str:
    """A node's one-line name: its kind (or transform function), its id, and what sets it apart."""
    a = g.nodes[nid]
    if a["kind"] == "llm":
        extra = f" n={a['n']}" if a["n"] > 1 else ""
        extra += f" role={a['role']}" if a["role"] != "default" else ""
        return f"llm {nid}{extra}"
    if a.get("gate"):  # "gate while@5#2: round 2 of the while at line 5"
        return f"gate {nid}: {a['gate']}"
    if a.get("carried"):  # "carried solved@22: solved after the scan at line 22"
        return f"carried {nid}: {a['name']} after {a['carried']}"
    if a["kind"] == "transform":
        return f"{a.get('fn', 'value')} {nid}"
    return f"input {nid}"


def to_json(g: nx.DiGraph) -> str:
    data = nx.node_link_data(g, edges="links")
    for n in data["nodes"]:
        n.setdefault("id", n.get("id"))
    return json.dumps(data, indent=2, default=str)


def to_dot(g: nx.DiGraph) -> str:
    shape = {"llm": "box", "transform": "ellipse", "input": "plaintext"}
    out = [f'digraph "{g.graph.get("name", "program")}" {{', "  rankdir=LR;"]
    for nid, a in g.nodes(data=True):
        text = label(g, nid) + ("\\n" + "\\n".join(a["fanout"]) if a["fanout"] else "")
        style = ', style="bold"' if a["kind"] == "llm" else ""
        out.append(f'  "{nid}" [label="{text}", shape={shape[a["kind"]]}{style}];')
    style = {"loop": ' [style=dashed, label="for each"]', "continues": ' [style=bold, label="continues"]'}
    for u, v, kind in g.edges(data="kind"):
        out.append(f'  "{u}" -> "{v}"{style.get(kind, "")};')
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(g: nx.DiGraph) -> str:
    ids = {nid: f"n{i}" for i, nid in enumerate(g.nodes)}
    out = ["flowchart LR"]
    for nid, a in g.nodes(data=True):
        text = label(g, nid) + ("<br/>" + "<br/>".join(a["fanout"]) if a["fanout"] else "")
        text = text.replace('"', "'")
        open_, close = ("[", "]") if a["kind"] == "llm" else ("([", "])") if a["kind"] == "transform" else ("[/", "/]")
        out.append(f'  {ids[nid]}{open_}"{text}"{close}')
    arrow = {"loop": "-. for each .->", "continues": "== continues ==>"}
    for u, v, kind in g.edges(data="kind"):
        out.append(f"  {ids[u]} {arrow.get(kind, '-->')} {ids[v]}")
    return "\n".join(out) + "\n"


def _where(cp: CheckedProgram, attrs: dict) -> str:
    """`line 12`, or `usc.s2:8` for a node inlined from a used program."""
    if attrs["file"] == cp.program.file:
        return f"line {attrs['line']}"
    return f"{Path(attrs['file']).name}:{attrs['line']}"


def to_tree(cp: CheckedProgram):
    """A rich Tree: stages of LLM calls, each with the transforms that follow it. Labels are
    `Text`, not markup: the program's description, paths and expressions print as written."""
    from rich.text import Text
    from rich.tree import Tree

    g = cp.graph
    gg = g.graph
    copies = gg.get("compile_copies", 1)
    est = f"{'≤ ' if gg.get('conditional') else ''}{gg['calls_per_input']} LLM calls per input" \
        + ("" if gg["bounded"] else " (unbounded lists assumed 5 long)") \
        + (f" ({gg['calls_per_input'] * copies} in a compile, with the {copies - 1} perturbed "
           f"cop{'ies' if copies > 2 else 'y'} its keep rules compare)" if copies > 1 else "")
    facts = (f"inputs: {', '.join(p.name for p in cp.inputs)} · {gg['stages']} stage{'s' * (gg['stages'] != 1)} · "
             f"{est} · ≤ {gg['max_generated_tokens_per_input']} generated tokens per input")
    root = Tree(Text.assemble((cp.name, "bold"), f" — {cp.program.header.description.value}\n", (facts, "dim")))
    # values s2c made (a loop's index, a scan's items) are not drawn: the calls that read them say so
    shown: set[str] = set()
    # stage 0: no LLM call on any path to it (build_graph's stage counts the calls on the longest one)
    early = [nid for nid in nx.topological_sort(g) if g.nodes[nid]["kind"] == "transform" and g.nodes[nid]["stage"] == 0]
    if any(not g.nodes[nid]["internal"] for nid in early):  # constants, parts of inputs: no stage shows them
        st = root.add(Text("before any call", style="bold cyan"))
        for nid in early:
            if not g.nodes[nid]["internal"]:
                st.add(Text.assemble(label(g, nid), " ", (_where(cp, g.nodes[nid]), "dim")))
    shown.update(early)
    for i, group in enumerate(stages(g), 1):
        st = root.add(Text(f"stage {i}", style="bold cyan"))
        for nid in group:
            a = g.nodes[nid]
            deps = [p for p in g.predecessors(nid)]
            calls = a["n"]
            # a name carried out of a scan, while or if reads as itself; gates show as "only if"
            reads = [p if not g.nodes[p]["internal"] or p == a["scan_item"] else
                     f"{g.nodes[p]['name']} (after {g.nodes[p]['carried']})"
                     for p in deps if (not g.nodes[p]["internal"] and not g.nodes[p].get("gate"))
                     or p == a["scan_item"] or g.nodes[p].get("carried")]
            facts = (f"{_where(cp, a)} · max_tokens {a['max_tokens']}"
                     f"{' · T=' + str(a['temperature']) if a['temperature'] else ''} · reads {', '.join(reads) or '-'}"
                     f"{' · continues ' + a['continues'] if a['continues'] else ''}"
                     f"{' · ' + a['constraint'] if a.get('constraint') else ''}"
                     f"{' · only if ' + a['scan_item'] + ' exists' if a['scan_item'] else ''}"
                     f"{' · only if ' + a['runs_if'] + ' holds' if a.get('runs_if') else ''}")
            branch = st.add(Text.assemble((label(g, nid), "bold"), "  ", (facts, "dim")))
            for f in a["fanout"]:
                branch.add(Text.assemble(("fan-out", "magenta"), f" {f}"))
            if calls > 1:
                stop = a.get("early_stop", "")
                stop = (f" · draws all {calls}: {stop[6:]}" if stop.startswith("none: ") else
                        f" · early stop in a compile: {stop}" if stop else "")
                branch.add(Text.assemble(("samples", "magenta"), f" n={calls}", (stop, "dim")))
            shown.add(nid)
            for succ in nx.dfs_preorder_nodes(g, nid):
                # a transform goes under the last LLM call it depends on: everything it reads
                # is shown already (or an input), so it never appears before a call it needs
                if succ != nid and g.nodes[succ]["kind"] == "transform" and succ not in shown and \
                        all(p == nid or p in shown or g.nodes[p]["kind"] == "input" for p in g.predecessors(succ)):
                    sa = g.nodes[succ]
                    shown.add(succ)
                    if sa["internal"]:
                        continue
                    fanout = (" ", (f"({'; '.join(sa['fanout'])})", "magenta")) if sa["fanout"] else ()
                    where = () if sa.get("gate") else (" ", (_where(cp, sa), "dim"))  # its label says where
                    branch.add(Text.assemble(label(g, succ), *where, *fanout))
    outs = ", ".join(cp.outputs)
    root.add(Text.assemble(("output", "bold green"), f" {outs}"))
    if cp.tasks:
        d = root.add(Text.assemble(("distill", "bold yellow"), f" format={cp.format}"))
        for t in cp.tasks:
            d.add(Text(f"task {t.name} (weight {t.weight:g})" + (f" per item of {t.each.var}" if t.each else "")
                       + (f", after {', '.join(t.after)}" if t.after else "")))
        for k in cp.keeps:
            d.add(Text(f"keep {k.rule}"))
    return root
