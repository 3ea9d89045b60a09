"""Rate limits and the HTTP engines' shared machinery (s2c/runtime/engines/http.py), against the test
server (tests/helpers/llm_server.py) enforcing a provider's limits in its own process: a run held
under --tpm gets no 429, a 429 pauses every worker on the server, the provider's rate-limit headers
are obeyed, reasoning models get max_completion_tokens, and the API key stays out of everything."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.llm_server import Limits, serve

import s2c
from s2c.cli import main
from s2c.runtime.engines.base import Request, Sampling
from s2c.runtime.engines.http import HttpOptions, RateLimit, _reset_seconds
from s2c.runtime.engines.openai import OpenAIEngine

ONE_CALL = '''program ask "one call per row"
input question
reply = llm(max_tokens=16) """Answer briefly: {{ question }}"""
output reply
'''


def statuses(log: Path) -> list[int]:
    return [e["status"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] in ("done", "fault")]


def rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "question": f"what is {i} plus {i}"} for i in range(n)]


@pytest.mark.parametrize("tpm", [None, 3600])
def test_a_run_held_under_its_tpm_gets_no_429_and_one_without_it_gets_some(tmp_path, tpm):
    """The server allows 300 tokens in any 5 s (3,600 a minute): 40 requests of about 22 tokens
    each (prompt words + max_tokens) are 880. Unpaced, concurrency 8 meets 429s and retries them;
    paced at --tpm 3600 none is refused. Both runs end with every reply."""
    log = tmp_path / "server.log"
    with serve(tmp_path, delay=0.02, log=log, limits=Limits(tokens=300, window=5)) as url:
        engine = s2c.Engine("openai", base_url=url, http=HttpOptions(tpm=tpm, retries=12, backoff=0.2))
        with engine:
            out = s2c.run(s2c.Program.from_text(ONE_CALL), rows(40), engine, out=tmp_path / "run",
                          settings=s2c.RunSettings(cache=None, progress=False))
    got = statuses(log)
    assert out.summary.ok == 40 and got.count(200) == 40
    refused = got.count(429)
    spread = json.loads((tmp_path / "run" / "summary.json").read_text()).get("engine_spread")
    if tpm is None:
        assert refused > 0 and spread["servers"][url]["rate_limited"] == refused
        print(f"without --tpm: {refused} responses with status 429")
    else:
        assert refused == 0 and spread is None


def test_a_429_pauses_every_worker_on_the_server_for_its_retry_after(tmp_path):
    """Two requests per 2 s: the third of eight concurrent ones is refused with Retry-After, and
    no request starts on that server again until it has passed, so the 429s stay few."""
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log, limits=Limits(requests=2, window=2)) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(concurrency=8, retries=10, backoff=0.05))
        try:
            start = time.monotonic()
            out = engine.generate([Request(prompt=f"p{i}", sampling=Sampling(max_tokens=4)) for i in range(6)])
            took = time.monotonic() - start
        finally:
            engine.close()
    assert all(not hasattr(o, "reason") for o in out)
    got = statuses(log)
    assert got.count(200) == 6 and took >= 4  # 2 per 2 s: the last pair starts after 4 s
    # The first burst meets 4 refusals (all in flight at once), the next one 2. Had each worker
    # retried alone after its own backoff (0.05, 0.1, 0.2, ... s), the four would have drawn some
    # six 429s each before the window freed, and run out of retries.
    assert got.count(429) <= 8, got


def test_the_providers_rate_limit_headers_hold_requests_until_the_reset(tmp_path):
    """The server says how much is left (x-ratelimit-remaining-requests) and when it resets: with
    none left, the next request waits for the reset instead of drawing a 429."""
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log, limits=Limits(requests=3, window=1.5, headers=True)) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(concurrency=1, retries=0))
        try:
            out = engine.generate([Request(prompt=f"p{i}", sampling=Sampling(max_tokens=4)) for i in range(7)])
        finally:
            engine.close()
    assert all(not hasattr(o, "reason") for o in out) and statuses(log) == [200] * 7  # no retry was needed


def test_the_pace_and_the_headers_by_themselves():
    limit = RateLimit(rpm=600, tpm=None)  # 90 %: 9 a second
    assert limit.wait(0.0, 10) == 0
    limit.take(0.0, 10)
    assert limit.wait(0.0, 10) == pytest.approx(1 / 9)
    tokens = RateLimit(rpm=None, tpm=5400)  # 81 tokens a second
    tokens.take(0.0, 81)
    assert tokens.wait(0.0, 1) == pytest.approx(1.0)
    assert tokens.tokens(chars=300, max_out=16) == 100 + 16  # 3 characters a token until usage says otherwise
    tokens.settle(chars=300, estimated_prompt=100, prompt_tokens=150)  # the estimate missed 50
    assert tokens.chars_per_token == 2.0 and tokens.wait(0.0, 1) == pytest.approx(1.0 + 50 / 81)
    learned = RateLimit(None, None)
    learned.learn(10.0, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"})
    assert learned.wait(10.0, 1) == 60.0  # a reset is waited at most MAX_RETRY_AFTER_S
    learned = RateLimit(None, None)
    learned.learn(0.0, {"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": "2s"})
    assert learned.wait(0.0, 1) == 2.0
    assert [_reset_seconds(v) for v in ("1s", "6m0s", "20ms", "0.5", "1h2m3s")] == [1, 360, 0.02, 0.5, 3723]


def test_reasoning_models_get_max_completion_tokens_and_no_sampling_options(tmp_path):
    """A reasoning model refuses max_tokens, temperature, top_p, stop and seed with a 400: s2c
    sends max_completion_tokens alone; told it is not one, the 400 reads as one line naming the
    parameter."""
    with serve(tmp_path, reasoning_model="o4-mini") as url:
        sampled = Sampling(max_tokens=8, temperature=0.7, stop=("\n",), seed=1)
        engine = OpenAIEngine("o4-mini", base_url=url)
        try:
            [[reply]] = engine.generate([Request(prompt="hello there", sampling=sampled)])
            assert reply.text
        finally:
            engine.close()
        engine = OpenAIEngine("o4-mini", base_url=url, reasoning=False)
        try:
            [failure] = engine.generate([Request(prompt="hello there", sampling=sampled)])
        finally:
            engine.close()
    assert failure.reason == ("POST /completions: HTTP 400: the model refuses 'max_tokens': Unsupported parameter: "
                              "'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.")


def test_the_api_key_is_in_no_file_the_run_wrote_and_on_no_console(tmp_path, capsys, monkeypatch):
    """A run with a known key, whose server refuses some requests with a message that quotes it:
    the key is in no file under the run folder (run store, summary.json, the HTML report) or the
    cache, and not on the console."""
    key = "sk-test-" + "k3y" * 8
    monkeypatch.setenv("OPENAI_API_KEY", key)
    program = tmp_path / "ask.s2"
    program.write_text(ONE_CALL)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(6)))
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log, faults=[_fault("bad-key:always:3 plus")]) as url:
        code = main(["run", str(program), "--data", str(data), "--engine", "openai", "--base-url", url,
                     "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache.sqlite"), "--no-progress"])
    assert main(["report", str(tmp_path / "run")]) == 0  # the HTML report, with every trace
    console = capsys.readouterr()
    assert code == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "server.log"]
    assert {"run.sqlite", "cache.sqlite", "summary.json", "report.html"} <= {p.name for p in written}
    for p in written:
        assert key.encode() not in p.read_bytes(), p
    assert key not in console.out + console.err
    assert "Incorrect API key provided: [API key]" in console.err  # the refusal is reported, without the key


def _fault(spec: str):
    from helpers.llm_server import Fault

    return Fault.parse(spec)


def test_a_key_sent_over_plain_http_off_this_machine_gets_a_warning():
    from s2c.runtime.engines.http import _plain_http_off_host

    assert _plain_http_off_host("http://10.0.0.5:8000/v1") and _plain_http_off_host("http://api.example.com/v1")
    assert not _plain_http_off_host("http://127.0.0.1:8000/v1") and not _plain_http_off_host("http://localhost:1/v1")
    assert not _plain_http_off_host("https://api.openai.com/v1") and not _plain_http_off_host("http://[::1]:8000/v1")


def test_the_official_openai_sdk_reads_the_test_servers_replies_errors_and_limits(tmp_path):
    """The test server follows the OpenAI API's contract as the official SDK (openai 3.x) reads it:
    a chat completion with its usage, a completion, the models list, and a 429 with the error body
    and rate-limit headers the SDK turns into a RateLimitError."""
    openai = pytest.importorskip("openai")
    with serve(tmp_path, limits=Limits(requests=1, window=30, headers=True)) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)
        assert [m.id for m in client.models.list()] == ["echo-model"]
        chat = client.chat.completions.create(model="echo-model", max_tokens=8,
                                              messages=[{"role": "user", "content": "say hello"}])
        assert chat.choices[0].message.content and chat.choices[0].finish_reason in ("stop", "length")
        assert chat.usage.prompt_tokens == 2 and chat.usage.completion_tokens == len(chat.choices[0].message.content.split())
        with pytest.raises(openai.RateLimitError) as e:
            client.completions.create(model="echo-model", prompt="again", max_tokens=4)
        assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded"
        assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert float(e.value.response.headers["retry-after"]) > 0
