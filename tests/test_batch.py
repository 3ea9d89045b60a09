"""--batch: OpenAI's Batch API against the test server's Files and Batch API (its own process):
the official SDK reads it, a compile in batch mode writes the dataset an online compile writes,
expired, invalid and failed lines are sent again, and a client killed with SIGKILL during a batch
re-attaches on rerun without sending any request twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.llm_server import serve, start, stop

import s2c
from s2c.runtime.engines.base import EngineFailure, Request, Sampling
from s2c.runtime.engines.http import HttpOptions
from s2c.runtime.engines.openai import OpenAIEngine

REPO = Path(__file__).resolve().parents[1]
FIXTURE = "tests/fixtures/data/oasst2_sample.jsonl"


def batches(log: Path) -> list[dict]:
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "batch"]


def train_rows(folder: Path) -> list[str]:
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    return sorted(json.dumps({k: r[k] for k in ("example_id", "prompt", "completion", "task")}, sort_keys=True)
                  for r in rows)


def test_the_official_openai_sdk_runs_a_batch_on_the_test_server(tmp_path):
    openai = pytest.importorskip("openai")
    line = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "echo-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi there"}]}}
    with serve(tmp_path, batch_delay=0.1) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)
        upload = client.files.create(file=("in.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        while batch.status not in ("completed", "failed", "expired"):
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.request_counts.completed == 1
        [out] = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert out["custom_id"] == "one" and out["response"]["status_code"] == 200
    assert out["response"]["body"]["choices"][0]["message"]["content"]


def test_a_batch_compile_writes_the_dataset_an_online_compile_writes_at_the_batch_price(tmp_path):
    """BSM over 3 oasst2 rows: each stage's ready calls go as one batch, three waves in all; the
    rows equal the online compile's, and the cost uses batch prices."""
    log = tmp_path / "server.log"
    prices = s2c.Prices.parse({"echo-model": {"input": 2, "output": 8, "batch_input": 1, "batch_output": 4}})
    data = s2c.Data(f"oasst2:{FIXTURE}", limit=3)
    with serve(tmp_path, log=log, batch_delay=0.1) as url:
        run = s2c.RunSettings(cache=None, progress=False, prices=prices)
        every = s2c.DistillSettings(curation="none")  # the test server's verdicts ignore the swap: keep them all
        online = s2c.distill("bsm", data, s2c.EngineSettings("openai", base_url=(url,)), out=tmp_path / "online",
                             settings=run, distill=every)
        batch = s2c.distill("bsm", data, s2c.EngineSettings("openai", base_url=(url,),
                                                            http=HttpOptions(batch=True, batch_poll=0.05)),
                            out=tmp_path / "batch", settings=run, distill=every)
    assert train_rows(tmp_path / "batch") == train_rows(tmp_path / "online") and batch.report["kept"] > 0
    made = batches(log)
    # 3 inputs (no swapped copies without the keep rules), 1 + 3 criteria + 1 calls each, a stage a wave
    assert len(made) == 3 and sum(len(b["custom_ids"]) for b in made) == batch.summary.engine_calls == 3 * (1 + 3 + 1)
    assert batch.summary.cost == pytest.approx(online.summary.cost / 2)  # half the price, the same tokens
    journal = [json.loads(x) for x in (tmp_path / "batch" / "run" / "batches.jsonl").read_text().splitlines()]
    assert [r.get("batch") or r.get("ended") for r in journal] == [b["key"] for b in made for _ in (0, 1)]


@pytest.mark.parametrize("fault, sent", [
    ("expire:first=1", 1 + 1),  # half the first batch expired: those lines went again
    ("invalid:first=1", 1 + 1),  # the whole first batch was rejected: all of it went again
    ("line-error:first=1", 1 + 1),  # every line failed once
])
def test_expired_invalid_and_failed_lines_are_sent_again(tmp_path, fault, sent):
    log = tmp_path / "server.log"
    requests = [Request(prompt=f"question {i}", sampling=Sampling(max_tokens=8)) for i in range(6)]
    with serve(tmp_path, log=log, batch_delay=0.05, batch_faults=[fault]) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(batch=True, batch_poll=0.05))
        try:
            out = engine.generate(requests)
        finally:
            engine.close()
    assert all(not isinstance(o, EngineFailure) for o in out)
    made = batches(log)
    assert len(made) == sent
    again = set(made[1]["custom_ids"])
    assert again <= set(made[0]["custom_ids"]) and len(again) == (3 if fault.startswith("expire") else 6)


def test_a_line_that_keeps_failing_becomes_a_failure_that_says_why(tmp_path):
    with serve(tmp_path, batch_delay=0.05, batch_faults=["line-error"]) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(batch=True, batch_poll=0.05, retries=1))
        try:
            [failure] = engine.generate([Request(prompt="q", sampling=Sampling(max_tokens=8))])
        finally:
            engine.close()
    assert failure.reason == "batch line failed (500): injected line error (gave up after 2 batches)"


def test_a_client_killed_during_a_batch_reattaches_on_rerun_and_sends_nothing_twice(tmp_path):
    """SIGKILL while the first batch runs on the server: the rerun reads the run folder's
    batches.jsonl, attaches to that batch instead of sending its requests again, and the dataset
    equals an online compile's."""
    log = tmp_path / "server.log"
    proc, url = start(tmp_path, log=log, batch_delay=4.0)
    try:
        args = [sys.executable, "-m", "s2c.cli", "compile", "bsm.s2", "--data", f"oasst2:{FIXTURE}", "--limit", "2",
                "--engine", "openai", "--base-url", url, "--batch", "--batch-poll", "0.1", "--curation", "none",
                "--out", str(tmp_path / "batch"), "--cache", str(tmp_path / "calls.sqlite")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        client = subprocess.Popen([*args, "--no-progress"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not (log.exists() and batches(log)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the journal is written right after the batch is made
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        first = batches(log)
        assert len(first) == 1
        rerun = subprocess.run([*args, "--progress-every", "0.2"], cwd=REPO, env=env, capture_output=True, text=True,
                               check=False,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert "batch_0001: in_progress" in rerun.stderr  # progress shows the batch the rerun attached to
        s2c.distill("bsm", s2c.Data(f"oasst2:{FIXTURE}", limit=2), s2c.EngineSettings("openai", base_url=(url,)),
                    out=tmp_path / "online", settings=s2c.RunSettings(cache=None, progress=False),
                    distill=s2c.DistillSettings(curation="none"))
    finally:
        stop(proc)
    sent = [cid for b in batches(log) for cid in b["custom_ids"]]
    assert len(sent) == len(set(sent))  # no request was sent twice
    assert set(first[0]["custom_ids"]) <= set(sent) and len(batches(log)) == 3  # one batch per stage, the first once
    assert train_rows(tmp_path / "batch") == train_rows(tmp_path / "online")


def test_anthropic_message_batches_give_the_online_replies_and_send_expired_lines_again(tmp_path):
    """--batch on the anthropic engine: Message Batches on the test server; the first batch
    expires half-way, its unrun lines go in a second batch, and every reply equals the online one.
    The official SDK reads the same batch API."""
    from s2c.runtime.engines.anthropic import AnthropicEngine

    anthropic = pytest.importorskip("anthropic")
    log = tmp_path / "server.log"
    requests = [Request(prompt=f"question {i}", sampling=Sampling(max_tokens=8)) for i in range(6)]
    with serve(tmp_path, log=log, batch_delay=0.05, batch_faults=["expire:first=1"]) as url:
        online = AnthropicEngine(base_url=url)
        batched = AnthropicEngine(base_url=url, http=HttpOptions(batch=True, batch_poll=0.05))
        try:
            want, got = online.generate(requests), batched.generate(requests)
        finally:
            online.close()
            batched.close()
        client = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key="sk-ant-test", max_retries=0)
        made = client.messages.batches.create(requests=[{"custom_id": "one", "params": {
            "model": "echo-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}}])
        while client.messages.batches.retrieve(made.id).processing_status != "ended":
            time.sleep(0.05)
        [result] = list(client.messages.batches.results(made.id))
    assert [c.text for [c] in got] == [c.text for [c] in want]
    sent = batches(log)
    assert len(sent[0]["custom_ids"]) == 6 and len(sent[1]["custom_ids"]) == 3  # the expired half, once more
    assert result.custom_id == "one" and result.result.type == "succeeded" and result.result.message.content[0].text


def test_a_poll_the_provider_does_not_answer_is_asked_again_and_too_many_stop_with_the_journal(tmp_path):
    """Polls answered 503: the engine asks again at the next poll and the batch's replies come
    back; more failed polls in a row than --retries stop with the journal's path, so a rerun
    re-attaches."""
    from s2c.runtime.engines.base import EngineError

    requests = [Request(prompt=f"question {i}", sampling=Sampling(max_tokens=8)) for i in range(3)]
    with serve(tmp_path, batch_delay=0.05, batch_faults=["poll-error:first=2"]) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(batch=True, batch_poll=0.05, retries=3))
        try:
            out = engine.generate(requests)
        finally:
            engine.close()
    assert all(not isinstance(o, EngineFailure) for o in out)
    with serve(tmp_path, batch_delay=0.05, batch_faults=["poll-error"]) as url:
        engine = OpenAIEngine("echo-model", base_url=url, http=HttpOptions(batch=True, batch_poll=0.05, retries=1))
        engine.attach_run(tmp_path)
        try:
            with pytest.raises(EngineError, match="injected poll error; 2 polls in a row failed. The batches are in "
                                                  f"{tmp_path / 'batches.jsonl'}: rerun to re-attach to them"):
                engine.generate(requests)
        finally:
            engine.close()
