"""The checker: golden error messages (one bad program per check, whole rendered text), shipped
programs check clean, and the lowering details other stages rely on (loops, after=, types)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from golden import GOLDEN, REPO, check_golden, normalize, stale

from s2c.cli import main
from s2c.compiler import ir
from s2c.compiler.failures import TransformError
from s2c.compiler.library import FUNCTIONS
from s2c.compiler.pipeline import check_file
from s2c.compiler.tables import (
    DISTILL_FORMATS,
    KEEP_RULES,
    LLM_OPTIONS,
    METRICS,
    TASK_OPTIONS,
)
from s2c.compiler.types import ANY, NUMBER, TEXT
from s2c.errors import S2Error, render_all

ERRORS = GOLDEN / "errors"
BAD = sorted(ERRORS.glob("*.s2"))  # lib/ holds programs and templates the bad ones use
PROGRAMS = sorted((REPO / "programs").glob("*.s2")) + sorted((REPO / "examples").glob("*.s2"))


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # relative paths in every message


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def diagnostics_text(path: str) -> str:
    """What `s2c check PATH` prints on stderr: the syntax error, or every diagnostic."""
    try:
        cp = check_file(path)
    except S2Error as e:
        return e.render(Path(path).read_text(encoding="utf-8"))
    return render_all(cp.diagnostics, cp.sources)


# ---------------------------------------------------------------- golden error messages
@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_error_golden(path):
    text = diagnostics_text(rel(path))
    assert text.strip(), f"{rel(path)} is meant to be wrong but checks clean"
    check_golden(path.with_suffix(".txt"), text)


def test_no_stale_error_goldens():
    assert stale(ERRORS, {p.with_suffix(".txt").name for p in BAD}, "*.txt") == []


def test_cli_prints_the_golden_text(capsys):
    path = ERRORS / "template_variable_misspelled.s2"
    assert main(["check", rel(path)]) == 1
    assert normalize(capsys.readouterr().err) == path.with_suffix(".txt").read_text()


def _messages(source: str) -> list[str]:
    """The fixed text at the start of each error/warning message a module can produce."""
    calls = re.findall(r"""(?:(?:self|ctx)\.(?:error|warn)|S2Error)\(\s*f?(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""",
                       source)
    out = []
    for msg in (a or b for a, b in calls):
        head = re.split(r"\{", msg, maxsplit=1)[0].strip()
        if len(head) >= 8:  # messages that start with a variable part are matched by their tail
            out.append(head.replace('\\"', '"'))
    return out


@pytest.mark.parametrize("module", [*(rel(p) for p in sorted((REPO / "s2c" / "compiler" / "check").glob("*.py"))),
                                    "s2c/dsl/parser.py"])
def test_every_check_has_a_golden(module):
    """Adding a check? Add tests/golden/errors/NAME.s2 that triggers it (and its NAME.txt). The
    limits' checks are pinned in test_hostile_programs.py instead (a golden of a 400-deep program
    would be unreadable), so its assertions count too."""
    goldens = "\n".join(p.read_text() for p in ERRORS.glob("*.txt"))
    goldens += (REPO / "tests" / "test_hostile_programs.py").read_text()
    unreachable = {"cannot resolve 'use", "no such program file", "not UTF-8 text", "internal:"}
    missing = [m for m in _messages((REPO / module).read_text())
               if m not in goldens and not any(m.startswith(u) for u in unreachable)]
    assert missing == []


# ---------------------------------------------------------------- shipped programs
# The shipped programs keep the papers' free-text answers and run on every engine (hf has no
# constrained decoding), so the checker advises a constraint on the calls only a parse reads, and
# reports nothing else. examples/coin_flip_sc_constrained.s2 is the README job with the advice taken.
ADVISED = {"programs/bsm.s2": "merge", "programs/rar_1step.s2": "responses", "programs/rar_2step.s2": "response",
           "programs/usc.s2": "select", "examples/coin_flip_sc.s2": "cots", "examples/my_judge.s2": "judgements"}


def _advice(d) -> str | None:
    m = re.fullmatch(r"'([^']+)' is only read by (regex|choice)\(\), and its replies are not constrained: .*", d.message)
    return m.group(1) if m and d.severity == "warning" else None


def test_all_programs_check_clean_from_the_cli(capsys):
    paths = [rel(p) for p in sorted((REPO / "programs").glob("*.s2"))]
    assert main(["check", *paths]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if ": warning: " in line]
    assert ": error: " not in err
    assert sorted(w.split(":")[0] for w in warned) == sorted(p for p in ADVISED if p.startswith("programs/"))
    assert all("is only read by" in w for w in warned)


@pytest.mark.parametrize("path", PROGRAMS, ids=rel)
def test_program_has_no_diagnostics(path):
    cp = check_file(rel(path))
    assert render_all([d for d in cp.diagnostics if _advice(d) is None], cp.sources) == ""
    assert [_advice(d) for d in cp.diagnostics] == ([ADVISED[rel(path)]] if rel(path) in ADVISED else [])
    assert cp.graph is not None


def test_builtin_program_found_by_name():
    assert check_file("bsm.s2").name == "bsm"
    assert check_file("usc").name == "usc"


# ---------------------------------------------------------------- the acceptance checks
def test_misspelled_prompt_variable_in_bsm(tmp_path, capsys):
    src = (REPO / "programs" / "bsm.s2").read_text()
    assert src.count("{{ solve[loop.index0] }}") == 1
    bad = tmp_path / "bsm.s2"
    bad.write_text(src.replace("{{ solve[loop.index0] }}", "{{ solv[loop.index0] }}"))
    line = next(i for i, l in enumerate(bad.read_text().splitlines(), 1) if "solv[" in l)
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    col = bad.read_text().splitlines()[line - 1].index("solv[") + 1
    assert f"{bad}:{line}:{col}: error: prompt of 'merge' uses undefined variable 'solv'" in err
    assert "did you mean 'solve'?" in err


def test_distill_prompt_reading_an_intermediate_is_rejected(tmp_path, capsys):
    src = (REPO / "programs" / "bsm.s2").read_text()
    bad = tmp_path / "bsm.s2"
    bad.write_text(src.replace("    [User Question]\n    {{ question }}\n\n    [The Start of Assistant A's Answer]\n"
                               "    {{ response_a }}\n    [The End of Assistant A's Answer]\n\n"
                               "    [The Start of Assistant B's Answer]\n    {{ response_b }}\n"
                               "    [The End of Assistant B's Answer]\n    \"\"\"\n    keep",
                               "    [User Question]\n    {{ question }}\n    Criteria: {{ criteria }}\n    \"\"\"\n    keep"))
    assert "Criteria: {{ criteria }}" in bad.read_text()
    line = next(i for i, l in enumerate(bad.read_text().splitlines(), 1) if "Criteria: {{" in l)
    col = bad.read_text().splitlines()[line - 1].index("criteria") + 1
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:{line}:{col}: error: System-1 prompt of task 'judge' reads intermediate 'criteria'" in err


# ---------------------------------------------------------------- lowering details
def test_used_program_is_inlined_with_prefixed_ids():
    cp = check_file("programs/s2a.s2")
    assert {"best/select", "best/index", "best/best", "best"} <= set(cp.nodes)
    assert cp.nodes["best/select"].span.file.endswith("usc.s2")
    assert cp.nodes["best/select"].deps == ("rewritten", "responses")


def test_repeat_is_unrolled():
    from s2c.compiler.pipeline import load_text
    cp = load_text('program r "fixed rounds"\ninput question\ndraft = llm() """{{ question }}"""\n'
                   'repeat 2:\n    feedback = llm() """{{ draft }}"""\n    draft = llm() """{{ draft }} {{ feedback }}"""\n'
                   'output draft\n', "r.s2")
    assert [n.id for n in cp.llm_nodes()] == ["draft", "feedback#1", "draft#1", "feedback#2", "draft#2"]
    assert cp.outputs["draft"] == ir.NodeRef("draft#2")


def test_while_is_unrolled_and_a_last_round_value_nothing_reads_is_dropped():
    """Self-Refine's loop ends with a feedback only the next round would read: no call is made for it."""
    cp = check_file("programs/self_refine.s2")
    assert [n.id for n in cp.llm_nodes()] == ["draft", "feedback", "draft#1", "feedback#1", "draft#2", "feedback#2",
                                             "draft#3"]
    assert "feedback#3" not in cp.nodes and "feedback@28" not in cp.nodes
    assert cp.nodes["final"].deps == ("draft@28",)
    assert [cp.nodes[f"draft#{k}"].guard for k in (1, 2, 3)] == ["while@28#1", "while@28#2", "while@28#3"]


def test_distill_loop_over_a_program_loop_is_that_loop():
    """`for cot in cots:` in distill reuses the program's loop: per-CoT values are single values."""
    cp = check_file("programs/minds_mirror.s2")
    tasks = {t.name: t for t in cp.tasks}
    assert tasks["predict"].each is None
    assert tasks["explain"].each is cp.loops["cot"] and tasks["evaluate"].each is cp.loops["cot"]
    assert str(tasks["evaluate"].target_type) == "text"
    assert tasks["evaluate"].after == ("explain",)
    assert not any(lid.startswith("distill.") for lid in cp.loops)


def test_distill_loop_over_another_list_gets_its_own_loop(tmp_path):
    p = tmp_path / "p.s2"
    p.write_text('program p "p"\ninput q\nxs = llm(n=3, temperature=0.7) """{{ q }}"""\noutput xs\n'
                 'distill multitask:\n    for x in xs:\n        task t(target=x) """{{ q }}"""\n')
    cp = check_file(str(p))
    assert not cp.errors
    assert cp.tasks[0].each.id == "distill.x"


def test_cascade_after():
    cp = check_file("programs/cascod.s2")
    rationale, answer = cp.tasks
    assert (rationale.weight, answer.weight) == (0.9, 0.1)
    assert rationale.after == () and answer.after == ("rationale",)
    assert "{{ rationale }}" in answer.prompt.value


def test_two_loops_with_one_variable_get_two_ids(tmp_path):
    p = tmp_path / "p.s2"
    p.write_text('program p "p"\ninput q\nxs = llm(n=2, temperature=0.7) """{{ q }}"""\nys = lines(q)\n'
                 'for x in xs:\n    a = llm() """{{ x }}"""\nfor x in ys:\n    b = llm() """{{ x }}"""\n'
                 'output a\noutput b\n')
    cp = check_file(str(p))
    assert not cp.errors
    assert cp.nodes["a"].loops == ("x",) and cp.nodes["b"].loops == ("x@7",)
    assert cp.loops["x"].iterable == ir.NodeRef("xs") and cp.loops["x@7"].iterable == ir.NodeRef("ys")


def test_types_of_collected_lists():
    cp = check_file("programs/minds_mirror.s2")
    assert str(cp.nodes["evaluations"].type) == "list[text]"  # n=5 samples, one list per CoT
    assert cp.nodes["evaluations"].loops == ("cot",)
    assert str(cp.nodes["pred"].type) == "text" and cp.nodes["pred"].loops == ("cot",)
    assert str(cp.nodes["label"].type) == "text"


# ---------------------------------------------------------------- the library
def test_at_function():
    at = FUNCTIONS["at"]
    assert at.impl(["a", "b", "c"], 1) == "b"
    assert at.impl(["a", "b"], 1.0) == "b"
    for bad in (2, -1, 0.5, True, "1"):
        with pytest.raises(TransformError):
            at.impl(["a", "b"], bad)
    assert str(at.result([TEXT.listed()])) == "text"


def test_usc_index_extraction():
    regex = FUNCTIONS["regex"].impl
    pattern = r"(?i)most consistent response is\W*response\W*(\d+)"
    assert FUNCTIONS["number"].impl(regex("The most consistent response is Response 3.", pattern)) == 3
    assert regex("the most consistent response is **Response 12**", pattern) == "12"


def test_example_template_file_is_a_source(tmp_path):
    cp = check_file("examples/my_judge.s2")
    assert "examples/judge.j2" in cp.sources
    assert cp.nodes["judgements"].prompt.span.file == "examples/judge.j2"
    dest = tmp_path / "my_judge.s2"
    shutil.copy(REPO / "examples" / "my_judge.s2", dest)  # copied without its template
    bad = check_file(str(dest))
    assert any("template file 'judge.j2' not found" in d.message for d in bad.errors)


def test_library_aggregates_numbers_and_reads_json():
    assert FUNCTIONS["vote"].impl([18, 18.0, 17]) == 18
    assert FUNCTIONS["vote_share"].impl(["a", "A ", "b"]) == pytest.approx(2 / 3)
    assert FUNCTIONS["json"].impl('the plan: {"steps": [1, 2]}') == {"steps": [1, 2]}


# ---------------------------------------------------------------- docs/language.md
DOCS = REPO / "docs" / "language.md"
KIND = {"text": "text", "number": "number", "list": "list", "scalar": "one value", "any": "any", "literal": "literal"}
SAMPLE = {"text": TEXT, "number": NUMBER, "list": TEXT.listed(), "scalar": TEXT, "any": ANY,
          "literal": TEXT}


def functions_table() -> str:
    """The function reference in docs/language.md, made from FUNCTIONS' signatures and docs."""
    import json

    rows = ["| function | arguments | result | what it does |", "|---|---|---|---|"]
    for fn in FUNCTIONS.values():
        sig = ", ".join(p.name if p.required else f"{p.name}={json.dumps(p.default)}" for p in fn.params)
        args = ", ".join(f"`{p.name}` {KIND[p.kind]}" for p in fn.params)
        result = fn.result([SAMPLE[p.kind] for p in fn.params])
        doc = fn.doc + (" Skips failed elements." if fn.aggregates and "left out" not in fn.doc else "")
        rows.append(f"| `{fn.name}({sig})` | {args} | {result} | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def render_docs(text: str) -> str:
    """docs/language.md with its quoted error messages and function table made current."""
    def error_block(m):
        golden = ERRORS / f"{m.group(1)}.txt"
        assert golden.exists(), f"docs/language.md quotes {golden.name}, which does not exist"
        return f"<!-- error: {m.group(1)} -->\n```text\n{golden.read_text()}```"

    text = re.sub(r"<!-- error: (\w+) -->\n```text\n.*?```", error_block, text, flags=re.DOTALL)
    return re.sub(r"<!-- functions -->\n.*?<!-- /functions -->",
                  lambda m: f"<!-- functions -->\n{functions_table()}<!-- /functions -->", text, flags=re.DOTALL)


def test_docs_quote_current_messages_and_functions():
    from golden import UPDATE

    text = DOCS.read_text(encoding="utf-8")
    current = render_docs(text)
    if UPDATE:
        DOCS.write_text(current, encoding="utf-8")
        return
    assert current == text, "docs/language.md is out of date: rerun with S2C_UPDATE_GOLDEN=1"


def test_docs_cover_the_language():
    text = DOCS.read_text(encoding="utf-8")
    names = [*FUNCTIONS, *LLM_OPTIONS, *TASK_OPTIONS, *KEEP_RULES, *METRICS, *DISTILL_FORMATS]
    assert [n for n in names if not re.search(rf"[`\s]{n}[(`=\s]", text)] == []
    for kw in ("program", "input", "gold", "use", "llm", "for", "repeat", "scan", "output", "distill", "task", "keep",
               "eval", "metric", "parse"):
        assert re.search(rf"^\s*(\w+ = )?{kw}[\s(:]", text, re.MULTILINE), f"no example starts with '{kw}'"
