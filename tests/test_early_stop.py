"""Decision-preserving early stop (compiler/early_stop.py, the executor's waves), on the fake engine.

The rule is checked against every continuation of small sample lists (hypothesis); compiles with
and without it must write the same train.jsonl and curation.jsonl, byte for byte, while drawing
fewer samples; a call whose samples a row or any other reader reads draws them all.
"""
from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2c.compiler.early_stop import (
    EarlyStop,
    early_stops,
    majority_decided,
    next_wave,
    vote_decided,
)
from s2c.compiler.library import majority_holds, vote_counts
from s2c.compiler.pipeline import load_text
from s2c.distill.build import DistillSettings, distill_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner, early_stop_note, validate_rows

MAJORITY = r'''program maj "seven sampled answers, their vote, kept on a 0.6 majority"
input question
gold answer
cots = llm(n=7, temperature=0.8, max_tokens=16) """{{ question }}"""
for cot in cots:
    sample = lower(regex(cot, "(?i)\b(yes|no|maybe)\b"))
final = vote(sample)
output final
distill:
    task answer(target=final) """{{ question }}"""
    keep majority(sample, min_share=0.6)
eval:
    metric normalized_match(final, answer)
'''

CONSISTENT = r'''program pick "five sampled picks of A or B, their vote, kept when it survives the swap"
input question, option_a, option_b
cots = llm(n=5, temperature=0.8, max_tokens=16) """{{ question }} A: {{ option_a }} B: {{ option_b }}"""
for cot in cots:
    pick = regex(cot, "\[\[(A|B)\]\]")
choice = vote(pick)
output choice
distill:
    task judge(target=choice) """{{ question }} A: {{ option_a }} B: {{ option_b }}"""
    keep consistent(choice, swap=["option_a", "option_b"], map={"A": "B", "B": "A"})
'''

REPLIES = ["yes", "no", "maybe", "I cannot tell"]  # the last one has no answer: its sample fails


def samples_for(q: str, n: int) -> list[str]:
    """Each question's n sampled replies, fixed per (question, sample index): a seeded engine's."""
    rng = random.Random(q)
    kind = rng.random()
    if kind < 0.4:  # most samples agree
        pool = [rng.choice(REPLIES[:2])] * 6 + REPLIES
    else:
        pool = REPLIES
    return [f"I think {rng.choice(pool)}." for _ in range(n)]


def majority_script(req, i):
    return samples_for(request_text(req), 7)[i]


def compile_with(cp, raw, script, tmp_path, name, **kw):
    good, problems = validate_rows(cp, raw)
    assert not problems
    engine = FakeEngine(script)
    res = distill_program(cp, good, Runner(engine, CallCache(tmp_path / f"{name}.sqlite"), progress=False),
                          tmp_path / name, DistillSettings(data="fixture", **kw))
    return res, engine


def files(res) -> dict[str, bytes]:
    return {f: (res.out / f).read_bytes() for f in ("train.jsonl", "curation.jsonl")}


def drawn(engine) -> int:
    return sum(r.sampling.n for r in engine.calls)


def test_the_checker_finds_the_calls_a_vote_and_a_majority_decide():
    cp = load_text(MAJORITY)
    plan = early_stops(cp)["cots"]
    assert plan == EarlyStop("cots", ("sample",), ("sample",), (("sample", 0.6),))
    assert "vote(sample) and keep majority(sample, min_share=0.6)" in plan.describe()


@pytest.mark.parametrize("change, why", [
    ("final = vote(sample)\nshare = vote_share(sample)\noutput share", "'share' (line 8) reads every sample"),
    ("final = vote(sample)\nall = join(cots)\noutput all", "'all' (line 8) reads every sample"),
    ("final = vote(sample)\noutput sample", "output sample is read from the samples"),
    ("final = vote(sample)\nfor c in cots:\n    check = llm() \"\"\"Is {{ c }} right?\"\"\"\noutput check",
     "'check' (line 9) is a call made per sample"),
])
def test_a_call_whose_samples_something_else_reads_draws_them_all(change, why):
    cp = load_text(MAJORITY.replace("final = vote(sample)", change))
    assert early_stops(cp)["cots"] == why


def test_rows_that_read_every_sample_stop_nothing(tmp_path):
    """The cot format trains on the chain of thought (a sample): no early stop, every sample drawn."""
    source = MAJORITY.replace("task answer(target=final)", "task answer(target=final, rationale=first(cots))")
    cp = load_text(source)
    assert isinstance(early_stops(cp, "label")["cots"], EarlyStop)
    assert early_stops(cp, "cot")["cots"] == "the training rows of task answer (line 10) read the samples (format cot)"
    raw = [{"id": f"q{i}", "question": f"question {i}", "answer": "yes"} for i in range(12)]
    res, engine = compile_with(cp, raw, majority_script, tmp_path, "cot", format="cot")
    assert drawn(engine) == 12 * 7 and res.summary.nodes["cots"].not_drawn == 0
    _, label = compile_with(cp, raw, majority_script, tmp_path, "label", format="label")
    assert drawn(label) < 12 * 7  # the same program in the label format does stop early


@pytest.mark.parametrize("curation", ["program", "none"])  # none: the vote alone decides
def test_majority_and_vote_datasets_are_byte_identical_with_fewer_samples(tmp_path, curation):
    cp = load_text(MAJORITY)
    raw = [{"id": f"q{i}", "question": f"question {i}", "answer": "yes"} for i in range(60)]
    on, eng_on = compile_with(cp, raw, majority_script, tmp_path, "on", curation=curation)
    off, eng_off = compile_with(cp, raw, majority_script, tmp_path, "off", curation=curation, early_stop=False)
    assert files(on) == files(off)
    assert drawn(eng_off) == 60 * 7
    assert drawn(eng_on) < drawn(eng_off) and on.summary.nodes["cots"].not_drawn == 60 * 7 - drawn(eng_on)
    if curation == "program":
        assert on.report["kept"] > 0 and on.report["inputs"] - on.report["kept"] > 0  # both verdicts occur
    assert on.report["gold"] == off.report["gold"]  # every System-2 answer, kept or not, is the same
    # an undrawn sample reads as skipped, never as a failure
    assert on.summary.nodes["sample"].failed == off.summary.nodes["sample"].failed


def test_consistent_datasets_are_byte_identical(tmp_path):
    cp = load_text(CONSISTENT)

    def script(req, i):
        text = request_text(req)
        rng = random.Random(text.split(" A: ")[0])
        prefers = "A" if "good" in text.split(" A: ")[1].split(" B: ")[0] else "B"
        biased = rng.random() < 0.3  # a judge that says A whatever the order
        odds = rng.choice([0.9, 0.7, 0.5])
        r = random.Random(f"{text}:{i}")
        pick = "A" if biased else prefers if r.random() < odds else "AB".replace(prefers, "")
        return f"[[{pick}]]" if r.random() > 0.1 else "no idea"

    raw = [{"id": f"q{i}", "question": f"question {i}", "option_a": "good" if i % 2 else "bad",
            "option_b": "bad" if i % 2 else "good"} for i in range(40)]
    on, eng_on = compile_with(cp, raw, script, tmp_path, "on")
    off, eng_off = compile_with(cp, raw, script, tmp_path, "off", early_stop=False)
    assert files(on) == files(off)
    assert drawn(eng_on) < drawn(eng_off) == 80 * 5  # the originals and their swapped copies
    assert on.report["dropped_per_rule"].get("consistent", 0) > 0 and on.report["kept"] > 0


def test_the_cache_serves_an_early_stop_run_and_a_full_one(tmp_path):
    """A full run after an early-stop one draws only the samples it lacks (seeded by index, they
    are the ones a full run would have drawn), and an early-stop run after a full one draws none."""
    cp = load_text(MAJORITY)
    raw = [{"id": f"q{i}", "question": f"question {i}", "answer": "yes"} for i in range(30)]
    cache = CallCache(tmp_path / "shared.sqlite")
    good, _ = validate_rows(cp, raw)

    def compile_(name, early_stop):
        engine = FakeEngine(majority_script)
        res = distill_program(cp, good, Runner(engine, cache, progress=False), tmp_path / name,
                              DistillSettings(data="fixture", early_stop=early_stop))
        return res, engine

    on, eng_on = compile_("on", True)
    full, eng_full = compile_("full", False)
    again, eng_again = compile_("again", True)
    assert files(on) == files(full) == files(again)
    assert drawn(eng_on) + drawn(eng_full) == 30 * 7  # nothing drawn twice
    assert all(r.first > 0 for r in eng_full.calls)  # each asked only for the samples after the cached ones
    assert eng_again.calls == []


def test_undrawn_samples_are_shown_as_not_drawn(tmp_path):
    cp = load_text(MAJORITY)
    raw = [{"id": "q", "question": "unanimous", "answer": "yes"}]
    res, engine = compile_with(cp, raw, lambda req, i: "yes", tmp_path, "one")
    assert [r.sampling.n for r in engine.calls] == [5]  # 5 of 7: 5 > 2 others, and 5/7 >= 0.6
    from s2c.runtime.store import RunStore

    trace = RunStore.open(res.out / "run", cp).get("q").trace
    inst = trace.nodes["cots"]["instances"][0]
    assert inst["not_drawn"] == 2 and len(inst["completions"]) == 5
    skipped = trace.nodes["sample"]["instances"][-1]
    assert skipped["value"]["skipped"] == "not drawn: the decision was made by the first 5 of 7 samples"
    assert early_stop_note(res.summary) == ("early stop: 2 samples not drawn, which could not change the dataset "
                                            "(--no-early-stop draws them)")


# ---------------------------------------------------------------- the rule, against every continuation
ANSWERS = ["a", "b", "c", None]  # None: a sample that failed


def vote_outcome(keys):
    valid = [k for k in keys if k is not None]
    return vote_counts(valid)[0] if valid else "<fails>"


def majority_outcome(keys, share):  # curation's own test
    valid = [k for k in keys if k is not None]
    return bool(valid) and majority_holds(valid, share)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ANSWERS), max_size=7), st.integers(0, 4),
       st.sampled_from([0.5, 0.6, 2 / 3, 0.75, 1.0]))
def test_a_decided_prefix_has_one_outcome_over_every_continuation(prefix, undrawn, share):
    rest = ANSWERS + ["d"]  # "d": a value the prefix has not seen
    conts = list(itertools.product(rest, repeat=undrawn))
    if vote_decided(prefix, undrawn):
        assert len({vote_outcome(prefix + list(c)) for c in conts}) == 1
    if majority_decided(prefix, undrawn, share):
        assert len({majority_outcome(prefix + list(c), share) for c in conts}) == 1
    plan = EarlyStop("x", (), ("v",), (("v", share),))
    if undrawn:
        assert 1 <= next_wave(plan, {"v": prefix}, undrawn) <= undrawn


def test_the_rule_is_not_overcautious():
    """Decided as soon as it is: a unanimous prefix that no remainder can overturn, a drop no
    remainder can rescue."""
    assert majority_decided(["a"] * 5, 2, 0.6) and vote_decided(["a"] * 5, 2)
    assert not majority_decided(["a"] * 4, 3, 0.6)  # 4 a, 3 b: 4/7 < 0.6
    assert majority_decided(["a", "b", "c", "d"], 3, 0.6)  # at best 4/7
    assert not vote_decided(["a", "b", "c", "d"], 3)
    assert vote_decided(["a", "a", "b"], 1)  # a tie at 2-2 goes to a, seen first
    assert not vote_decided(["b", "a", "a"], 1)  # ... and to b here


def test_first_wave_is_the_fewest_samples_that_could_decide():
    plan = EarlyStop("x", (), ("v",), (("v", 0.6),))
    assert next_wave(plan, {"v": []}, 7) == 5
    assert next_wave(plan, {"v": []}, 6) == 4  # the main job: 4 of 6 agreeing decide
    assert next_wave(EarlyStop("x", (), ("v",), ()), {"v": []}, 10) == 5  # 5-5 goes to the first seen


# ---------------------------------------------------------------- perturbed copies no verdict reads
def test_a_copy_whose_original_fails_is_not_run(tmp_path):
    """BSM with its swap: an original whose verdict does not parse is dropped whatever its swapped
    copy says, so the copy's calls are not made; the dataset is the same, byte for byte."""
    from engine_fixtures import judge_script

    from s2c.compiler.pipeline import load_program

    cp = load_program("bsm.s2")
    judge = judge_script(bias_a={"Q3"})

    def script(req, i):
        text = req.messages[-1].content
        if "combine the evaluations" in text and ("Q1\n" in text or "Q4\n" in text):
            return "I cannot decide."  # no [[A]]/[[B]]: the original's verdict is unparsed
        return judge(req, i)

    raw = [{"id": f"e{i}", "question": f"Q{i}", "label": "A" if i % 2 else "B",
            "response_a": "a good answer" if i % 2 else "a bad answer",
            "response_b": "a bad answer" if i % 2 else "a good answer"} for i in range(6)]
    on, eng_on = compile_with(cp, raw, script, tmp_path, "on")
    off, eng_off = compile_with(cp, raw, script, tmp_path, "off", early_stop=False)
    assert files(on) == files(off)
    assert on.summary.copies_skipped == 2 and off.summary.copies_skipped == 0
    assert on.report == off.report and on.report["unparsed"] == 2
    asked = {c.messages[-1].content.split("Question: ")[-1].split("\n")[0] for c in eng_on.calls
             if "Evaluation Plan" in c.messages[-1].content}
    assert asked == {f"Q{i}" for i in range(6)}  # every original ran
    # two copies' two solves and merge (a copy's branch call reads only the question: the original's)
    assert len(eng_off.calls) - len(eng_on.calls) == 2 * 3
    assert json.loads((on.out / "run" / "summary.json").read_text())["copies_not_run"] == 2
    assert "2 perturbed copies not run" in early_stop_note(on.summary) and early_stop_note(off.summary) == ""


def test_a_call_served_by_a_batch_api_is_drawn_whole(tmp_path):
    """A wave would wait for a batch of its own (minutes to hours): in batch mode, no waves."""
    cp = load_text(MAJORITY)
    raw = [{"id": f"q{i}", "question": f"question {i}", "answer": "yes"} for i in range(10)]
    engine = FakeEngine(majority_script)
    engine.batch = True  # what the HTTP engines say under --batch
    good, _ = validate_rows(cp, raw)
    distill_program(cp, good, Runner(engine, CallCache(None), progress=False), tmp_path / "b",
                    DistillSettings(data="fixture"))
    assert [r.sampling.n for r in engine.calls] == [7] * 10


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ANSWERS), max_size=6), st.integers(0, 3),
       st.sampled_from([0.5, 0.6, 2 / 3, 0.75, 1.0]))
def test_a_prefix_with_one_outcome_over_every_continuation_is_decided(prefix, undrawn, share):
    """The rule is exact, not only safe: what it leaves open can still go two ways (so no lossless
    rule stops earlier, and bench/early_stop.py's bound is the bound)."""
    conts = list(itertools.product(ANSWERS + ["d", "e"], repeat=undrawn))
    if len({vote_outcome(prefix + list(c)) for c in conts}) == 1:
        assert vote_decided(prefix, undrawn)
    if len({majority_outcome(prefix + list(c), share) for c in conts}) == 1:
        assert majority_decided(prefix, undrawn, share)


def test_an_unseeded_sampled_call_is_seeded_from_the_call_and_its_waves_share_the_seed(tmp_path):
    """Without a cache, two runs send the same seed for the same call (so a seeded engine draws the
    same samples), another call gets another seed, and a call's waves share its seed, each asking
    from its first undrawn sample on."""
    cp = load_text(MAJORITY)
    raw = [{"id": f"q{i}", "question": f"question {i}", "answer": "yes"} for i in range(6)]
    good, _ = validate_rows(cp, raw)

    def requests(early_stop):
        engine = FakeEngine(majority_script)
        distill_program(cp, good, Runner(engine, CallCache(None), progress=False), tmp_path / f"r{early_stop}",
                        DistillSettings(data="fixture", early_stop=early_stop))
        return engine.calls

    full, again, waves = requests(False), requests(False), requests(True)
    seeds = {request_text(r): r.sampling.seed for r in full}
    assert None not in seeds.values() and len(set(seeds.values())) == 6
    assert {request_text(r): r.sampling.seed for r in again} == seeds
    assert all(r.sampling.seed == seeds[request_text(r)] for r in waves)
    for text in seeds:
        parts = [(r.first, r.sampling.n) for r in waves if request_text(r) == text]
        assert [f for f, _ in parts] == [sum(n for _, n in parts[:i]) for i in range(len(parts))]
