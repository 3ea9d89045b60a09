"""The forms method authors reach for after the basics, run on the scripted fake engine:
arithmetic and joining, enumerate and repeat indices, scan (a sequential loop with carried names
and a data-dependent length under a static bound), argmax/argmin, lookup, and continue= (a call
that extends an earlier call's conversation). Their checks' messages are golden files
(tests/golden/errors); their requests for the shipped least_to_most.s2 and debate.s2 are golden
snapshots (test_request_snapshots.py).
"""
from __future__ import annotations

import json

import pytest

from s2c.compiler.check import check
from s2c.compiler.failures import NoMatch
from s2c.compiler.graph import with_graph
from s2c.compiler.library import FUNCTIONS
from s2c.compiler.pipeline import load_program
from s2c.compiler.render import to_dot, to_mermaid
from s2c.dsl.parser import parse
from s2c.dsl.printer import to_source
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.run import Runner
from s2c.runtime.store import RunStore


def program(body: str, inputs: str = "input question"):
    cp = check(parse(f'program t "test"\n{inputs}\n{body}'))
    assert cp.errors == [], [d.message for d in cp.errors]
    return with_graph(cp)


def run(cp, rows, script, tmp_path):
    engine = FakeEngine(script)
    out = Runner(engine, CallCache(None), progress=False).execute(cp, rows, tmp_path / "run")
    return out, engine


def outputs(tmp_path) -> list[dict]:
    return [t.outputs for t in RunStore.open(tmp_path / "run").traces()]


# ---------------------------------------------------------------- operators
@pytest.mark.parametrize("expr, value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("7 // 2", 3), ("7 % 4", 3), ("7 / 2", 3.5), ("2 - -3", 5),
    ("-(2 + 3)", -5), ('"ab" + "cd"', "abcd"), ('["a"] + ["b", "c"]', ["a", "b", "c"]),
    ("number(question) * 2 + 1", 85),
])
def test_operators_compute_like_python(expr, value, tmp_path):
    cp = program(f"x = {expr}\noutput x")
    run(cp, [("r", {"question": "I have 42 apples"})], lambda r, i: "", tmp_path)
    assert outputs(tmp_path) == [{"x": value}]


def test_operators_print_and_parse_back():
    p = parse('program t "t"\ninput q\nx = 1 + 2 * (3 - 4) // 5 % 6 - -7\ny = "a" + q\noutput x\n')
    assert parse(to_source(p)) == p


def test_division_by_zero_fails_that_example_only(tmp_path):
    cp = program("n = number(question)\nx = 10 // n\noutput x")
    out, _ = run(cp, [("a", {"question": "0"}), ("b", {"question": "5"})], lambda r, i: "", tmp_path)
    traces = {t.example_id: t for t in RunStore.open(tmp_path / "run").traces()}
    assert traces["a"].status == "failed" and "'//': '//' by zero" in traces["a"].failed["x"]
    assert traces["b"].outputs == {"x": 2}


# ---------------------------------------------------------------- indices
def test_enumerate_gives_each_item_its_position(tmp_path):
    cp = program('parts = lines(question)\nfor i, p in enumerate(parts):\n'
                 '    a = llm() """Step {{ i + 1 }}: {{ p }}"""\n    n = i * 10\noutput a\noutput n')
    _, eng = run(cp, [("r", {"question": "x\ny\nz"})], lambda r, i: r.messages[-1].content.upper(), tmp_path)
    assert sorted(r.messages[-1].content for r in eng.calls) == ["Step 1: x", "Step 2: y", "Step 3: z"]
    assert outputs(tmp_path) == [{"a": ["STEP 1: X", "STEP 2: Y", "STEP 3: Z"], "n": [0, 10, 20]}]


def test_repeat_index_is_a_constant_per_iteration_and_options_compute_with_it(tmp_path):
    cp = program('seen = []\nrepeat 3 as k:\n    a = llm(temperature=0.5, seed=100 + k * 2) """try {{ k }}"""\n'
                 '    seen = seen + [a]\noutput seen')
    seeds = {n.id: n.sampling.seed for n in cp.llm_nodes()}
    assert seeds == {"a#1": 100, "a#2": 102, "a#3": 104}
    _, eng = run(cp, [("r", {"question": "q"})], lambda r, i: f"reply to {r.messages[-1].content}", tmp_path)
    assert outputs(tmp_path) == [{"seen": ["reply to try 0", "reply to try 1", "reply to try 2"]}]
    assert "k" not in {n.name for n in cp.nodes.values() if not n.internal}  # the index is s2c's, not traced


# ---------------------------------------------------------------- scan
SCAN = '''plan = llm() """split {{ question }}"""
parts = lines(plan)
notes = ""
count = 0
scan i, p in enumerate(parts) up to 4:
    step = llm() """{{ notes }}solve {{ i }}: {{ p }}"""
    notes = notes + step + ";"
    count = count + 1
output notes
output count
'''


def scan_script(req, i):
    text = req.messages[-1].content
    if text.startswith("split"):
        return "\n".join(text.split()[1:])  # one part per word of the question
    return "[" + text.rsplit("solve ", 1)[1] + "]"


def test_scan_runs_in_order_each_iteration_reading_the_last(tmp_path):
    cp = program(SCAN)
    out, eng = run(cp, [("two", {"question": "a b"}), ("four", {"question": "a b c d"})], scan_script, tmp_path)
    prompts = [r.messages[-1].content for r in eng.calls if not r.messages[-1].content.startswith("split")]
    assert "[0: a];[1: b];solve 2: c" in prompts  # iteration 3 reads what iterations 1 and 2 left
    by_id = {t.example_id: t for t in RunStore.open(tmp_path / "run").traces()}
    assert by_id["two"].outputs == {"notes": "[0: a];[1: b];", "count": 2}
    assert by_id["four"].outputs == {"notes": "[0: a];[1: b];[2: c];[3: d];", "count": 4}
    assert out.summary.ok == 2 and out.summary.reasons("failed") == {}
    # 2 + 4 solving calls, not 2 x 4: an iteration past the list's end makes no call
    assert len(eng.calls) == 2 + 2 + 4


def test_scan_iterations_past_the_end_are_skipped_not_failed(tmp_path):
    cp = program(SCAN)
    out, _ = run(cp, [("two", {"question": "a b"})], scan_script, tmp_path)
    trace = next(RunStore.open(tmp_path / "run").traces())
    assert trace.status == "ok" and trace.failed == {}
    assert trace.nodes["step#3"]["instances"][0]["skipped"].startswith("not run: the list has 2 items")
    assert "error" not in trace.nodes["step#3"]["instances"][0]
    assert all(not s["failed"] for s in out.summary.to_json()["nodes"].values())


def test_a_call_in_a_scan_that_does_not_read_the_item_runs_once_per_item_only(tmp_path):
    cp = program('parts = lines(question)\nnotes = ""\nscan p in parts up to 4:\n'
                 '    more = llm() """Go on: {{ notes }}"""\n    notes = notes + more\noutput notes')
    out, eng = run(cp, [("two", {"question": "a\nb"})], lambda r, i: "x", tmp_path)
    assert len(eng.calls) == 2  # the guard on the iteration's item, not a read of it, stops calls 3 and 4
    assert outputs(tmp_path) == [{"notes": "xx"}] and out.summary.reasons("failed") == {}


def test_a_list_longer_than_the_bound_fails_with_its_length(tmp_path):
    cp = program(SCAN)
    out, _ = run(cp, [("long", {"question": "a b c d e f"})], scan_script, tmp_path)
    trace = next(RunStore.open(tmp_path / "run").traces())
    assert trace.status == "failed"
    assert "the list has 6 items, more than the scan's bound of 4" in json.dumps(trace.failed)


def test_names_first_assigned_in_a_scan_stay_inside_it():
    cp = check(parse('program t "t"\ninput question\nparts = lines(question)\n'
                     'scan p in parts up to 3:\n    a = llm() """{{ p }}"""\noutput a\n'))
    assert [d.message for d in cp.diagnostics] == [
        "'a' is assigned inside a scan (line 5), so it belongs to each iteration and has no value after the scan"]


def test_scan_resumes_from_the_cache_with_identical_outputs(tmp_path):
    cp = program(SCAN)
    rows = [("three", {"question": "a b c"})]
    cache = CallCache(tmp_path / "calls.sqlite")
    first = FakeEngine(scan_script)
    Runner(first, cache, progress=False).execute(cp, rows, tmp_path / "run")
    again = FakeEngine(scan_script)
    Runner(again, CallCache(tmp_path / "calls.sqlite"), progress=False).execute(cp, rows, tmp_path / "run2")
    assert len(first.calls) == 4 and again.calls == []
    a, b = (next(RunStore.open(tmp_path / d).traces()).outputs for d in ("run", "run2"))
    assert a == b == {"notes": "[0: a];[1: b];[2: c];", "count": 3}


# ---------------------------------------------------------------- data of the wrong shape
WRONG_SHAPE = ('j = json(question)\nacc = ""\nscan x in j up to 3:\n    a = llm() """{{ x }}"""\n    acc = acc + a\n'
               'for y in j:\n    b = llm() """{{ y }}"""\nfirst_key = at(j, 0)\noutput acc\noutput b\noutput first_key')


def test_a_json_object_where_a_list_is_needed_fails_that_example_with_the_reason(tmp_path):
    """json() may give an object: the checker cannot rule it out, so scan, for and at() say so at
    run time (they used to raise KeyError: an internal error that stopped the run)."""
    cp = program(WRONG_SHAPE)
    out, eng = run(cp, [("obj", {"question": '{"a": 1}'}), ("list", {"question": '["p", "q"]'})],
                   lambda r, i: r.messages[-1].content, tmp_path)
    by_id = {t.example_id: t for t in RunStore.open(tmp_path / "run").traces()}
    failed = by_id["obj"].failed
    assert by_id["obj"].status == "failed"
    assert failed["b"] == "'for y' needs a list, got dict"
    assert failed["x.items"] == "at_most(): needs a list, got dict"
    assert failed["first_key"] == "at(): needs a list, got dict"
    assert by_id["list"].outputs == {"acc": "pq", "b": ["p", "q"], "first_key": "p"}
    assert len(eng.calls) == 4


# ---------------------------------------------------------------- argmax, argmin, lookup
def test_argmax_argmin_lookup(tmp_path):
    cp = program('drafts = llm(n=3, temperature=0.8) """{{ question }}"""\nfor d in drafts:\n'
                 '    r = llm() """rate {{ d }}"""\n'
                 '    s = lookup(r, {"sure": 3, "likely": 2, "impossible": 0})\n'
                 'best = argmax(s, items=drafts)\nworst = argmin(s)\noutput best\noutput worst')
    ratings = {"d0": "Likely.", "d1": "SURE", "d2": "no idea"}

    def script(req, i):
        text = req.messages[-1].content
        return ratings[text.split()[-1]] if text.startswith("rate") else f"d{i}"
    out, _ = run(cp, [("r", {"question": "q"})], script, tmp_path)
    # d2's rating is not in the table: unparsed, and left out of the choice
    assert outputs(tmp_path) == [{"best": "d1", "worst": 0}]
    assert out.summary.ok == 1


@pytest.mark.parametrize("scores, fn, items, want", [
    ([1, 3, 3, 2], "argmax", None, 1), ([1, 3, 3, 0], "argmin", None, 3), ([2, 5], "argmax", ["a", "b"], "b"),
])
def test_arg_best_ties_go_to_the_first(scores, fn, items, want):
    assert FUNCTIONS[fn].impl(scores, items) == want


def test_lookup_default_and_miss():
    table = {"sure": 3, "likely": 2}
    assert FUNCTIONS["lookup"].impl("Likely!", table) == 2
    assert FUNCTIONS["lookup"].impl("maybe", table, 1) == 1
    with pytest.raises(NoMatch, match="'maybe' is not one of"):
        FUNCTIONS["lookup"].impl("maybe", table)


# ---------------------------------------------------------------- continue=
def test_continue_sends_the_earlier_conversation_and_its_reply(tmp_path):
    cp = program('a = llm(system="Be brief.") """{{ question }}"""\n'
                 'b = llm(continue=a) """Are you sure?"""\nc = llm(continue=b) """Final answer?"""\noutput c')
    _, eng = run(cp, [("r", {"question": "2+2?"})], lambda r, i: f"reply {len(r.messages)}", tmp_path)
    last = max(eng.calls, key=lambda r: len(r.messages))
    assert [(m.role, m.content) for m in last.messages] == [
        ("system", "Be brief."), ("user", "2+2?"), ("assistant", "reply 2"),
        ("user", "Are you sure?"), ("assistant", "reply 4"), ("user", "Final answer?")]


def test_continue_picks_each_agents_own_call_from_a_list_built_in_a_repeat():
    cp = load_program("debate.s2")
    again = {n.id: n.continues for n in cp.llm_nodes() if n.name == "again"}
    assert again == {"again#1": "reply#1", "again#2": "reply#2", "again#3": "reply#3"}
    assert {n.id: n.sampling.seed for n in cp.llm_nodes() if n.name == "reply"} == {
        "reply#1": 0, "reply#2": 1, "reply#3": 2}


def test_a_failed_call_fails_the_calls_that_continue_it(tmp_path):
    cp = program('a = llm() """{{ question }}"""\nb = llm(continue=a) """sure?"""\noutput b')
    eng = FakeEngine(lambda r, i: "ok", fail=["boom"])
    out = Runner(eng, CallCache(None), progress=False).execute(cp, [("r", {"question": "boom"})], tmp_path / "run")
    trace = next(RunStore.open(tmp_path / "run").traces())
    assert trace.status == "failed" and trace.failed["b"] == "depends on failed 'a'"
    assert len(eng.calls) == 1  # b was never sent


# ---------------------------------------------------------------- graphs
def test_graphs_tell_continuation_and_fan_out_edges_apart():
    cp = load_program("debate.s2")
    mermaid, dot = to_mermaid(cp.graph), to_dot(cp.graph)
    assert mermaid.count("== continues ==>") == 3 and dot.count('label="continues"') == 3
    # a call in a loop that does not read the item runs once per item: a "for each" edge, not data
    cp = program('parts = lines(question)\nfor p in parts:\n    a = llm() """{{ question }}"""\noutput a')
    assert dict(((u, v), k) for u, v, k in cp.graph.edges(data="kind")) == {
        ("question", "parts"): "data", ("question", "a"): "data", ("parts", "a"): "loop"}
    assert "-. for each .->" in to_mermaid(cp.graph)
