"""`s2c trace` through the CLI: which example it picks and says so, the gold answer and whether the
output matches it, --failed, --dropped (from a compiled dataset's curation.jsonl), and bad input
answered with one clear line (no traceback). Run folders come from the scripted fake engine."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from engine_fixtures import judge_script

from s2c.cli import main
from s2c.cli import run_trace as runtime_cli
from s2c.compiler.pipeline import load_program
from s2c.distill.build import DistillSettings, distill_program, read_verdicts
from s2c.runtime import engines
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner, validate_rows

HERE = Path(__file__).parent
TWO_STEP = HERE / "fixtures" / "programs" / "two_step.s2"

# input order: one unparsed, one failed, then b (ok, wrong: dropped by `keep matches`), a (ok, right)
ROWS = [{"id": "c", "question": "5+5?", "answer": "10"}, {"id": "d", "question": "9+9?", "answer": "18"},
        {"id": "b", "question": "3+3?", "answer": "6"}, {"id": "a", "question": "2+2?", "answer": "4"}]


def script(req, i):
    text = request_text(req)
    return "Final answer: 4" if "2+2" in text else "no idea" if "5+5" in text else "Final answer: 7"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """No wrapping: the lines the tests look for stay whole."""
    from rich.console import Console

    monkeypatch.setattr(runtime_cli, "make_console", lambda stderr=True: Console(stderr=stderr, markup=False, highlight=False, width=1000))


def fake() -> FakeEngine:
    return FakeEngine(script, fail=["9+9"])  # an engine failure on every request of d


def rows(cp, raw=ROWS):
    good, problems = validate_rows(cp, raw)
    assert not problems
    return good


@pytest.fixture
def ds(tmp_path) -> Path:
    """A compiled dataset folder (s2c compile --out DIR) of two_step over ROWS."""
    program = tmp_path / "two_step.s2"  # a copy the tests may change or delete
    shutil.copy(TWO_STEP, program)
    cp = load_program(program)
    distill_program(cp, rows(cp), Runner(fake(), CallCache(tmp_path / "c.sqlite"), progress=False), tmp_path / "ds", DistillSettings(data="fixture"))
    return tmp_path / "ds"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A plain run folder (s2c run --out) of two_step over a and b: both ok."""
    cp = load_program(TWO_STEP)
    Runner(fake(), CallCache(tmp_path / "c.sqlite"), progress=False).execute(cp, rows(cp, ROWS[2:]), tmp_path / "run")
    return tmp_path / "run"


def trace(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["trace", *map(str, argv)])
    got = capsys.readouterr()
    return rc, got.out, got.err


def headers(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("example ")]


# ------------------------------------------------------------------------------ the default

def test_default_is_the_first_ok_example_and_stderr_says_so(ds, capsys):
    rc, out, err = trace(capsys, ds)
    assert rc == 0
    assert err.strip() == ("showing example b (the first ok example of 4; --example ID, --failed, --dropped "
                           "to pick others)")
    assert headers(out) == ["example b ok · 2 engine calls · 6 generated tokens"]
    assert "gold answer: 6 · output final: 7 · ✗ incorrect (normalized_match)" in out
    assert "curation: dropped by rule matches" in out
    assert "showing" not in out  # status lines stay off stdout


def test_a_named_example_shows_gold_correct_and_its_verdict(ds, capsys):
    rc, out, err = trace(capsys, ds, "--example", "a")
    assert rc == 0 and err == ""
    assert headers(out) == ["example a ok · 2 engine calls · 6 generated tokens"]
    assert "gold answer: 4 · output final: 4 · ✓ correct (normalized_match)" in out
    assert "curation: kept" in out


def test_the_compile_folder_its_run_folder_and_run_sqlite_show_the_same(ds, capsys):
    shown = [trace(capsys, where, "--example", "a") for where in (ds, ds / "run", ds / "run" / "run.sqlite")]
    assert shown[0] == shown[1] == shown[2]
    assert "curation: kept" in shown[1][1]


def test_with_no_ok_example_the_first_is_shown(tmp_path, capsys):
    cp = load_program(TWO_STEP)
    Runner(fake(), CallCache(tmp_path / "c.sqlite"), progress=False).execute(cp, rows(cp, ROWS[:2]), tmp_path / "run")
    rc, out, err = trace(capsys, tmp_path / "run")
    assert rc == 0
    assert "showing example c (no example of 2 is ok: the first one; --example ID, --failed to pick others)" in err
    assert headers(out) == ["example c unparsed · 2 engine calls · 4 generated tokens"]
    assert "gold answer: 10 · output final: (unparsed: after(): marker 'Final answer:' not found in the text) · " \
           "✗ incorrect (normalized_match)" in out


# ------------------------------------------------------------------------------ --failed, --dropped

def test_failed_walks_failed_and_unparsed_examples_in_input_order(ds, capsys):
    rc, out, err = trace(capsys, ds, "--failed")
    assert rc == 0
    assert err.strip() == "2 of 4 examples have no output: 1 failed, 1 unparsed; showing all 2"
    assert [h.split(" ·")[0] for h in headers(out)] == ["example c unparsed", "example d failed"]
    assert "failed final: after(): marker 'Final answer:' not found in the text" in out
    assert "curation: unparsed at final: after(): marker 'Final answer:' not found" in out
    assert "curation: failed at draft" in out

    rc, out, err = trace(capsys, ds, "--failed", "--limit", "1")
    assert rc == 0 and [h.split(" ·")[0] for h in headers(out)] == ["example c unparsed"]
    assert "showing the first 1 (--limit N for more, --limit 0 for all)" in err


def test_dropped_shows_rule_and_reason(ds, capsys):
    reason = read_verdicts(ds)["b"]["reason"]
    assert reason
    rc, out, err = trace(capsys, ds, "--dropped")
    assert rc == 0
    assert err.strip() == "1 of 4 examples were dropped by curation (rule matches: 1); showing all 1"
    assert [h.split(" ·")[0] for h in headers(out)] == ["example b ok"]
    assert f"curation: dropped by rule matches: {reason}" in out


def test_nothing_failed_or_dropped_is_an_answer_not_an_error(run_dir, tmp_path, capsys):
    rc, out, err = trace(capsys, run_dir, "--failed")
    assert (rc, out) == (0, "")
    assert err.strip() == "no example failed or was unparsed: all 2 are ok"

    cp = load_program(TWO_STEP)
    distill_program(cp, rows(cp, ROWS[3:]), Runner(fake(), CallCache(tmp_path / "c.sqlite"), progress=False), tmp_path / "one", DistillSettings(data="fixture"))
    rc, out, err = trace(capsys, tmp_path / "one", "--dropped")
    assert (rc, out) == (0, "")
    assert err.strip() == "curation dropped no example: 1 kept"


def test_a_plain_run_folder_has_no_curation(run_dir, capsys):
    rc, out, err = trace(capsys, run_dir)
    assert rc == 0 and "curation" not in out
    assert "(the first ok example of 2; --example ID, --failed to pick others)" in err  # no --dropped offered
    rc, out, err = trace(capsys, run_dir, "--dropped")
    assert (rc, out) == (1, "")
    assert "--dropped needs a compiled dataset folder" in err and "s2c compile" in err


def test_a_compile_from_before_curation_jsonl_says_to_recompile(ds, capsys):
    (ds / "curation.jsonl").unlink()
    rc, _, err = trace(capsys, ds, "--dropped")
    assert rc == 1
    assert "has no curation.jsonl: it was compiled before compile wrote one" in err and "compile it again" in err
    rc, out, _ = trace(capsys, ds, "--example", "a")  # the rest still works
    assert rc == 0 and "✓ correct" in out and "curation" not in out


# ------------------------------------------------------------------------------ the program behind the run

def test_a_missing_program_file_shows_the_gold_alone_and_says_why(ds, tmp_path, capsys):
    (tmp_path / "two_step.s2").unlink()
    rc, out, err = trace(capsys, ds, "--example", "a")
    assert rc == 0
    assert "gold answer: 4" in out and "correct" not in out
    assert "note: the gold is shown without a check: the run's program" in err and "does not load" in err


def test_a_changed_program_shows_the_gold_alone_and_says_why(ds, tmp_path, capsys):
    program = tmp_path / "two_step.s2"
    program.write_text(program.read_text().replace("final = after(review", "final = after(draft"))
    program.write_text(program.read_text().replace('review = llm', 'check = llm'))
    rc, out, err = trace(capsys, ds, "--example", "a")
    assert rc == 0
    assert "gold answer: 4" in out and "correct" not in out
    assert "has changed since this run" in err


def test_a_program_without_metrics_shows_the_gold_alone(tmp_path, capsys):
    program = tmp_path / "plain.s2"
    program.write_text(TWO_STEP.read_text().split("\ndistill:")[0])
    cp = load_program(program)
    Runner(fake(), CallCache(tmp_path / "c.sqlite"), progress=False).execute(cp, rows(cp, ROWS[3:]), tmp_path / "run")
    rc, out, err = trace(capsys, tmp_path / "run")
    assert rc == 0 and "note" not in err
    assert "gold answer: 4" in out and "correct" not in out


def test_system1_of_an_eval_answers_in_parsed(tmp_path, monkeypatch, capsys):
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS[2:]))
    monkeypatch.setattr(engines, "make_engine", lambda *a, **k: FakeEngine(script))
    ev = tmp_path / "ev"
    assert main(["eval", str(TWO_STEP), "--data", str(src), "--out", str(ev), "--engine", "openai",
                 "--no-cache"]) == 0
    rc, out, _ = trace(capsys, ev / "system1", "--example", "a")
    assert rc == 0 and "gold answer: 4 · output parsed: 4 · ✓ correct (normalized_match)" in out
    rc, out, _ = trace(capsys, ev / "system2", "--example", "b")
    assert rc == 0 and "gold answer: 6 · output final: 7 · ✗ incorrect (normalized_match)" in out
    rc, out, err = trace(capsys, ev)
    assert (rc, out) == (1, "")
    assert "holds 2 runs (system1, system2): trace one of them" in err and f"s2c trace {ev / 'system1'}" in err


def test_a_perturbed_copy_shows_its_originals_verdict_and_is_not_scored(tmp_path, capsys):
    cp = load_program("bsm.s2")
    raw = [{"id": f"e{i}", "question": f"Q{i}", "label": "A" if i % 2 else "B",
            "response_a": "a good answer" if i % 2 else "a bad answer",
            "response_b": "a bad answer" if i % 2 else "a good answer"} for i in range(2)]
    distill_program(cp, rows(cp, raw), Runner(FakeEngine(judge_script(bias_a={"Q0"})), CallCache(tmp_path / "c.sqlite"), progress=False), tmp_path / "ds", DistillSettings(data="fixture"))
    rc, out, _ = trace(capsys, tmp_path / "ds", "--example", "e0")
    assert rc == 0 and "gold label: B · output verdict: A · ✗ incorrect (agreement)" in out
    assert "curation: dropped by rule consistent: consistent: answer changes under swap" in out
    rc, out, _ = trace(capsys, tmp_path / "ds", "--example", "e0~swap")
    assert rc == 0 and "gold label: B" in out and "correct" not in out  # the gold is the original input's
    assert "curation (with its original e0): dropped by rule consistent" in out


# ------------------------------------------------------------------------------ bad input

def test_bad_input_is_one_clear_message(ds, tmp_path, capsys):
    cases = [
        ((tmp_path / "nowhere",), "error: no folder"),
        ((tmp_path,), "is not a run folder: it has no run.sqlite"),
        ((ds / "train.jsonl",), "is a file, not a run folder"),
        ((ds, "--example", "bb"), "no example 'bb'"),
        ((ds, "--node", "nope"), "no node 'nope' in this trace"),
        ((ds, "--limit", "3"), "--limit says how many examples --failed or --dropped show"),
        ((ds, "--failed", "--limit", "-1"), "--limit -1: expected a count"),
    ]
    for argv, message in cases:
        rc, out, err = trace(capsys, *argv)
        assert (rc, out) == (1, ""), argv
        assert message in err and "Traceback" not in err, (argv, err)
    assert "did you mean 'b'?" in trace(capsys, ds, "--example", "bb")[2]

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "run.sqlite").write_text("not a database")
    rc, _, err = trace(capsys, junk)
    assert rc == 1 and "is not a readable run store" in err and "Traceback" not in err


def test_pick_flags_exclude_each_other(ds, capsys):
    with pytest.raises(SystemExit) as e:
        main(["trace", str(ds), "--failed", "--dropped"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
