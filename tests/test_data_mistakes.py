"""Data mistakes a newcomer makes are errors or warnings before the run, and no message points to
a file that is not there: a --map field the program does not declare, a gold field no row has, a
number where text is expected, a typo in a program path, every row skipped."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import s2c
from s2c.compiler.pipeline import find_program, load_text
from s2c.errors import S2Error

PROGRAM = '''program p "q and a"
input question
gold answer
reply = llm() """{{ question }}"""
output reply
'''


def rows_for(data: s2c.Data):
    lines: list[str] = []
    rows = data.rows_for(load_text(PROGRAM, "p.s2"), log=lambda m, **k: lines.append(m))
    return rows, lines


def test_a_map_field_the_program_does_not_declare_is_an_error_before_any_row_is_read(tmp_path):
    with pytest.raises(S2Error) as e:  # the file does not even exist: the map is checked first
        rows_for(s2c.Data(tmp_path / "absent.jsonl", map={"questoin": "q"}))
    assert str(e.value) == "--map questoin=q: the program has no input or gold field 'questoin'"
    assert e.value.diagnostic.hint == "did you mean 'question'?"


def test_a_gold_field_in_no_row_gets_one_warning_naming_it():
    _, lines = rows_for(s2c.Data([{"id": "a", "question": "2+2?"}, {"id": "b", "question": "3+3?"}]))
    warnings = [m for m in lines if "warning" in m]
    assert warnings == ["s2c: warning: gold field 'answer' is in none of the 2 rows: metrics and keep "
                        "matches(answer) score nothing; --map answer=COLUMN reads it from another column"]
    _, lines = rows_for(s2c.Data([{"id": "a", "question": "2+2?", "answer": "4"}, {"id": "b", "question": "3+3?"}]))
    assert not any("warning" in m for m in lines)


def test_a_number_or_boolean_where_text_is_expected_is_read_as_its_text_as_the_readme_says():
    rows, _ = rows_for(s2c.Data([{"id": "a", "question": 42}, {"id": "b", "question": True},
                                 {"id": "c", "question": 2.5}, {"id": "d", "question": ["x"]}]))
    assert [r["question"] for _, r in rows.rows] == ["42", "true", "2.5"]
    assert rows.skipped == ["list: row 4 (id d): field 'question' should be text, got a list; skipped"]
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "a number or a boolean where text is expected is read as its text" in readme


def test_when_every_row_is_skipped_a_few_say_why_and_nothing_points_to_a_rows_json():
    with pytest.raises(S2Error) as e:
        rows_for(s2c.Data([{"id": str(i), "text": "x"} for i in range(30)]))
    assert str(e.value) == "no usable rows in list: all 30 were skipped"
    assert "--map FIELD=COLUMN" in e.value.diagnostic.hint


def test_the_skipped_rows_beyond_twenty_point_to_the_rows_json_a_run_writes():
    rows, lines = rows_for(s2c.Data([{"id": str(i), "question": None if i < 25 else "q"} for i in range(30)]))
    assert "s2c: ... and 5 more skipped rows (see rows.json in the run folder)" in lines
    assert len(rows.rows) == 5  # a run of these writes rows.json: runtime/run.finish_run


@pytest.mark.parametrize("typo, near", [
    ("examples/coin_flp_sc.s2", "examples/coin_flip_sc.s2"),
    ("exmaples/coin_flip_sc.s2", "examples/coin_flip_sc.s2"),
    ("bssm", "bsm"),
])
def test_a_program_path_typo_gets_a_did_you_mean_among_local_files_and_built_ins(typo, near, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)
    with pytest.raises(S2Error) as e:
        find_program(typo)
    assert e.value.diagnostic.hint.startswith(f"did you mean '{near}'? (built-in programs: ")
