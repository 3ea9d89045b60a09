"""An OpenAI-compatible test server, stdlib only, run as its own process:

    python tests/helpers/llm_server.py --port 0 --port-file PORT --delay 0.1 --log LOG [--fail-every K]

It serves one model, "echo-model", on 127.0.0.1: GET /v1/models, POST /v1/chat/completions and
POST /v1/completions. Replies are deterministic functions of the prompt, shaped for BSM: a prompt
with "Evaluation Plan" gets three numbered criteria, one with "[Evaluation of" gets "[[A]]" or
"[[B]]", any other a few words derived from its sha256. Each request sleeps --delay seconds, so
requests overlap.

The --log file gets one JSON line per event, written and flushed at once, so that a test can
tell which calls a killed client had in flight:

    {"t": 1718000000.12, "n": 7, "key": "<sha256 of messages/prompt>", "event": "recv"}
    {"t": 1718000000.22, "n": 7, "key": "...", "event": "done", "status": 200}

"recv" is logged when a POST has been read, "done" once its reply is written and flushed, "fault"
instead of "done" for a reply a fault mode chose, "aborted" when the client was gone before the
reply could be written. `n` numbers the POSTs from 1.

Tests start it with `serve(tmp_path, delay=..., log=...)`, a context manager that yields the
base URL. Fault modes hang off `Faults.reply` (one hook, called for every POST before its normal
reply); only --fail-every K (HTTP 503 on every K-th POST) exists so far.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL = "echo-model"
FACTORS = ("Helpfulness", "Relevance", "Accuracy", "Depth", "Clarity", "Harmlessness")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa")

Reply = tuple[int, dict, dict]  # status, JSON body, extra headers


def request_key(body: dict) -> str:
    """What the model sees (messages, or the prompt), hashed: one key per distinct call."""
    seen = body["messages"] if "messages" in body else body.get("prompt", "")
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


def reply_text(prompt: str, index: int = 0) -> str:
    """The reply to `prompt`; sample `index` > 0 differs from sample 0 (for n > 1)."""
    digest = hashlib.sha256(f"{prompt}\x00{index}".encode() if index else prompt.encode()).digest()
    if "Evaluation Plan" in prompt:
        start = digest[0] % len(FACTORS)
        picked = [FACTORS[(start + i) % len(FACTORS)] for i in range(3)]
        return "\n".join(f"{i}. {f}: how well each response does on {f.lower()}."
                         for i, f in enumerate(picked, 1))
    if "[Evaluation of" in prompt:
        verdict = "A" if digest[0] % 2 == 0 else "B"
        return f"Weighing the criteria above, the better response is [[{verdict}]]"
    return " ".join(WORDS[b % len(WORDS)] for b in digest[:6]) + f" {digest[6] % 10 + 1}"


def complete(text: str, body: dict) -> tuple[str, str, int]:
    """Apply stop strings and max_tokens (one word is one token): text, finish_reason, tokens."""
    for stop in body.get("stop") or ():
        text = text.split(stop, 1)[0]
    words = text.split(" ")
    limit = int(body.get("max_tokens") or 256)
    if len(words) > limit:
        return " ".join(words[:limit]), "length", limit
    return text, "stop", len(words)


def completion_body(path: str, body: dict, key: str) -> dict:
    chat = path.endswith("/chat/completions")
    prompt = "\n".join(m.get("content") or "" for m in body["messages"]) if chat else body.get("prompt", "")
    choices, generated = [], 0
    for i in range(int(body.get("n") or 1)):
        text, reason, tokens = complete(reply_text(prompt, i), body)
        generated += tokens
        out = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choices.append({"index": i, **out, "finish_reason": reason})
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{key[:16]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": choices,
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": generated,
                  "total_tokens": len(prompt.split()) + generated},
    }


class Faults:
    """Where fault modes live: `reply` may answer a POST instead of the normal reply."""

    def __init__(self, fail_every: int = 0):
        self.fail_every = fail_every

    def reply(self, n: int, path: str, body: dict) -> Reply | None:
        if self.fail_every and n % self.fail_every == 0:
            return 503, {"error": {"message": f"injected fault: request {n}", "type": "overloaded"}}, {}
        return None


class State:
    """What the handler threads share: options, the POST counter and the log."""

    def __init__(self, delay: float, log_path: str | None, faults: Faults):
        self.delay = delay
        self.faults = faults
        self.lock = threading.Lock()
        self.count = 0
        # open for the server's lifetime; line-buffered, and flushed after every event as well
        self.log_file = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None  # noqa: SIM115

    def next_serial(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def log(self, event: str, n: int, key: str, **extra) -> None:
        if self.log_file is None:
            return
        line = json.dumps({"t": time.time(), "n": n, "key": key, "event": event, **extra})
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        wbufsize = 1 << 20  # a whole reply leaves in one write, at flush

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [
                    {"id": MODEL, "object": "model", "created": 0, "owned_by": "s2c-test"}]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(400, {"error": {"message": "the body is not JSON"}})
            n, key = state.next_serial(), request_key(body)
            state.log("recv", n, key)
            time.sleep(state.delay)
            status, payload, headers = self._answer(n, key, body)
            if self._send(status, payload, headers):
                state.log("done" if status == 200 else "fault", n, key, status=status)
            else:
                state.log("aborted", n, key, status=status)

        def _answer(self, n: int, key: str, body: dict) -> Reply:
            fault = state.faults.reply(n, self.path, body)
            if fault is not None:
                return fault
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                return 404, {"error": {"message": f"no route {self.path}"}}, {}
            if body.get("model") != MODEL:
                return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}, {}
            if self.path.endswith("/chat/completions") and not isinstance(body.get("messages"), list):
                return 400, {"error": {"message": "messages is required"}}, {}
            return 200, completion_body(self.path, body, key), {}

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> bool:
            """Write the reply; False if the client has gone away."""
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                return True
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return False

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 makes a burst of new connections wait a second

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed client is no news
            super().handle_error(request, client_address)


@contextmanager
def serve(folder: Path, *, delay: float = 0.0, log: Path | None = None, fail_every: int = 0,
          startup_s: float = 20.0) -> Iterator[str]:
    """Run this server as a subprocess while the block runs; yields its base URL (".../v1")."""
    port_file = Path(tempfile.mkdtemp(prefix="llm-server-", dir=folder)) / "port"
    cmd = [sys.executable, __file__, "--port", "0", "--port-file", str(port_file), "--delay", str(delay)]
    if log is not None:
        cmd += ["--log", str(log)]
    if fail_every:
        cmd += ["--fail-every", str(fail_every)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + startup_s
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"llm_server exited with {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"llm_server wrote no port file in {startup_s} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port_file.read_text()}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="OpenAI-compatible test server (deterministic replies)")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--port-file", default=None, help="write the port here once listening")
    p.add_argument("--delay", type=float, default=0.0, help="seconds each POST takes")
    p.add_argument("--log", default=None, help="append a JSON line per request event")
    p.add_argument("--fail-every", type=int, default=0, metavar="K", help="HTTP 503 on every K-th POST")
    args = p.parse_args(argv)
    server = Server(("127.0.0.1", args.port), make_handler(State(args.delay, args.log, Faults(args.fail_every))))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)  # a reader never sees half a number
    server.serve_forever()


if __name__ == "__main__":
    main()
