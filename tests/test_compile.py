"""s2c compile above the engine: curation rules, row formats, the dataset folder (fake engine)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_fixtures import judge_script

from s2c.compiler.pipeline import load_program
from s2c.distill.build import (
    DistillSettings,
    distill_program,
    read_verdicts,
    run_id_for,
)
from s2c.distill.curate import normalize
from s2c.distill.write import split_of
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner, validate_rows
from s2c.runtime.store import RunStore

HERE = Path(__file__).parent
TWO_STEP = HERE / "fixtures" / "programs" / "two_step.s2"
SAMPLES = HERE / "fixtures" / "programs" / "samples.s2"


def rows_of(cp, raw):
    good, problems = validate_rows(cp, raw)
    assert not problems
    return good


def compile_(cp, raw, engine, tmp_path, **kw):
    return distill_program(cp, rows_of(cp, raw), Runner(engine, CallCache(tmp_path / "c.sqlite"), progress=False), tmp_path / "ds", DistillSettings(data="fixture", **kw))


def bsm_raw(n=6):
    return [{"id": f"e{i}", "question": f"Q{i}", "label": "A" if i % 2 else "B",
             "response_a": "a good answer" if i % 2 else "a bad answer",
             "response_b": "a bad answer" if i % 2 else "a good answer"} for i in range(n)]


def test_swap_rule_drops_position_biased_verdicts(tmp_path):
    cp = load_program("bsm.s2")
    eng = FakeEngine(judge_script(bias_a={"Q0", "Q3"}))
    res = compile_(cp, bsm_raw(6), eng, tmp_path)
    r = res.report
    assert r["inputs"] == 6 and r["kept"] == 4
    assert r["dropped_per_rule"] == {"consistent": 2}
    assert r["dropped_reasons"] == {"consistent: answer changes under swap": 2}
    # the swapped copies really ran: response_a/response_b exchanged
    swapped = [c for c in eng.calls if "Q1\n" in c.messages[-1].content and "combine the evaluations" in
               c.messages[-1].content]
    assert len(swapped) == 2  # the original merge and the swapped copy's merge
    assert any(c.messages[-1].content.index("a bad answer") < c.messages[-1].content.index("a good answer")
               for c in swapped)
    rows = [json.loads(l) for l in (tmp_path / "ds" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["example_id"] for r in rows) == ["e1", "e2", "e4", "e5"]
    for row in rows:
        assert row["completion"] == [{"role": "assistant", "content": "[[A]]" if row["example_id"] in ("e1", "e5")
                                      else "[[B]]"}]
        assert row["task"] == "judge" and row["weight"] == 1.0 and row["run_id"] == res.meta["run_id"]
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"


def test_system1_prompts_carry_no_intermediate_text(tmp_path):
    cp = load_program("bsm.s2")
    res = compile_(cp, bsm_raw(4), FakeEngine(judge_script(set())), tmp_path)
    trace = list(RunStore.open(tmp_path / "ds" / "run").traces())
    intermediates = {c for t in trace for n in ("branch", "solve", "merge")
                     for i in t.nodes[n]["instances"] for c in i.get("completions", [])}
    for row in res.rows["train"]:
        for m in row["prompt"]:
            assert not any(z in m["content"] for z in intermediates)
            assert not any(w in m["content"] for w in ("zeta", "theta", "iota", "kappa"))


def test_label_format_and_skew_warning(tmp_path):
    cp = load_program("bsm.s2")
    raw = [{**r, "response_a": "a good answer", "response_b": "a bad answer"} for r in bsm_raw(6)]
    res = compile_(cp, raw, FakeEngine(judge_script(set())), tmp_path, format="label")
    assert {r["completion"][0]["content"] for r in res.rows["train"]} == {"A"}
    assert res.report["label_distribution"] == {"a": 6}
    assert "skewed" in res.report["warnings"][0]


def test_majority_rule_keeps_strict_winners_above_threshold(tmp_path):
    cp = load_program(SAMPLES)
    votes = {"q-strong": ["4", "4", "4", "5", "4"], "q-weak": ["4", "4", "5", "6", "7"],
             "q-tie": ["4", "4", "5", "5", "x"]}

    def script(req, i):
        q = req.messages[-1].content
        v = votes[q][i]
        return "no answer" if v == "x" else f"Answer: {v}"

    raw = [{"id": q, "question": q} for q in votes]
    res = compile_(cp, raw, FakeEngine(script), tmp_path)
    assert res.report["kept"] == 1 and [r["example_id"] for r in res.rows["train"]] == ["q-strong"]
    assert res.rows["train"][0]["completion"][0]["content"] == "4"
    assert res.report["dropped_reasons"] == {"majority: no strict winner with a share of at least 0.60": 2}
    verdicts = read_verdicts(res.out)
    assert list(verdicts) == ["q-strong", "q-weak", "q-tie"]  # input order
    assert verdicts["q-strong"]["verdict"] == "kept"
    assert verdicts["q-weak"] == {"example_id": "q-weak", "verdict": "dropped", "rule": "majority",
                                  "reason": "majority: no strict winner with a share of at least 0.60", "node": None}
    assert verdicts["q-tie"]["reason"] == "majority: no strict winner with a share of at least 0.60"


def test_matches_rule_uses_the_gold_field(tmp_path):
    cp = load_program(TWO_STEP)
    eng = FakeEngine(lambda r, i: "Final answer: 4" if "2+2" in r.messages[-1].content else "Final answer: 7")
    raw = [{"id": "a", "question": "2+2?", "answer": "4"}, {"id": "b", "question": "3+3?", "answer": "6"}]
    res = compile_(cp, raw, eng, tmp_path)
    assert [r["example_id"] for r in res.rows["train"]] == ["a"]
    assert res.report["dropped_per_rule"] == {"matches": 1}


def test_dataset_folder_loads_with_datasets_and_has_a_card(tmp_path):
    datasets = pytest.importorskip("datasets")
    cp = load_program("bsm.s2")
    compile_(cp, bsm_raw(8), FakeEngine(judge_script(set())), tmp_path, val_split=0.5, seed=3)
    ds = tmp_path / "ds"
    train = datasets.load_dataset("json", data_files=str(ds / "train.jsonl"))["train"]
    assert set(train.column_names) >= {"prompt", "completion", "task", "weight", "example_id", "run_id"}
    val = datasets.load_dataset("parquet", data_files=str(ds / "validation.parquet"))["train"]
    # each example goes to validation by a hash of (seed, id): all of its rows together, reproducibly
    assert len(train) + len(val) == 8 and 0 < len(val) < 8
    assert not set(train["example_id"]) & set(val["example_id"])
    assert all(split_of(i, 0.5, 3) == "validation" for i in val["example_id"])
    card = (ds / "README.md").read_text()
    assert "## Curation" in card and "generated tokens" in card
    meta = json.loads((ds / "meta.json").read_text())
    assert meta["format"] == "system1" and meta["rows"] == {"train": len(train), "validation": len(val)}
    assert not list(ds.glob(".*.tmp"))


def test_recompiling_with_a_changed_rule_reuses_every_call(tmp_path):
    cp = load_program(SAMPLES)
    cache = CallCache(tmp_path / "c.sqlite")
    raw = [{"id": f"q{i}", "question": f"q{i}"} for i in range(3)]
    distill_program(cp, rows_of(cp, raw), Runner(FakeEngine(lambda r, i: f"Answer: {i % 2}"), cache, progress=False), tmp_path / "a", DistillSettings(data="x"))
    loose = tmp_path / "samples.s2"
    loose.write_text(SAMPLES.read_text().replace("min_share=0.6", "min_share=0.5"))
    eng = FakeEngine(lambda r, i: f"Answer: {i % 2}")
    res = distill_program(load_program(loose), rows_of(cp, raw), Runner(eng, cache, progress=False), tmp_path / "b", DistillSettings(data="x"))
    assert eng.batches == [] and res.report["kept"] == 3


def test_normalize():
    assert normalize(" Yes. ") == normalize("yes") == "yes"
    assert normalize("1,000") == normalize("1000.0") == "1000"
    assert normalize("[[A]]") == "a"


def test_multitask_rows_from_minds_mirror(tmp_path):
    cp = load_program("minds_mirror.s2")

    def script(r, i):
        if "Is this reasoning correct" in r.messages[-1].content:
            return "Looks fine. Verdict: yes" if i % 3 else "Verdict: no"
        return f"reasoning {i}. The answer is {'True' if i % 4 else 'False'}"

    res = compile_(cp, [{"id": "b1", "question": "not ( True ) and True is", "answer": "True"}],
                   FakeEngine(script), tmp_path)
    rows = res.rows["train"]
    assert res.meta["format"] == "multitask"
    # CoTs 0 and 4 answer False (gold True): `keep matches(pred, answer)` drops their rows only
    evaluate = ["evaluate", "evaluate_2", "evaluate_3", "evaluate_4", "evaluate_5"]
    assert [(r["task"], r["weight"]) for r in rows] == [("predict", 1.0)] + [("explain", 0.5)] * 3 + \
        [(t, 0.5) for t in evaluate for _ in range(3)]
    assert rows[0]["prompt"][-1]["content"] == "predict: not ( True ) and True is"
    assert rows[0]["completion"][0]["content"] == "True"
    explains = [r["completion"][0]["content"] for r in rows if r["task"] == "explain"]
    assert explains == [f"reasoning {i}. The answer is True" for i in (1, 2, 3)]
    # each evaluate row reads the explain row of the same CoT (after="explain"), and learns the
    # teacher's evaluation text (Mind's Mirror distills the self-evaluation output, not a label)
    for t, verdict in zip(evaluate, ["Verdict: no", "Looks fine. Verdict: yes", "Looks fine. Verdict: yes",
                                     "Verdict: no", "Looks fine. Verdict: yes"]):
        mine = [r for r in rows if r["task"] == t]
        assert [r["prompt"][-1]["content"].rsplit("\n", 1)[-1] for r in mine] == explains
        assert {r["completion"][0]["content"] for r in mine} == {verdict}


def test_cascade_rows_from_cascod(tmp_path):
    cp = load_program("cascod.s2")
    eng = FakeEngine(lambda r, i: "We add the two numbers. Therefore, the answer is 4.")
    res = compile_(cp, [{"id": "g1", "question": "2+2?", "answer": "4"}, {"id": "g2", "question": "3+3?", "answer": "6"}],
                   eng, tmp_path)
    rows = res.rows["train"]
    assert res.report["dropped_per_rule"] == {"matches": 1}  # 3+3 -> 4 is wrong: gold filter
    assert [(r["task"], r["weight"], r["example_id"]) for r in rows] == [("rationale", 0.9, "g1"),
                                                                        ("answer", 0.1, "g1")]
    assert rows[0]["completion"][0]["content"] == "We add the two numbers."
    assert rows[1]["prompt"][-1]["content"] == "Q: 2+2?\nRationale: We add the two numbers.\nTherefore, the answer is"
    assert rows[1]["completion"][0]["content"] == "4."  # the text after the phrase, as CasCoD's split keeps it
    # the label chart counts the answer the gold metric reads, not the rationale task's text
    assert res.report["label_distribution"] == {"4": 1}


def test_kept_label_accuracy_against_gold_in_the_report_and_the_card(tmp_path):
    """--curation none keeps every answer: the report says how many kept labels match gold, and
    how many of all System-2 answers do, as the program's gold metric scores them."""
    cp = load_program("cot_zeroshot.s2")
    replies = {"2+2?": "Final answer: 4", "3+3?": "Final answer: 7", "5+5?": "Final answer: 10", "1+1?": "no idea"}
    eng = FakeEngine(lambda r, i: next(v for k, v in replies.items() if k in request_text(r)))
    raw = [{"id": q, "question": q, "answer": str(eval(q[:-1]))} for q in replies] + [{"id": "n", "question": "9+9?"}]
    replies["9+9?"] = "Final answer: 18"
    res = compile_(cp, raw, eng, tmp_path, curation="none")
    gold = res.report["gold"]
    assert gold == {"metric": "normalized_match", "gold": "answer", "all": {"correct": 2, "scored": 4},
                    "kept": {"correct": 2, "scored": 3}}  # 1+1 is unparsed (wrong, not kept); 9+9 has no gold
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "- kept labels match answer (normalized_match): 2/3 (67%); all System-2 answers: 2/4 (50%)" in card
    assert json.loads((tmp_path / "ds" / "report.json").read_text())["gold"] == gold
    assert res.report["label_distribution"] == {"4": 1, "7": 1, "10": 1, "18": 1}


def test_a_compile_served_from_the_cache_shows_what_its_calls_cost_when_they_were_made(tmp_path):
    from s2c.runtime.run import cache_note

    cp = load_program(TWO_STEP)
    raw = [{"id": "a", "question": "2+2?", "answer": "4"}, {"id": "b", "question": "3+3?", "answer": "6"}]
    first = compile_(cp, raw, FakeEngine(lambda r, i: "Final answer: 4"), tmp_path)
    assert cache_note(first.summary) == ""
    paid = first.summary.engine_generated_tokens
    assert paid == first.summary.generated_tokens > 0
    again = distill_program(cp, rows_of(cp, raw), Runner(FakeEngine(), CallCache(tmp_path / "c.sqlite"), progress=False),
                            tmp_path / "ds2", DistillSettings(data="fixture"))
    s = again.summary
    assert (s.engine_calls, s.engine_generated_tokens, s.generated_tokens) == (0, 0, paid)
    assert cache_note(s) == (f"{s.cache_hits} calls served from the cache cost {paid:,} generated tokens when they "
                             "were made; this run paid 0 engine calls, 0 generated tokens")
    card = (tmp_path / "ds2" / "README.md").read_text()
    assert f"this compile paid for 0; the {paid:,} of the {s.cache_hits} calls served from the cache were paid" in card


def test_shuffle_rule_maps_letters_through_the_permutation(tmp_path):
    cp = load_program(HERE / "fixtures" / "programs" / "choices.s2")

    def script(req, i):
        t = req.messages[-1].content
        if "capital of France" in t:  # answers by content: the right letter wherever Paris is
            line = next(l for l in t.splitlines() if "Paris" in l)
            return line.split(")")[0] + ")"
        return "(A)"  # answers by position: changes meaning when the options move

    raw = [{"id": "fr", "question": "What is the capital of France?", "options": ["Paris", "Rome", "Oslo", "Bern"]},
           {"id": "it", "question": "What is the capital of Italy?", "options": ["Paris", "Rome", "Oslo", "Bern"]}]
    res = compile_(cp, raw, FakeEngine(script), tmp_path)
    assert [r["example_id"] for r in res.rows["train"]] == ["fr"]
    assert res.rows["train"][0]["completion"][0]["content"] == "A"
    assert res.report["dropped_reasons"] == {"consistent: answer changes under shuffle": 1}


@pytest.mark.parametrize("curation, kept, swapped_calls", [
    ("program", ["e1", "e2", "e4", "e5"], True),  # keep consistent(...): the position-biased e0, e3 dropped
    ("none", ["e0", "e1", "e2", "e3", "e4", "e5"], False),  # the unfiltered ablation: no swapped copies run
    ("gold", ["e1", "e2", "e3", "e4", "e5"], False),  # e0's biased verdict is wrong, e3's happens to be right
])
def test_curation_override_gives_the_papers_ablations(tmp_path, curation, kept, swapped_calls):
    cp = load_program("bsm.s2")
    eng = FakeEngine(judge_script(bias_a={"Q0", "Q3"}))
    res = compile_(cp, bsm_raw(6), eng, tmp_path, curation=curation)
    assert sorted(r["example_id"] for r in res.rows["train"]) == kept
    assert res.meta["curation"] == curation
    assert res.meta["run_id"] == run_id_for(cp, "fixture", eng.model_id("default"), 6)  # the S2 run's, whatever curates it
    assert res.report["dropped_per_rule"] == ({} if curation == "none" else
                                              {"consistent": 2} if curation == "program" else {"matches": 1})
    assert any("a bad answer" in c.messages[-1].content.split("a good answer")[0] for c in eng.calls
               if "Q1\n" in c.messages[-1].content) == swapped_calls
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["curation"] == curation


def test_gold_curation_needs_one_gold_field(tmp_path):
    from s2c.errors import S2Error

    cp = load_program(SAMPLES)
    assert not cp.golds
    with pytest.raises(S2Error, match="exactly one gold field; 'samples' has 0") as e:
        compile_(cp, [{"id": "q", "question": "q"}], FakeEngine(default="Answer: 4"), tmp_path, curation="gold")
    assert "gold answer" in e.value.diagnostic.hint and e.value.diagnostic.span.line == 2  # its `program` line


def test_compile_refuses_a_gold_curation_it_cannot_apply_before_reading_data(tmp_path, capsys):
    from s2c.cli import main

    missing = tmp_path / "missing.jsonl"  # never opened: the program is refused first
    assert main(["compile", str(SAMPLES), "--data", str(missing), "--curation", "gold",
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "samples.s2:2:1: error: --curation gold needs a program with exactly one gold field" in err
    assert "missing.jsonl" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("program, hint", [
    # the target is cut after a marker: the rationale is the text before it, in the program's own names
    ("least_to_most", 'e.g. task answer(target=final, rationale=before(answer_text, "The answer is"))'),
    # no marker to cut at: the shape of one, and never a gold field's name
    ("self_refine", 'e.g. task solve(target=draft, rationale=before(CALL, "MARKER"))'),
])
def test_format_cot_without_a_rationale_is_refused_before_the_data_with_a_rationale_that_checks(
        tmp_path, capsys, program, hint):
    from s2c.cli import main

    missing = tmp_path / "missing.jsonl"  # never opened
    assert main(["compile", program, "--data", str(missing), "--format", "cot", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "error: format 'cot' needs a rationale" in err and hint in err
    assert "missing.jsonl" not in err and not (tmp_path / "o").exists()
    if "CALL" not in hint:  # the suggestion, pasted into the program, checks
        fixed = tmp_path / f"{program}.s2"
        task = hint.removeprefix("e.g. ")
        src = load_program(f"{program}.s2").program.file
        fixed.write_text(Path(src).read_text().replace(task.split(",")[0] + ")", task))
        assert "rationale=before(answer_text" in fixed.read_text()
        assert main(["check", str(fixed)]) == 0


FEWSHOT = '''program f "a few-shot block written in the program"
input question
SHOTS = "Q: 1 + 1?\\nA: 2\\n" + "Q: 2 + 3?\\nA: 5"
draft = llm() """{{ SHOTS }}
Q: {{ question }}
A:"""
final = strip(draft)
output final

distill:
    task answer(target=final) """{{ SHOTS }}
Q: {{ question }}
A:"""
'''


def test_a_constant_few_shot_block_is_carried_by_the_system1_prompt_in_training_and_at_inference(tmp_path):
    from s2c.compiler.pipeline import load_text
    from s2c.compiler.system1 import system1_program
    from s2c.runtime.engines.fake import request_text

    cp = load_text(FEWSHOT, "f.s2")
    assert not cp.diagnostics
    res = compile_(cp, [{"id": "a", "question": "4 + 4?"}], FakeEngine(lambda r, i: " 8"), tmp_path)
    [row] = res.rows["train"]
    assert row["prompt"][0]["content"] == "Q: 1 + 1?\nA: 2\nQ: 2 + 3?\nA: 5\nQ: 4 + 4?\nA:"
    assert row["completion"][0]["content"] == "8"
    s1 = system1_program(cp, cascade=False, max_tokens=8)
    eng = FakeEngine(lambda r, i: "8")
    Runner(eng, progress=False).execute(s1, [("a", {"question": "4 + 4?"})], tmp_path / "s1")
    assert [request_text(r) for r in eng.calls] == [row["prompt"][0]["content"]]
