"""Server faults, end to end: s2c's OpenAI engine, driven by the real runtime, against the test
server (tests/helpers/llm_server.py, its own process on 127.0.0.1) answering some requests with
a fault. Whatever the fault, a call is retried with the fault's reason counted in summary.json,
a call that keeps failing is counted as a failure with a reason that names the fault, nothing but
a real reply reaches the call cache, and a rerun with the same cache redoes exactly the calls
that failed and gets the good reply.

One program, one call per row. Row "alpha" meets the fault on its first attempt (a retry
succeeds); row "bravo" on its first RETRIES + 1 attempts (it fails for good in the first run,
and the server answers its next attempt, in the rerun); the other rows never.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.llm_server import MARKUP, Fault, reply_text, request_key, serve

from s2c.compiler.pipeline import load_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.http import HttpOptions
from s2c.runtime.engines.openai import OpenAIEngine
from s2c.runtime.run import Runner, RunOutcome

REPO = Path(__file__).resolve().parents[1]
RETRIES = 2  # the engine's: three attempts in all
TIMEOUT = 0.5  # the engine's, in seconds: a healthy reply on loopback takes milliseconds
SLOW = 2.0  # a slow reply, well past TIMEOUT
PROGRAM = '''program echo_rows "one call per row"

input question

answer = llm(max_tokens=32) """
{{ question }}
"""

output answer
'''
ROWS = ("alpha", "bravo", "charlie", "delta")

# fault kind -> the reason a retry and the failure are counted under
REASONS = {
    "http500": "HTTP 500",
    "http429": "HTTP 429",
    "bad-json": "invalid JSON",
    "truncated": "RemoteProtocolError",
    "empty-choices": "empty choices",
    "null-content": "null content",
    "wrong-shape": "unexpected shape",
    "slow": "ReadTimeout",
}


def rows() -> list[tuple[str, dict]]:
    return [(name, {"question": f"Say something about row {name}."}) for name in ROWS]


def faults(kind: str) -> list[Fault]:
    """alpha: a retry succeeds; bravo: fails for good on this run, served on the next."""
    return [Fault(kind, first=1, match="row alpha"), Fault(kind, first=RETRIES + 1, match="row bravo")]


def run(tmp_path: Path, url: str, name: str) -> RunOutcome:
    program = tmp_path / "echo_rows.s2"
    program.write_text(PROGRAM)
    engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(retries=RETRIES, backoff=0.01, timeout=TIMEOUT))
    cache = CallCache(tmp_path / "calls.sqlite")
    try:
        return Runner(engine, cache, progress=False).execute(load_program(program), rows(), tmp_path / name)
    finally:
        cache.close()
        engine.close()


def answers(outcome: RunOutcome) -> dict[str, tuple[str, str | None, str]]:
    """Row -> (status, the answer, the reply the server gives that row's prompt when healthy)."""
    out = {}
    for r in outcome.examples():
        [instance] = r.trace.nodes["answer"]["instances"]
        prompt = "\n".join(m["content"] for m in instance["messages"])
        out[r.id] = (r.status, r.trace.outputs["answer"] if r.ok else None, reply_text(prompt))
    return out


def keys(outcome: RunOutcome) -> dict[str, str]:
    """Row -> the server's key for its call (what the log names), from the messages it was sent."""
    return {r.id: request_key({"messages": r.trace.nodes["answer"]["instances"][0]["messages"]})
            for r in outcome.examples()}


def cached_texts(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        return sorted(text for (text,) in db.execute("SELECT text FROM calls"))


def received(log: Path, start: int = 0, stop: int | None = None) -> Counter:
    """Request key -> POSTs received, from the server log's lines `start` to `stop`."""
    events = [json.loads(line) for line in log.read_text().splitlines()[start:stop]]
    return Counter(e["key"] for e in events if e["event"] == "recv")


@pytest.mark.parametrize("kind", list(REASONS))
def test_a_fault_is_retried_counted_never_cached_and_redone_on_rerun(tmp_path, kind):
    reason = REASONS[kind]
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log, faults=faults(kind), slow_s=SLOW) as url:
        first = run(tmp_path, url, "first")
        lines = len(log.read_text().splitlines())  # what a slow reply logs late is no "recv"
        cached = cached_texts(tmp_path)
        second = run(tmp_path, url, "second")

    # first run: alpha was retried once and served, bravo retried RETRIES times and failed
    s = first.summary.to_json()
    assert (s["examples"], s["ok"], s["failed"]) == (4, 3, 1)
    assert s["retry_reasons"] == {"answer": {reason: 1 + RETRIES}} and s["retries"] == 1 + RETRIES
    [(failure, count)] = s["failures"]["answer"].items()
    assert count == 1 and failure.startswith("engine: ") and reason in failure
    assert f"gave up after {RETRIES + 1} attempts" in failure
    got = answers(first)
    assert got["bravo"][:2] == ("failed", None)
    assert all(got[r][1] == got[r][2] for r in ("alpha", "charlie", "delta"))
    key = keys(first)
    assert received(log, 0, lines) == {key["alpha"]: 2, key["bravo"]: RETRIES + 1, key["charlie"]: 1, key["delta"]: 1}
    if kind == "http429":  # bravo waited Retry-After (0.2 s) before each of its retries
        assert s["wall_seconds"] >= 0.4

    # the cache holds the three good replies and nothing from a faulty one
    assert cached == sorted(got[r][2] for r in ("alpha", "charlie", "delta"))

    # the rerun asks the server for bravo alone, once, and gets the good reply
    s = second.summary.to_json()
    assert (s["ok"], s["failed"], s["engine_calls"], s["cache_hits"], s["retries"]) == (4, 0, 1, 3, 0)
    assert received(log, lines) == {key["bravo"]: 1}
    got = answers(second)
    assert all(status == "ok" and answer == good for status, answer, good in got.values())
    assert cached_texts(tmp_path) == sorted(good for _, _, good in got.values())


def test_faults_on_one_call_come_in_the_order_given_then_the_reply(tmp_path):
    order = [Fault("http500", first=1), Fault("truncated", first=2), Fault("null-content", first=3)]
    with serve(tmp_path, faults=order) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(retries=3, backoff=0.01))
        engine.submit("first", _chat("hello"))
        [first] = engine.collect()
        engine.submit("again", _chat("hello"))  # a fifth attempt: past every fault's first=N
        [again] = engine.collect()
        engine.close()
    assert first.retries == ("HTTP 500", "RemoteProtocolError", "null content")
    assert first.result[0].text == again.result[0].text == reply_text("hello")
    assert again.retries == ()


def test_a_client_error_is_not_retried_and_its_markup_is_printed_as_written(tmp_path):
    """`s2c run` prints an error body holding rich markup literally, then a rerun against the
    restarted, healthy server redoes the one failed call."""
    program = tmp_path / "echo_rows.s2"
    program.write_text(PROGRAM)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": i, **row}) + "\n" for i, row in rows()))
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log, faults=[Fault("http400", match="row bravo")]) as url:
        first = _cli(url, program, data, tmp_path, "first")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    lines = len(log.read_text().splitlines())
    with serve(tmp_path, log=log, port=port) as healthy:
        assert healthy == url  # the same URL: the same cache keys
        second = _cli(url, program, data, tmp_path, "second")

    assert first.returncode == 0, first.stderr  # 3 of 4 examples ok
    assert "Traceback" not in first.stderr and "MarkupError" not in first.stderr
    assert "4 examples: 3 ok, 1 failed" in first.stderr and "0 retries" in first.stderr
    shown = " ".join(first.stderr.split())  # as one line: the console wraps long ones
    assert "answer failed: 1 × engine: POST /chat/completions: HTTP 400: " in shown
    assert f"injected http400: {MARKUP}" in shown  # "[bold]" and "[/x]" as written
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    [failure] = summary["failures"]["answer"]
    assert "HTTP 400" in failure and MARKUP in failure and "attempts" not in failure
    assert sorted(received(log, 0, lines).values()) == [1, 1, 1, 1]  # bravo was not retried

    assert second.returncode == 0, second.stderr
    assert "4 examples: 4 ok, 0 failed" in second.stderr and "1 engine calls, 3 cache hits" in second.stderr
    refused = [e["key"] for e in map(json.loads, log.read_text().splitlines()[:lines]) if e.get("status") == 400]
    assert received(log, lines) == {refused[0]: 1} and len(refused) == 1  # the failed call, redone


def _chat(text: str):
    from s2c.runtime.engines.base import Message, Request

    return Request(messages=(Message("user", text),))


def _cli(url: str, program: Path, data: Path, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "s2c.cli", "run", str(program), "--data", str(data), "--engine", "openai",
           "--base-url", url, "--model", "echo-model", "--cache", str(tmp_path / "calls.sqlite"),
           "--out", str(tmp_path / name), "--no-progress"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
