"""OpenAIEngine over several servers: prefix affinity, spill-over, failover when a server dies
mid-run, probing and rejoining, the model_id rules; against the stdlib test server
(tests/helpers/llm_server.py) run as real processes, whose --log says which server did what.
Then the real thing: two vLLM OpenAI-compatible servers with the embedded model."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from engine_fixtures import (
    ScriptedServer,
    _kill_group,
    _tail,
    chat,
    chat_response,
    embedded_model_path,
    free_port,
)
from helpers.llm_server import reply_text, request_key, start, stop

from s2c.runtime.engines.base import EngineError, EngineFailure, Finished
from s2c.runtime.engines.local import cpu_dtype  # the engines' own default on this CPU
from s2c.runtime.engines.http import PREFIX_CHARS, HttpOptions
from s2c.runtime.engines.openai import OpenAIEngine


@dataclass
class Echo:
    """One llm_server.py process: kill `proc` to crash it; `log` has its events."""

    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def keys(self, event: str) -> Counter:
        return Counter(e["key"] for e in self.events() if e["event"] == event)

    def crash(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def echo(tmp_path):
    """`echo(delay=..., port=...)` starts an llm_server.py process -> Echo; all stop at the end."""
    numbers = itertools.count()
    procs = []

    def begin(**options) -> Echo:
        log = tmp_path / f"server-{next(numbers)}.log"
        proc, url = start(tmp_path, log=log, **options)
        procs.append(proc)
        return Echo(proc, url, log)

    yield begin
    for proc in procs:
        stop(proc)


@pytest.fixture
def engines():
    """`engines(...)` makes an OpenAIEngine (quick backoff) that is closed at the end."""
    made = []

    def make(model="echo-model", base_url=None, roles=None, **http) -> OpenAIEngine:
        made.append(OpenAIEngine(model, roles=roles, base_url=base_url, http=HttpOptions(**{"backoff": 0.05, **http})))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def key(text: str) -> str:
    """The llm_server's request key of a one-message chat."""
    return request_key({"messages": [{"role": "user", "content": text}]})


def run_all(engine: OpenAIEngine, prompts: dict) -> dict[object, Finished]:
    """Submit every prompt (tag -> text), collect until none is pending; each tag finishes once."""
    for tag, text in prompts.items():
        engine.submit(tag, chat(text))
    done: list[Finished] = []
    while engine.pending():
        done += engine.collect()
    assert sorted(map(str, (d.tag for d in done))) == sorted(map(str, prompts))  # once each
    return {d.tag: d for d in done}


def assert_replies(finished: dict[object, Finished], prompts: dict) -> None:
    for tag, text in prompts.items():
        [c] = finished[tag].result
        assert c.text == reply_text(text)


def max_in_flight(server: Echo, delay: float) -> int:
    """The most POSTs the server held at once: each is held `delay` s from its "recv" (its
    "done" is logged after the reply has gone, when the client may have sent the next)."""
    recvs = sorted(e["t"] for e in server.events() if e["event"] == "recv")
    return max((sum(1 for u in recvs if t - delay < u <= t) for t in recvs), default=0)


def done_keys(servers: list[Echo], count: int) -> Counter:
    """The keys of the "done" events of all servers, once `count` are logged (a server logs
    "done" just after the reply has left, so the last may lag behind `collect`)."""
    deadline = time.monotonic() + 5
    while True:
        done = sum((s.keys("done") for s in servers), Counter())
        if sum(done.values()) >= count or time.monotonic() > deadline:
            return done
        time.sleep(0.01)


# --- construction and identity ---------------------------------------------------------------


def test_model_id_is_unchanged_for_one_url_and_names_every_url_sorted_for_several(echo, engines):
    a, b = echo(), echo()
    single = engines(base_url=a.url)
    assert single.model_id() == f"echo-model@{a.url}"
    assert engines(base_url=[a.url]).model_id() == single.model_id()  # old caches still hit
    assert engines(base_url=[a.url.removesuffix("/v1") + "/"]).model_id() == single.model_id()
    both = engines(base_url=[b.url, a.url], roles={"judge": "echo-model"})
    assert both.model_id() == both.model_id("judge") == f"echo-model@{','.join(sorted([a.url, b.url]))}"
    assert engines(base_url=[a.url, b.url]).model_id() == both.model_id()  # order given: no matter
    assert engines(base_url=[a.url, b.url, a.url]).model_id() == both.model_id()  # duplicates: one
    assert set(both.server_stats()) == {a.url, b.url}
    assert both.server_stats()[a.url] == {"requests": 0, "failed_over": 0, "rate_limited": 0, "down": False}


def test_every_server_must_answer_and_serve_the_models_at_start(echo, engines):
    a = echo()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineError, match=f"cannot reach an OpenAI-compatible server at {re.escape(dead)}"):
        engines(base_url=[a.url, dead])
    with ScriptedServer(lambda path, body, attempt: (200, chat_response(["x"]), {}), models=("other",)) as other:
        with pytest.raises(EngineError, match=f"the server at {re.escape(other.url)} serves other; not echo-model"):
            engines(base_url=[a.url, other.url])
        with pytest.raises(EngineError, match=f"the server at {re.escape(a.url)} serves echo-model; not other"):
            engines(None, base_url=[other.url, a.url])  # the default model is the first server's


def test_one_server_in_a_list_retries_a_dead_server_as_the_url_alone_does(echo, engines):
    a = echo()
    engine = engines(base_url=[a.url], retries=2)
    a.crash()
    engine.submit("t", chat("q"))
    [done] = engine.collect()
    assert isinstance(done.result, EngineFailure) and "ConnectError" in done.result.reason
    assert done.retries == ("ConnectError", "ConnectError")  # backoff retries; nowhere to fail over to
    assert engine.server_stats()[a.url] == {"requests": 3, "failed_over": 0, "rate_limited": 0, "down": False}


# --- spreading: affinity and spill-over ------------------------------------------------------


def test_requests_spread_over_the_servers_and_each_is_served_once(echo, engines):
    a, b = echo(delay=0.05), echo(delay=0.05)
    engine = engines(base_url=[a.url, b.url], concurrency=4)
    prompts = {i: f"{i} distinct question" for i in range(40)}
    finished = run_all(engine, prompts)
    assert_replies(finished, prompts)
    assert all(d.retries == () for d in finished.values())
    done = done_keys([a, b], len(prompts))
    assert done == Counter({key(t): 1 for t in prompts.values()})  # one POST each, no repeats
    stats = engine.server_stats()
    assert stats[a.url]["requests"] == sum(a.keys("done").values()) > 0
    assert stats[b.url]["requests"] == sum(b.keys("done").values()) > 0
    assert max_in_flight(a, 0.05) <= 4 and max_in_flight(b, 0.05) <= 4  # concurrency is per server


def test_s2c_run_records_and_prints_how_many_requests_each_server_got(echo, tmp_path):
    a, b = echo(), echo()
    program = tmp_path / "one_call.s2"
    program.write_text('program one_call "one call per row"\n\ninput question\n\n'
                       'answer = llm(max_tokens=8) """\n{{ question }}\n"""\n\noutput answer\n')
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"{i} distinct question"}) + "\n" for i in range(12)))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "s2c.cli", "run", str(program), "--data", str(data), "--engine", "openai",
                        "--model", "echo-model", "--base-url", a.url, "--base-url", b.url, "--no-cache",
                        "--no-progress", "--out", str(tmp_path / "run")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    spread = json.loads((tmp_path / "run" / "summary.json").read_text())["engine_spread"]["servers"]
    assert spread == {s.url: {"requests": sum(s.keys("recv").values()), "failed_over": 0, "rate_limited": 0, "down": False}
                      for s in (a, b)}
    assert sum(v["requests"] for v in spread.values()) == 12 and all(v["requests"] for v in spread.values())
    caption = " ".join((r.stdout + r.stderr).split())  # the table's caption, however rich wraps it
    assert f"requests per server: {a.url} {spread[a.url]['requests']}, {b.url} {spread[b.url]['requests']}" in caption


def test_one_server_spreads_nothing(echo, engines):
    assert engines(base_url=echo().url).spread() is None


def test_requests_sharing_a_prefix_go_to_the_same_server_and_stay_when_another_leaves(echo, engines):
    servers = [echo(), echo(), echo()]
    engine = engines(base_url=[s.url for s in servers], concurrency=64)  # never full: no spill-over
    context = "Shared few-shot context. " * 12  # the prefix runs past PREFIX_CHARS
    assert len(f"Group 0. {context}") > PREFIX_CHARS

    def placement(round_: str) -> dict[int, set[str]]:
        prompts = {(g, i): f"Group {g}. {context}{round_} item {i}" for g in range(12) for i in range(3)}
        assert_replies(run_all(engine, prompts), prompts)
        keys = {key(t) for t in prompts.values()}
        deadline = time.monotonic() + 5
        while sum(s.keys("done")[k] for s in servers for k in keys) < len(keys) and time.monotonic() < deadline:
            time.sleep(0.01)  # the last "done" may be logged just after its reply arrived
        where = {k: s.url for s in servers for k in keys if s.keys("done")[k]}
        return {g: {where[key(prompts[g, i])] for i in range(3)} for g in range(12)}

    first = placement("first")
    assert all(len(urls) == 1 for urls in first.values())  # a group's requests share a server
    by_server = Counter(next(iter(urls)) for urls in first.values())
    assert len(by_server) > 1  # and the groups are spread
    gone = next(s for s in servers if s.url == by_server.most_common(1)[0][0])
    gone.crash()
    second = placement("second")
    assert all(len(urls) == 1 for urls in second.values())
    for g, urls in first.items():  # rendezvous hashing: only the departed server's groups move
        if urls != {gone.url}:
            assert second[g] == urls
        else:
            assert second[g] != urls


def test_a_full_server_spills_over_to_the_next(echo, engines):
    a, b = echo(delay=0.3), echo(delay=0.3)
    engine = engines(base_url=[a.url, b.url], concurrency=2)
    context = "The same long instructions for every request. " * 8
    prompts = {i: f"{context} Question {i}" for i in range(8)}
    assert_replies(run_all(engine, prompts), prompts)
    done = done_keys([a, b], len(prompts))
    assert done == Counter({key(t): 1 for t in prompts.values()})
    assert a.keys("done") and b.keys("done")  # the preferred server was full: the other helped
    assert max_in_flight(a, 0.3) == max_in_flight(b, 0.3) == 2


# --- failover --------------------------------------------------------------------------------


def test_a_server_killed_mid_run_loses_and_repeats_nothing(echo, engines):
    a, b = echo(delay=0.5), echo(delay=0.5)
    engine = engines(base_url=[a.url, b.url], concurrency=4)
    prompts = {i: f"{i} question for the failover" for i in range(16)}
    for tag, text in prompts.items():
        engine.submit(tag, chat(text))
    deadline = time.monotonic() + 10
    while not a.keys("recv"):  # kill `a` while it holds requests (each takes 0.5 s)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    a.crash()
    finished: dict[object, Finished] = {}
    while engine.pending():
        finished.update((d.tag, d) for d in engine.collect())
    assert sorted(finished) == sorted(prompts)  # each request finished exactly once
    assert_replies(finished, prompts)  # and with a completion
    done = done_keys([a, b], len(prompts))
    assert done == Counter({key(t): 1 for t in prompts.values()})  # one successful POST each
    in_flight = set(a.keys("recv")) - set(a.keys("done"))  # `a` died holding these
    assert in_flight and all(b.keys("done")[k] == 1 for k in in_flight)
    moved = {key(prompts[t]) for t, d in finished.items() if d.retries}
    assert moved >= in_flight
    assert {d.retries for d in finished.values()} == {(), (f"server down: {a.url}",)}
    stats = engine.server_stats()
    assert stats[a.url]["down"] and not stats[b.url]["down"]
    assert stats[a.url]["failed_over"] == len(moved) and stats[b.url]["failed_over"] == 0
    assert stats[a.url]["requests"] + stats[b.url]["requests"] == len(prompts) + len(moved)


def test_all_servers_down_gives_failures_that_say_so_and_a_server_back_serves_again(echo, engines):
    a, b = echo(), echo()
    engine = engines(base_url=[a.url, b.url])
    port = a.port
    a.crash()
    b.crash()
    out = engine.generate([chat(f"q{i}") for i in range(4)])
    for result in out:
        assert isinstance(result, EngineFailure)
        assert result.reason.startswith("all 2 servers are down: ")
        assert a.url in result.reason and b.url in result.reason and "ConnectError" in result.reason
    assert all(s["down"] for s in engine.server_stats().values())
    back = echo(port=port)  # the run goes on; a server that comes back takes requests again
    wait_until_up(engine, back.url)
    assert [r[0].text for r in engine.generate([chat("again")])] == [reply_text("again")]


def wait_until_up(engine: OpenAIEngine, url: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while engine.server_stats()[url]["down"]:
        assert time.monotonic() < deadline, f"{url} did not rejoin in {within} s"
        time.sleep(0.05)


def test_a_server_that_comes_back_rejoins_after_a_probe(echo, engines):
    a, b = echo(), echo()
    engine = engines(base_url=[a.url, b.url], concurrency=2)
    port = a.port
    a.crash()
    before = {i: f"{i} asked while a is down" for i in range(10)}
    finished = run_all(engine, before)
    assert_replies(finished, before)
    stats = engine.server_stats()[a.url]
    assert stats["down"] and stats["failed_over"] == sum(1 for d in finished.values() if d.retries) >= 1
    assert sum(done_keys([b], 10).values()) == 10
    again = echo(port=port)
    assert again.url == a.url
    wait_until_up(engine, a.url)
    after = {i: f"{i} asked once a is back" for i in range(20)}
    finished = run_all(engine, after)
    assert_replies(finished, after)
    assert all(d.retries == () for d in finished.values())
    assert sum(done_keys([again, b], 30).values()) == 30 and again.keys("done")
    assert engine.server_stats()[a.url]["down"] is False


# --- the real thing: two vLLM OpenAI-compatible servers with the embedded model ---------------


@contextlib.contextmanager
def vllm_servers(count: int, startup_s: float = 300):
    """`count` vLLM OpenAI-compatible servers of the embedded model, started at once, each
    bound to its own CPU core; yields their base URLs. (engine_fixtures.vllm_server starts one
    at a time and binds them all to the same cores.)"""
    import httpx

    started = []
    try:
        for i in range(count):
            port = free_port()
            fd, log_path = tempfile.mkstemp(suffix=".log", prefix=f"vllm-server-{i}-")
            cmd = [
                sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", embedded_model_path(), "--served-model-name", "smollm2",
                "--host", "127.0.0.1", "--port", str(port),
                "--enforce-eager", "--max-model-len", "2048", "--dtype", cpu_dtype(),
                "--no-enable-chunked-prefill",  # as s2c's vllm engine on CPU
            ]
            cores = os.cpu_count() or 1
            env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
                   "VLLM_CPU_OMP_THREADS_BIND": str(i % cores)}
            with os.fdopen(fd, "w") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            started.append((proc, port, log_path))
        deadline = time.monotonic() + startup_s
        for proc, port, log_path in started:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"vllm server exited with {proc.returncode}:\n{_tail(log_path)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vllm server not healthy after {startup_s} s:\n{_tail(log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                time.sleep(1)
        yield [f"http://127.0.0.1:{port}/v1" for _, port, _ in started]
    finally:
        for proc, _, log_path in started:
            _kill_group(proc)
            os.unlink(log_path)


@pytest.fixture(scope="module")
def vllm_urls():
    with vllm_servers(2) as urls:
        yield urls


@pytest.mark.slow
def test_two_real_servers_give_the_texts_of_one(vllm_urls):
    questions = [f"In one sentence, what is {thing}?" for thing in (
        "a river", "a mountain", "the moon", "a violin", "rain", "a library", "bread", "a bridge",
        "a comet", "an island", "a forest", "a clock", "salt", "a desert", "a lighthouse", "snow")]
    requests = [chat(q, max_tokens=16) for q in questions]
    # concurrency 1: every request runs alone on its server, so greedy texts cannot depend on
    # what else was batched with it
    one = OpenAIEngine("smollm2", base_url=vllm_urls[0], http=HttpOptions(concurrency=1))
    two = OpenAIEngine("smollm2", base_url=vllm_urls, http=HttpOptions(concurrency=1))
    try:
        alone = one.generate(requests)
        spread = two.generate(requests)
        stats = two.server_stats()
    finally:
        one.close()
        two.close()
    assert all(not isinstance(r, EngineFailure) for r in alone + spread)
    assert [r[0].text for r in spread] == [r[0].text for r in alone]
    assert all(s["requests"] > 0 and s["failed_over"] == 0 and not s["down"] for s in stats.values())
    assert sum(s["requests"] for s in stats.values()) == len(requests)
    assert two.model_id() == f"smollm2@{','.join(sorted(vllm_urls))}"
