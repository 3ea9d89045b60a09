"""The Python API (s2c/api.py) with a scripted engine: run on rows in memory (a list of dicts, a
pandas DataFrame, a datasets.Dataset), a run as a table (RunOutcome.to_pandas / to_dataset), a
bad row skipped with where it was, and s2c.distill writing the very folder `s2c compile` writes."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

import s2c
from s2c.cli import main
from s2c.runtime import engines
from s2c.runtime.engines.fake import FakeEngine, request_text

HERE = Path(__file__).parent
TWO_STEP = HERE / "fixtures" / "programs" / "two_step.s2"  # draft, review, final = after(review, "Final answer:")
QUIET = s2c.RunSettings(cache=None, progress=False)

ROWS = [  # the gold of q3 is wrong on purpose: `keep matches(final, answer)` drops it
    {"id": "q1", "question": "add 1 and 2", "answer": "3"},
    {"id": "q2", "question": "add 20 and 22", "answer": "42"},
    {"id": "q3", "question": "add 2 and 2", "answer": "5"},
    {"id": "q4", "question": "add 7 and 0 (no final line)", "answer": "7"},
]


def teacher(request, sample_index: int) -> str:
    """Draft: the sum. Review: 'Final answer: SUM', except for a question that asks for no final
    line (its `after` finds nothing: that example is unparsed)."""
    text = request_text(request)
    a, b = map(int, re.search(r"add (\d+) and (\d+)", text).groups())
    if "Draft:" not in text:
        return f"It is {a + b}."
    return f"I checked it. {a + b}" if "no final line" in text else f"Final answer: {a + b}"


@pytest.fixture
def fake(monkeypatch):
    """make_engine hands out a fresh scripted engine each time: `s2c.Engine("openai", ...)` is backed
    by one. Returns the engines made, in order."""
    made: list[FakeEngine] = []

    def make(name, model=None, roles=None, **options):
        made.append(FakeEngine(teacher))
        return made[-1]

    monkeypatch.setattr(engines, "make_engine", make)
    return made


def engine() -> s2c.Engine:
    return s2c.Engine("openai", base_url="http://127.0.0.1:9/v1")  # made by the fixture's make_engine


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- run -> a table


def test_run_on_a_list_of_dicts_and_the_run_as_pandas(tmp_path, fake):
    with engine() as eng:
        outcome = s2c.run(TWO_STEP, ROWS, eng, out=tmp_path / "run", settings=QUIET)
        assert eng.starts == 1 and len(fake) == 1
    s = outcome.summary
    assert (s.examples, s.ok, s.unparsed, s.engine_calls) == (4, 3, 1, 8)
    assert outcome.run_dir == tmp_path / "run" and s.meta["data"] == "list"

    df = outcome.to_pandas()
    assert list(df.columns) == ["id", "status", "question", "final", "gold_answer", "generated_tokens", "error"]
    assert df["id"].tolist() == ["q1", "q2", "q3", "q4"]
    assert df["status"].tolist() == ["ok", "ok", "ok", "unparsed"]
    assert df["final"].tolist()[:3] == ["3", "42", "4"] and df["final"].isna().tolist() == [False] * 3 + [True]
    assert df["gold_answer"].tolist() == ["3", "42", "5", "7"]
    assert df["question"][1] == "add 20 and 22"
    assert df["error"][:3].isna().all() and df["error"][3].startswith("final: ")
    # each example's tokens: "It is N." (3 words) + the review reply
    assert df["generated_tokens"].tolist() == [3 + 3, 3 + 3, 3 + 3, 3 + 4]
    assert df["generated_tokens"].sum() == s.generated_tokens


def test_run_as_a_datasets_dataset(tmp_path, fake):
    outcome = s2c.run(TWO_STEP, ROWS, engine(), out=tmp_path / "run", settings=QUIET)
    ds = outcome.to_dataset()
    assert ds.column_names == ["id", "status", "question", "final", "gold_answer", "generated_tokens", "error"]
    assert ds["final"] == ["3", "42", "4", None] and ds["status"][3] == "unparsed"
    assert ds[1] == {"id": "q2", "status": "ok", "question": "add 20 and 22", "final": "42", "gold_answer": "42",
                     "generated_tokens": 6, "error": None}
    # a rerun into the same folder is read again, not served from datasets' cache
    again = s2c.run(TWO_STEP, ROWS[:2], engine(), out=tmp_path / "run", settings=QUIET)
    assert again.to_dataset()["id"] == ["q1", "q2"]


def test_run_on_a_dataframe_with_a_nan_outside_the_inputs(tmp_path, fake):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(ROWS[:3]).assign(note=[math.nan, "checked", math.nan], n=[1, 2, 3])
    outcome = s2c.run(TWO_STEP, frame, engine(), out=tmp_path / "run", settings=QUIET)
    assert outcome.summary.ok == 3 and outcome.summary.rows_skipped == 0
    assert outcome.to_pandas()["final"].tolist() == ["3", "42", "4"]


def test_run_on_a_datasets_dataset(tmp_path, fake):
    datasets = pytest.importorskip("datasets")
    outcome = s2c.run(TWO_STEP, datasets.Dataset.from_list(ROWS[:2]), engine(), out=tmp_path / "run", settings=QUIET)
    assert [(r["id"], r["final"]) for r in outcome.records()] == [("q1", "3"), ("q2", "42")]
    assert outcome.summary.meta["data"] == "Dataset"


def test_a_bad_row_is_skipped_with_where_it_was(tmp_path, fake, capsys):
    rows = [ROWS[0], {"id": "q9", "answer": "1"}, ROWS[1]]
    outcome = s2c.run(TWO_STEP, rows, engine(), out=tmp_path / "run", settings=QUIET)
    err = capsys.readouterr().err
    assert "s2c: data: 2 rows from 3 rows in a list, split train (1 skipped)" in err
    assert "s2c: list: row 2 (id q9): field 'question' is missing or null; skipped" in err
    assert [r["id"] for r in outcome.records()] == ["q1", "q2"]
    assert json.loads((tmp_path / "run" / "rows.json").read_text())["skipped"] == [
        "list: row 2 (id q9): field 'question' is missing or null; skipped"]


# --------------------------------------------------------------------------- distill == s2c compile

# what `s2c compile` writes that is not the same from one run to the next (times), or is the store
RUN_ONLY = {"run/run.sqlite", "run/summary.json", "run/load.csv", "run/engine.log"}


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and str(p.relative_to(folder)) not in RUN_ONLY and not p.name.startswith(".")}


def test_distill_saves_the_folder_s2c_compile_writes(tmp_path, fake, monkeypatch):
    """`s2c compile --out ds` run in one folder and `s2c.distill(...).save("ds")` in another write the
    same files (folder names in meta.json and the card are as given, here both `ds`)."""
    data = str(write_jsonl(tmp_path / "sums.jsonl", ROWS))  # the same data name for both
    (tmp_path / "cli").mkdir()
    (tmp_path / "api").mkdir()
    monkeypatch.chdir(tmp_path / "cli")
    assert main(["compile", str(TWO_STEP), "--data", data, "--out", "ds", "--val-split", "0.6",
                 "--engine", "openai", "--no-cache", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "api")
    res = s2c.distill(TWO_STEP, data, engine(), out="work", settings=QUIET, distill=s2c.DistillSettings(val_split=0.6))
    assert len(fake) == 2

    assert (res.report["inputs"], res.report["kept"], res.report["unparsed"]) == (4, 2, 1)
    assert res.report["dropped_per_rule"] == {"matches": 1}
    dd = res.dataset
    assert type(dd).__name__ == "DatasetDict" and sorted(dd) == ["train", "validation"]
    assert (dd["train"]["example_id"], dd["validation"]["example_id"]) == (["q1"], ["q2"])  # by the id's hash
    row = dd["validation"][0]
    assert row["prompt"] == [{"role": "user", "content": "add 20 and 22"}]
    assert row["completion"] == [{"role": "assistant", "content": "42"}]

    saved = res.save("ds")
    ours, theirs = files(saved), files(tmp_path / "cli" / "ds")
    assert {"train.jsonl", "validation.jsonl", "train.parquet", "validation.parquet", "curation.jsonl",
            "report.json", "meta.json", "README.md"} <= set(ours)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name] == theirs[name], name
    assert json.loads(ours["meta.json"])["run_dir"] == "ds/run"
    assert [json.loads(line)["verdict"] for line in ours["curation.jsonl"].decode().splitlines()] == [
        "kept", "kept", "dropped", "unparsed"]
    with pytest.raises(s2c.S2Error, match="exists and is not empty"):
        res.save("ds")


def test_the_api_functions_keep_their_names_beside_the_packages_of_the_same_name():
    import s2c.distill.build  # the import system sets s2c.distill to the package it imports
    import s2c.evaluate.evaluate
    import s2c.train.sft
    from s2c import api

    assert (s2c.distill, s2c.train, s2c.evaluate, s2c.run) == (api.distill, api.train, api.evaluate, api.run)


def test_what_the_engine_prints_while_it_stops_goes_to_the_last_runs_engine_log(tmp_path, monkeypatch, capsys):
    import logging

    class Noisy(FakeEngine):
        def close(self):
            print("WARNING [shutdown] force killing the worker")
            logging.getLogger("engine-test").warning("WARNING logged while stopping")
            super().close()

    logger = logging.getLogger("engine-test")
    handler = logging.StreamHandler(sys.stdout)  # bound to the user's stdout (capsys's here), as vLLM's is
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(engines, "make_engine", lambda *a, **k: Noisy(teacher))
    eng = engine()
    s2c.run(TWO_STEP, ROWS[:1], eng, out=tmp_path / "one", settings=QUIET)
    s2c.run(TWO_STEP, ROWS[1:2], eng, out=tmp_path / "two", settings=QUIET)
    capsys.readouterr()
    eng.close()
    assert capsys.readouterr() == ("", "")
    log = (tmp_path / "two" / "engine.log").read_text()
    assert "force killing the worker" in log and "logged while stopping" in log
    assert not (tmp_path / "one" / "engine.log").exists()
    logger.warning("after")
    logger.removeHandler(handler)
    assert capsys.readouterr().out == "after\n"
