"""while/if at run time (fake engine): a while stops as soon as its condition is false and the
rounds after make no call; the branch not taken makes none; a list keeps its failed elements and
last() takes the last answer that ran."""
from __future__ import annotations

import pytest

from s2c.compiler.pipeline import load_text
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner

REFINE = '''program w "refine until the critique says ok"
input question
answer = llm() """{{ question }}"""
feedback = llm() """Critique: {{ answer }}"""
while not (feedback == "ok") up to 3:
    answer = llm() """Improve {{ answer }} using {{ feedback }}"""
    feedback = llm() """Critique: {{ answer }}"""
if feedback == "ok":
    final = answer
else:
    extra = llm() """Give up on {{ answer }}"""
    final = extra
output final
'''


def refine_script(r, i):
    t = request_text(r)
    if t.startswith("Critique"):
        return "ok" if "v2" in t else "needs work"
    return "v2" if t.startswith("Improve") else "v1"


def test_a_while_stops_when_its_condition_is_false_and_the_else_makes_no_call(tmp_path):
    eng = FakeEngine(refine_script)
    out = Runner(eng, progress=False).execute(load_text(REFINE, "w.s2"), [("a", {"question": "q"})], tmp_path / "run")
    assert [request_text(r) for r in eng.calls] == ["q", "Critique: v1", "Improve v1 using needs work", "Critique: v2"]
    assert [r["final"] for r in out.records()] == ["v2"]
    nodes = next(out.examples()).trace.nodes
    assert nodes["while@5#2"]["instances"][0]["value"]["skipped"].endswith("not run, the condition was false")
    assert nodes["extra@else8"]["instances"][0]["skipped"].startswith("the else branch at line 8: not run")


LISTS = '''program l "lists keep failed elements"
input question
answers = []
repeat 3 as i:
    x = llm() """round {{ i }} {{ question }}"""
    answers = answers + [regex(x, "(\\\\d+)")]
written = [first(answers), regex(question, "(zzz)")]
kept = last(answers)
joined = join(written, ",")
output kept
output joined
'''


def test_appending_per_round_keeps_the_last_answer_that_ran_and_lists_keep_failed_elements(tmp_path):
    eng = FakeEngine(lambda r, i: "7" if "round 0" in request_text(r) else "no number")
    out = Runner(eng, progress=False).execute(load_text(LISTS, "l.s2"), [("e", {"question": "q"})], tmp_path / "run")
    assert [(r["kept"], r["joined"]) for r in out.records()] == [("7", "7")]


def test_a_run_scores_its_answers_against_gold_with_the_programs_metric(tmp_path):
    """RunOutcome.gold(), which `s2c run` prints: the eval section's gold metric over the answers."""
    program = REFINE.replace("input question", "input question\ngold label") + \
        "\neval:\n    metric normalized_match(final, label)\n    metric exact_match(final, label)\n"
    rows = [("a", {"question": "q", "label": "V2"}), ("b", {"question": "q", "label": "v1"}), ("c", {"question": "q"})]
    out = Runner(FakeEngine(refine_script), progress=False).execute(load_text(program, "w.s2"), rows, tmp_path / "run")
    assert out.gold() == [
        {"metric": "normalized_match", "gold": "label", "all": {"correct": 1, "scored": 2}},
        {"metric": "exact_match", "gold": "label", "all": {"correct": 0, "scored": 2}}]


APPEND = '''program a "append per round, take the last answer"
input question
answers = []
feedback = ""
while not contains(feedback, "No mistakes") up to 3:
    reply = llm() """{{ question }} {{ feedback }}"""
    answers = answers + [regex(reply, "Final answer: (\\\\d+)")]
    feedback = llm() """Check: {{ reply }}"""
final = last(answers)
output final
'''


def test_appending_per_round_keeps_the_last_answer_when_later_rounds_are_skipped(tmp_path):
    """Round 2's feedback finds no mistake, so round 3 is skipped: `last` takes round 2's answer;
    where round 2's answer is unparsed, round 1's."""
    def script(r, i):
        t = request_text(r)
        if t.startswith("Check"):
            return "No mistakes." if "second" in t else "wrong"
        return ("second try, Final answer: 8" if "wrong" in t else "Final answer: 5") if "good" in t else \
            ("second try, no number" if "wrong" in t else "Final answer: 5")

    eng = FakeEngine(script)
    out = Runner(eng, progress=False).execute(load_text(APPEND, "a.s2"), [("g", {"question": "good"}),
                                                                          ("b", {"question": "bad"})], tmp_path / "run")
    assert [(r["id"], r["status"], r["final"]) for r in out.records()] == [("g", "ok", "8"), ("b", "ok", "5")]
    assert len(eng.calls) == 2 * 4  # two rounds each; the third made no call
    nodes = next(out.examples()).trace.nodes
    assert nodes["reply#3"]["instances"][0]["skipped"].endswith("not run, the condition was false")


def test_the_trace_shows_rounds_that_did_not_run_as_skipped_and_the_value_carried_out(tmp_path, capsys):
    from s2c.cli import main

    Runner(FakeEngine(refine_script), progress=False).execute(load_text(REFINE, "w.s2"), [("a", {"question": "q"})],
                                                              tmp_path / "run")
    assert main(["trace", str(tmp_path / "run"), "--full"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "answer#2 llm · 1 instance(s) │ └── skipped: round 2 of the while at line 5: not run, the condition was false" in out
    assert "answer@5 transform · 1 instance(s) │ └── value: v2" in out  # what `answer` holds after the while
    assert "extra@else8 llm · 1 instance(s) │ └── skipped: the else branch at line 8: not run" in out


def test_after_before_and_contains_find_their_marker_in_any_case_and_regex_only_with_its_flag():
    from s2c.compiler.failures import TransformError
    from s2c.compiler.library import FUNCTIONS

    def call(name, *args):
        return FUNCTIONS[name].impl(*args)

    cot = "Two and two.\nfinal answer: 4\nFINAL ANSWER: 5"
    assert call("after", cot, "Final answer:") == "5"  # the last occurrence, in any case
    assert call("before", cot, "Final Answer:") == "Two and two."  # the first
    assert call("contains", "no MISTAKES found", "No mistakes") is True
    assert call("contains", "all good", "No mistakes") is False
    assert call("regex", cot, "(?i)final answer:\\s*(\\d+)") == "5"  # the last match, as after() takes the last marker
    with pytest.raises(TransformError):
        call("regex", "final answer: 4", "Final answer: (\\d+)")  # case-sensitive without (?i)
