"""The execution graph: golden dumps (node-link JSON, mermaid, the stage tree) of every shipped
program, and the shape of BSM's graph (branch -> solve, fanned out over criteria -> merge)."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import networkx as nx
import pytest
from golden import GOLDEN, REPO, check_golden, stale

from s2c.cli import main
from s2c.compiler import render
from s2c.compiler.check import check
from s2c.compiler.graph import stages, with_graph
from s2c.compiler.pipeline import find_program, load_program, resolver
from s2c.dsl.parser import parse_file

PROGRAMS = sorted((REPO / "programs").glob("*.s2")) + sorted((REPO / "examples").glob("*.s2"))
GRAPHS = GOLDEN / "graph"


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # relative paths in the dumps


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def tree_text(cp) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=110, color_system=None, highlight=False).print(render.to_tree(cp))
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


@pytest.mark.parametrize("path", PROGRAMS, ids=rel)
def test_graph_goldens(path):
    cp = load_program(rel(path))
    check_golden(GRAPHS / f"{path.stem}.json", render.to_json(cp.graph))
    check_golden(GRAPHS / f"{path.stem}.mmd", render.to_mermaid(cp.graph))
    check_golden(GRAPHS / f"{path.stem}.tree.txt", tree_text(cp))


def test_no_stale_graph_goldens():
    names = {f"{p.stem}{ext}" for p in PROGRAMS for ext in (".json", ".mmd", ".tree.txt")}
    assert stale(GRAPHS, names) == []


@pytest.mark.parametrize("path", PROGRAMS, ids=rel)
def test_json_is_node_link(path, capsys):
    assert main(["graph", rel(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    g = nx.node_link_graph(data, edges="links")
    assert nx.is_directed_acyclic_graph(g)
    for node in data["nodes"]:
        assert {"id", "kind", "line"} <= set(node)
        assert node["kind"] in ("input", "llm", "transform")
        assert node["line"] >= 1
    assert g.graph["calls_per_input"] >= 1


def test_bsm_is_branch_solve_merge(capsys):
    assert main(["graph", "programs/bsm.s2", "--format", "json"]) == 0
    g = nx.node_link_graph(json.loads(capsys.readouterr().out), edges="links")
    llm = [n for n in nx.topological_sort(g) if g.nodes[n]["kind"] == "llm"]
    assert llm == ["branch", "solve", "merge"]
    assert [g.nodes[n]["stage"] for n in llm] == [1, 2, 3]
    assert nx.has_path(g, "branch", "criteria") and g.has_edge("criteria", "solve")
    assert g.has_edge("solve", "merge") and g.has_edge("merge", "verdict")
    assert g.nodes["solve"]["loops"] == ["criterion"]
    assert g.nodes["solve"]["fanout"] == ["for criterion in criteria (<= 5)"]
    assert g.graph["calls_per_input"] == 1 + 5 + 1
    assert {n: g.nodes[n]["line"] for n in llm} == {"branch": 9, "solve": 20, "merge": 42}


def test_bsm_tree_from_the_cli(capsys):
    assert main(["graph", "programs/bsm.s2"]) == 0
    out = capsys.readouterr().out
    order = [out.index(s) for s in ("stage 1", "llm branch", "stage 2", "llm solve", "fan-out for criterion in criteria",
                                    "stage 3", "llm merge", "regex verdict", "output verdict")]
    assert order == sorted(order)


def test_dot_and_mermaid_from_the_cli(capsys):
    assert main(["graph", "bsm.s2", "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "bsm"') and '"criteria" -> "solve";' in dot
    assert main(["graph", "bsm.s2", "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")


def test_stages_group_calls_that_can_run_together():
    assert stages(load_program("programs/rar_2step.s2").graph) == [["rephrased"], ["response"]]
    assert stages(load_program("programs/self_refine.s2").graph) == [
        ["draft"], ["feedback"], ["draft#1"], ["feedback#1"], ["draft#2"], ["feedback#2"], ["draft#3"]]
    assert stages(load_program("programs/s2a.s2").graph) == [["rewritten"], ["responses"], ["best/select"]]


def test_estimates():
    expected = {"bsm": 7, "rar_1step": 8, "rar_2step": 16, "s2a": 22, "cot_sc": 10, "minds_mirror": 5 + 5 * 5,
                "cascod": 1, "cove": 3 + 5, "self_refine": 2 + 3 + 2, "usc": 1}
    got = {name: load_program(f"programs/{name}.s2").graph.graph["calls_per_input"] for name in expected}
    assert got == expected


def test_tree_puts_a_transform_under_the_last_call_it_needs():
    text = tree_text(load_program("programs/rar_2step.s2"))
    assert text.index("vote final") > text.index("stage 2")


def test_inlined_program_nodes_keep_their_file():
    g = load_program("programs/s2a.s2").graph
    assert g.nodes["best/select"]["file"] == "programs/usc.s2"
    assert g.nodes["rewritten"]["file"] == "programs/s2a.s2"


def test_the_graph_comes_on_a_new_program_and_is_never_attached_to_the_checked_one():
    cp = check(parse_file(find_program("bsm.s2")), resolver=resolver)
    assert cp.graph is None
    full = with_graph(cp)
    assert cp.graph is None and full is not cp  # check's result is left as it was
    assert sorted(full.graph) == sorted(cp.nodes) and full.nodes is cp.nodes
    with pytest.raises(dataclasses.FrozenInstanceError):
        cp.graph = full.graph
