"""OpenAIEngine: retries, failures and concurrency against a scripted local HTTP server; streaming
(submit/collect) against the stdlib test server (tests/helpers/llm_server.py) run as a process;
then the real thing against a vLLM OpenAI-compatible server running the embedded model on
loopback."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import time
from pathlib import Path

import httpx
import pytest
from engine_fixtures import (
    ScriptedServer,
    chat,
    chat_response,
    embedded_model_path,
    free_port,
    make_lora_adapter,
    run_constrained,
    vllm_server,
)
from helpers.llm_server import Fault, reply_text, serve

import s2c.runtime.engines.openai as openai_module
from s2c.runtime.engines import describe, make_engine
from s2c.runtime.engines.base import (
    EngineError,
    EngineFailure,
    Finished,
    Message,
    Request,
    Sampling,
)
from s2c.runtime.engines.http import HttpOptions
from s2c.runtime.engines.openai import OpenAIEngine, normalize_base_url


def ok(path, body, attempt):
    return 200, chat_response([f"reply to {body['messages'][-1]['content']}"] * body["n"]), {}


def engine_for(server: ScriptedServer, model=None, roles=None, **http) -> OpenAIEngine:
    """An engine on `server` with a quick backoff; `http`: HttpOptions' fields."""
    return OpenAIEngine(model, roles=roles, base_url=server.url, http=HttpOptions(**{"backoff": 0.01, **http}))


def test_base_url_gets_v1_only_when_it_has_no_path():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://h/v1/") == "http://h/v1"
    assert normalize_base_url("https://h/openai/v1beta") == "https://h/openai/v1beta"


def test_unreachable_server_is_an_engine_error_at_construction():
    with pytest.raises(EngineError, match="cannot reach an OpenAI-compatible server"):
        OpenAIEngine("m", base_url=f"http://127.0.0.1:{free_port()}")


def test_model_defaults_to_the_first_served_and_must_be_served():
    with ScriptedServer(ok, models=("alpha", "beta")) as server:
        engine = engine_for(server)
        assert engine.model_id() == f"alpha@{server.url}"
        engine = engine_for(server, model="beta", roles={"judge": "alpha"})
        assert describe(engine) == "openai: default=beta, judge=alpha"
        with pytest.raises(EngineError, match="serves alpha, beta; not gamma"):
            engine_for(server, model="gamma")


def test_base_url_and_key_come_from_the_environment(monkeypatch):
    with ScriptedServer(ok) as server:
        monkeypatch.setenv("S2C_OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        engine = OpenAIEngine()
        engine.generate([chat("hi")])
        assert server.auth == ["Bearer sk-test"]
        monkeypatch.delenv("OPENAI_API_KEY")
        OpenAIEngine().generate([chat("hi")])
        assert server.auth[-1] is None  # local servers need no key


def test_request_bodies_carry_sampling_role_model_and_mode():
    def script(path, body, attempt):
        if path.endswith("/completions") and "prompt" in body:
            return 200, {"choices": [{"index": 0, "text": " done", "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 2, "completion_tokens": 1}}, {}
        return ok(path, body, attempt)

    with ScriptedServer(script, models=("base", "judge-model")) as server:
        engine = engine_for(server, model="base", roles={"judge": "judge-model"})
        s = Sampling(temperature=0.7, top_p=0.9, max_tokens=12, stop=("\n",), seed=5, n=2)
        out = engine.generate([
            Request(messages=(Message("system", "sys"), Message("user", "q")), sampling=s, role="judge"),
            Request(prompt="once upon", sampling=Sampling(max_tokens=1)),
        ])
        (p1, b1), (p2, b2) = sorted(server.posts, key=lambda pb: pb[0])
        assert p1 == "/v1/chat/completions" and p2 == "/v1/completions"
        assert b1 == {"model": "judge-model", "n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 12,
                      "stop": ["\n"], "seed": 5,
                      "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]}
        assert b2["model"] == "base" and b2["prompt"] == "once upon" and "seed" not in b2
        assert [c.text for c in out[0]] == ["reply to q", "reply to q"]
        assert out[1][0].text == " done" and out[1][0].finish_reason == "length"
        assert (out[1][0].prompt_tokens, out[1][0].completion_tokens) == (2, 1)


def test_greedy_n_sends_one_sample_and_copies_it():
    with ScriptedServer(ok) as server:
        [out] = engine_for(server).generate([chat("q", n=3, temperature=0.0)])
        assert server.posts[0][1]["n"] == 1
        assert [c.text for c in out] == ["reply to q"] * 3


def test_per_sample_token_counts_sum_to_the_usage_total():
    def script(path, body, attempt):
        return 200, chat_response(["a b c d e f", "a b", ""], prompt_tokens=9, completion_tokens=11), {}

    with ScriptedServer(script) as server:
        [out] = engine_for(server).generate([chat("q", n=3, temperature=1.0)])
        assert sum(c.completion_tokens for c in out) == 11
        assert out[0].completion_tokens > out[1].completion_tokens >= out[2].completion_tokens
        assert all(c.prompt_tokens == 9 for c in out)


def test_500_then_200_is_retried_and_succeeds():
    def script(path, body, attempt):
        return (500, {"error": "busy"}, {}) if attempt == 0 else ok(path, body, attempt)

    with ScriptedServer(script) as server:
        engine = engine_for(server)
        engine.submit("t", chat("q"))
        [done] = engine.collect()
        assert done.tag == "t" and done.result[0].text == "reply to q"
        assert done.retries == ("HTTP 500",)
        assert len(server.posts) == 2


def test_429_honours_retry_after():
    def script(path, body, attempt):
        return (429, {"error": "slow down"}, {"Retry-After": "0.3"}) if attempt == 0 else ok(path, body, attempt)

    with ScriptedServer(script) as server:
        engine = engine_for(server)
        start = time.monotonic()
        engine.submit(0, chat("q"))
        [done] = engine.collect()
        assert time.monotonic() - start >= 0.3
        assert done.result[0].text == "reply to q" and done.retries == ("HTTP 429",)


def test_backoff_grows_exponentially_and_a_request_that_keeps_failing_becomes_a_failure():
    def script(path, body, attempt):
        if body["messages"][-1]["content"] == "doomed":
            return 503, {"error": "down"}, {}
        return ok(path, body, attempt)

    with ScriptedServer(script) as server:
        engine = OpenAIEngine(base_url=server.url, http=HttpOptions(retries=3, backoff=0.05))
        start = time.monotonic()
        out = engine.generate([chat("fine"), chat("doomed"), chat("also fine")])
        elapsed = time.monotonic() - start
        assert isinstance(out[1], EngineFailure) and "HTTP 503" in out[1].reason
        assert out[0][0].text == "reply to fine" and out[2][0].text == "reply to also fine"
        doomed = [b for _, b in server.posts if b["messages"][-1]["content"] == "doomed"]
        assert len(doomed) == 4  # the first try and 3 retries
        assert elapsed >= 0.05 + 0.1 + 0.2  # backoff * 2**attempt
        engine.submit("doomed", chat("doomed"))
        [done] = engine.collect()
        assert isinstance(done.result, EngineFailure)
        assert done.retries == ("HTTP 503",) * 3  # the last attempt's reason is in the failure


def test_client_errors_are_not_retried():
    def script(path, body, attempt):
        return 400, {"error": {"message": "prompt too long"}}, {}

    with ScriptedServer(script) as server:
        [out] = engine_for(server).generate([chat("q")])
        assert isinstance(out, EngineFailure) and "HTTP 400" in out.reason and "prompt too long" in out.reason
        assert len(server.posts) == 1


def test_a_server_that_goes_away_gives_failures_not_exceptions():
    with ScriptedServer(ok) as server:
        engine = engine_for(server, retries=1)
    out = engine.generate([chat("a"), chat("b")])  # the server is shut down now
    assert all(isinstance(r, EngineFailure) and "ConnectError" in r.reason for r in out)


def test_concurrency_is_bounded():
    def script(path, body, attempt):
        time.sleep(0.2)
        return ok(path, body, attempt)

    with ScriptedServer(script) as server:
        out = engine_for(server, concurrency=3).generate([chat(f"q{i}") for i in range(9)])
        assert [r[0].text for r in out] == [f"reply to q{i}" for i in range(9)]  # order kept
        assert server.max_active == 3


def test_adapters_are_refused_per_request():
    with ScriptedServer(ok) as server:
        out = engine_for(server).generate([Request(prompt="p", adapter="/some/lora"), chat("q")])
        assert isinstance(out[0], EngineFailure) and "--lora-modules" in out[0].reason
        assert out[1][0].text == "reply to q"


def test_invalid_json_and_transport_errors_are_retried_with_their_reasons():
    replies = iter([
        lambda request: httpx.Response(200, content=b'{"choices": [{"ind'),  # a cut-off body
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=request)),
        lambda request: httpx.Response(200, json=chat_response(["fine"])),
    ])
    with ScriptedServer(ok) as server:
        engine = engine_for(server)
        engine._client = httpx.Client(base_url=engine.base_url,
                                      transport=httpx.MockTransport(lambda r: next(replies)(r)))
        engine.submit("t", chat("q"))
        [done] = engine.collect()
        assert done.result[0].text == "fine"
        assert done.retries == ("invalid JSON", "ReadTimeout")


def test_a_200_without_a_completion_is_retried_then_a_failure_that_says_why():
    broken = [
        {"choices": []},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]},
        {"object": "chat.completion", "output": "no choices"},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}], "usage": "lots"},
    ]

    def script(path, body, attempt):
        if "prompt" in body:  # completions: a null text, always
            return 200, {"choices": [{"index": 0, "text": None, "finish_reason": "length"}]}, {}
        return (200, broken[attempt], {}) if attempt < len(broken) else ok(path, body, attempt)

    with ScriptedServer(script) as server:
        engine = engine_for(server, retries=4)
        engine.submit("chat", chat("q"))
        [done] = engine.collect()
        assert done.result[0].text == "reply to q"
        assert done.retries == ("empty choices", "null content", "unexpected shape", "unexpected shape")
        engine.options = dataclasses.replace(engine.options, retries=1)
        engine.submit("text", Request(prompt="p"))
        [done] = engine.collect()
        assert isinstance(done.result, EngineFailure) and done.retries == ("null content",)
        assert done.result.reason == ("null content in a 200 reply: text is null (finish_reason 'length') "
                                      "(gave up after 2 attempts)")


def test_a_bug_in_a_worker_is_raised_by_collect(monkeypatch):
    def broken(data, request):
        raise ZeroDivisionError("a bug in s2c")

    with ScriptedServer(ok) as server:
        engine = engine_for(server)
        monkeypatch.setattr(openai_module, "_completions", broken)
        engine.submit("t", chat("q"))
        with pytest.raises(ZeroDivisionError, match="a bug in s2c"):
            engine.collect()
        with pytest.raises(ZeroDivisionError):
            engine.generate([chat("q")])


def test_collect_hands_results_over_in_finishing_order_and_generate_keeps_request_order():
    def script(path, body, attempt):
        time.sleep(0.05 * (5 - int(body["messages"][-1]["content"][1:])))  # q4 finishes first
        return ok(path, body, attempt)

    with ScriptedServer(script) as server:
        engine = engine_for(server, concurrency=5)
        for i in range(5):
            engine.submit(i, chat(f"q{i}"))
        order = []
        while engine.pending():
            order += [done.tag for done in engine.collect()]
        assert order == [4, 3, 2, 1, 0]
        out = engine.generate([chat(f"q{i}") for i in range(5)])
        assert [r[0].text for r in out] == [f"reply to q{i}" for i in range(5)]


# --- streaming against the stdlib test server, run as its own process --------------------------


@pytest.fixture
def echo(tmp_path):
    """Start tests/helpers/llm_server.py with `echo(delay=..., faults=[...])`; yields (url, log)."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:
        def start(**options):
            log = tmp_path / f"server-{next(numbers)}.log"
            return stack.enter_context(serve(tmp_path, log=log, **options)), log
        yield start


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_come_back_per_request_as_they_finish(echo):
    url, log = echo(delay=0.2)
    engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(concurrency=4))
    prompts = {f"tag{i}": f"question number {i}" for i in range(8)}
    for tag, text in prompts.items():
        engine.submit(tag, chat(text))
    assert engine.pending() == 8
    groups = []
    while engine.pending():
        groups.append(engine.collect())
    assert engine.collect() == []  # nothing pending: returns at once
    # 4 workers, 0.2 s a request: the first 4 come back before the last 4 have even started
    assert len(groups) >= 2 and len(groups[0]) <= 4
    done = [d for g in groups for d in g]
    assert sorted(d.tag for d in done) == sorted(prompts)
    for d in done:
        assert isinstance(d, Finished) and d.retries == ()
        [c] = d.result
        assert c.text == reply_text(prompts[d.tag])  # each result is its own request's reply
        assert c.completion_tokens == len(c.text.split(" ")) and c.prompt_tokens == 3
    # the server logs "done" just after the reply leaves: under load the client can be quicker
    deadline = time.monotonic() + 5
    while sum(e["event"] == "done" for e in read_log(log)) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(e["event"] == "done" for e in read_log(log)) == 8
    engine.close()


def test_generate_on_the_streaming_engine_keeps_request_order(echo):
    url, _ = echo(delay=0.05)
    engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(concurrency=3))
    texts = [f"prompt {i}" for i in range(10)]
    sampled = Request(prompt="plain", sampling=Sampling(n=2, temperature=1.0))
    out = engine.generate([chat(t) for t in texts] + [sampled])
    assert [r[0].text for r in out[:10]] == [reply_text(t) for t in texts]
    assert [c.text for c in out[10]] == [reply_text("plain", 0), reply_text("plain", 1)]
    engine.close()


def test_server_faults_are_retried_and_reported_in_finished_retries(echo):
    url, log = echo(faults=[Fault("http503", every=3)])
    engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(concurrency=2, backoff=0.01))
    for i in range(6):
        engine.submit(i, chat(f"q{i}"))
    done = []
    while engine.pending():
        done += engine.collect()
    assert sorted(d.tag for d in done) == list(range(6))
    assert all(d.result[0].text == reply_text(f"q{d.tag}") for d in done)
    # 6 successes take 8 POSTs: POSTs 3 and 6 fail, and their 2 retries are POSTs 7 and 8
    assert sorted(r for d in done for r in d.retries) == ["HTTP 503"] * 2
    events = read_log(log)
    assert sum(e["event"] == "fault" for e in events) == 2 and sum(e["event"] == "recv" for e in events) == 8
    engine.close()


# --- the real thing: vLLM's OpenAI-compatible server with the embedded model ------------------


@pytest.fixture(scope="module")
def server_url():
    with vllm_server(embedded_model_path(), served_name="smollm2") as url:
        yield url


@pytest.fixture(scope="module")
def real(server_url):
    engine = make_engine("openai", "smollm2", base_url=server_url)
    yield engine
    engine.close()


@pytest.mark.slow
def test_real_server_chat_and_completion(real, server_url):
    assert describe(real) == "openai: default=smollm2"
    assert make_engine("auto", base_url=server_url).name == "openai"
    out = real.generate([
        chat("What is 2+2?", max_tokens=32),
        Request(prompt="The capital of France is", sampling=Sampling(max_tokens=16)),
    ])
    for result in out:
        [c] = result
        assert c.text.strip() and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 32
    assert "4" in out[0][0].text


@pytest.mark.slow
def test_real_server_samples_stop_strings_and_greedy(real):
    sampled, stopped, greedy1 = real.generate([
        chat("Write a short poem about the sea.", n=3, temperature=0.8, max_tokens=24, seed=1),
        chat("List three colors, one per line.", max_tokens=40, stop=("\n",)),
        chat("Name a fruit.", max_tokens=16),
    ])
    assert len(sampled) == 3 and all(c.completion_tokens > 0 for c in sampled)
    assert len({c.text for c in sampled}) > 1  # sampling, not three copies
    assert "\n" not in stopped[0].text and stopped[0].finish_reason == "stop"
    [greedy2] = real.generate([chat("Name a fruit.", max_tokens=16)])
    assert greedy1 == greedy2


@pytest.mark.slow
def test_real_server_rejects_one_bad_request_and_serves_the_rest(real):
    out = real.generate([chat("word " * 3000, max_tokens=8), chat("Say hi.", max_tokens=8)])
    assert isinstance(out[0], EngineFailure) and "HTTP 400" in out[0].reason
    assert out[1][0].completion_tokens > 0


@pytest.mark.slow
def test_real_server_enforces_constrained_calls(real, tmp_path):
    """The same program through a real vLLM OpenAI server: its structured_outputs extension."""
    assert real.constraints == frozenset({"choice", "regex", "json"})
    run_constrained(real, tmp_path / "run")


@pytest.mark.slow
def test_eval_puts_a_servers_teacher_beside_the_local_student_and_the_distilled_one(server_url, tmp_path, s2c_home):
    """The teacher role on a real vLLM OpenAI server (the embedded model served as 'smollm2'
    counts as another model), the student on local vLLM with a LoRA adapter: one results.json
    with System 2 (the teacher's calls), System 1 and the distilled student, paired tests between
    them, and each role's calls cached under its own engine's model."""
    pytest.importorskip("vllm")
    from s2c.cli import main
    from s2c.runtime.cache import CallCache
    from s2c.runtime.store import RunStore

    make_lora_adapter(tmp_path / "train" / "adapter")
    out = tmp_path / "ev"
    fixture = Path(__file__).parent / "fixtures" / "data" / "gsm8k_sample.jsonl"
    rc = main(["eval", "programs/cascod.s2", "--data", f"gsm8k:{fixture}", "--limit", "3", "--engine", "vllm",
               "--role-url", f"teacher={server_url}", "--role", "teacher=smollm2", "--adapter", str(tmp_path / "train"),
               "--max-tokens", "24", "--out", str(out), "--cache", str(tmp_path / "calls.sqlite"), "--no-progress"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    systems = {s["kind"]: s for s in results["systems"]}
    assert set(systems) == {"system2", "system1", "distilled"} and all(s["n"] == 3 for s in systems.values())
    pairs = {(c["a"], c["b"]) for c in results["comparisons"]}
    assert len(pairs) == 3  # every pair of the three systems, each with McNemar's counts
    assert all("mcnemar" in c for c in results["comparisons"])
    assert results["models"]["teacher"] == f"smollm2@{server_url}"
    s2 = json.loads((Path(systems["system2"]["run_dir"]) / "summary.json").read_text())
    assert s2["models"]["teacher"] == f"smollm2@{server_url}" and s2["nodes"]["cot"]["engine_calls"] == 3
    assert s2["models"]["default"] != s2["models"]["teacher"]  # the student's model, served locally
    s1 = json.loads((Path(systems["system1"]["run_dir"]) / "summary.json").read_text())
    assert s1["models"]["default"] == s2["models"]["default"] and s1["engine_calls"] > 0
    traces = list(RunStore.open(Path(systems["system2"]["run_dir"])).traces())
    assert all(t.nodes["cot"]["instances"][0]["completions"] for t in traces)
    cache = CallCache(tmp_path / "calls.sqlite")
    models = {m for (m,) in cache.db.execute("SELECT DISTINCT model FROM calls")}
    cache.close()
    assert f"openai:smollm2@{server_url}" in models and any(m.startswith("vllm:") for m in models)
