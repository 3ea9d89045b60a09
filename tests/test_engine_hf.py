"""HFEngine with the real embedded model (transformers generate, bf16 on CPU)."""
from __future__ import annotations

import pytest
from engine_fixtures import chat, make_lora_adapter

from s2c.runtime.engines import describe, make_engine
from s2c.runtime.engines.base import EngineError, EngineFailure, Request, Sampling

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    engine = make_engine("hf", None, roles={"judge": "smollm2-135m"}, batch_size=2)
    yield engine
    engine.close()


@pytest.fixture
def generate_calls(engine, monkeypatch):
    """Record (batch size, padded prompt length) of every model.generate call."""
    [loaded] = engine._models.values()
    sizes: list[tuple[int, int]] = []
    real = loaded.model.generate

    def spy(**kwargs):
        sizes.append(tuple(kwargs["input_ids"].shape))
        return real(**kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)
    return sizes


def test_roles_share_one_model(engine):
    assert len(engine._models) == 1
    assert engine.model_id("judge") == engine.model_id() == "smollm2-135m"
    assert describe(engine) == "hf: default=smollm2-135m, judge=smollm2-135m"


def test_chat_and_completion_with_exact_token_counts(engine):
    tok = next(iter(engine._models.values())).tokenizer
    [[c_chat], [c_prompt], [c_short]] = engine.generate([
        chat("What is 2+2?", max_tokens=32),
        Request(prompt="The capital of France is", sampling=Sampling(max_tokens=6)),
        chat("Say hello.", max_tokens=3),
    ])
    assert "4" in c_chat.text and c_chat.finish_reason == "stop"
    assert c_chat.prompt_tokens == 37  # template + system prompt, no padding counted
    # ended by EOS: the text's tokens plus the EOS token itself
    assert c_chat.completion_tokens == len(tok(c_chat.text, add_special_tokens=False)["input_ids"]) + 1
    assert c_prompt.prompt_tokens == 5 and c_prompt.finish_reason == "length" and c_prompt.completion_tokens == 6
    assert (c_short.completion_tokens, c_short.finish_reason) == (3, "length")


def test_left_padding_does_not_change_greedy_output(engine):
    short = chat("What is 2+2?", max_tokens=16)
    long = chat("Please explain, in one sentence, why the sky looks blue during the day.", max_tokens=16)
    [alone] = engine.generate([short])
    together = engine.generate([long, short])
    assert together[1] == alone


def test_batches_are_bounded_and_sorted_by_length(engine, generate_calls):
    words = (9, 1, 5, 3, 7)
    out = engine.generate([chat("word " * k + "?", max_tokens=2) for k in words])
    assert [batch for batch, _ in generate_calls] == [2, 2, 1]
    widths = [width for _, width in generate_calls]
    assert widths == sorted(widths) and len(set(widths)) == 3  # short prompts batched together
    by_words = [r[0].prompt_tokens for _, r in sorted(zip(words, out))]
    assert by_words == sorted(by_words) and len(set(by_words)) == 5  # results align with requests


def test_n_samples_with_temperature_and_seeds(engine):
    request = chat("Write a short poem about the sea.", n=3, temperature=0.8, max_tokens=16, seed=11)
    [samples] = engine.generate([request])
    assert len(samples) == 3 and all(c.completion_tokens > 0 and c.text for c in samples)
    assert len({c.text for c in samples}) > 1
    [again] = engine.generate([request])
    assert again == samples  # same seed, same companions: same samples


def test_stop_strings_cut_the_text_and_count_tokens_up_to_the_stop(engine):
    [[c]], [[p]] = (
        engine.generate([chat("List three colors, one per line.", max_tokens=40, stop=("\n",))]),
        engine.generate([Request(prompt="The capital of France is", sampling=Sampling(max_tokens=20, stop=(".",)))]),
    )
    assert c.text and "\n" not in c.text and c.finish_reason == "stop" and c.completion_tokens < 40
    assert p.text == " Paris" and p.completion_tokens == 2  # " Paris" "."


def test_greedy_is_deterministic_and_greedy_n_gives_copies(engine):
    request = chat("Name three animals.", max_tokens=16)
    [first], [second] = engine.generate([request]), engine.generate([request])
    assert first == second
    [copies] = engine.generate([chat("Name three animals.", max_tokens=16, n=2)])
    assert copies == first * 2


def test_a_too_long_prompt_fails_alone(engine):
    out = engine.generate([Request(prompt="word " * 9000, sampling=Sampling(max_tokens=2)), chat("Hi", max_tokens=2)])
    assert isinstance(out[0], EngineFailure) and "reads at most 8192" in out[0].reason
    assert out[1][0].completion_tokens == 2


def test_lora_adapter_changes_the_output_and_only_for_its_requests(engine, tmp_path):
    adapter = str(make_lora_adapter(tmp_path / "adapter"))
    base = chat("What is 2+2?", max_tokens=16)
    tuned = Request(messages=base.messages, sampling=base.sampling, adapter=adapter)
    [[b1], [t1]] = engine.generate([base, tuned])
    assert t1.text != b1.text and t1.completion_tokens > 0
    [[b2]] = engine.generate([base])  # the base model is back once the adapter is loaded
    assert b2 == b1


def test_missing_model_folder_is_an_engine_error(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(EngineError, match="no config.json"):
        make_engine("hf", str(tmp_path / "model"))
