"""Diagnostics that name the real mistake rather than where it shows: a name read above the
statement that defines it (or in it), and a \"\"\" block left open mid-file. The goldens in
tests/golden/errors/ (forward_reference*, self_reference*, syntax_unclosed_block_mid_file) show
the whole text; these pin the cases around them."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from s2c.compiler.pipeline import check_file
from s2c.dsl.parser import parse
from s2c.errors import S2Error

HEAD = 'program p "a test program"\n\ninput question\n\n'


def diags(tmp_path: Path, body: str, name: str = "p.s2") -> list[tuple[str, int, int, str, str | None]]:
    path = tmp_path / name
    path.write_text(HEAD + body)
    cp = check_file(str(path))
    return [(d.severity, d.span.line if d.span else 0, d.span.col if d.span else 0, d.message, d.hint)
            for d in cp.diagnostics]


def syntax_error(source: str) -> S2Error:
    with pytest.raises(S2Error) as e:
        parse(source, "p.s2")
    return e.value


# ---------------------------------------------------------------- a name read before its definition
def test_forward_reference_names_the_line_and_does_not_also_warn_never_used(tmp_path):
    out = diags(tmp_path, 'check = llm() """Check: {{ solution }}"""\n'
                          'solution = llm() """Solve: {{ question }}"""\n'
                          'output check\n')
    assert out == [("error", 5, 28, "prompt of 'check' uses 'solution' before it is defined (at line 6)",
                    "move this statement below line 6, or the definition of 'solution' above it")]


def test_forward_reference_in_an_expression(tmp_path):
    out = diags(tmp_path, 'final = strip(solution)\nsolution = llm() """Solve: {{ question }}"""\noutput final\n')
    assert [(s, line, m) for s, line, _, m, _ in out] == [
        ("error", 5, "'solution' is used before it is defined (at line 6)")]


def test_output_above_its_definition(tmp_path):
    out = diags(tmp_path, 'output final\nfinal = llm() """{{ question }}"""\n')
    assert [(s, line, m) for s, line, _, m, _ in out] == [
        ("error", 5, "'final' is used before it is defined (at line 6)")]


def test_forward_reference_inside_a_for_body(tmp_path):
    out = diags(tmp_path, 'ideas = llm(n=3, temperature=0.7) """Ideas for {{ question }}"""\n'
                          'for idea in ideas:\n'
                          '    longer = llm() """\n'
                          '    Expand {{ idea }} with {{ detail }}\n'
                          '    """\n'
                          '    detail = llm() """Detail {{ idea }}"""\n'
                          'final = llm() """{{ longer }}"""\n'
                          'output final\n')
    assert [(s, line, m) for s, line, _, m, _ in out] == [
        ("error", 8, "prompt of 'longer' uses 'detail' before it is defined (at line 10)")]


def test_forward_reference_in_a_nested_repeat_names_the_inner_one(tmp_path):
    out = diags(tmp_path, 'draft = llm() """{{ question }}"""\n'
                          'repeat 2:\n'
                          '    repeat 2:\n'
                          '        draft = llm() """{{ draft }} {{ note }}"""\n'
                          '        note = llm() """{{ draft }}"""\n'
                          'output draft\n')
    assert len(out) == 1
    _, line, _, msg, hint = out[0]
    assert (line, msg) == (8, "prompt of 'draft' uses 'note' before it is defined (at line 9)")
    assert hint.startswith("the first iteration of the repeat has no 'note' yet")


def test_forward_reference_from_a_template_file(tmp_path):
    (tmp_path / "t.j2").write_text("Check:\n{{ solution }}\n")
    out = diags(tmp_path, 'check = llm(template="t.j2")\nsolution = llm() """{{ question }}"""\noutput check\n')
    assert [(s, line, m) for s, line, _, m, _ in out] == [
        ("error", 2, f"prompt of 'check' uses 'solution' before it is defined (at line 6 of {tmp_path / 'p.s2'})")]


def test_forward_reference_in_a_used_program_points_into_it(tmp_path):
    (tmp_path / "sub.s2").write_text('program sub "x"\n\ninput question\n\n'
                                     'final = strip(solution)\nsolution = llm() """{{ question }}"""\noutput final\n')
    path = tmp_path / "main.s2"
    path.write_text('program main "x"\n\nuse sub\ninput question\n\nbest = sub(question=question)\noutput best\n')
    cp = check_file(str(path))
    assert [(d.span.file, d.span.line, d.message) for d in cp.diagnostics] == [
        (str(tmp_path / "sub.s2"), 5, "'solution' is used before it is defined (at line 6)")]


def test_self_reference(tmp_path):
    out = diags(tmp_path, 'draft = llm() """{{ question }}"""\nx = strip(x)\noutput draft\n')
    assert [(s, line, m) for s, line, _, m, _ in out] == [("error", 6, "'x' is used in its own definition")]


def test_self_reference_of_a_multi_line_prompt_in_a_repeat(tmp_path):
    out = diags(tmp_path, 'repeat 2:\n    draft = llm() """\n    Improve {{ question }}: {{ draft }}\n    """\n'
                          'output draft\n')
    assert [(s, line, m, h) for s, line, _, m, h in out] == [
        ("error", 7, "prompt of 'draft' uses 'draft', the value it defines",
         "give 'draft' a first value before the repeat: each iteration then reads the one before")]


def test_a_name_defined_nowhere_is_still_undefined(tmp_path):
    out = diags(tmp_path, 'draft = llm() """{{ question }}"""\nfinal = strip(drafts)\noutput final\n')
    assert [(s, m, h) for s, _, _, m, h in out if s == "error"] == [
        ("error", "undefined name 'drafts'", "did you mean 'draft'?")]
    out = diags(tmp_path, 'draft = llm() """{{ questoin }}"""\noutput draft\n')
    assert [m for s, _, _, m, _ in out if s == "error"] == ["prompt of 'draft' uses undefined variable 'questoin'"]


def test_a_loop_variable_read_above_its_loop_is_undefined(tmp_path):
    out = diags(tmp_path, 'x = strip(idea)\nideas = llm(n=2, temperature=0.7) """{{ question }}"""\n'
                          'for idea in ideas:\n    y = llm() """{{ idea }}"""\noutput x\n')
    assert [m for _, _, _, m, _ in out if "idea" in m] == ["undefined name 'idea'"]


# ---------------------------------------------------------------- a """ block left open mid-file
UNCLOSED = ('program p "x"\n\ninput question\n\n'
            'draft = llm() """Answer: {{ question }}\n'  # line 5, never closed
            'critique = llm() """Critique: {{ draft }}"""\n'
            'output critique\n')


@pytest.mark.parametrize("source, closes_at", [
    (UNCLOSED, 6),
    (UNCLOSED.replace('"""Critique', '"""\nYou are a judge of {{ draft }}\n'), 6),  # prose parsed as code
    (UNCLOSED.replace('critique = llm() """', 'critique = llm(temperature=0) r"""'), 6),
    (UNCLOSED.replace("\n", "\r\n"), 6),
    (UNCLOSED.replace('critique = llm() """Critique: {{ draft }}"""\noutput critique\n',
                      'output draft\n\ndistill:\n    task answer(target=draft) """{{ question }}"""\n'), 9),
    (UNCLOSED.replace('critique = llm() """Critique: {{ draft }}"""\n',  # the code read as text dedents oddly
                      'for x in xs:\n    y = llm() """\n      Think about {{ x }}\n  and more\n    """\n'), 7),
])
def test_unclosed_block_points_at_its_opening_quotes(source, closes_at):
    e = syntax_error(source).diagnostic
    assert (e.message, e.span.line, e.span.col, e.span.end_col) == ('this """text block""" is never closed', 5, 15, 18)
    assert f'it ends only at the """ on line {closes_at}' in e.hint


def test_unclosed_block_at_the_end_of_the_file_is_unchanged():
    e = syntax_error('program p "x"\n\ninput q\n\nd = llm() """Answer: {{ q }}\noutput d\n').diagnostic
    assert (e.message, e.span.line, e.span.col, e.hint) == (
        'this """text block""" is never closed', 5, 11, 'end it with """ (a block may span lines)')


def test_a_closed_multi_line_block_does_not_take_the_blame():
    e = syntax_error('program p "x"\n\ninput q\n\nd = llm() """\nAnswer: {{ q }}\n"""\n'
                     'f = strip(d\noutput f\n').diagnostic
    assert "never closed" not in e.message and e.span.line == 9


def test_finding_the_unclosed_block_is_fast_on_a_long_file():
    blocks = "".join(f'v{i} = llm() """\nAnswer {{{{ question }}}} {i}\n"""\n' for i in range(3000))
    start = time.perf_counter()
    e = syntax_error('program p "x"\n\ninput question\n\n' + blocks + 'final = strip(v1\noutput final\n')
    assert time.perf_counter() - start < 5
    assert "never closed" not in e.diagnostic.message
