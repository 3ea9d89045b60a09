"""Hostile data rows, paths and options (issue 10, items 3 and 5): every bad row is reported with its
file line, id, field and reason and skipped; null is missing; oversize fields hit a documented limit;
bad --out, --cache and numbers are errors before any data is read or an engine is started."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.llm_server import serve

from s2c.cli import main
from s2c.compiler.pipeline import load_program
from s2c.data import load_source
from s2c.runtime.run import MAX_FIELD_CHARS, validate_rows

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def hostile_file(path: Path) -> dict[int, str]:
    """200 rows, 10 of them bad (plus a blank line, which is no row): file line -> the problem
    expected on it."""
    lines, expected = [], {}
    bad = {
        5: ('{"id": "n1", "question": null, "answer": "yes"}', "field 'question' is missing or null"),
        12: ('{"id": "b1", "question": "x", broken', "malformed JSON"),
        20: ('["a", "list"]', "expected a JSON object, got a list"),
        30: ('{"id": "m1", "answer": "no"}', "field 'question' is missing or null"),
        41: ('{"id": "l1", "question": ["a", "b"], "answer": "no"}', "field 'question' should be text, got a list"),
        57: ('{"id": "o1", "question": "' + "x" * (MAX_FIELD_CHARS + 1) + '", "answer": "no"}',
             f"field 'question' is {MAX_FIELD_CHARS + 1:,} characters, over the limit of {MAX_FIELD_CHARS:,}"),
        80: ('{"id": "q3", "question": "again", "answer": "no"}', "duplicate id 'q3'"),
        99: ('{"id": "d1", "question": {"k": 1}, "answer": "no"}', "field 'question' should be text, got a dict"),
        150: ('"just text"', "expected a JSON object, got a string"),
        199: ('{"id": "n2", "question": "ok", "answer": null, "extra": null}', None),  # null gold: not an input
    }
    line = 0
    for i in range(200):
        line += 1
        if line == 100:  # a blank line is no row, and does not shift later row numbers' lines
            lines.append("")
            line += 1
        if line in bad:
            text, why = bad[line]
            lines.append(text)
            if why:
                expected[line] = why
        else:
            lines.append(json.dumps({"id": f"q{line}", "question": f"Is the coin heads up? {line}", "answer": "yes"}))
    path.write_text("\n".join(lines) + "\n")
    return expected


def test_every_bad_row_is_reported_at_its_file_line_with_field_and_reason(tmp_path):
    path = tmp_path / "rows.jsonl"
    expected = hostile_file(path)
    cp = load_program("examples/coin_flip_sc.s2")
    ds = load_source(str(path))
    good, problems = validate_rows(cp, ds.rows, str(path), locations=ds.locations)
    problems = ds.problems + problems
    assert len(problems) == len(expected) == 9
    by_line = {int(p.split(":")[1]): p for p in problems}
    assert sorted(by_line) == sorted(expected)
    for line, why in expected.items():
        p = by_line[line]
        assert p.startswith(f"{path}:{line}: row ") and why in p and p.endswith("; skipped"), p
    # the row number counts every row before it, bad ones included (the blank line is none)
    assert f"{path}:30: row 30 (id m1)" in by_line[30]
    assert f"{path}:150: row 149:" in by_line[150]
    # the good rows: 200 non-blank lines, 9 bad; the row whose null is in a field no input reads runs
    assert len(good) == 191
    n2 = dict(good)["n2"]
    assert "answer" not in n2 and "extra" not in n2  # null is missing, never ""


def test_csv_lines_stay_right_after_a_value_that_spans_lines(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('id,question,answer\na,"two\nlines",yes\nb,,no\nc,fine,yes\nd,only two\n')
    cp = load_program("examples/coin_flip_sc.s2")
    ds = load_source(str(path))
    good, problems = validate_rows(cp, ds.rows, str(path), locations=ds.locations)
    assert [i for i, _ in good] == ["a", "b", "c"]  # an empty CSV cell is empty text, not null
    assert ds.problems == [f"{path}:6: row 4: 2 values for 3 columns; skipped"]


def test_an_oversize_field_runs_when_the_limit_is_raised(tmp_path):
    cp = load_program("examples/coin_flip_sc.s2")
    rows = [{"id": "big", "question": "x" * 2_000}]
    assert validate_rows(cp, rows, max_field_chars=1_000)[1] == [
        "data: row 1 (id big): field 'question' is 2,000 characters, over the limit of 1,000 "
        "(--max-field-chars); skipped"]
    assert [i for i, _ in validate_rows(cp, rows, max_field_chars=2_000)[0]] == ["big"]


def test_run_prints_each_skipped_row_says_where_the_data_came_from_and_runs_the_rest(tmp_path):
    path = tmp_path / "rows.jsonl"
    expected = hostile_file(path)
    with serve(tmp_path) as url:
        done = subprocess.run(
            [sys.executable, "-m", "s2c.cli", "run", "tests/fixtures/programs/two_step.s2", "--data", str(path), "--limit", "40",
             "--engine", "openai", "--base-url", url, "--model", "echo-model", "--no-cache", "--no-progress",
             "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=ENV, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"s2c: data: 37 rows from the local file {path}, split train (5 skipped)" in done.stderr
    for line in (5, 12, 20, 30, 41):
        assert f"s2c: {path}:{line}: row " in done.stderr and expected[line] in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["rows_given"], summary["rows_skipped"], summary["examples"]) == (42, 5, 37)
    assert len(json.loads((tmp_path / "out" / "rows.json").read_text())["skipped"]) == 5


# --- paths and options: errors before data or engine ----------------------------------------------


def unwritable(tmp_path: Path) -> Path:
    """A folder no file can be made in: chmod 555, or for root (whom modes do not stop) a folder
    under /sys, which refuses new entries to everyone."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out"
    return Path("/sys/s2c-test-out")


def cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    notdb = tmp_path / "notes.txt"
    notdb.write_text("not a database\n")
    return [
        (["--out", str(afile)], f"--out {afile}: is a file, not a folder"),
        (["--out", str(afile / "sub")], f"--out {afile / 'sub'}: {afile} is a file, so no folder can be made under it"),
        (["--out", str(unwritable(tmp_path))], f"--out {unwritable(tmp_path)}: cannot write there"),
        (["--cache", str(tmp_path)], f"call cache {tmp_path}: is a folder; the cache is one file"),
        (["--cache", str(notdb)], f"call cache {notdb}: is not an SQLite file (s2c does not overwrite it)"),
        (["--cache", str(afile / "c.sqlite")], f"call cache {afile / 'c.sqlite'}: {afile} is a file"),
        (["--max-errors", "-1"], "--max-errors -1: must be at least 0"),
        (["--chunk-size", "0"], "--chunk-size 0: must be at least 1"),
        (["--chunk-size", "-1"], "--chunk-size -1: must be at least 1"),
        (["--limit", "-3"], "--limit -3: must be at least 0"),
        (["--max-field-chars", "0"], "--max-field-chars 0: must be at least 1"),
    ]


@pytest.mark.parametrize("command", ["run", "compile", "eval"])
def test_bad_paths_and_numbers_are_errors_before_data_is_read_or_an_engine_started(tmp_path, capsys, command):
    # the data file does not exist and the engine's server is not there: either, reached, would be
    # the error instead of the one expected
    base = [command, "examples/coin_flip_sc.s2", "--data", str(tmp_path / "missing.jsonl"), "--engine", "openai",
            "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "o")]
    for flags, message in cases(tmp_path):
        assert main(base + flags) == 1, flags
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}"), (flags, err)
        assert "Traceback" not in err and "internal error" not in err
    notdb = tmp_path / "notes.txt"
    assert notdb.read_text() == "not a database\n"  # never overwritten


def test_a_good_cache_and_out_pass_the_checks_and_an_empty_cache_file_is_taken(tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert main(["run", "examples/coin_flip_sc.s2", "--data", str(tmp_path / "missing.jsonl"), "--cache", str(empty),
                 "--out", str(tmp_path / "new" / "deep")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.jsonl'}: no such file")
    assert (tmp_path / "new" / "deep").is_dir()
    assert sqlite3.connect(empty).execute("SELECT count(*) FROM calls").fetchone() == (0,)


def test_train_checks_its_out_folder_first(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", str(tmp_path / "no-dataset"), "--out", str(afile)]) == 1
    assert capsys.readouterr().err.startswith(f"error: --out {afile}: is a file, not a folder")


@pytest.mark.parametrize("spec, message", [
    ("folder", "folder: is a directory, not a data file"),
    ("folder/typo", "folder/typo: no such file"),
    ("./folder", "./folder: is a directory, not a data file"),
])
def test_local_folders_and_missing_files_under_them_are_never_looked_up_on_the_hub(tmp_path, capsys, monkeypatch,
                                                                                  spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    assert main(["run", str(REPO / "examples/coin_flip_sc.s2"), "--data", spec, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "Hub" not in err


def test_a_name_that_is_nothing_local_says_it_was_taken_as_a_hub_id(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(REPO / "examples/coin_flip_sc.s2"), "--data", "nothere", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "'nothere' is not a local file or folder, nor a named source (coin_flip," in err
    assert "so s2c took it as a Hugging Face Hub id" in err


@pytest.mark.parametrize("command", ["run", "compile", "eval"])
def test_a_program_path_that_is_a_folder_is_a_clear_error(tmp_path, capsys, command):
    assert main([command, str(tmp_path), "--data", "coin_flip", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} is a directory, not a program file")
