"""s2c eval above the engine: three systems, metrics, #tokens, results.json and the PNG (fake engine)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import s2c.runtime.engines as engines
from s2c.cli import main
from s2c.runtime.engines.fake import FakeEngine

HERE = Path(__file__).parent


def judge(req, i):
    t = req.messages[-1].content
    if "Evaluation Plan" in t:
        return "1. Helpfulness\n2. Accuracy"
    if "Evaluation of" in t and "[Evaluation of" not in t:
        return "A: 6\nB: 5"
    if "Please act as an impartial judge" in t:  # the System-1 prompt
        if req.adapter:  # the "distilled" judge follows the content
            a = t.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
            return "[[A]]" if "good" in a else "[[B]]"
        return "I think [[A]] is better."  # the base judge always says A: position bias
    a = t.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
    return "After merging: [[A]]" if "good" in a else "After merging: [[B]]"


@pytest.fixture
def fake_engine(monkeypatch):
    made = []

    def make(name, model=None, roles=None, **options):
        eng = FakeEngine(judge)
        made.append((eng, options))
        return eng

    monkeypatch.setattr(engines, "make_engine", make)
    return made


def write_rows(path: Path, n=6):
    rows = [{"id": f"e{i}", "question": f"Q{i}", "label": "A" if i % 2 else "B",
             "response_a": "a good answer" if i % 2 else "a bad answer",
             "response_b": "a bad answer" if i % 2 else "a good answer"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def adapter_dir(tmp_path) -> Path:
    a = tmp_path / "train" / "adapter"
    a.mkdir(parents=True)
    (a / "adapter_config.json").write_text("{}")
    return a.parent


def test_three_systems_table_json_png(tmp_path, fake_engine, capsys):
    write_rows(tmp_path / "test.jsonl")
    rc = main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--adapter", str(adapter_dir(tmp_path)),
               "--out", str(tmp_path / "ev"), "--no-cache"])
    assert rc == 0
    eng, options = fake_engine[0]
    assert options == {"enable_lora": True}
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    by = {s["name"]: s for s in res["systems"]}
    assert list(by) == ["System 1", "System 2", "Distilled System 1"]
    assert by["System 1"]["metrics"] == {"agreement": 0.5, "swap_inconsistency": 1.0}
    assert by["System 2"]["metrics"] == {"agreement": 1.0, "swap_inconsistency": 0.0}
    assert by["Distilled System 1"]["metrics"] == {"agreement": 1.0, "swap_inconsistency": 0.0}
    # System 2's tokens include every intermediate call; System 1 answers in one call
    assert by["System 2"]["mean_generated_tokens"] > by["Distilled System 1"]["mean_generated_tokens"] > 0
    assert (tmp_path / "ev" / "results.png").stat().st_size > 1000
    preds = [json.loads(l) for l in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert preds[0] == {"example_id": "e0", "System 1": "A", "System 2": "B", "Distilled System 1": "B"}
    err = capsys.readouterr().err
    assert "Distilled System 1" in err and "#tokens / input" in err
    # the CIs and the paired tests (maths in test_eval_stats.py): 6 inputs, System 1 right on 3,
    # System 2 on all 6; a resampled mean of 3 of 6 lands on 1/6..5/6 (the 2.5 % and 97.5 % points)
    assert res["schema"] == 2
    assert res["stats"] == {"confidence": 0.95, "bootstrap_resamples": 10_000, "seed": 0, "ci": "percentile bootstrap",
                            "diff_ci": "paired percentile bootstrap", "test": "exact McNemar, two-sided"}
    assert by["System 1"]["ci"] == {"agreement": [0.166667, 0.833333], "swap_inconsistency": [1.0, 1.0]}
    assert by["System 2"]["ci"] == {"agreement": [1.0, 1.0], "swap_inconsistency": [0.0, 0.0]}
    assert by["System 1"]["mean_generated_tokens_ci"] == [by["System 1"]["mean_generated_tokens"]] * 2
    comps = {(c["b"], c["a"], c["metric"]): c for c in res["comparisons"]}
    assert len(res["comparisons"]) == 6  # 3 pairs of systems x 2 metrics
    assert comps["System 2", "System 1", "agreement"] == {
        "metric": "agreement", "a": "System 1", "b": "System 2", "n": 6, "diff": 0.5, "diff_ci": [0.166667, 0.833333],
        "mcnemar": {"b01": 3, "b10": 0, "p": 0.25}}
    swap = comps["Distilled System 1", "System 1", "swap_inconsistency"]
    assert swap["mcnemar"] == {"b01": 0, "b10": 6, "p": 0.03125}
    assert comps["Distilled System 1", "System 2", "agreement"]["mcnemar"] == {"b01": 0, "b10": 0, "p": 1.0}
    assert "50.0 [16.7, 83.3]" in err and "100.0 [100.0, 100.0]" in err and "[95% bootstrap CI]" in err
    assert "agreement, System 2 − System 1: +50.0 points [+16.7, +83.3], McNemar p = 0.25 (b=3, c=0)" in err
    assert ("swap_inconsistency, Distilled System 1 − System 1: −100.0 points [−100.0, −100.0], "
            "McNemar p = 0.0313 (b=0, c=6)") in err
    assert "agreement, Distilled System 1 − System 2: +0.0 points [+0.0, +0.0], McNemar p = 1 (b=0, c=0)" in err


def test_inputs_without_gold_are_left_out_of_that_metric_and_its_pairs(tmp_path, fake_engine):
    write_rows(tmp_path / "test.jsonl", n=8)
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    rows[2]["label"] = rows[5]["label"] = ""  # no gold: not scored for agreement, still for the swap
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "ev"), "--no-cache"])
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    by = {s["name"]: s for s in res["systems"]}
    assert by["System 1"]["metrics"]["agreement"] == 0.5  # right on e1, e3, e7 of e0, e1, e3, e4, e6, e7
    [agree, swap] = res["comparisons"]
    assert (agree["metric"], agree["n"], agree["mcnemar"]) == ("agreement", 6, {"b01": 3, "b10": 0, "p": 0.25})
    assert (swap["metric"], swap["n"], swap["diff"]) == ("swap_inconsistency", 8, -1.0)


def test_missing_adapter_is_a_clear_error(tmp_path, fake_engine, capsys):
    write_rows(tmp_path / "test.jsonl")
    rc = main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--adapter", str(tmp_path / "nope")])
    assert rc == 1
    assert "no LoRA adapter there" in capsys.readouterr().err


def test_merge_adapters_needs_an_engine_that_s2c_starts(tmp_path, capsys):
    write_rows(tmp_path / "test.jsonl")
    rc = main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--adapter", str(adapter_dir(tmp_path)),
               "--merge-adapters", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1",
               "--out", str(tmp_path / "ev")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "--merge-adapters: only with a local engine (vllm or hf)" in err and "s2c export" in err
    assert not (tmp_path / "ev").exists()  # refused before anything ran


def test_merge_adapters_needs_the_adapters_weights(tmp_path, fake_engine, capsys):
    write_rows(tmp_path / "test.jsonl")
    ad = adapter_dir(tmp_path)  # a config and no weights
    assert main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--adapter", str(ad), "--no-system2",
                 "--merge-adapters", "--out", str(tmp_path / "ev")]) == 1
    assert f"error: --adapter {ad / 'adapter'}: no adapter weights (adapter_model.safetensors) to merge" \
        in capsys.readouterr().err
    assert not (tmp_path / "ev" / "system1").exists()  # refused before any system ran


def test_cascade_adapter_answers_in_two_passes(tmp_path, monkeypatch):
    ad = adapter_dir(tmp_path)
    (ad / "train_config.json").write_text(json.dumps({"format": "cascade"}))  # as s2c train records it

    def script(req, i):
        t = req.messages[-1].content
        if "Rationale:" in t and "Therefore" in t:
            return "4" if "2 plus 2" in t else "0"
        if "Rationale:" in t:
            return "2 plus 2 makes four"
        return "Let's think. Therefore, the answer is 4."

    eng = FakeEngine(script)
    monkeypatch.setattr(engines, "make_engine", lambda *a, **k: eng)
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "g", "question": "2+2?", "answer": "4"}) + "\n")
    rc = main(["eval", "cascod.s2", "--data", str(tmp_path / "t.jsonl"), "--adapter", str(ad), "--no-system1",
               "--out", str(tmp_path / "ev"), "--no-cache"])
    assert rc == 0
    by = {s["name"]: s for s in json.loads((tmp_path / "ev" / "results.json").read_text())["systems"]}
    assert by["Distilled System 1"]["metrics"] == {"normalized_match": 1.0}
    second = [c for c in eng.calls if c.adapter and "Therefore" in c.messages[-1].content]
    assert second and "Rationale: 2 plus 2 makes four" in second[0].messages[-1].content


def test_an_engine_that_cannot_run_stops_eval_with_its_reason(tmp_path, monkeypatch, capsys):
    from s2c.runtime.engines.base import EngineError

    eng = FakeEngine(judge, raise_on=["impartial judge"], exception=EngineError)
    monkeypatch.setattr(engines, "make_engine", lambda *a, **k: eng)
    write_rows(tmp_path / "test.jsonl")
    rc = main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "ev"), "--no-cache"])
    assert rc == 1
    assert "error: engine: FakeEngine: scripted crash" in capsys.readouterr().err
