"""The one-step-per-call programs of issue 11 (docs/results.md) above the engine: each call reads
exactly one person's sentence, and with a model that gets every step right the program's answer
is the gold answer on every input. The engine is the scripted fake; what the real model does on
these steps is measured in docs/results.md, not asserted here."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from s2c.compiler.pipeline import load_program
from s2c.data import load_source
from s2c.distill.build import DistillSettings, distill_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner, validate_rows

REPO = Path(__file__).resolve().parents[1]
STEPS = {  # program, its data, and what a right step says for each kind of sentence
    "majority_steps": ("majority_vote", {"votes for": "for", "votes against": "against"}),
    "coin_flip_steps": ("coin_flip", {"does not flip": "not flipped", "flips": "flipped"}),
}


def step_script(answers: dict[str, str], wrong: str | None = None):
    """A model that labels the last sentence of the prompt right (or says `wrong` for that name)."""
    def script(request, sample_index):
        sentence = re.findall(r"Sentence: (.*)", request_text(request))[-1]
        if wrong and sentence.startswith(wrong):
            return " maybe"
        return " " + next(label for phrase, label in answers.items() if phrase in sentence)

    return script


def compile_steps(name, rows, engine, tmp_path):
    cp = load_program(REPO / "examples" / f"{name}.s2")
    good, problems = validate_rows(cp, rows)
    assert not problems
    return distill_program(cp, good, Runner(engine, CallCache(tmp_path / "c.sqlite"), progress=False), tmp_path / "ds", DistillSettings(data="fixture"))


@pytest.mark.parametrize("name", sorted(STEPS))
def test_right_steps_give_the_gold_answer_on_every_input(name, tmp_path):
    source, answers = STEPS[name]
    rows = load_source(f"{source}:validation", limit=60).rows
    engine = FakeEngine(step_script(answers))
    res = compile_steps(name, rows, engine, tmp_path)
    assert res.report["kept"] == 60
    # one call per person, each reading one sentence of its own input, in completion mode; the
    # same sentence in two inputs is the same call, sent once (the executor's in-flight dedup)
    people = [s for r in rows for s in re.findall(r"(?<=\. )[A-Z][a-z]+ (?:votes|flips|does)[^.]*\.", r["question"])]
    assert len(people) > len(set(people))  # the fixture repeats sentences, so the dedup is exercised
    assert sorted(re.findall(r"Sentence: (.*)", request_text(c))[-1] for c in engine.calls) == sorted(set(people))
    assert all(c.messages is None and request_text(c).count("Sentence:") == 5 for c in engine.calls)
    gold = {r["id"]: r["answer"] for r in rows}
    train = [json.loads(line) for line in (tmp_path / "ds" / "train.jsonl").read_text().splitlines()]
    assert {r["example_id"]: r["completion"][0]["content"] for r in train} == gold
    question = {r["id"]: r["question"] for r in rows}
    assert all(r["prompt"] == [{"role": "user", "content": question[r["example_id"]] + "\nAnswer yes or no."}]
               for r in train)


def test_a_vote_tied_by_an_unreadable_reply_is_left_out_not_labelled(tmp_path):
    rows = [{"id": "tie", "answer": "yes", "question": "3 people vote on a proposal. Ann votes for the proposal. "
             "Bo votes against the proposal. Cy votes for the proposal. Do more people vote for it than against it?"},
            {"id": "fine", "answer": "yes", "question": "3 people vote on a proposal. Dee votes for the proposal. "
             "Ed votes against the proposal. Flo votes for the proposal. Do more people vote for it than against it?"}]
    res = compile_steps("majority_steps", rows, FakeEngine(step_script(STEPS["majority_steps"][1], wrong="Cy")),
                        tmp_path)
    assert res.report["kept"] == 1 and res.report["unparsed_per_node"] == {"final": 1}  # where the failure began, not a per-vote regex
    train = [json.loads(line) for line in (tmp_path / "ds" / "train.jsonl").read_text().splitlines()]
    assert [(r["example_id"], r["completion"][0]["content"]) for r in train] == [("fine", "yes")]
