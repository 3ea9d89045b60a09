"""Every .s2 example in docs/language.md checks the way the page says it does.

A fenced block with no language (or ```s2) is an example. The HTML comment on the line right
before it, if any, says what kind of example it is:

    (no comment)                 a block that starts with `program` is a whole program: it checks
                                 with no error and no warning. Any other block is a fragment.
    <!-- fragment: CODE -->      a fragment: it checks with no error once a `program` line and CODE
                                 (the inputs and values it reads: `input question`, `gold answer`)
                                 are put before it. CODE may span lines, up to the `-->`. A
                                 fragment need not be complete: "has no output" and "is never
                                 used" do not count.
    <!-- excerpt: programs/NAME.s2 -->
                                 lines quoted from a program: each run of lines between `...`
                                 lines is in that file word for word, in order, and the file
                                 checks with no error and no warning.
    <!-- wrong -->               a whole program that is wrong on purpose: the ```text block right
                                 after it is exactly what `s2c check` prints for it, checked under
                                 the file name that block shows.
    <!-- synopsis -->            an outline of the syntax with placeholders (NAME, OPTION=VALUE):
                                 not a program, and not checked.

In a program or fragment, a line that is only `...` stands for lines left out and is dropped.
Examples are checked as files in examples/, so `template="judge.j2"` reads examples/judge.j2
and `use usc` finds programs/usc.s2.

A ```text block is an error message, and each one is checked too: either it is quoted from
tests/golden/errors/NAME.txt (`<!-- error: NAME -->` before it; test_dsl_check.py keeps those in
sync) or it is the output of the `wrong` example just before it.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from s2c.compiler.check import check
from s2c.compiler.graph import with_graph
from s2c.compiler.ir import CheckedProgram
from s2c.compiler.pipeline import resolver
from s2c.dsl.parser import parse
from s2c.errors import S2Error, render_all

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "language.md"
AT = "examples/docs_example.s2"  # where an example is checked: templates and `use` resolve from examples/
KINDS = ("program", "fragment", "excerpt", "wrong", "synopsis")
FORGIVEN_IN_FRAGMENT = re.compile(r"program '\w+' has no output|(value|input) '[^']+' is never used")
# The checker's advice to constrain a call that only a parse reads: examples keep free-text answers
# (as the papers' prompts do) unless they show constrained decoding; tests/test_dsl_check.py pins it.
ADVICE = re.compile(r"'[^']+' is only read by (regex|choice)\(\), and its replies are not constrained: .*")


@dataclass(frozen=True)
class Block:
    """One fenced block of docs/language.md, with the marker comment right before it."""

    line: int  # of the opening fence, 1-based
    heading: str
    lang: str
    marker: str  # "fragment", "error", ... or "" when no comment precedes the block
    arg: str  # what follows "marker:" in the comment (a fragment's context, an excerpt's file)
    code: str

    @property
    def kind(self) -> str:
        if self.marker:
            return self.marker
        first = _code_lines(self.code)[:1]
        return "program" if first and first[0].startswith("program ") else "fragment"

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"L{self.line}-{slug}"


def _code_lines(code: str) -> list[str]:
    """The lines that are neither blank nor comments."""
    return [line for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _marker(lines: list[str], fence: int) -> tuple[str, str]:
    """The comment that ends on the line before `fence`: ("fragment", "input question"), or ("", "")."""
    end = fence - 1
    if end < 0 or not lines[end].rstrip().endswith("-->"):
        return "", ""
    start = end
    while start > 0 and "<!--" not in lines[start]:
        start -= 1
    body = "\n".join(lines[start:end + 1])
    body = body[body.index("<!--") + 4:body.rindex("-->")]
    name, _, arg = body.partition(":")
    return name.strip(), textwrap.dedent(arg).strip()


def blocks(text: str) -> list[Block]:
    lines = text.split("\n")
    out, heading, i = [], "top", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            close = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            out.append(Block(i + 1, heading, line[3:].strip(), *_marker(lines, i), "\n".join(lines[i + 1:close])))
            i = close
        i += 1
    return out


BLOCKS = blocks(DOCS.read_text(encoding="utf-8"))
EXAMPLES = [b for b in BLOCKS if b.lang in ("", "s2")]


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the paths in messages are relative, as `s2c check` prints them


# ---------------------------------------------------------------- checking one example
def check_source(source: str, file: str) -> CheckedProgram:
    """`s2c check` on `source` as if saved at `file` (relative to the repo root). Raises S2Error
    at a syntax error."""
    cp = check(parse(source, file), resolver=resolver)
    return cp if cp.errors else with_graph(cp)


def check_output(source: str, file: str) -> str:
    """What `s2c check` prints for `source` saved at `file`: the syntax error, or every diagnostic."""
    try:
        cp = check_source(source, file)
    except S2Error as e:
        return e.render(source)
    return render_all([d for d in cp.diagnostics if not ADVICE.fullmatch(d.message)], cp.sources)


def without_elisions(code: str) -> str:
    return "\n".join(line for line in code.split("\n") if line.strip() != "...") + "\n"


def as_program(block: Block) -> str:
    """A fragment with a `program` line and its context put before it; a program as it is."""
    code = without_elisions(block.code)
    if block.kind == "program" or any(line.startswith("program ") for line in _code_lines(code)):
        return code
    context = f"{block.arg}\n" if block.arg else ""
    return f'program docs_example "docs/language.md line {block.line}"\n{context}{code}'


def program_problems(block: Block) -> str:
    """The diagnostics that make a program or fragment wrong ("" when it checks as it should)."""
    source = as_program(block)
    try:
        cp = check_source(source, AT)
    except S2Error as e:
        return e.render(source)
    diags = [d for d in cp.diagnostics if not ADVICE.fullmatch(d.message)
             and not (block.kind == "fragment" and FORGIVEN_IN_FRAGMENT.fullmatch(d.message))]
    return render_all(diags, cp.sources)


def excerpt_problems(block: Block) -> str:
    path = REPO / block.arg
    if not block.arg.startswith("programs/") or not path.is_file():
        return f"<!-- excerpt: {block.arg} -->: name a program file, e.g. programs/bsm.s2"
    text, pos = "\n" + path.read_text(encoding="utf-8"), 0
    for run in re.split(r"\n[ \t]*\.\.\.[ \t]*(?:\n|$)", block.code.strip("\n")):
        at = text.find("\n" + run + "\n", pos)
        if at < 0:
            return f"not in {block.arg} word for word (after what the excerpt quoted before it):\n{run}"
        pos = at + len(run) + 1
    return check_output(path.read_text(encoding="utf-8"), block.arg)


def wrong_problems(block: Block, message: Block | None) -> str:
    if message is None or message.lang != "text" or message.marker:
        return "a <!-- wrong --> example is followed by a ```text block: what `s2c check` prints for it"
    file = re.match(r"(\S+?):\d+:\d+: ", message.code)
    if file is None:
        return "the ```text block after a <!-- wrong --> example starts with FILE:LINE:COL: error: ..."
    actual = check_output(without_elisions(block.code), file.group(1))
    if not actual.strip():
        return "meant to be wrong, but checks clean"
    return "" if actual == message.code else f"s2c check prints instead:\n{actual}"


def problems(block: Block) -> str:
    if block.kind not in KINDS:
        return f"unknown marker <!-- {block.marker}: ... -->; known: {', '.join(KINDS)}"
    if block.kind == "excerpt":
        return excerpt_problems(block)
    if block.kind == "wrong":
        later = [b for b in BLOCKS if b.line > block.line]
        return wrong_problems(block, later[0] if later else None)
    return program_problems(block)


# ---------------------------------------------------------------- the page
@pytest.mark.parametrize("block", [b for b in EXAMPLES if b.kind != "synopsis"], ids=lambda b: b.id)
def test_example_checks(block):
    found = problems(block)
    shown = as_program(block) if block.kind in ("program", "fragment") else block.code
    listing = "\n".join(f"{i:3} | {line}" for i, line in enumerate(shown.splitlines(), 1))
    assert found == "", (f"docs/language.md:{block.line} ({block.kind} under '{block.heading}'):\n{found}\n\n"
                         f"checked as:\n{listing}\n(see tests/test_docs_examples.py for the markers)")


def test_every_error_message_on_the_page_is_checked():
    after_wrong = {BLOCKS[i + 1].line for i, b in enumerate(BLOCKS[:-1]) if b.kind == "wrong" and b.lang != "text"}
    unchecked = [b.line for b in BLOCKS
                 if b.lang == "text" and b.marker != "error" and b.line not in after_wrong]
    assert unchecked == [], "mark each ```text block <!-- error: NAME --> or put the wrong program before it"


def test_the_page_has_every_kind_of_checked_example():
    """If the extraction broke, these would be missing, and the tests above would pass on nothing."""
    kinds = {b.kind for b in EXAMPLES}
    assert {"program", "fragment", "excerpt", "wrong"} - kinds == set()
    assert len(EXAMPLES) >= 20


def test_no_fence_is_missed():
    """A fence the extraction does not see (indented, or ~~~) would hide an example from these tests."""
    inside, missed = False, []
    for n, line in enumerate(DOCS.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("```"):
            inside = not inside
        elif not inside and re.match(r"\s*(```|~~~)", line):
            missed.append(n)
    assert missed == [], "start every fenced block at the beginning of its line, with ```"


def test_cookbook_quotes_every_shipped_program():
    quoted = {b.arg for b in EXAMPLES if b.kind == "excerpt"}
    shipped = {f"programs/{p.name}" for p in (REPO / "programs").glob("*.s2")}
    assert sorted(shipped - quoted) == []


# ---------------------------------------------------------------- the checks can fail
def _block(code: str, marker: str = "", arg: str = "") -> Block:
    return Block(1, "test", "", marker, arg, textwrap.dedent(code).strip("\n"))


def test_a_misspelled_fragment_fails():
    ok = _block('draft = llm() """{{ question }}"""', "fragment", "input question")
    assert problems(ok) == ""
    bad = _block('draft = llm() """{{ questoin }}"""', "fragment", "input question")
    assert "uses undefined variable 'questoin'" in problems(bad)
    assert "undefined variable 'question'" in problems(_block('draft = llm() """{{ question }}"""'))


def test_an_incomplete_program_fails():
    assert "has no output" in problems(_block('program p "p"\ninput q\nx = llm() """{{ q }}"""'))


def test_a_wrong_example_must_print_its_message():
    wrong = _block('program p "p"\ninput q\noutput answr', "wrong")
    printed = check_output(without_elisions(wrong.code), "p.s2")
    assert "p.s2:3:8: error: undefined name 'answr'" in printed
    assert wrong_problems(wrong, Block(5, "test", "text", "", "", printed)) == ""
    other = Block(5, "test", "text", "", "", printed.replace("3:8", "3:9"))
    assert "prints instead" in wrong_problems(wrong, other)
    right = _block('program p "p"\ninput q\noutput q', "wrong")
    assert "checks clean" in wrong_problems(right, Block(5, "test", "text", "", "", "p.s2:1:1: error: x"))


def test_an_excerpt_must_be_word_for_word():
    assert problems(_block("output best\n...\nbest = at(responses, index)", "excerpt", "programs/usc.s2"))
    assert problems(_block("best = at(responses, index)\n...\noutput best", "excerpt", "programs/usc.s2")) == ""
    assert "word for word" in problems(_block("best = at(responses,index)", "excerpt", "programs/usc.s2"))
