"""The parser: golden AST dumps of every shipped program, the print -> parse round trip, and the
details of string literals (escapes, raw strings, text blocks and their map back into the file)."""
from __future__ import annotations

from pathlib import Path

import pytest
from golden import GOLDEN, REPO, check_golden, stale

from s2c.dsl import ast as A
from s2c.dsl.parser import parse, parse_file
from s2c.dsl.printer import to_source
from s2c.errors import S2Error

PROGRAMS = sorted((REPO / "programs").glob("*.s2")) + sorted((REPO / "examples").glob("*.s2"))
ERROR_SOURCES = sorted((REPO / "tests" / "golden" / "errors").rglob("*.s2"))


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_program_names_are_unique():
    stems = [p.stem for p in PROGRAMS]
    assert len(stems) == len(set(stems)), "programs/ and examples/ share a file name: goldens would collide"


@pytest.mark.parametrize("path", PROGRAMS, ids=rel)
def test_parse_golden(path):
    check_golden(GOLDEN / "parse" / f"{path.stem}.txt", A.dump(parse_file(path)))


def test_no_stale_parse_goldens():
    assert stale(GOLDEN / "parse", {f"{p.stem}.txt" for p in PROGRAMS}) == []


def _parses(path: Path) -> bool:
    try:
        parse_file(path)
        return True
    except S2Error:
        return False


def _all_s2() -> list[Path]:
    """Every .s2 file in the repository (not in hidden, virtualenv or output folders)."""
    skip = {"runs", "build", "dist", "node_modules", "venv"}
    return sorted(p for p in REPO.rglob("*.s2")
                  if not any(part.startswith(".") or part in skip for part in p.relative_to(REPO).parts[:-1]))


ROUND_TRIP = [p for p in _all_s2() if _parses(p)]


@pytest.mark.parametrize("path", ROUND_TRIP, ids=rel)
def test_round_trip(path):
    """parse -> print -> parse gives the same AST; printing is then a fixed point."""
    program = parse_file(path)
    printed = to_source(program)
    again = parse(printed, str(path))
    assert again == program
    assert to_source(again) == printed


def test_round_trip_covers_every_program():
    assert set(PROGRAMS) <= set(ROUND_TRIP)
    assert len(ROUND_TRIP) > len(PROGRAMS) + 50  # most bad programs are only bad for the checker


# ---------------------------------------------------------------- strings
def _value(src: str):
    p = parse(f'program t "t"\ninput q\nx = {src}\noutput x\n')
    return next(i for i in p.items if isinstance(i, A.Assign)).value


def test_escapes_in_plain_strings():
    assert _value(r'strip("a\"b\\c\nd\te")').args[0].value == 'a"b\\c\nd\te'


def test_other_backslashes_stay_so_regexes_read_naturally():
    assert _value(r'regex(q, "\[\[(A|B)\]\] \d+")').args[1].value == r"\[\[(A|B)\]\] \d+"
    assert _value(r'regex(q, r"\n\d")').args[1].value == r"\n\d"


@pytest.mark.parametrize("value", ["\nQ:", "a\nb", "tab\there", 'say "hi"', r"back\slash", "\\n literal", ""])
def test_printer_keeps_short_strings_exact(value):
    """A string with a newline prints as an escape, not as a text block (which would dedent it)."""
    p = A.Program("t.s2", A.Header("t", A.Text("t")),
                  (A.InputDecl((A.Param("q"),)), A.Assign("x", A.Call("strip", (A.Text(value),))), A.Output("x")))
    again = parse(to_source(p))
    assert again == p


def test_text_block_is_dedented_and_mapped_back_to_the_file():
    src = 'program t "t"\ninput q\nx = llm() """\n    Line one {{ q }}\n      indented\n    """\noutput x\n'
    llm = parse(src).items[1]
    assert llm.prompt.value == "Line one {{ q }}\n  indented"
    assert llm.prompt.long
    # template line 1, column 10 is `{{` on file line 4, column 14
    assert llm.prompt.locate(1, 10) == (4, 14)
    assert llm.prompt.locate(2, 1) == (5, 5)


def test_inline_text_block_maps_its_first_line_after_the_quotes():
    src = 'program t "t"\ninput q\nx = llm() """Answer {{ q }}"""\noutput x\n'
    prompt = parse(src).items[1].prompt
    assert prompt.value == "Answer {{ q }}"
    assert prompt.locate(1, 8) == (3, 21)


# ---------------------------------------------------------------- structure
def test_spans_point_at_names():
    p = parse_file(REPO / "programs" / "bsm.s2")
    merge = next(i for i in p.items if isinstance(i, A.LLMAssign) and i.target == "merge")
    assert (merge.span.line, merge.span.col) == (42, 1)
    use = parse('program t "t"\nuse usc\ninput q\noutput q\n').items[0]
    assert isinstance(use, A.UseDecl) and (use.span.line, use.span.col, use.span.end_col) == (2, 5, 8)


def test_program_views():
    p = parse_file(REPO / "programs" / "minds_mirror.s2")
    assert p.name == "minds_mirror"
    assert [i.name for i in p.inputs] == ["question"]
    assert [g.id for g in p.golds] == ["answer"]
    assert [o.name for o in p.outputs] == ["label"]
    assert p.distill.format == "multitask"
    loop = next(i for i in p.distill.items if isinstance(i, A.TaskFor))
    assert [t.name for t in loop.tasks] == ["explain", "evaluate", "evaluate_2", "evaluate_3", "evaluate_4", "evaluate_5"]


def test_spans_do_not_take_part_in_equality():
    a = parse('program t "t"\ninput q\nx = strip(q)\noutput x\n', "a.s2")
    b = parse('program t "t"\n\n\ninput   q\nx = strip( q )\noutput x\n', "b.s2")
    assert a == b


def test_syntax_error_is_located():
    with pytest.raises(S2Error) as e:
        parse('program t "t"\ninput q\nx = strip(q\noutput x\n', "t.s2")
    d = e.value.diagnostic
    assert (d.span.file, d.span.line) == ("t.s2", 4)


def test_missing_file():
    with pytest.raises(S2Error, match="no such program file"):
        parse_file(REPO / "programs" / "nope.s2")
