"""Nodes given from data (--given NODE=COLUMN, s2c.Data(given=...)): existing teacher outputs read
instead of generated. The fake engine shows what is sent and what is not; the released Mind's
Mirror and CasCoD samples (tests/fixtures/released/, SOURCES.md) compile with no engine at all."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import s2c
from s2c.cli import main
from s2c.compiler.pipeline import load_text
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.executor import RunOptions
from s2c.runtime.run import Runner, validate_rows

REPO = Path(__file__).resolve().parent.parent
RELEASED = REPO / "tests" / "fixtures" / "released"

PROGRAM = '''program p "a teacher's CoTs, then a judge per CoT"
input question
gold answer
cots = llm(n=2, temperature=0.7) """{{ question }} Think step by step."""
for cot in cots:
    pred = after(cot, "The answer is")
    judged = llm(role="judge") """Is this right? {{ cot }}"""
final = vote(pred)
output final

distill label:
    task answer(target=final) """{{ question }}"""
    keep matches(final, answer)
'''


def script(request, i):
    text = request_text(request)
    return "yes" if text.startswith("Is this right?") else f"generated {i}. The answer is 9"


ROWS = [
    {"id": "a", "question": "2+2?", "answer": "4", "cots": ["so. The answer is 4", "hm. The answer is 4"]},
    {"id": "b", "question": "3+3?", "answer": "6", "cots": ["x. The answer is 6", "y. The answer is 5"]},
]


def run(rows, tmp_path, given, cache=None):
    cp = load_text(PROGRAM, "p.s2")
    good, problems = validate_rows(cp, rows, "rows.jsonl", given=given)
    engine = FakeEngine(script)
    runner = Runner(engine, cache or CallCache(None), RunOptions(given=given), progress=False)
    outcome = runner.execute(cp, good, tmp_path / "run", skipped=problems)
    return outcome, engine, problems


def test_a_given_node_is_read_from_its_column_and_what_reads_it_runs_as_usual(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    outcome, engine, problems = run(ROWS, tmp_path, {"cots": "cots"}, cache)
    assert problems == []
    sent = [request_text(r) for r in engine.calls]
    assert not any("Think step by step" in t for t in sent)  # the given node made no call
    assert sorted(sent) == sorted(f"Is this right? {c}" for r in ROWS for c in r["cots"])  # its readers did
    assert [r["final"] for r in outcome.records()] == ["4", "6"]
    node = outcome.summary.nodes["cots"]
    assert (node.given, node.engine_calls, node.samples, node.generated_tokens) == (2, 0, 4, 0)
    ex = next(outcome.examples())
    assert ex.trace.nodes["cots"]["given"] == "cots"
    assert ex.trace.nodes["cots"]["instances"] == [{"index": [], "given": "cots", "completions": ROWS[0]["cots"]}]
    # the cache holds the judge's calls only: a given reply is never written as a completion
    n = cache.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert n == sum(len(r["cots"]) for r in ROWS)
    cache.close()


def test_a_node_inside_a_for_takes_one_value_per_item_and_a_short_list_fails_that_example(tmp_path):
    rows = [dict(ROWS[0], judged=["right", "wrong"]), dict(ROWS[1], id="short", judged=["right"])]
    outcome, engine, problems = run(rows, tmp_path, {"cots": "cots", "judged": "judged"})
    assert engine.calls == [] and problems == []
    ok, short = list(outcome.examples())
    assert ok.trace.nodes["judged"]["instances"][1]["completions"] == ["wrong"]
    assert short.failed["judged"] == "given column 'judged' has 1 values for the 2 items of 'for cot'"


@pytest.mark.parametrize("value, why", [
    (None, "given column 'cots' (node 'cots') is missing or null"),
    (["only one"], "given column 'cots' (node 'cots') should be a list of 2 texts: got 1 texts"),
    ("a text", "given column 'cots' (node 'cots') should be a list of 2 texts: got a text"),
    ([1, 2], "given column 'cots' (node 'cots') should be a list of 2 texts: got a list holding non-texts"),
])
def test_a_row_whose_given_column_has_the_wrong_shape_is_skipped_with_where_and_why(tmp_path, value, why):
    rows = [ROWS[0], {**ROWS[1], "cots": value}]
    outcome, _, problems = run(rows, tmp_path, {"cots": "cots"})
    assert problems == [f"rows.jsonl: row 2 (id b): {why}; skipped"]
    assert [r["id"] for r in outcome.records()] == ["a"]  # the rest ran


def test_a_bad_row_in_a_file_is_located_by_its_line_and_the_rest_compile(tmp_path, capsys):
    data = tmp_path / "teacher.jsonl"
    rows = [ROWS[0], {**ROWS[1], "cots": ["one"]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    prog = tmp_path / "p.s2"
    prog.write_text(PROGRAM, encoding="utf-8")
    out = tmp_path / "data"
    rc = main(["compile", str(prog), "--data", str(data), "--given", "cots=cots", "--given", "judged=cots",
               "--out", str(out), "--no-cache", "--no-progress", "--engine", "vllm"])
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert rc == 0
    assert f"{data.name}:2: row 2 (id b): given column 'cots' (node 'cots') should be a list of 2 texts: got 1 texts; skipped" in err
    assert "no engine" in err
    assert [json.loads(x)["example_id"] for x in (out / "train.jsonl").read_text().splitlines()] == ["a"]


@pytest.mark.parametrize("given, message", [
    ({"cot": "cots"}, "--given cot=cots: the program has no llm node 'cot'"),
    ({"final": "cots"}, "--given final=cots: 'final' is a transform node, not an llm call"),
])
def test_a_node_that_cannot_be_given_is_refused_before_the_data_is_read(tmp_path, given, message):
    with pytest.raises(S2Error) as e:
        s2c.distill(load_text(PROGRAM, "p.s2"), s2c.Data(tmp_path / "missing.jsonl", given=given),
                    "vllm", out=tmp_path / "out")
    assert str(e.value).startswith(message)
    if "cot=" in message:
        assert "cots" in e.value.diagnostic.hint  # did you mean


def test_a_system1_prompt_reading_a_given_node_is_rejected_as_any_intermediate(tmp_path, capsys):
    prog = tmp_path / "leak.s2"
    prog.write_text(PROGRAM.replace('task answer(target=final) """{{ question }}"""',
                                    'task answer(target=final) """{{ question }} {{ cots }}"""'), encoding="utf-8")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    rc = main(["compile", str(prog), "--data", str(data), "--given", "cots=cots", "--given", "judged=cots",
               "--out", str(tmp_path / "out"), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{prog}:" in err and "'cots'" in err and "intermediate" in err


def test_the_python_api_takes_given_columns_and_a_run_of_only_given_calls_starts_no_engine(tmp_path):
    rows = [dict(r, judged=["ok", "ok"]) for r in ROWS]
    eng = s2c.Engine("vllm")  # never started: every call is given
    res = s2c.distill(load_text(PROGRAM, "p.s2"), s2c.Data(rows, given={"cots": "cots", "judged": "judged"}), eng,
                      out=tmp_path / "out", settings=s2c.RunSettings(cache=None, progress=False))
    assert eng.starts == 0
    rows = [json.loads(x) for x in (res.out / "train.jsonl").read_text().splitlines()]
    assert [r["completion"][0]["content"] for r in rows] == ["4", "6"]  # vote: the first seen of a tie


# --------------------------------------------------------------------------- released teacher outputs


def _released(name: str) -> list[dict]:
    return [json.loads(x) for x in (RELEASED / name).read_text(encoding="utf-8").splitlines()]


# Each compile runs in a fresh interpreter in which vllm, torch, transformers and the HTTP clients
# cannot be imported, as on a machine where no engine package is installed.
NO_ENGINE = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"vllm", "torch", "transformers", "httpx", "openai", "ray"}:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Absent())
from s2c.cli import main
sys.exit(main(sys.argv[1:]))
"""


def compile_released(args: list[str], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_ENGINE, "compile", *args, "--out", str(out), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_minds_mirror_compiles_the_released_cots_and_self_evaluations_with_no_engine(tmp_path):
    out = tmp_path / "mm"
    done = compile_released(["programs/minds_mirror.s2", "--data", str(RELEASED / "minds_mirror_svamp.jsonl"),
                             "--given", "cots=cots", "--given", "evaluations=evaluations",
                             "--cache", str(tmp_path / "calls.sqlite")], out)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["engine_calls"] == 0 and summary["engine"] == "none"
    released = {r["id"]: r for r in _released("minds_mirror_svamp.jsonl")}
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["example_id"] for r in rows} == set(released)  # every CoT's equation equals its gold by value
    by_task: dict[tuple, list[str]] = {}
    for r in rows:
        by_task.setdefault((r["example_id"], r["task"]), []).append(r["completion"][0]["content"])
    for ex_id, rel in released.items():
        assert by_task[ex_id, "explain"] == rel["cots"]  # byte for byte, in the released order
        for k, task in enumerate(["evaluate", "evaluate_2", "evaluate_3", "evaluate_4", "evaluate_5"]):
            assert by_task[ex_id, task] == [evals[k] for evals in rel["evaluations"]]
    assert len(rows) == len(released) * (1 + 5 * 6)


def test_cascod_compiles_the_released_bbh_rationales_with_no_engine(tmp_path):
    out = tmp_path / "cascod"
    done = compile_released(["programs/cascod.s2", "--data", str(RELEASED / "cascod_bbh.jsonl"),
                             "--given", "cot=cot", "--no-cache"], out)
    assert done.returncode == 0, done.stderr
    assert "no engine" in done.stdout + done.stderr
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["engine_calls"] == 0
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    phrase = "Therefore, the answer is"
    for rel in _released("cascod_bbh.jsonl"):
        mine = {r["task"]: r for r in rows if r["example_id"] == rel["id"]}
        rationale, answer = rel["cot"].split(phrase)  # where the official code splits (LLMCMTDataset)
        assert mine["rationale"]["completion"][0]["content"] == rationale.strip()
        assert mine["answer"]["completion"][0]["content"] == answer.strip()
        assert mine["answer"]["prompt"][0]["content"].endswith(f"Rationale: {rationale.strip()}\n{phrase}")
        assert (mine["rationale"]["weight"], mine["answer"]["weight"]) == (0.9, 0.1)
