"""The executor above the engine: batching, cache, resume, failures, traces (scripted fake engine)."""
from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2c.compiler import ir
from s2c.compiler.failures import Failed
from s2c.compiler.pipeline import load_program
from s2c.errors import S2Error
from s2c.report.trace_view import find_trace, render_trace
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.executor import RunOptions
from s2c.runtime.run import Runner, validate_rows
from s2c.runtime.store import RunStore
from s2c.runtime.trace import Trace

HERE = Path(__file__).parent
TWO_STEP = HERE / "fixtures" / "programs" / "two_step.s2"
SAMPLES = HERE / "fixtures" / "programs" / "samples.s2"


def bsm_script(req, i):
    t = req.messages[-1].content
    if "Evaluation Plan" in t:
        return "1. Helpfulness: is it helpful\n2. Accuracy: is it right\n3. Clarity: is it clear"
    if "Evaluation of" in t and "[Evaluation of" not in t:
        return "Assistant A: 7\nAssistant B: 5"
    if "q-bad" in t:
        return "I cannot decide."
    return "A is better overall. [[A]]"


def bsm_rows(n=4):
    return [(f"q{i}", {"question": f"question q{i}?", "response_a": f"answer a{i}", "response_b": f"answer b{i}"})
            for i in range(n)]


def run(cp, rows, engine, tmp_path, name="run", cache=None, **kw):
    return Runner(engine, cache or CallCache(tmp_path / "cache.sqlite"), options=RunOptions(**{k: frozenset(v) if k == "refresh" else v for k, v in kw.items()}), progress=False).execute(cp, rows, tmp_path / name)


def test_bsm_batches_one_request_group_per_stage(tmp_path):
    cp = load_program("bsm.s2")
    eng = FakeEngine(bsm_script)
    out = run(cp, bsm_rows(4), eng, tmp_path)
    # branch for all 4 examples, then every solve (4 x 3 criteria) together, then every merge
    assert eng.batches == [4, 12, 4]
    assert [r.outputs["verdict"] for r in list(out.examples())] == ["A"] * 4
    s = out.summary.to_json()
    assert s["engine_calls"] == 20 and s["cache_hits"] == 0 and s["examples"] == 4 and s["failed"] == 0
    assert s["nodes"]["solve"]["engine_calls"] == 12
    assert s["generated_tokens"] == sum(n["generated_tokens"] for n in s["nodes"].values()) > 0


def test_requests_sharing_a_prefix_are_adjacent(tmp_path):
    cp = load_program("bsm.s2")
    eng = FakeEngine(bsm_script)
    run(cp, bsm_rows(4), eng, tmp_path)
    solve = [c.messages[-1].content for c in eng.calls[4:16]]
    owners = [next(q for q in ("q0", "q1", "q2", "q3") if f"question {q}?" in t) for t in solve]
    # each example's three solve calls (same prompt up to the criterion) sit together
    assert owners == sorted(owners)


def test_rerun_makes_no_engine_call_and_downstream_change_reuses_upstream(tmp_path):
    cp = load_program("bsm.s2")
    cache = CallCache(tmp_path / "cache.sqlite")
    first = run(cp, bsm_rows(3), FakeEngine(bsm_script), tmp_path, "a", cache)
    eng = FakeEngine(bsm_script)
    again = run(cp, bsm_rows(3), eng, tmp_path, "b", cache)
    assert again.summary.engine_calls == 0 and eng.batches == []
    assert again.summary.cache_hits == first.summary.engine_calls
    assert [r.outputs for r in list(again.examples())] == [r.outputs for r in list(first.examples())]
    # edit only the merge prompt: branch and solve come from the cache
    src = (Path(cp.program.file)).read_text().replace("You should combine the evaluations",
                                                      "Please combine the evaluations")
    edited = tmp_path / "bsm.s2"
    edited.write_text(src)
    eng = FakeEngine(bsm_script)
    third = run(load_program(edited), bsm_rows(3), eng, tmp_path, "c", cache)
    assert eng.batches == [3]
    assert third.summary.to_json()["nodes"]["merge"]["engine_calls"] == 3
    assert third.summary.to_json()["nodes"]["solve"]["cache_hits"] == 9


def test_refresh_recomputes_one_node(tmp_path):
    cp = load_program("bsm.s2")
    cache = CallCache(tmp_path / "cache.sqlite")
    run(cp, bsm_rows(2), FakeEngine(bsm_script), tmp_path, "a", cache)
    eng = FakeEngine(bsm_script)
    run(cp, bsm_rows(2), eng, tmp_path, "b", cache, refresh={"merge"})
    assert eng.batches == [2]


def test_unparseable_answer_fails_that_value_and_the_run_goes_on(tmp_path):
    cp = load_program("bsm.s2")
    rows = bsm_rows(2) + [("bad", {"question": "question q-bad?", "response_a": "x", "response_b": "y"})]
    out = run(cp, rows, FakeEngine(bsm_script), tmp_path)
    by = {r.id: r for r in list(out.examples())}
    assert by["q0"].ok and by["q1"].ok
    v = by["bad"].state.lookup(ir.NodeRef("verdict"), (), ())
    assert isinstance(v, Failed) and v.node == "verdict" and "no match" in v.reason and v.unparsed
    assert by["bad"].status == "unparsed" and by["bad"].outputs["verdict"]["node"] == "verdict"
    # a parse that found nothing is "unparsed", not "failed", in summary.json
    assert (out.summary.failed, out.summary.unparsed, out.summary.ok) == (0, 1, 2)
    assert out.summary.reasons("failed") == {}
    assert out.summary.reasons("unparsed") == {"verdict": {"regex(): no match for /\\[\\[(A|B|C)\\]\\]/ in the text": 1}}
    assert out.summary.to_json()["nodes"]["verdict"]["unparsed"] == 1 and out.summary.to_json()["nodes"]["verdict"]["failed"] == 0
    # and the table a run prints keeps them in their own columns
    from rich.console import Console

    from s2c.runtime.run import token_table

    con = Console(record=True, width=200, file=io.StringIO())
    con.print(token_table(out.summary))
    table = con.export_text().splitlines()
    header = next(line for line in table if "node" in line)
    assert re.findall(r"failed|unparsed", header) == ["failed", "unparsed"]
    verdict = next(line for line in table if line.strip("│ ").startswith("verdict"))
    cells = [c.strip() for c in verdict.split("│")[1:-1]]
    assert cells[-2:] == ["0", "1"]  # failed 0, unparsed 1


def test_engine_failure_is_recorded_and_dependents_skipped(tmp_path):
    cp = load_program("bsm.s2")
    eng = FakeEngine(bsm_script, fail=["question q1?\n\nEvaluation Plan"])
    out = run(cp, bsm_rows(3), eng, tmp_path)
    by = {r.id: r for r in list(out.examples())}
    assert by["q0"].ok and by["q2"].ok
    assert by["q1"].failed["branch"].startswith("engine: scripted failure")
    assert "merge" in by["q1"].failed  # skipped: depends on the failed branch
    # no solve or merge request was sent for q1
    assert not any("question q1?" in c.messages[-1].content for c in eng.calls[3:])
    assert out.summary.to_json()["nodes"]["branch"]["failed"] == 1


def test_an_identical_call_in_flight_is_sent_once_and_both_get_its_samples(tmp_path):
    """Two inputs with the same question, sampled at temperature 0.8: one engine call for the
    two, both get its five samples, and a rerun from the cache gives both the same again. (Sent
    twice, they would get different samples, and the cache would keep only the last.)"""
    cp = load_program(SAMPLES)
    replies = itertools.count()
    rows = [("x", {"question": "Pick a number."}), ("y", {"question": "Pick a number."}), ("z", {"question": "Another?"})]
    eng = FakeEngine(lambda request, i: f"Answer: {next(replies)}")
    out = run(cp, rows, eng, tmp_path, "a")
    assert len(eng.calls) == 2  # the shared question once, the other once
    tries = {r.id: r.trace.nodes["tries"]["instances"][0] for r in out.examples()}
    assert tries["x"]["completions"] == tries["y"]["completions"] != tries["z"]["completions"]
    assert len(set(tries["x"]["completions"])) == 5  # five different samples, not one five times
    assert sorted((tries["x"]["cached"], tries["y"]["cached"])) == [0, 5]  # one served from the other's call
    assert out.summary.engine_calls == 2 and out.summary.cache_hits == 5
    eng = FakeEngine(lambda request, i: "Answer: new")
    again = run(cp, rows, eng, tmp_path, "b")
    assert eng.calls == [] and {r.id: r.trace.nodes["tries"]["instances"][0]["completions"]
                                for r in again.examples()} == {k: v["completions"] for k, v in tries.items()}


def test_an_identical_call_that_fails_fails_every_instance_waiting_for_it(tmp_path):
    cp = load_program(SAMPLES)
    rows = [("x", {"question": "Pick a number."}), ("y", {"question": "Pick a number."}), ("z", {"question": "Another?"})]
    eng = FakeEngine(default="Answer: 1", fail=["Pick a number."])
    out = run(cp, rows, eng, tmp_path)
    by = {r.id: r for r in out.examples()}
    assert len(eng.calls) == 2 and by["z"].ok
    assert by["x"].failed["tries"] == by["y"].failed["tries"] and by["y"].failed["tries"].startswith("engine: scripted")
    assert out.summary.to_json()["nodes"]["tries"]["failed"] == 2


def test_an_exception_from_the_engine_is_a_bug_and_stops_the_run(tmp_path):
    cp = load_program(TWO_STEP)
    eng = FakeEngine(default="Final answer: 4", raise_on=["Draft:"], exception=TypeError)
    with pytest.raises(TypeError, match="scripted crash"):
        run(cp, [("a", {"question": "2+2?"})], eng, tmp_path)
    assert eng.batches == [1, 1]  # draft, then review once: not retried, not recorded as a data failure
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["nodes"]["draft"]["samples"] == 1 and summary["failed"] == 0


def test_engine_that_cannot_run_stops_the_run(tmp_path):
    from s2c.runtime.engines.base import EngineError

    cp = load_program(TWO_STEP)
    eng = FakeEngine(default="Final answer: 4", raise_on=["Draft:"], exception=EngineError)
    with pytest.raises(EngineError, match="scripted crash"):
        run(cp, [("a", {"question": "2+2?"})], eng, tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["nodes"]["draft"]["samples"] == 1  # what finished is accounted for


def test_lazy_engine_starts_only_for_a_cache_miss(tmp_path):
    from s2c.runtime.engines.lazy import LazyEngine
    from s2c.runtime.model import ModelRef

    cp = load_program(TWO_STEP)
    started = []

    def factory():
        started.append(1)
        return FakeEngine(default="Final answer: 4")

    refs = {"default": ModelRef("m", "/models/m", True)}
    cache = CallCache(tmp_path / "cache.sqlite")
    first = LazyEngine("fake", refs, factory)
    run(cp, [("a", {"question": "2+2?"})], first, tmp_path, "a", cache)
    assert first.started and len(started) == 1
    second = LazyEngine("fake", refs, factory)
    out = run(cp, [("a", {"question": "2+2?"})], second, tmp_path, "b", cache)
    assert not second.started and len(started) == 1 and out.summary.cache_hits == 2


def test_engine_start_up_is_its_own_row_and_no_nodes_seconds(tmp_path):
    from rich.console import Console

    from s2c.runtime.engines.lazy import LazyEngine
    from s2c.runtime.model import ModelRef
    from s2c.runtime.run import token_table

    cp = load_program(TWO_STEP)
    said = []

    def factory():
        time.sleep(0.5)  # a start-up long enough to show in any node that were charged with it
        return FakeEngine(default="Final answer: 4")

    engine = LazyEngine("fake", {"default": ModelRef("m", "/models/m", True)}, factory, log=said.append)
    first = run(cp, [("a", {"question": "2+2?"}), ("b", {"question": "3+3?"})], engine, tmp_path, "a", CallCache(None))
    s = first.summary.to_json()
    assert 0.5 <= s["engine_startup_seconds"] < 5 and s["wall_seconds"] >= s["engine_startup_seconds"]
    assert all(n["seconds"] < 0.25 for n in s["nodes"].values()), s["nodes"]
    assert said == [f"s2c: engine started in {engine.startup_seconds:.1f} s"]
    screen = Console(record=True, width=200)
    screen.print(token_table(first.summary))
    assert re.search(r"engine start-up\s.*\s0\.5\s", screen.export_text())
    # the same engine serving a second run (as eval's systems share one) started in the first
    again = run(cp, [("c", {"question": "4+4?"})], engine, tmp_path, "b", CallCache(None))
    assert again.summary.engine_startup_seconds == 0
    screen = Console(record=True, width=200)
    screen.print(token_table(again.summary))
    assert "start-up" not in screen.export_text()


def test_max_errors_stops_the_run_and_keeps_what_finished(tmp_path):
    cp = load_program(TWO_STEP)
    eng = FakeEngine(default="Final answer: 4", fail=["q2"])
    with pytest.raises(S2Error, match="examples failed"):
        run(cp, [(f"r{i}", {"question": f"q{i}"}) for i in range(4)], eng, tmp_path, max_errors=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"] and summary["failed"] == 1
    kept = [r.example_id for r in RunStore.open(tmp_path / "run").traces()]
    assert "r2" in kept and len(kept) == summary["examples"]


def test_bad_rows_are_reported_with_row_and_field_and_skipped():
    cp = load_program("bsm.s2")
    rows = [
        {"id": "ok", "question": "q", "response_a": "a", "response_b": "b"},
        {"id": "m", "question": "q", "response_a": "a"},
        {"id": "t", "question": ["not", "text"], "response_a": "a", "response_b": "b"},
        {"id": "ok", "question": "q", "response_a": "a", "response_b": "b"},
    ]
    good, problems = validate_rows(cp, rows, "data.jsonl")
    assert [i for i, _ in good] == ["ok"]
    assert problems == [
        "data.jsonl: row 2 (id m): field 'response_b' is missing or null; skipped",
        "data.jsonl: row 3 (id t): field 'question' should be text, got a list; skipped",
        "data.jsonl: row 4 (id ok): duplicate id 'ok'; skipped",
    ]


def test_samples_partial_cache_and_vote(tmp_path):
    cp = load_program(SAMPLES)
    replies = ["Answer: 4", "Answer: 4", "Answer: 5", "Answer: 4", "Answer: 3"]
    eng = FakeEngine(lambda r, i: replies[i])
    out = run(cp, [("x", {"question": "2+2?"})], eng, tmp_path)
    assert list(out.examples())[0].outputs == {"best": "4", "share": 0.6}
    assert eng.calls[0].sampling.n == 5 and out.summary.samples == 5


def test_traces_show_branch_each_solve_and_merge(tmp_path):
    from rich.console import Console

    cp = load_program("bsm.s2")
    run(cp, bsm_rows(2), FakeEngine(bsm_script), tmp_path)
    rec = find_trace(tmp_path / "run", "q1")
    assert [i["index"] for i in rec.nodes["solve"]["instances"]] == [[0], [1], [2]]
    con = Console(record=True, width=200)
    con.print(render_trace(rec))
    text = con.export_text()
    for needle in ("branch", "solve[0]", "solve[1]", "solve[2]", "merge", "verdict", "[[A]]"):
        assert needle in text
    with pytest.raises(S2Error, match="no example 'q9'"):
        find_trace(tmp_path / "run", "q9")


def test_kill_9_then_restart_repeats_no_completed_call(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "question": f"What is {i} + {i}?"}) + "\n" for i in range(12)))
    script = HERE / "helpers" / "slow_run.py"
    cache = tmp_path / "cache.sqlite"
    log1, log2 = tmp_path / "calls1.log", tmp_path / "calls2.log"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    p = subprocess.Popen([sys.executable, str(script), str(TWO_STEP), str(rows), str(tmp_path / "run"), str(cache),
                          str(log1), "0.3"], env=env, stdout=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill it once some calls are done but far from all (24 in total)
        if log1.exists() and len(log1.read_text().split()) >= 8:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = {k for (k,) in sqlite3.connect(cache).execute("SELECT key FROM calls")}
    assert 0 < len(done) < 24
    # the killed run kept the examples it finished
    finished = list(RunStore.open(tmp_path / "run").traces())
    out = subprocess.run([sys.executable, str(script), str(TWO_STEP), str(rows), str(tmp_path / "run"), str(cache),
                          str(log2), "0"], env=env, capture_output=True, text=True, check=True)
    resumed = json.loads(out.stdout)
    second = log2.read_text().split()
    assert not set(second) & done  # no completed call was repeated
    assert resumed["engine_calls"] == len(second) == 24 - len(done)
    # the same results as an uninterrupted run
    ref = subprocess.run([sys.executable, str(script), str(TWO_STEP), str(rows), str(tmp_path / "ref"),
                          str(tmp_path / "ref.sqlite"), str(tmp_path / "ref.log"), "0"],
                         env=env, capture_output=True, text=True, check=True)
    assert resumed["outputs"] == json.loads(ref.stdout)["outputs"]
    assert all(r.status == "ok" for r in finished)


def test_the_runtime_keeps_its_memos_in_its_plan_and_writes_nothing_into_the_ir(tmp_path):
    """What a run works out once (readers, evaluators) lives in the run's Plan and the store's,
    never in the checked program, which later runs, distill and eval read as check left it."""
    import copy
    from dataclasses import fields

    from s2c.runtime.executor import Executor

    cp = load_program("bsm.s2")

    def snapshot():
        return ({f.name: copy.deepcopy(getattr(cp, f.name)) for f in fields(cp) if f.name != "graph"},
                {nid: set(vars(n)) for nid, n in cp.nodes.items()})

    before = snapshot()
    (tmp_path / "run").mkdir()
    store = RunStore.create(tmp_path / "run", cp, {})
    ex = Executor(cp, FakeEngine(bsm_script), store=store)
    assert ex.run(bsm_rows(3)).ok == 3
    store.close()
    assert ex.plan.cp is cp and ex.plan.readers and ex.plan.evaluators and ex.plan.var_readers
    back = RunStore.open(tmp_path / "run", cp)
    results = list(back.originals())
    assert [r.state.lookup(ir.NodeRef("merge"), (), ()) for r in results] == ["A is better overall. [[A]]"] * 3
    assert all(r.state.plan is back.plan for r in results) and back.plan.readers
    assert snapshot() == before


def test_load_sampler_samples_on_its_own_thread_while_the_run_waits(tmp_path):
    """The run's thread can sit inside the engine for seconds; the sampler still reports."""
    import io
    import time as _time

    from s2c.runtime.load import HEADER, LoadSampler, csv_sink

    class Busy:  # an engine whose step never returns while we watch
        def pending(self):
            return 7

        def batch_state(self):
            return {"running": 5, "waiting": 2}

    out = io.StringIO()
    with LoadSampler(Busy(), csv_sink(out), period=0.01):
        _time.sleep(0.2)  # the run's thread, blocked
    lines = out.getvalue().splitlines()
    assert lines[0] == HEADER and len(lines) > 5
    assert all(line.split(",")[1:] == ["7", "5", "2"] for line in lines[1:])

    class Plain:  # an engine that cannot say what it runs: in-flight only
        def pending(self):
            return 1

        def batch_state(self):
            return None

    out = io.StringIO()
    with LoadSampler(Plain(), csv_sink(out), period=0.01):
        _time.sleep(0.05)
    assert out.getvalue().splitlines()[1].split(",")[1:] == ["1", "", ""]


def test_an_adapter_trained_again_in_its_folder_does_not_read_the_first_ones_completions(tmp_path):
    """`s2c train` resumes into its --out: the folder's path stays, the adapter changes. The cache
    key holds a digest of the adapter's weights, so the second adapter's calls are sent."""
    cp = load_program(TWO_STEP)
    adapter = tmp_path / "lora"
    adapter.mkdir()
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(b"first")
    rows = [("a", {"question": "2+2?"})]
    first = run(cp, rows, FakeEngine(default="Final answer: 4"), tmp_path, "a", adapter=str(adapter))
    weights.write_bytes(b"trained again, other weights")
    eng = FakeEngine(default="Final answer: 5")
    second = run(cp, rows, eng, tmp_path, "b", adapter=str(adapter))
    assert len(eng.calls) == 2 and all(c.adapter == str(adapter) for c in eng.calls)
    assert [r.outputs for r in second.examples()] != [r.outputs for r in first.examples()]
    eng = FakeEngine(default="Final answer: 6")
    third = run(cp, rows, eng, tmp_path, "c", adapter=str(adapter))  # untouched: served by the cache
    assert eng.calls == [] and [r.outputs for r in third.examples()] == [r.outputs for r in second.examples()]


def test_an_adapters_digest_follows_its_weights_within_one_process(tmp_path):
    """`eval --merge-adapters` names the merged folder by adapter_digest: weights written again
    (another size) in the same process give another digest, though the digest is memoized."""
    from s2c.runtime.model import adapter_digest

    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(b"first")
    first = adapter_digest(str(tmp_path))
    assert adapter_digest(str(tmp_path)) == first
    weights.write_bytes(b"trained again, other weights")
    assert adapter_digest(str(tmp_path)) != first


def test_a_model_or_adapter_that_cannot_be_read_stops_the_run_naming_the_file(tmp_path):
    """Their identities read their files (the cache keys hold them): a file that cannot be read is
    an EngineError naming it, before any call, not an OSError's traceback."""
    from s2c.runtime.engines.base import EngineError
    from s2c.runtime.model import resolve_model

    folder = tmp_path / "exported"
    (folder / "config.json").mkdir(parents=True)  # read as a file: IsADirectoryError, even for root
    with pytest.raises(EngineError, match=r"cannot read .*exported/config\.json: Is a directory"):
        resolve_model(str(folder)).cache_identity
    adapter = tmp_path / "lora"
    (adapter / "adapter_model.safetensors").mkdir(parents=True)
    eng = FakeEngine(default="Final answer: 4")
    cp = load_program(TWO_STEP)
    run(cp, [("a", {"question": "2+2?"})], eng, tmp_path, "a")  # an earlier run into the same folder
    eng.calls.clear()
    with pytest.raises(EngineError, match=r"cannot read .*lora/adapter_model\.safetensors: Is a directory"):
        run(cp, [("a", {"question": "2+2?"})], eng, tmp_path, "a", adapter=str(adapter))
    assert eng.calls == [] and [t.example_id for t in RunStore.open(tmp_path / "a").traces()] == ["a"]


def test_a_model_folder_rewritten_in_place_is_another_model_in_the_cache(tmp_path):
    from s2c.runtime.model import EMBEDDED, ModelRef, resolve_model

    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = bytes(range(256)) * 40_000  # 10 MB: the fingerprint samples it
    (folder / "model.safetensors").write_bytes(weights)
    first = resolve_model(str(folder)).cache_identity
    assert first.startswith(str(folder)) and resolve_model(str(folder)).cache_identity == first
    copy = tmp_path / "copy"  # the same model elsewhere (another node): the same fingerprint
    shutil.copytree(folder, copy)
    assert resolve_model(str(copy)).cache_identity.split("#")[1] == first.split("#")[1]
    (folder / "model.safetensors").write_bytes(weights[::-1])  # exported again: same size, other bytes
    assert resolve_model(str(folder)).cache_identity != first
    assert ModelRef(EMBEDDED, str(folder), True).cache_identity == "smollm2-135m"  # the embedded model: its name


def test_the_store_appends_in_finishing_order_and_reads_in_input_order(tmp_path):
    """Records are appended as examples finish (the table's rowid) and read back by their input
    position (seq), whatever the order they finished in; a repeated id keeps the first."""
    cp = load_program(TWO_STEP)
    store = RunStore.create(tmp_path, cp, {})
    store.COMMIT_ROWS = 3  # several transactions
    finished = [5, 0, 3, 1, 4, 2, 7, 6]
    def trace(ex_id):
        return Trace(example_id=ex_id, status="ok", inputs={}, gold={}, outputs={}, failed={}, nodes={},
                     prompt_tokens=0, generated_tokens=0)

    for seq in finished:
        variant = "~swap" if seq % 2 else ""
        store.add(seq, f"e{seq // 2}{variant}", f"e{seq // 2}", variant, "ok", trace(f"e{seq}"), {})
    store.add(8, "e0", "e0", "", "ok", trace("again"), {})
    store.close()
    reader = RunStore.open(tmp_path)
    assert [t.example_id for t in reader.traces()] == [f"e{s}" for s in range(8)]
    assert reader.ids(originals=True) == ["e0", "e1", "e2", "e3"]
    assert [t.example_id for t in reader.traces(originals=True)] == ["e0", "e2", "e4", "e6"]
    assert reader.find_trace("e2~swap") == trace("e5") and store.duplicates == ["e0"]
    assert [rowid for (rowid,) in reader.db.execute("SELECT seq FROM examples ORDER BY rowid")] == finished
