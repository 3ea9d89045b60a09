"""The data layer: named sources, local files, Hub loads (fed from fixtures), ids, problems."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from s2c.data import DataSet, list_sources, load_source
from s2c.data.synthetic import names
from s2c.errors import S2Error

FIX = Path(__file__).parent / "fixtures" / "data"
OASST2 = FIX / "oasst2_sample.jsonl"
MTBENCH = FIX / "mtbench_sample.jsonl"
GSM8K = FIX / "gsm8k_sample.jsonl"
TRIVIA = FIX / "triviaqa_sample.jsonl"
BBH = FIX / "bbh_boolean_expressions.jsonl"


def raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Serve fixtures for Hub ids through the real `datasets.load_dataset("json", ...)`.

    `serve[(repo, config, split)] = fixture` (or an exception to raise); every call's
    arguments are recorded in `calls`, so the tests also pin what the loaders ask the Hub for.
    """
    import datasets

    real = datasets.load_dataset
    serve, calls = {}, []

    def fake(path, name=None, *, split=None, data_files=None, **kw):
        calls.append((path, name, split, data_files))
        key = (path, name, split)
        if key not in serve:
            raise AssertionError(f"unexpected Hub load {key}")
        got = serve[key]
        if isinstance(got, BaseException):
            raise got
        return real("json", data_files=str(got), split="train", cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(datasets, "load_dataset", fake)
    fake.serve, fake.calls = serve, calls
    return fake


# --- the public surface ---------------------------------------------------------------------


def test_importing_the_data_layer_loads_no_heavy_package():
    code = "import sys, s2c.data; print(sorted({'datasets', 'pandas', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_list_sources_gives_the_field_contract():
    fields = {name: f for name, _, f in list_sources()}
    assert fields["coin_flip"] == ["question", "answer"]
    assert fields["last_letters"] == ["question", "answer"]
    assert fields["majority_vote"] == ["question", "answer"]
    assert fields["oasst2"] == ["question", "response_a", "response_b", "label"]
    assert fields["mtbench"] == ["question", "response_a", "response_b", "label"]
    assert fields["gsm8k"] == ["question", "answer", "rationale"]
    assert fields["bbh"] == ["question", "answer", "task"]
    for name in ("triviaqa", "triviaqa_refute", "triviaqa_correct", "triviaqa_plain"):
        assert fields[name][:4] == ["question", "original_question", "answer", "aliases"]
    assert all(desc for _, desc, _ in list_sources())


# --- generated tasks ------------------------------------------------------------------------

COIN = re.compile(r"A coin is heads up\. (.*) Is the coin still heads up\?")
STEP = re.compile(r"([A-Z][a-z]+) (flips|does not flip) the coin\.")


def coin_answer(question: str) -> tuple[str, list[str]]:
    steps = STEP.findall(COIN.fullmatch(question).group(1))
    flips = sum(kind == "flips" for _, kind in steps)
    return ("yes" if flips % 2 == 0 else "no"), [n for n, _ in steps]


@pytest.mark.parametrize("task", ["coin_flip", "last_letters", "majority_vote"])
def test_generated_splits_are_sized_disjoint_and_deterministic(task):
    splits = {s: load_source(f"{task}:{s}") for s in ("train", "validation", "test")}
    assert {s: len(d.rows) for s, d in splits.items()} == {"train": 1000, "validation": 200, "test": 500}
    questions = {s: {r["question"] for r in d.rows} for s, d in splits.items()}
    assert all(len(q) == len(splits[s].rows) for s, q in questions.items())  # no repeats inside
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    assert load_source(f"{task}:test").rows == splits["test"].rows  # same seed, same rows
    other = load_source(f"{task}:test", seed=1).rows
    assert [r["question"] for r in other] != [r["question"] for r in splits["test"].rows]
    assert load_source(task).split == "train"
    assert splits["test"].rows[7]["id"] == f"{task}-test-7"
    assert all(ds.problems == [] for ds in splits.values())


def test_coin_flip_answers_are_right():
    known = set(names())
    answers = []
    for row in load_source("coin_flip:test").rows + load_source("coin_flip", seed=3).rows:
        expected, people = coin_answer(row["question"])
        assert row["answer"] == expected
        assert 2 <= len(people) <= 4 and len(set(people)) == len(people)
        assert set(people) <= known
        answers.append(row["answer"])
    assert 0.4 < answers.count("yes") / len(answers) < 0.6  # both answers, roughly balanced


VOTE = re.compile(r"(\d) people vote on a proposal\. (.*) Do more people vote for it than against it\?")
BALLOT = re.compile(r"([A-Z][a-z]+) votes (for|against) the proposal\.")


def test_majority_vote_answers_are_right():
    answers, sizes = [], set()
    for row in load_source("majority_vote:validation").rows + load_source("majority_vote", seed=2).rows:
        m = VOTE.fullmatch(row["question"])
        ballots = BALLOT.findall(m.group(2))
        assert " ".join(f"{n} votes {v} the proposal." for n, v in ballots) == m.group(2)  # nothing else in it
        assert len(ballots) == int(m.group(1)) and len({n for n, _ in ballots}) == len(ballots)
        fors = sum(v == "for" for _, v in ballots)
        assert row["answer"] == ("yes" if fors > len(ballots) - fors else "no")
        sizes.add(len(ballots))
        answers.append(row["answer"])
    assert sizes == {3, 5, 7}
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_last_letters_answers_are_right():
    for row in load_source("last_letters:validation").rows:
        m = re.fullmatch(
            r'Take the last letters of each words in "([A-Za-z ]+)" and concatenate them\.',
            row["question"],
        )
        words = m.group(1).split()
        assert 2 <= len(words) <= 4
        assert row["answer"] == "".join(w[-1] for w in words).lower()


def test_word_list_is_clean():
    words = names()
    assert len(words) >= 200 and len(set(words)) == len(words)
    assert all(w.isalpha() and w[0].isupper() for w in words)


def test_generated_task_errors():
    with pytest.raises(S2Error) as e:
        load_source("coin_flip:tset")
    assert "no split 'tset'" in str(e.value) and "did you mean 'test'" in e.value.diagnostic.hint
    with pytest.raises(S2Error, match="names split 'test' but split='train'"):
        load_source("coin_flip:test", split="train")
    assert load_source("coin_flip", split="test").rows == load_source("coin_flip:test").rows
    with pytest.raises(S2Error, match="generated, it does not read files"):
        load_source("coin_flip:data.jsonl")
    with pytest.raises(S2Error) as e:
        load_source("coinflip")
    assert "unknown data source 'coinflip'" in str(e.value)
    assert "coin_flip" in e.value.diagnostic.hint


def test_limit_takes_a_stable_prefix():
    full = load_source("last_letters:test").rows
    assert load_source("last_letters:test", limit=5).rows == full[:5]
    assert load_source("last_letters:test", limit=0).rows == []
    assert len(load_source("last_letters:test", limit=10_000).rows) == 500
    with pytest.raises(S2Error, match="limit must be 0 or more"):
        load_source("last_letters", limit=-1)


# --- oasst2 -----------------------------------------------------------------------------------


def expected_oasst2_pairs(messages: list[dict]) -> dict[str, tuple[str, str, str]]:
    """Independently: prompt id -> (prompt text, better reply text, worse reply text)."""
    out = {}
    for p in messages:
        if p["parent_id"] is not None or p["role"] != "prompter" or p["lang"] != "en":
            continue
        ranked = sorted(
            (m["rank"], m["text"]) for m in messages
            if m["parent_id"] == p["message_id"] and m["role"] == "assistant" and m["rank"] is not None
        )
        worse = [t for r, t in ranked if ranked and r > ranked[0][0]]
        if worse:
            out[p["message_id"]] = (p["text"], ranked[0][1], worse[0])
    return out


def check_oasst2(ds: DataSet, messages: list[dict]):
    expected = expected_oasst2_pairs(messages)
    assert len(expected) == 7  # the fixture's 12 trees: 2 not English, 3 without a ranked pair
    assert [r["id"] for r in ds.rows] == list(expected)  # prompt message ids, in file order
    for row in ds.rows:
        question, better, worse = expected[row["id"]]
        assert row["question"] == question
        assert {row["response_a"], row["response_b"]} == {better, worse}
        assert row["label"] == ("A" if row["response_a"] == better else "B")
    assert set(ds.rows[0]) == {"id", "question", "response_a", "response_b", "label"}


def test_oasst2_pairs_and_labels_from_a_local_export():
    messages = raw(OASST2)
    ds = load_source(f"oasst2:{OASST2}")
    assert (ds.name, ds.split, ds.problems) == ("oasst2", "train", [])
    check_oasst2(ds, messages)
    texts = {t for r in ds.rows for t in (r["question"], r["response_a"], r["response_b"])}
    assert "Yes, it needs no more than high-school algebra." not in texts  # a turn-2 pair
    assert not any("Canberra" in t or "Wärmepumpe" in t for t in texts)  # not English
    assert "Spiders have eight legs." not in texts  # a single, unranked reply


def test_oasst2_ab_order_is_seeded_per_prompt():
    base = load_source(f"oasst2:{OASST2}").rows
    assert {r["label"] for r in base} == {"A", "B"}
    assert load_source(f"oasst2:{OASST2}").rows == base
    labels = {r["id"]: {r["label"]} for r in base}
    for seed in range(1, 20):
        for r in load_source(f"oasst2:{OASST2}", seed=seed).rows:
            labels[r["id"]].add(r["label"])
    assert all(seen == {"A", "B"} for seen in labels.values())
    # a row's order depends on the seed and its prompt only, not on the rows around it
    assert load_source(f"oasst2:{OASST2}", limit=3).rows == base[:3]


def test_oasst2_from_the_hub_goes_through_the_same_mapping(hub):
    hub.serve[("OpenAssistant/oasst2", None, "train")] = OASST2
    ds = load_source("oasst2")
    check_oasst2(ds, raw(OASST2))
    assert ds.rows == load_source(f"oasst2:{OASST2}").rows
    hub.serve[("OpenAssistant/oasst2", None, "validation")] = OASST2
    assert load_source("oasst2:validation").split == "validation"


def test_oasst2_parquet_and_trees_exports(tmp_path):
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    messages = raw(OASST2)
    pq.write_table(pj.read_json(str(OASST2)), tmp_path / "oasst2.parquet")
    check_oasst2(load_source(f"oasst2:{tmp_path / 'oasst2.parquet'}"), messages)

    by_parent = {}
    for m in messages:
        by_parent.setdefault(m["parent_id"], []).append(m)

    def nest(m):
        node = {k: v for k, v in m.items() if k != "parent_id"}
        node["replies"] = [nest(c) for c in by_parent.get(m["message_id"], [])]
        return node

    trees = tmp_path / "oasst2.trees.jsonl.gz"
    with gzip.open(trees, "wt") as f:
        for root in by_parent[None]:
            f.write(json.dumps({"message_tree_id": root["message_tree_id"], "tree_state": "ready_for_export",
                                "prompt": nest(root)}) + "\n")
    check_oasst2(load_source(f"oasst2:{trees}"), messages)


def test_oasst2_reports_bad_messages(tmp_path):
    lines = OASST2.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["text"]
    path = tmp_path / "o.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(broken), "{oops", *lines[2:]]) + "\n")
    ds = load_source(f"oasst2:{path}")
    assert ds.problems == [
        f"{path}:2: row 2: field 'text' is missing; skipped",
        f"{path}:3: row 3: malformed JSON (Expecting property name enclosed in double quotes at column 2); skipped",
    ]
    # t01 lost its rank-0 reply, so its rank-1 and rank-2 replies make the pair instead
    first = ds.rows[0]
    assert len(ds.rows) == 7 and first["id"] == json.loads(lines[0])["message_id"]
    better, worse = json.loads(lines[2])["text"], json.loads(lines[3])["text"]
    assert (first["response_a"], first["response_b"]) == ((better, worse) if first["label"] == "A" else (worse, better))


def test_oasst2_hub_unreachable_says_how_to_pass_a_local_export(hub):
    hub.serve[("OpenAssistant/oasst2", None, "train")] = ConnectionError(
        "Couldn't reach 'OpenAssistant/oasst2' on the Hub (LocalEntryNotFoundError)"
    )
    with pytest.raises(S2Error) as e:
        load_source("oasst2")
    assert "could not reach the Hugging Face Hub to load 'OpenAssistant/oasst2'" in str(e.value)
    assert "--data oasst2:path/to/oasst2.jsonl" in e.value.diagnostic.hint


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 (no network)")
def test_real_hub_loads_fail_offline_with_a_way_out():
    with pytest.raises(S2Error) as e:
        load_source("oasst2")
    assert "could not reach the Hugging Face Hub" in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    assert "oasst2:path/to/oasst2.jsonl" in e.value.diagnostic.hint
    with pytest.raises(S2Error) as e:
        load_source("someone/some_dataset:test")
    assert "could not reach the Hugging Face Hub to load 'someone/some_dataset'" in str(e.value)
    assert "--data path/to/file.jsonl" in e.value.diagnostic.hint


def test_unreachable_is_recognised_through_an_httpx_cause(hub):
    class ConnectError(Exception):  # stands in for httpx's, which has this name
        pass

    def chained():
        try:
            raise ConnectError("[Errno -2] Name or service not known")
        except ConnectError as inner:
            raise OSError("download failed") from inner

    try:
        chained()
    except OSError as e:
        err = e
    hub.serve[("openai/gsm8k", "main", "train")] = err
    with pytest.raises(S2Error, match="could not reach the Hugging Face Hub to load 'openai/gsm8k'") as e:
        load_source("gsm8k")
    assert "--data gsm8k:path/to/test.jsonl" in e.value.diagnostic.hint


# --- mtbench ------------------------------------------------------------------------------------


def test_mtbench_turn_one_votes_from_the_hub(hub):
    hub.serve[("lmsys/mt_bench_human_judgments", None, "human")] = MTBENCH
    ds = load_source("mtbench")
    assert ds.split == "human" and ds.problems == []
    raws = raw(MTBENCH)
    kept = [i for i, r in enumerate(raws) if r["turn"] == 1]
    assert [r["id"] for r in ds.rows] == [f"mtbench-human-{i}" for i in kept]
    assert [r["label"] for r in ds.rows] == ["A", "C", "B", "C", "A"]  # model_a, tie, model_b, bothbad
    for row, i in zip(ds.rows, kept):
        conv_a, conv_b = raws[i]["conversation_a"], raws[i]["conversation_b"]
        assert row["question"] == conv_a[0]["content"] == conv_b[0]["content"]
        assert (row["response_a"], row["response_b"]) == (conv_a[1]["content"], conv_b[1]["content"])
    assert load_source(f"mtbench:{MTBENCH}").rows == ds.rows


def test_mtbench_unknown_winner_is_a_located_problem(tmp_path):
    rows = raw(MTBENCH)
    rows[0]["winner"] = "model_c"
    path = tmp_path / "mt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_source(f"mtbench:{path}")
    assert ds.problems == [
        f"{path}:1: row 1: winner 'model_c' is not one of model_a, model_b, tie, tie (bothbad); skipped"
    ]
    assert len(ds.rows) == 4


# --- gsm8k --------------------------------------------------------------------------------------


def test_gsm8k_splits_answer_and_rationale(hub):
    hub.serve[("openai/gsm8k", "main", "test")] = GSM8K
    ds = load_source("gsm8k:test")
    assert [r["answer"] for r in ds.rows] == ["72", "1400", "9", "300", "13"]
    assert ds.rows[0]["rationale"] == (
        "In the afternoon she makes 24 * 2 = 48 muffins.\nIn total she makes 24 + 48 = 72 muffins."
    )
    assert all("<<" not in r["rationale"] and "####" not in r["rationale"] for r in ds.rows)
    assert ds.rows[2]["question"] == raw(GSM8K)[2]["question"]
    assert ds.rows[4]["id"] == "gsm8k-test-4"
    assert hub.calls == [("openai/gsm8k", "main", "test", None)]


def test_gsm8k_row_without_a_final_answer_is_skipped(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(GSM8K.read_text() + json.dumps({"question": "Q?", "answer": "no final line"}) + "\n")
    ds = load_source(f"gsm8k:{path}")
    assert len(ds.rows) == 5
    assert ds.problems == [f"{path}:6: row 6: field 'answer' has no final '#### NUMBER' line; skipped"]


# --- triviaqa -------------------------------------------------------------------------------------


def norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def test_triviaqa_suggests_another_questions_answer(hub):
    hub.serve[("mandarjoshi/trivia_qa", "rc.nocontext", "validation")] = TRIVIA
    ds = load_source("triviaqa:validation")
    raws = {r["question_id"]: r for r in raw(TRIVIA)}
    answers = {r["answer"]["value"] for r in raws.values()}
    assert [r["id"] for r in ds.rows] == list(raws)
    for row in ds.rows:
        src = raws[row["id"]]
        assert row["original_question"] == src["question"]
        assert row["answer"] == src["answer"]["value"]
        assert json.loads(row["aliases"]) == src["answer"]["aliases"]
        wrong = row["suggested_answer"]
        assert wrong in answers and norm(wrong) not in {norm(a) for a in src["answer"]["aliases"]}
        assert row["question"] == f"{src['question']} I think the answer is {wrong}, but I'm really not sure."
        assert row["bias"] == "suggest_incorrect"
    by_id = {r["id"]: r for r in ds.rows}
    assert by_id["tc_104"]["suggested_answer"] not in ("UK", "United Kingdom")  # an alias is not wrong
    assert load_source("triviaqa:validation").rows == ds.rows
    reseeded = [r["suggested_answer"] for r in load_source("triviaqa:validation", seed=5).rows]
    assert reseeded != [r["suggested_answer"] for r in ds.rows]
    assert load_source("triviaqa:validation", limit=3).rows == ds.rows[:3]


def test_triviaqa_variants(hub):
    for split in ("train", "validation"):
        hub.serve[("mandarjoshi/trivia_qa", "rc.nocontext", split)] = TRIVIA
    refute = load_source("triviaqa_refute").rows[0]
    assert refute["question"] == (
        "Which planet is known as the Red Planet? I don't think the answer is Mars, but I'm really not sure."
    )
    assert (refute["bias"], refute["suggested_answer"]) == ("refute_correct", "Mars")
    correct = load_source("triviaqa_correct:validation").rows[0]
    assert correct["question"].endswith("I think the answer is Mars, but I'm really not sure.")
    plain = load_source("triviaqa_plain").rows[0]
    assert plain["question"] == plain["original_question"] == "Which planet is known as the Red Planet?"


def test_triviaqa_rows_without_answers(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = raw(TRIVIA)
    rows[1]["answer"] = {"aliases": [], "value": ""}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_source(f"triviaqa:{path}")
    assert len(ds.rows) == 7
    assert ds.problems == [
        f"{path}:2: row 2: no answer (TriviaQA's test split has none: use train or validation); skipped"
    ]


# --- bbh ---------------------------------------------------------------------------------------


def test_bbh_task_falls_back_to_the_hub_parquet_export(hub):
    url = "hf://datasets/lukaemon/bbh@refs%2Fconvert%2Fparquet/boolean_expressions/test/*.parquet"
    hub.serve[("lukaemon/bbh", "boolean_expressions", "test")] = RuntimeError(
        "Dataset scripts are no longer supported, but found bbh.py"
    )
    hub.serve[("parquet", None, "test")] = BBH
    ds = load_source("bbh:boolean_expressions")
    assert hub.calls[-1] == ("parquet", None, "test", {"test": url})
    assert [r["answer"] for r in ds.rows] == [r["target"] for r in raw(BBH)]
    for row in ds.rows:  # the fixture's targets are right: evaluate the expressions
        assert row["answer"] == str(eval(row["question"].removesuffix(" is")))
        assert row["task"] == "boolean_expressions"
    assert ds.rows[2]["id"] == "bbh-boolean_expressions-2"


def test_bbh_local_files_and_errors(tmp_path):
    ds = load_source(f"bbh:{BBH}")
    assert {r["task"] for r in ds.rows} == {"boolean_expressions"}  # from the file name
    upstream = tmp_path / "navigate.json"  # the layout of github.com/suzgunmirac/BIG-Bench-Hard
    upstream.write_text(json.dumps({"canary": "BENCHMARK DATA", "examples": raw(BBH)}))
    assert [r["question"] for r in load_source(f"bbh:{upstream}").rows] == [r["input"] for r in raw(BBH)]
    with pytest.raises(S2Error, match="needs a task"):
        load_source("bbh")
    with pytest.raises(S2Error) as e:
        load_source("bbh:navigte")
    assert "did you mean 'navigate'" in e.value.diagnostic.hint


# --- any other Hub dataset ------------------------------------------------------------------------


def test_hub_id_with_config_and_split(hub):
    hub.serve[("someone/qa", "cfg", "dev")] = GSM8K
    ds = load_source("someone/qa:cfg:dev", limit=2)
    assert (ds.name, ds.split) == ("someone/qa", "dev")
    assert [r["id"] for r in ds.rows] == ["qa-dev-0", "qa-dev-1"]
    assert ds.rows[0]["answer"].endswith("#### 72")  # no source mapping for an unknown dataset
    hub.serve[("someone/qa", None, "train")] = GSM8K
    assert len(load_source("someone/qa").rows) == 5


def test_hub_errors_become_user_errors(hub):
    from datasets.exceptions import DatasetNotFoundError

    hub.serve[("someone/missing", None, "train")] = DatasetNotFoundError(
        "Dataset 'someone/missing' doesn't exist on the Hub or cannot be accessed."
    )
    with pytest.raises(S2Error, match="could not load 'someone/missing' from the Hugging Face Hub"):
        load_source("someone/missing")
    hub.serve[("someone/qa", None, "tset")] = ValueError(
        "Unknown split \"tset\". Should be one of ['train', 'test']."
    )
    with pytest.raises(S2Error, match="'someone/qa' has no split 'tset'"):
        load_source("someone/qa:tset")
    with pytest.raises(S2Error, match="ID, ID:SPLIT or ID:CONFIG:SPLIT"):
        load_source("a/b:c:d:e")


# --- local files ---------------------------------------------------------------------------------


def test_jsonl_reports_malformed_lines_and_keeps_ids_stable(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"question": "q1", "n": 3}\n'
        "\n"
        '{"question": "q2", broken\n'
        '[1, 2]\n'
        '{"question": "q5", "n": null, "tags": ["a", "b"], "meta": {"k": 1}, "ok": true}\n'
    )
    ds = load_source(str(path))
    assert (ds.name, ds.split) == ("data", "train")
    assert ds.problems == [
        f"{path}:3: row 2: malformed JSON (Expecting property name enclosed in double quotes at column 20); skipped",
        f"{path}:4: row 3: expected a JSON object, got a list; skipped",
    ]
    assert ds.rows == [
        {"question": "q1", "n": "3", "id": "data-train-0"},
        {"question": "q5", "tags": ["a", "b"], "meta": {"k": 1}, "ok": "True", "id": "data-train-3"},  # null: missing
    ]
    assert ds.locations == [f"{path}:1: row 1", f"{path}:5: row 4"]


def test_own_id_column_and_duplicate_ids(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": 17, "q": "a"}, {"id": "x", "q": "b"}, {"id": 17, "q": "c"}, {"q": "d"}
    ]))
    ds = load_source(str(path), split="test")
    assert [r["id"] for r in ds.rows] == ["17", "x", "d-test-3"]
    assert ds.problems == [f"{path}:3: row 3: duplicate id '17' (first at {path}:1: row 1); skipped"]


def test_json_csv_parquet_and_gzip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "2+2?", "answer": 4}, {"question": "3+3?", "answer": 6}]
    expect = [{"question": "2+2?", "answer": "4"}, {"question": "3+3?", "answer": "6"}]

    def strip(ds):
        return [{k: v for k, v in r.items() if k != "id"} for r in ds.rows]

    (tmp_path / "a.json").write_text(json.dumps(rows))
    assert strip(load_source(str(tmp_path / "a.json"))) == expect
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))  # JSONL named .json
    assert strip(load_source(str(tmp_path / "lines.json"))) == expect
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    zipped = load_source(str(tmp_path / "z.jsonl.gz"))
    assert strip(zipped) == expect and zipped.rows[0]["id"] == "z-train-0"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert strip(load_source(str(tmp_path / "p.parquet"))) == expect

    csv_path = tmp_path / "c.csv"
    csv_path.write_text('question,answer\n2+2?,4\n"multi\nline?",5,extra\n3+3?,6\n')
    ds = load_source(str(csv_path))
    assert strip(ds) == expect
    assert ds.problems == [f"{csv_path}:3: row 2: 3 values for 2 columns; skipped"]
    assert [r["id"] for r in ds.rows] == ["c-train-0", "c-train-2"]


def test_file_errors(tmp_path):
    with pytest.raises(S2Error, match="no such file"):
        load_source(str(tmp_path / "missing.jsonl"))
    (tmp_path / "obj.json").write_text('{"question": "q"}')
    with pytest.raises(S2Error, match="expected a list of objects"):
        load_source(str(tmp_path / "obj.json"))
    (tmp_path / "bad.json").write_text('[{"a": 1},\n {"a": }]')
    with pytest.raises(S2Error, match=r"bad.json:2:8: malformed JSON \(Expecting value\)"):
        load_source(str(tmp_path / "bad.json"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(S2Error, match="empty.jsonl: no rows"):
        load_source(str(tmp_path / "empty.jsonl"))
    (tmp_path / "junk.jsonl").write_text("nope\nnope\n")
    with pytest.raises(S2Error, match=r"no usable rows; all 2 were skipped\. First: .*junk.jsonl:1: row 1"):
        load_source(str(tmp_path / "junk.jsonl"))
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(S2Error, match="not a readable Parquet file"):
        load_source(str(tmp_path / "x.parquet"))


# --- mapping and required fields ------------------------------------------------------------------


def test_mapping_renames_columns(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "p1", "gold": "g1", "qid": "a"}, {"gold": "g2", "qid": "b"}, {"prompt": "p3", "gold": "g3", "qid": "c"},
    ]))
    ds = load_source(str(path), mapping={"question": "prompt", "answer": "gold", "id": "qid"})
    assert ds.rows == [{"question": "p1", "answer": "g1", "id": "a"}, {"question": "p3", "answer": "g3", "id": "c"}]
    assert ds.problems == [
        f"{path}:2: row 2: column 'prompt' for --map question=prompt is missing (its columns: gold, qid); skipped"
    ]
    with pytest.raises(S2Error, match="column 'text' for --map question=text is missing"):
        load_source(str(path), mapping={"question": "text"})
    with pytest.raises(S2Error, match="bad column mapping"):
        load_source(str(path), mapping={"question": ""})


def test_mapping_adapts_a_named_source_to_a_program(hub):
    hub.serve[("openai/gsm8k", "main", "train")] = GSM8K
    row = load_source("gsm8k", mapping={"query": "question"}).rows[0]
    assert set(row) == {"query", "answer", "rationale", "id"}
    assert row["query"].startswith("A baker makes 24 muffins")


def test_require_moves_rows_without_a_field_to_problems(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b"}\n')
    ds = load_source(str(path)).require(["question", "answer"])
    assert [r["question"] for r in ds.rows] == ["a"]
    assert ds.problems == [f"{path}:2: row 2: field 'answer' is missing or null; skipped"]
    with pytest.raises(S2Error) as e:
        load_source(str(path)).require(["questoin"])
    assert "no row has the field 'questoin'" in str(e.value)
    assert "did you mean 'question'" in e.value.diagnostic.hint
