"""The anthropic engine against the test server's Anthropic Messages API (tests/helpers/llm_server.py,
its own process on 127.0.0.1), and the official anthropic SDK against the same server, proving the
server follows the API's contract: the system prompt apart, max_tokens always sent, n > 1 as n
requests, prompt caching on a fan-out's shared prefix (cache reads counted and priced), the
anthropic-ratelimit-* headers obeyed, errors in one line, and BSM compiled end to end."""
from __future__ import annotations

import json

import pytest
from helpers.llm_server import MODEL, Limits, reply_text, serve

import s2c
from s2c.calls import Message
from s2c.runtime.engines.anthropic import AnthropicEngine
from s2c.runtime.engines.base import EngineFailure, Request, Sampling
from s2c.runtime.engines.http import HttpOptions


def posts(log) -> list[dict]:
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] in ("done", "fault")]


def test_the_official_anthropic_sdk_reads_the_test_servers_messages_models_counts_and_limits(tmp_path):
    anthropic = pytest.importorskip("anthropic")
    with serve(tmp_path, limits=Limits(requests=3, window=30, headers=True)) as url:
        client = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key="sk-ant-test", max_retries=0)
        assert [m.id for m in client.models.list()] == [MODEL]
        with pytest.raises(anthropic.BadRequestError, match="max_tokens: Field required"):
            client.post("/v1/messages", body={"model": MODEL, "messages": []}, cast_to=object)
        assert client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "two words"}]).input_tokens == 2
        msg = client.messages.create(model=MODEL, max_tokens=8, system="be brief",
                                     messages=[{"role": "user", "content": "say hello"}])
        assert msg.content[0].type == "text" and msg.content[0].text == reply_text("be brief\nsay hello")
        assert msg.stop_reason == "end_turn" and msg.usage.input_tokens == 4 and msg.usage.output_tokens == 7
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "again"}])
        with pytest.raises(anthropic.RateLimitError) as e:
            client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "once more"}])
        assert e.value.status_code == 429 and e.value.body["error"]["type"] == "rate_limit_error"
        assert e.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_requests_map_to_the_messages_api_and_n_samples_are_n_requests(tmp_path):
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log) as url:
        engine = AnthropicEngine(base_url=url, api_key="sk-ant-secret")
        try:
            assert engine.model_id() == f"{MODEL}@{url.removesuffix('/v1')}"
            chat = Request(messages=(Message("system", "be brief"), Message("user", "say hello")),
                           sampling=Sampling(max_tokens=16))
            sampled = Request(prompt="a poem", sampling=Sampling(max_tokens=16, temperature=0.8, n=3))
            [one], three = engine.generate([chat, sampled])
        finally:
            engine.close()
    assert one.text == reply_text("be brief\nsay hello") and one.prompt_tokens == 4
    assert len(three) == 3 and len(posts(log)) == 1 + 3  # the API samples one reply per request


def test_a_fan_outs_shared_prefix_is_cached_and_its_reads_cost_the_cached_price(tmp_path):
    """Five calls that share a long prefix (as BSM's solve calls share the question and both
    responses): the first is sent whole, the second writes the prefix to the cache, the rest read
    it; usage says so, and the cost counts the reads at cached_input."""
    shared = "Evaluate the two responses below. " + "lorem ipsum dolor sit amet " * 40
    requests = [Request(messages=(Message("user", shared + f"Criterion {i}: be exact."),),
                        sampling=Sampling(max_tokens=8)) for i in range(5)]
    with serve(tmp_path) as url:
        engine = AnthropicEngine(base_url=url, cache_min_chars=500, http=HttpOptions(concurrency=1))
        try:
            out = engine.generate(requests)
        finally:
            engine.close()
    cached = [o[0].cached_tokens for o in out]
    prefix_words = len(shared[:-1].split())  # the shared prefix ends at "Criterion": its words
    assert cached[:2] == [0, 0] and all(c >= prefix_words - 1 for c in cached[2:])
    assert all(o[0].prompt_tokens == len((shared + "Criterion 0: be exact.").split()) for o in out)
    price = s2c.Prices.parse({MODEL: {"input": 3.0, "cached_input": 0.3, "output": 15.0}}).for_model(MODEL)
    full, read = (price.cost(o[0].prompt_tokens, o[0].cached_tokens, 0) for o in (out[0], out[4]))
    assert read < full / 3


def test_the_anthropic_ratelimit_headers_hold_requests_and_errors_read_in_one_line(tmp_path):
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log, limits=Limits(requests=2, window=1.5, headers=True)) as url:
        engine = AnthropicEngine(base_url=url, http=HttpOptions(concurrency=1, retries=0))
        try:
            out = engine.generate([Request(prompt=f"p{i}", sampling=Sampling(max_tokens=4)) for i in range(5)])
            engine._names["judge"] = "claude-nope"  # a role on a model the API does not serve
            [refused] = engine.generate([Request(prompt="x", sampling=Sampling(max_tokens=4), role="judge")])
        finally:
            engine.close()
    assert all(not isinstance(o, EngineFailure) for o in out)
    assert [e["status"] for e in posts(log)][:5] == [200] * 5  # no 429: the headers said when to wait
    assert refused.reason == "POST /v1/messages: HTTP 404: not_found_error: model: claude-nope"


def test_an_unknown_model_and_a_refused_key_are_clear_errors_before_any_call(tmp_path):
    from s2c.runtime.engines.base import EngineError

    with serve(tmp_path) as url:
        with pytest.raises(EngineError, match=f"serves {MODEL}; not claude-nope: pass one of those as --model"):
            AnthropicEngine("claude-nope", base_url=url)


def test_bsm_compiles_on_the_anthropic_engine_with_costs(tmp_path, capsys, monkeypatch):
    from s2c.cli import main

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + "x" * 20)
    with serve(tmp_path) as url:
        code = main(["compile", "bsm.s2", "--data", "oasst2:tests/fixtures/data/oasst2_sample.jsonl", "--limit", "3",
                     "--engine", "anthropic", "--base-url", url, "--out", str(tmp_path / "ds"), "--no-cache",
                     "--no-progress", "--price", f"{MODEL}=input:3,cached_input:0.3,output:15"])
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads((tmp_path / "ds" / "run" / "summary.json").read_text())
    assert summary["engine"] == "anthropic" and summary["examples"] == 6 and summary["cost"]["paid"] > 0
    assert "sk-ant-" not in err and "anthropic: default=echo-model" in err
