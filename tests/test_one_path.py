"""One path through s2c, checked end to end through the CLI with a scripted engine:

- a training row's prompt is, byte for byte, the request System 1 gets in eval for the same input
  (bsm: one task; cascod: the cascade, rationale then answer);
- every eval metric scores its own answer expression;
- one s2c owns an out folder (a lock held by another live process stops a run, a dead holder's
  lock is taken over);
- a bug (an unexpected exception) exits 70 with one line naming a log file with the traceback;
- a run in which every example failed exits 3;
- a folder holding a run of one program refuses a run of another;
- `s2c trace` reads an eval's run folders.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from engine_fixtures import judge_script

import s2c.runtime.engines as engines
from s2c.cli import EXIT_INTERNAL, main
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import EXIT_ALL_FAILED

HERE = Path(__file__).parent
REPO = HERE.parent
TWO_STEP = HERE / "fixtures" / "programs" / "two_step.s2"

# Every test drives the engine-flagged CLI with --engine openai: open_engine then calls
# make_engine directly (no LazyEngine, no local model folder, no choice of installed engines),
# and make_engine is the fake below.
ENGINE = ["--engine", "openai", "--no-cache"]


def use_engine(monkeypatch, *fakes: FakeEngine) -> list[FakeEngine]:
    """make_engine hands out `fakes` in order (one per s2c command)."""
    queue = list(fakes)
    made: list[FakeEngine] = []

    def make(name, model=None, roles=None, **options):
        eng = queue.pop(0)
        made.append(eng)
        return eng

    monkeypatch.setattr(engines, "make_engine", make)
    return made


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def as_bytes(messages) -> bytes:
    return json.dumps(messages, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- 1. row == request

def bsm_rows(n=6) -> list[dict]:
    """BSM inputs with non-ASCII text, a second line in each response and jinja-looking braces:
    whatever the renderer does to them, it must do the same in compile and in eval."""
    return [{"id": f"e{i}", "question": f"Qué dice «{i}»? — 日本 {{{{ x }}}}", "label": "A" if i % 2 else "B",
             "response_a": ("a good answer ✓" if i % 2 else "a bad answer ✗") + "\n  second line, tab\there",
             "response_b": ("a bad answer ✗" if i % 2 else "a good answer ✓") + "\nünïcode"} for i in range(n)]


def test_bsm_training_row_is_the_eval_request_byte_for_byte(tmp_path, monkeypatch):
    data = bsm_rows()
    src = write_jsonl(tmp_path / "bsm.jsonl", data)
    compile_eng, eval_eng = FakeEngine(judge_script(set())), FakeEngine(judge_script(set()))
    use_engine(monkeypatch, compile_eng, eval_eng)
    assert main(["compile", "bsm.s2", "--data", str(src), "--out", str(tmp_path / "ds"), *ENGINE]) == 0
    rows = read_jsonl(tmp_path / "ds" / "train.jsonl")
    assert sorted(r["example_id"] for r in rows) == [d["id"] for d in data]  # all kept
    assert main(["eval", "bsm.s2", "--data", str(src), "--out", str(tmp_path / "ev"), "--no-system2",
                 *ENGINE]) == 0

    by_id = {d["id"]: d for d in data}
    system1 = [c for c in eval_eng.calls if "Please act as an impartial judge" in request_text(c)]
    # the original and the swapped copy of each input (swap_inconsistency)
    assert len(system1) == 2 * len(data)
    compared = 0
    for row in rows:
        d = by_id[row["example_id"]]
        # this example's own request: its question, with its response_a in position A (not the swap)
        mine = [c for c in system1 if f"[User Question]\n{d['question']}\n" in request_text(c)
                and f"[The Start of Assistant A's Answer]\n{d['response_a']}\n" in request_text(c)]
        assert len(mine) == 1, row["example_id"]
        req = mine[0]
        assert req.adapter is None and req.mode == "chat"
        assert row["prompt"] == req.payload()["messages"]
        assert as_bytes(row["prompt"]) == as_bytes(req.payload()["messages"])
        compared += 1
    assert compared == len(data)


def test_cascade_training_rows_are_the_eval_requests_byte_for_byte(tmp_path, monkeypatch):
    data = [{"id": f"g{i}", "question": f"Tom has {i} apples — and «{i}» more?\nHow many, señor?",
             "answer": str(2 * i)} for i in range(1, 5)]
    src = write_jsonl(tmp_path / "gsm.jsonl", data)

    def teacher(req, i):
        t = req.messages[-1].content
        k = int(re.search(r"Tom has (\d+)", t).group(1))
        return f"Step: {k} plus {k} (ñ) — doubles.\nSo {2 * k}. Therefore, the answer is {2 * k}."

    compile_eng = FakeEngine(teacher)
    use_engine(monkeypatch, compile_eng)
    assert main(["compile", "cascod.s2", "--data", str(src), "--out", str(tmp_path / "ds"), *ENGINE]) == 0
    rows = read_jsonl(tmp_path / "ds" / "train.jsonl")
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["format"] == "cascade"
    assert [(r["example_id"], r["task"]) for r in rows] == [(d["id"], t) for d in data
                                                           for t in ("rationale", "answer")]
    rationale_of = {r["example_id"]: r["completion"][0]["content"] for r in rows if r["task"] == "rationale"}
    question_id = {d["question"]: d["id"] for d in data}

    # a cascade-trained adapter, as `s2c train` leaves it
    ad = tmp_path / "train" / "adapter"
    ad.mkdir(parents=True)
    (ad / "adapter_config.json").write_text("{}")
    (ad.parent / "train_config.json").write_text(json.dumps({"format": "cascade"}))

    def question_in(t: str) -> str:
        return next(q for q in question_id if f"Q: {q}\n" in t)

    def student(req, i):
        t = req.messages[-1].content
        if "Therefore, the answer is" in t:
            return str(2 * int(re.search(r"Tom has (\d+)", t).group(1)))
        return rationale_of[question_id[question_in(t)]]  # the training row's rationale target

    eval_eng = FakeEngine(student)
    use_engine(monkeypatch, eval_eng)
    assert main(["eval", "cascod.s2", "--data", str(src), "--adapter", str(ad.parent), "--no-system1",
                 "--no-system2", "--out", str(tmp_path / "ev"), *ENGINE]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["systems"][0]["metrics"] == {"normalized_match": 1.0}

    compared = {"rationale": 0, "answer": 0}
    for row in rows:
        q = next(d["question"] for d in data if d["id"] == row["example_id"])
        mine = [c for c in eval_eng.calls if question_in(c.messages[-1].content) == q
                and ("Therefore, the answer is" in c.messages[-1].content) == (row["task"] == "answer")]
        assert len(mine) == 1, (row["example_id"], row["task"])
        req = mine[0]
        assert req.adapter == str(ad)
        assert row["prompt"] == req.payload()["messages"]
        assert as_bytes(row["prompt"]) == as_bytes(req.payload()["messages"])
        compared[row["task"]] += 1
    assert compared == {"rationale": len(data), "answer": len(data)}


# --------------------------------------------------------------------------- 2. metrics

TWO_ANSWERS = '''\
program two_answers "two answers from two different calls"

input question
gold gold1, gold2

first = llm(max_tokens=16) """
First call: {{ question }}
"""
second = llm(max_tokens=16) """
Second call: {{ question }}
"""
a1 = strip(first)
a2 = strip(second)

output a1
output a2

distill:
    task answer(target=a1) """
    {{ question }}
    """

eval:
    metric {m1}(a1, gold1)
    metric {m2}(a2, gold2)
    parse = strip(completion)
'''


def two_answer_eval(tmp_path, monkeypatch, m1: str, m2: str):
    prog = tmp_path / "two_answers.s2"
    prog.write_text(TWO_ANSWERS.replace("{m1}", m1).replace("{m2}", m2))
    # gold1 == gold2, and the first call answers it, the second does not: scoring both metrics on
    # a1 gives 1.0 twice, on a2 0.0 twice; only "each its own answer" gives 1.0 and 0.0
    src = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "question": f"q{i}", "gold1": "42", "gold2": "42"}
                                             for i in range(4)])
    eng = FakeEngine({"First call": "42", "Second call": "17"})
    use_engine(monkeypatch, eng)
    rc = main(["eval", str(prog), "--data", str(src), "--no-system1", "--out", str(tmp_path / "ev"), *ENGINE])
    return rc, eng


def test_every_metric_scores_its_own_answer(tmp_path, monkeypatch):
    rc, eng = two_answer_eval(tmp_path, monkeypatch, "normalized_match", "exact_match")
    assert rc == 0
    assert sum("First call" in request_text(c) for c in eng.calls) == 4
    assert sum("Second call" in request_text(c) for c in eng.calls) == 4
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    (s2,) = res["systems"]
    assert s2["name"] == "System 2"
    assert s2["metrics"] == {"normalized_match": 1.0, "exact_match": 0.0}


def test_two_metrics_of_the_same_kind_are_reported_separately(tmp_path, monkeypatch):
    rc, _ = two_answer_eval(tmp_path, monkeypatch, "normalized_match", "normalized_match")
    if rc == 1:  # refusing the program would be a fix too
        return
    assert rc == 0
    (s2,) = json.loads((tmp_path / "ev" / "results.json").read_text())["systems"]
    assert sorted(s2["metrics"].values()) == [0.0, 1.0]


# --------------------------------------------------------------------------- 3. one owner

def qa_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", [{"id": "a", "question": "2+2?", "answer": "4"},
                                               {"id": "b", "question": "3+3?", "answer": "6"}])


def qa_script(req, i):
    return "Final answer: 4" if "2+2" in request_text(req) else "Final answer: 6"


def test_one_owner_per_out_folder_and_a_dead_owner_is_taken_over(tmp_path, monkeypatch, capsys):
    src = qa_data(tmp_path)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from pathlib import Path
            from s2c.folders import own
            with own(Path(sys.argv[1])):
                print("held", flush=True)
                time.sleep(600)
        """), str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        eng = FakeEngine(qa_script)
        use_engine(monkeypatch, eng, FakeEngine(qa_script))
        capsys.readouterr()
        rc = main(["run", str(TWO_STEP), "--data", str(src), "--out", str(out), *ENGINE])
        err = capsys.readouterr().err
        assert rc == 1
        assert f"pid {holder.pid}" in err and "in use by another s2c" in err
        assert eng.calls == [] and not (out / "run.sqlite").exists()  # nothing ran, nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    # the kernel dropped the dead holder's flock; its pid is still in the file
    assert (out / ".s2c.lock").read_text().strip() == str(holder.pid)
    rc = main(["run", str(TWO_STEP), "--data", str(src), "--out", str(out), *ENGINE])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["ok"] == 2
    assert (out / ".s2c.lock").read_text().strip() == str(os.getpid())


# --------------------------------------------------------------------------- 4. a bug

def test_a_bug_exits_70_with_the_traceback_in_a_log_file(tmp_path, monkeypatch, capsys):
    src = qa_data(tmp_path)
    out = tmp_path / "out"
    use_engine(monkeypatch, FakeEngine(qa_script, raise_on=["3+3"], exception=TypeError))
    rc = main(["run", str(TWO_STEP), "--data", str(src), "--out", str(out), *ENGINE])
    assert rc == EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" not in err and "File \"" not in err
    lines = [line for line in err.splitlines() if "internal error" in line]
    assert len(lines) == 1, err
    assert "TypeError" in lines[0] and "bug in s2c" in lines[0]
    log = Path(lines[0].rsplit("Traceback: ", 1)[1].strip())
    assert log.parent == out and log.is_file()
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "TypeError: FakeEngine: scripted crash" in text


# --------------------------------------------------------------------------- 5. all failed

def test_a_run_in_which_every_example_failed_exits_3(tmp_path, monkeypatch, capsys):
    src = qa_data(tmp_path)
    use_engine(monkeypatch, FakeEngine(qa_script, fail=lambda r: True),
               FakeEngine(qa_script, fail=lambda r: "2+2" not in request_text(r)))
    rc = main(["run", str(TWO_STEP), "--data", str(src), "--out", str(tmp_path / "all"), *ENGINE])
    assert rc == EXIT_ALL_FAILED == 3
    s = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert (s["examples"], s["ok"], s["failed"]) == (2, 0, 2)
    rc = main(["run", str(TWO_STEP), "--data", str(src), "--out", str(tmp_path / "one"), *ENGINE])
    assert rc == 0
    s = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert (s["examples"], s["ok"], s["failed"]) == (2, 1, 1)


# --------------------------------------------------------------------------- 6. two programs

def test_a_folder_holding_a_run_of_one_program_refuses_another(tmp_path, monkeypatch, capsys):
    src = qa_data(tmp_path)  # both programs read question, gold answer
    out = tmp_path / "out"
    second = FakeEngine(qa_script)
    use_engine(monkeypatch, FakeEngine(qa_script), second)
    assert main(["run", str(TWO_STEP), "--data", str(src), "--out", str(out), *ENGINE]) == 0
    before = (out / "summary.json").read_text()
    capsys.readouterr()
    rc = main(["run", "cascod.s2", "--data", str(src), "--out", str(out), *ENGINE])
    err = capsys.readouterr().err
    assert rc == 1
    assert "holds a run of program 'two_step'" in err and "'cascod'" in err
    assert second.calls == []
    # the first run is left as it was
    assert (out / "summary.json").read_text() == before
    assert main(["trace", str(out), "--example", "b"]) == 0


# --------------------------------------------------------------------------- 7. trace on eval

def bsm_eval(tmp_path, monkeypatch) -> Path:
    src = write_jsonl(tmp_path / "bsm.jsonl", [
        {"id": f"e{i}", "question": f"Question {i}", "label": "A" if i % 2 else "B",
         "response_a": "a good answer" if i % 2 else "a bad answer",
         "response_b": "a bad answer" if i % 2 else "a good answer"} for i in range(3)])
    use_engine(monkeypatch, FakeEngine(judge_script(set())))
    ev = tmp_path / "ev"
    assert main(["eval", "bsm.s2", "--data", str(src), "--out", str(ev), *ENGINE]) == 0
    return ev


def check_traces(system1: Path, system2: Path, capsys):
    capsys.readouterr()
    assert main(["trace", str(system1)]) == 0
    out = capsys.readouterr().out
    assert "example e0" in out
    assert "Please act as an impartial judge" in out  # the System-1 prompt
    assert "1. Helpfulness" not in out and "1 engine calls" in out  # one call, no branch
    assert "merge-kappa: [[B]]" in out  # its completion

    assert main(["trace", str(system2), "--example", "e1"]) == 0
    out = capsys.readouterr().out
    assert "example e1" in out
    assert "gold label: A" in out
    assert "1. Helpfulness" in out and "A: 6" in out  # System 2's branch and solve calls

    assert main(["trace", str(system2), "--example", "e1~swap"]) == 0
    assert "example e1~swap" in capsys.readouterr().out


def test_trace_reads_the_eval_run_folders(tmp_path, monkeypatch, capsys):
    ev = bsm_eval(tmp_path, monkeypatch)
    # the run folders eval reports (results.json, and the `s2c trace ...` line it prints)
    run_dir = {s["name"]: Path(s["run_dir"]) for s in json.loads((ev / "results.json").read_text())["systems"]}
    assert set(run_dir) == {"System 1", "System 2"} and all(d.parent == ev for d in run_dir.values())
    check_traces(run_dir["System 1"], run_dir["System 2"], capsys)


def test_trace_reads_the_documented_eval_folders(tmp_path, monkeypatch, capsys):
    ev = bsm_eval(tmp_path, monkeypatch)
    check_traces(ev / "system1", ev / "system2", capsys)
