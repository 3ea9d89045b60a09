"""An OpenAI-compatible test server, stdlib only, run as its own process:

    python tests/helpers/llm_server.py --port 0 --port-file PORT --delay 0.1 --log LOG \
        [--fault KIND:WHEN[:TEXT] ...] [--slow-seconds S]

It serves one model, "echo-model", on 127.0.0.1: GET /v1/models, POST /v1/chat/completions and
POST /v1/completions, and vLLM's POST /tokenize (a prompt's tokens as `usage` counts them); and
Anthropic's Messages API: POST /v1/messages (the anthropic-version header, max_tokens and
messages required; the system prompt apart; prompt caching on a block marked cache_control, as
its usage reports it), POST /v1/messages/count_tokens, and GET /v1/models in Anthropic's shape
when the request has an anthropic-version header. OpenAI's Files and Batch API too (BatchAPI):
POST /v1/files, POST /v1/batches, GET /v1/batches/ID, GET /v1/files/ID/content; a batch's
creation is logged as {"event": "batch", "key": BATCH_ID, "custom_ids": [...]}. And Anthropic's
Message Batches: POST /v1/messages/batches, GET /v1/messages/batches/ID (results_url once
ended), GET /v1/messages/batches/ID/results (JSONL: succeeded, errored, expired).
Replies are deterministic functions of the prompt, shaped for BSM: a prompt with "Evaluation
Plan" gets three numbered criteria, one with "[Evaluation of" gets "[[A]]" or
"[[B]]", any other a few words derived from its sha256. Each request sleeps --delay seconds, so
requests overlap.

The --log file gets one JSON line per event, written and flushed at once, so that a test can
tell which calls a killed client had in flight:

    {"t": 1718000000.12, "n": 7, "key": "<sha256 of messages/prompt>", "event": "recv"}
    {"t": 1718000000.22, "n": 7, "key": "...", "event": "done", "status": 200}

"recv" is logged when a POST has been read, "done" once its reply is written and flushed, "fault"
instead of "done" for a reply a fault mode chose (with "fault": KIND), "aborted" when the client
was gone before the reply could be written. `n` numbers the POSTs from 1.

Fault modes (--fault, repeatable; serve(faults=[Fault(...)])) answer a POST instead of the normal
reply. KIND is what goes wrong:

    bad-key        401 whose message quotes the key the request was sent with (as OpenAI's does)
    http400 http429 http500 http503   that status; the error body's message is the same for every
                                      request of a kind and holds rich markup ("[bold]", a stray
                                      "[/x]") that a console must print as written; 429 carries
                                      Retry-After: RETRY_AFTER seconds
    bad-json       200 whose body is not JSON
    truncated      200 whose Content-Length promises more than is sent; then the connection closes
    empty-choices  200 with "choices": []
    null-content   200 whose message.content (chat) or text (completions) is null
    wrong-shape    200 whose JSON has no "choices" at all
    slow           the normal reply, after --slow-seconds (longer than the client's timeout)

WHEN says which POSTs it hits, deterministically:

    first=N   the first N attempts of each distinct request (counted per request key on this
              server): with N <= the client's retries a retry succeeds; with N > them the call
              fails for good, and a rerun against the same server gets the good reply
    every=K   every K-th POST (the server's count, all requests together)
    always    every attempt: the call fails for good until a server without the fault serves it

TEXT, if given, restricts the fault to requests whose prompt contains it (so one row of a run can
be the faulty one). Faults are tried in order and the first that hits answers, so
"http500:first=1" then "null-content:first=2" gives a 500, then a null content, then the reply.

Rate limits (--limit-requests N, --limit-tokens N, --window S; start(limits=Limits(...))): at
most N requests, or N tokens, arrive in any S seconds, counted as OpenAI counts them when a
request arrives: its prompt's tokens (one word is one token here, as in `usage`) plus max_tokens
(or max_completion_tokens) for each of its n samples. A request over a limit is answered 429 with
OpenAI's error body ({"error": {"message": "Rate limit reached for tokens ...", "type": "tokens",
"param": null, "code": "rate_limit_exceeded"}}) and Retry-After: the seconds until the window has
room for it; it is not counted. With --limit-headers every reply carries OpenAI's
x-ratelimit-limit-*, x-ratelimit-remaining-* and x-ratelimit-reset-* ("1.500s") headers. The
log's "done" line of a 429 has "status": 429, so a test counts them.

Reasoning models (--reasoning-model NAME, served besides MODEL): a request for NAME that sends
max_tokens, temperature, top_p, stop or seed is answered 400 with OpenAI's body for it
("Unsupported parameter: 'max_tokens' is not supported with this model. Use
'max_completion_tokens' instead.", "param": "max_tokens", "code": "unsupported_parameter").

Tests start it with `serve(tmp_path, delay=..., log=..., faults=[...])`, a context manager that
yields the base URL, or with `start(...)`, which also returns the process (to kill it mid-run), and
`stop`.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL = "echo-model"
FACTORS = ("Helpfulness", "Relevance", "Accuracy", "Depth", "Clarity", "Harmlessness")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa")

Reply = tuple[int, dict | bytes, dict]  # status, JSON body (or raw bytes), extra headers


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


def blocks_text(content) -> str:
    """A message's content as text: a string, or Anthropic's content blocks' texts."""
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content or ""


def prompt_text(path: str, body: dict) -> str:
    """The text a reply is derived from: the messages' contents, one per line, or the prompt.
    Anthropic's /v1/messages: its system prompt first, then the messages."""
    if path.startswith("/v1/messages"):
        parts = [blocks_text(body.get("system"))] if body.get("system") else []
        parts += [blocks_text(m.get("content")) for m in body.get("messages") or () if isinstance(m, dict)]
        return "\n".join(parts)
    if path.endswith("/chat/completions"):
        return "\n".join(m.get("content") or "" for m in body.get("messages") or () if isinstance(m, dict))
    return str(body.get("prompt", ""))


def completion_body(path: str, body: dict, key: str) -> dict:
    chat = path.endswith("/chat/completions")
    prompt = prompt_text(path, body)
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


class PromptCache:
    """Anthropic's prompt caching, as `usage` reports it: the text up to and including a block
    marked cache_control is a prefix; the first request with it writes it
    (cache_creation_input_tokens), later ones read it (cache_read_input_tokens); input_tokens is
    the rest. One word is one token, as everywhere here."""

    def __init__(self):
        self.lock = threading.Lock()
        self.prefixes: set[str] = set()

    def usage(self, body: dict) -> tuple[int, int, int]:
        """(input_tokens, cache_creation_input_tokens, cache_read_input_tokens) of a request."""
        blocks = []
        system = body.get("system")
        blocks += system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
        for m in body.get("messages") or ():
            content = m.get("content")
            blocks += content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        total = len(prompt_text("/v1/messages", body).split())
        seen, marked = "", None
        for b in blocks:
            seen += b.get("text", "")
            if b.get("cache_control"):
                marked = seen
        if marked is None:
            return total, 0, 0
        cached = len(marked.split())
        with self.lock:
            hit = marked in self.prefixes
            self.prefixes.add(marked)
        return total - cached, 0 if hit else cached, cached if hit else 0


def messages_body(body: dict, key: str, cache: PromptCache) -> dict:
    """Anthropic's Messages API reply (one text block)."""
    prompt = prompt_text("/v1/messages", body)
    text, reason, tokens = complete(reply_text(prompt), {"stop": body.get("stop_sequences"),
                                                          "max_tokens": body.get("max_tokens")})
    inp, created, read = cache.usage(body)
    stopped = any(s in reply_text(prompt) for s in body.get("stop_sequences") or ())
    return {"id": f"msg_{key[:24]}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if reason == "length" else "stop_sequence" if stopped else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": tokens, "cache_creation_input_tokens": created,
                      "cache_read_input_tokens": read}}


def anthropic_error(status: int, kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_test"}


class BatchAPI:
    """OpenAI's Files and Batch API: an uploaded JSONL file, a batch made of it that is run in the
    background after --batch-delay seconds, its output and error files. --batch-fault KIND:first=N
    hits the first N batches (expire, invalid), the first N attempts of each line (line-error) or
    the first N polls of any batch (poll-error):

        expire       the batch runs half its lines, then expires: the rest are in its error file
                     with code "batch_expired"
        invalid      the batch fails validation (status "failed", errors.data names a line)
        line-error   the line's response is a 500 in the error file
        poll-error   GET /v1/batches/ID answers 503 (the provider did not answer this poll)
    """

    def __init__(self, delay: float, faults: list[str], log):
        self.delay = delay
        self.faults = {f.split(":")[0]: int(f.split("=")[1]) if "=" in f else 10**9 for f in faults}
        self.log = log
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.line_attempts: dict[str, int] = {}
        self.made = 0
        self.polls = 0

    def poll_fails(self) -> bool:
        with self.lock:
            self.polls += 1
            return self._hit("poll-error", self.polls)

    def _hit(self, kind: str, count: int) -> bool:
        return count <= self.faults.get(kind, 0)

    def upload(self, name: str, data: bytes) -> dict:
        with self.lock:
            fid = f"file-{len(self.files) + 1:04d}"
            self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": name,
                "purpose": "batch", "status": "processed"}

    def create(self, body: dict) -> tuple[int, dict]:
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            return 404, {"error": {"message": f"No such File object: {body.get('input_file_id')}", "type": "invalid_request_error"}}
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        with self.lock:
            self.made += 1
            bid = f"batch_{self.made:04d}"
            batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                     "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                     "status": "validating", "output_file_id": None, "error_file_id": None,
                     "created_at": int(time.time()), "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            self.batches[bid] = batch
            number = self.made
        self.log("batch", 0, bid, custom_ids=[line["custom_id"] for line in lines])
        threading.Thread(target=self._run, args=(batch, lines, number), daemon=True).start()
        return 200, dict(batch)

    def create_anthropic(self, body: dict, cache: PromptCache) -> tuple[int, dict]:
        """Anthropic's POST /v1/messages/batches: {"requests": [{"custom_id", "params"}]}."""
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return 400, anthropic_error(400, "invalid_request_error", "requests: Field required")
        with self.lock:
            self.made += 1
            bid = f"msgbatch_{self.made:04d}"
            batch = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
                     "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                        "expired": 0},
                     "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-02T00:00:00Z", "ended_at": None,
                     "cancel_initiated_at": None, "archived_at": None, "results_url": None}
            self.batches[bid] = batch
            number = self.made
        self.log("batch", 0, bid, custom_ids=[r["custom_id"] for r in requests])
        threading.Thread(target=self._run_anthropic, args=(batch, requests, number, cache), daemon=True).start()
        return 200, dict(batch)

    def _run_anthropic(self, batch: dict, requests: list[dict], number: int, cache: PromptCache) -> None:
        time.sleep(self.delay)
        expire_after = len(requests) // 2 if self._hit("expire", number) else len(requests)
        rows, counts = [], {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for i, r in enumerate(requests):
            cid = r["custom_id"]
            with self.lock:
                attempt = self.line_attempts[cid] = self.line_attempts.get(cid, 0) + 1
            if i >= expire_after:
                result, kind = {"type": "expired"}, "expired"
            elif self._hit("line-error", attempt):
                result, kind = {"type": "errored", "error": anthropic_error(500, "api_error", "injected line error")}, \
                    "errored"
            else:
                result = {"type": "succeeded", "message": messages_body(r["params"], request_key(r["params"]), cache)}
                kind = "succeeded"
            counts[kind] += 1
            rows.append({"custom_id": cid, "result": result})
        with self.lock:
            fid = f"results-{batch['id']}"
            self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            batch.update(processing_status="ended", request_counts=counts, ended_at="2026-01-01T00:01:00Z",
                         results_url=f"/v1/messages/batches/{batch['id']}/results")

    def _run(self, batch: dict, lines: list[dict], number: int) -> None:
        with self.lock:
            batch["status"] = "in_progress"  # validated at once; runs for --batch-delay
        time.sleep(self.delay)
        if self._hit("invalid", number):
            with self.lock:
                batch.update(status="failed", errors={"object": "list", "data": [
                    {"code": "invalid_request", "message": "This line is not valid", "param": None, "line": 1}]})
            return
        expire_after = len(lines) // 2 if self._hit("expire", number) else len(lines)
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            if i >= expire_after:
                err.append({"id": f"req_{i}", "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                                                        "the completion window expired."}})
                continue
            with self.lock:
                attempt = self.line_attempts[cid] = self.line_attempts.get(cid, 0) + 1
            if self._hit("line-error", attempt):
                err.append({"id": f"req_{i}", "custom_id": cid, "error": None, "response": {
                    "status_code": 500, "request_id": f"req_{i}", "body": {"error": {"message": "injected line error",
                                                                                     "type": "server_error"}}}})
                continue
            path, body = line["url"], line["body"]
            reply = completion_body(path, body, request_key(body))
            out.append({"id": f"req_{i}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": f"req_{i}", "body": reply}})
        with self.lock:
            for kind, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    fid = f"file-{len(self.files) + 1:04d}"
                    self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[kind] = fid
            batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
            batch["status"] = "expired" if expire_after < len(lines) else "completed"


RETRY_AFTER = "0.2"  # seconds, on an injected 429: short, so that tests honouring it stay fast
MARKUP = "[bold]not bold[/bold] and a stray [/x] must print as written"
ERRORS = {"http400": "invalid_request_error", "http429": "rate_limit_exceeded", "http500": "internal_error",
          "http503": "overloaded"}
KINDS = (*ERRORS, "bad-key", "bad-json", "truncated", "empty-choices", "null-content", "wrong-shape", "slow")


@dataclass(frozen=True)
class Fault:
    """One fault mode: what goes wrong (`kind`), on which POSTs, for which prompts. The command
    line spells it KIND:WHEN[:TEXT] (see the module docstring); `str` and `parse` convert."""

    kind: str
    first: int = 0  # the first N attempts of each request key
    every: int = 0  # every K-th POST
    match: str = ""  # only prompts containing this text ("": all)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.first and self.every:
            raise ValueError("a fault hits the first N attempts or every K-th POST, not both")

    def __str__(self) -> str:
        when = f"first={self.first}" if self.first else f"every={self.every}" if self.every else "always"
        return f"{self.kind}:{when}" + (f":{self.match}" if self.match else "")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        kind, _, rest = spec.partition(":")
        when, _, match = rest.partition(":")
        name, _, number = when.partition("=")
        if when == "always":
            return cls(kind, match=match)
        if name in ("first", "every") and number.isdigit() and int(number) > 0:
            return cls(kind, match=match, **{name: int(number)})
        raise ValueError(f"{spec!r}: expected KIND:WHEN[:TEXT], WHEN one of always, first=N, every=K")

    def hits(self, n: int, attempt: int, prompt: str) -> bool:
        """Does it answer POST number `n`, the `attempt`-th (from 1) of its request key?"""
        if self.match not in prompt:
            return False
        if self.first:
            return attempt <= self.first
        return not self.every or n % self.every == 0


class Faults:
    """Picks the fault, if any, that answers a POST; counts each request key's attempts."""

    def __init__(self, faults: tuple[Fault, ...], slow_s: float):
        self.faults = faults
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}

    def pick(self, n: int, key: str, prompt: str) -> Fault | None:
        with self.lock:
            attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        return next((f for f in self.faults if f.hits(n, attempt, prompt)), None)

    def reply(self, fault: Fault, good: Reply, authorization: str = "") -> Reply:
        """What `fault` sends instead of `good` (the normal 200 reply to the same POST)."""
        kind, body = fault.kind, good[1]
        if kind == "bad-key":  # as providers do, the refusal quotes the key it was sent
            token = authorization.removeprefix("Bearer ")
            return 401, {"error": {"message": f"Incorrect API key provided: {token}. You can find your API key "
                                              "at https://platform.openai.com/account/api-keys.",
                                   "type": "invalid_request_error", "code": "invalid_api_key"}}, {}
        if kind in ERRORS:
            error = {"error": {"message": f"injected {kind}: {MARKUP}", "type": ERRORS[kind]}}
            return int(kind[4:]), error, {"Retry-After": RETRY_AFTER} if kind == "http429" else {}
        if kind == "bad-json":
            return 200, b'{"choices": [{"index": 0, <html>502 Bad Gateway</html>', {}
        if kind == "truncated":
            whole = json.dumps(body).encode()
            return 200, whole[: len(whole) // 2], {"Content-Length": str(len(whole))}
        if kind == "empty-choices":
            return 200, {**body, "choices": []}, {}
        if kind == "null-content":
            nulled = [{**c, "message": {**c["message"], "content": None}} if "message" in c else {**c, "text": None}
                      for c in body["choices"]]
            return 200, {**body, "choices": nulled}, {}
        if kind == "wrong-shape":
            return 200, {"id": body["id"], "object": "chat.completion", "output": "no choices here"}, {}
        time.sleep(self.slow_s)  # slow: the client has given up by now
        return good


@dataclass(frozen=True)
class Limits:
    """--limit-requests, --limit-tokens, --window, --limit-headers (module docstring)."""

    requests: int | None = None
    tokens: int | None = None
    window: float = 60.0
    headers: bool = False

    def args(self) -> list[str]:
        out = ["--window", str(self.window)]
        if self.requests is not None:
            out += ["--limit-requests", str(self.requests)]
        if self.tokens is not None:
            out += ["--limit-tokens", str(self.tokens)]
        return out + (["--limit-headers"] if self.headers else [])


class Window:
    """Arrivals in the last `limits.window` seconds: (time, tokens), oldest first."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.seen: list[tuple[float, int]] = []

    def admit(self, now: float, tokens: int, anthropic: bool = False) -> tuple[str | None, float, dict]:
        """(None, 0, headers), and the request is counted; or (the limit it is over, the seconds
        until the window has room for it, headers)."""
        lim = self.limits
        self.seen = [(t, k) for t, k in self.seen if t > now - lim.window]
        over, wait = None, 0.0
        if lim.requests is not None and len(self.seen) + 1 > lim.requests:
            over, wait = "requests", self.seen[len(self.seen) - lim.requests][0] + lim.window - now
        elif lim.tokens is not None and sum(k for _, k in self.seen) + tokens > lim.tokens:
            used = sum(k for _, k in self.seen) + tokens
            for t, k in self.seen:  # the oldest leave first: until this one fits
                used -= k
                wait = t + lim.window - now
                if used <= lim.tokens:
                    break
            over = "tokens"
        if over is None:
            self.seen.append((now, tokens))
        return over, max(wait, 0.001), self.headers(now, anthropic)

    def headers(self, now: float, anthropic: bool = False) -> dict:
        """OpenAI's x-ratelimit-* headers, or Anthropic's anthropic-ratelimit-* (reset: an RFC
        3339 time)."""
        if not self.limits.headers:
            return {}
        out = {}
        for kind, limit, used in (("requests", self.limits.requests, len(self.seen)),
                                  ("tokens", self.limits.tokens, sum(k for _, k in self.seen))):
            if limit is None:
                continue
            reset = max((self.seen[0][0] + self.limits.window - now) if self.seen else 0.0, 0.0)
            left = str(max(0, limit - used))
            if anthropic:
                when = datetime.fromtimestamp(time.time() + reset, UTC).isoformat().replace("+00:00", "Z")
                out |= {f"anthropic-ratelimit-{kind}-limit": str(limit), f"anthropic-ratelimit-{kind}-remaining": left,
                        f"anthropic-ratelimit-{kind}-reset": when}
            else:
                out |= {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": left,
                        f"x-ratelimit-reset-{kind}": f"{reset:.3f}s"}
        return out


def counted_tokens(path: str, body: dict) -> int:
    """What a request counts against a token limit when it arrives: prompt + max tokens per sample."""
    most = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    return len(prompt_text(path, body).split()) + int(most) * int(body.get("n") or 1)


REFUSED_BY_REASONING = ("max_tokens", "temperature", "top_p", "stop", "seed")


class State:
    """What the handler threads share: options, the POST counter, the rate window and the log."""

    def __init__(self, delay: float, log_path: str | None, faults: Faults, limits: Limits = Limits(),
                 reasoning_model: str | None = None, batch_delay: float = 0.3, batch_faults: list[str] | None = None):
        self.delay = delay
        self.faults = faults
        self.limits = limits
        self.window = Window(limits)
        self.reasoning_model = reasoning_model
        self.prompt_cache = PromptCache()
        self.batches = BatchAPI(batch_delay, batch_faults or [], self.log)
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
            parts = self.path.strip("/").split("/")
            if parts[:3] == ["v1", "messages", "batches"] and len(parts) in (4, 5):
                with state.batches.lock:
                    batch = state.batches.batches.get(parts[3])
                    batch = dict(batch) if batch else None
                if batch is None:
                    return self._send(404, anthropic_error(404, "not_found_error", "no such batch"))
                if len(parts) == 5:  # .../results: JSONL, once ended
                    data = state.batches.files.get(f"results-{parts[3]}")
                    return self._send(200, data, {"Content-Type": "application/binary"}) if data else \
                        self._send(400, anthropic_error(400, "invalid_request_error", "the batch has not ended"))
                if batch["results_url"]:  # absolute, as the API gives it
                    batch["results_url"] = f"http://{self.headers.get('Host')}{batch['results_url']}"
                return self._send(200, batch)
            if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                if state.batches.poll_fails():
                    return self._send(503, {"error": {"message": "injected poll error", "type": "server_error"}})
                with state.batches.lock:
                    batch = state.batches.batches.get(parts[2])
                    batch = dict(batch) if batch else None
                return self._send(200, batch) if batch else self._send(404, {"error": {"message": "no such batch"}})
            if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
                data = state.batches.files.get(parts[2])
                if data is None:
                    return self._send(404, {"error": {"message": "no such file"}})
                return self._send(200, data, {"Content-Type": "application/octet-stream"})
            if self.path.rstrip("/") == "/v1/models" and self.headers.get("anthropic-version"):  # Anthropic's shape
                return self._send(200, {"data": [{"type": "model", "id": MODEL, "display_name": "Echo",
                                                  "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"}],
                                        "has_more": False, "first_id": MODEL, "last_id": MODEL})
            if self.path.rstrip("/") == "/v1/models":
                names = [MODEL] + ([state.reasoning_model] if state.reasoning_model else [])
                return self._send(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "s2c-test"} for name in names]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/v1/files":  # multipart: purpose and file
                form = BytesParser(policy=email_policy).parsebytes(
                    f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode() + raw)
                fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
                if "file" not in fields or fields.get("purpose") is None:
                    return self._send(400, {"error": {"message": "file and purpose are required"}})
                return self._send(200, state.batches.upload(fields["file"].get_filename() or "upload",
                                                            fields["file"].get_payload(decode=True)))
            if self.path == "/v1/batches":
                status, reply = state.batches.create(json.loads(raw))
                return self._send(status, reply)
            if self.path == "/v1/messages/batches":
                status, reply = state.batches.create_anthropic(json.loads(raw), state.prompt_cache)
                return self._send(status, reply)
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(400, {"error": {"message": "the body is not JSON"}})
            if self.path == "/v1/messages/count_tokens":  # Anthropic's
                return self._send(200, {"input_tokens": len(prompt_text("/v1/messages", body).split())})
            if self.path == "/tokenize":  # vLLM's: the prompt's tokens as `usage` counts them (its words)
                path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
                count = len(prompt_text(path, body).split())
                return self._send(200, {"count": count, "max_model_len": 8192, "tokens": list(range(count))})
            n, key = state.next_serial(), request_key(body)
            state.log("recv", n, key)
            anthropic = self.path == "/v1/messages"
            with state.lock:  # arrival is when a limit counts a request
                over, wait, limit_headers = state.window.admit(time.monotonic(), counted_tokens(self.path, body),
                                                               anthropic)
            if over is not None:
                message = (f"Rate limit reached for {over} per {state.limits.window:g} s on {MODEL}. "
                           f"Please try again in {wait:.3f}s.")
                error = anthropic_error(429, "rate_limit_error", message) if anthropic else \
                    {"error": {"message": message, "type": over, "param": None, "code": "rate_limit_exceeded"}}
                self._send(429, error, {"retry-after": f"{wait:.3f}", **limit_headers})
                return state.log("done", n, key, status=429)
            time.sleep(state.delay)
            status, payload, headers = reply = self._answer(body, key)
            headers = {**headers, **limit_headers}
            fault = state.faults.pick(n, key, prompt_text(self.path, body)) if status == 200 else None
            if fault is not None:
                status, payload, headers = state.faults.reply(fault, reply, self.headers.get("Authorization", ""))
            extra = {"status": status, **({"fault": fault.kind} if fault else {})}
            if not self._send(status, payload, headers):
                state.log("aborted", n, key, **extra)
            else:
                state.log("fault" if fault or status != 200 else "done", n, key, **extra)

        def _answer(self, body: dict, key: str) -> Reply:
            if self.path == "/v1/messages":
                return self._messages(body, key)
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                return 404, {"error": {"message": f"no route {self.path}"}}, {}
            if state.reasoning_model and body.get("model") == state.reasoning_model:
                refused = next((p for p in REFUSED_BY_REASONING if p in body), None)
                if refused is not None:
                    hint = " Use 'max_completion_tokens' instead." if refused == "max_tokens" else ""
                    return 400, {"error": {"message": f"Unsupported parameter: '{refused}' is not supported with "
                                                      f"this model.{hint}", "type": "invalid_request_error",
                                           "param": refused, "code": "unsupported_parameter"}}, {}
                return 200, completion_body(self.path, {**body, "model": MODEL}, key), {}
            if body.get("model") != MODEL:
                return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}, {}
            if self.path.endswith("/chat/completions") and not isinstance(body.get("messages"), list):
                return 400, {"error": {"message": "messages is required"}}, {}
            return 200, completion_body(self.path, body, key), {}

        def _messages(self, body: dict, key: str) -> Reply:
            """Anthropic's POST /v1/messages, with its checks: the version header, max_tokens and
            messages are required."""
            if not self.headers.get("anthropic-version"):
                return 400, anthropic_error(400, "invalid_request_error", "anthropic-version: header is required"), {}
            if body.get("model") != MODEL:
                return 404, anthropic_error(404, "not_found_error", f"model: {body.get('model')}"), {}
            for required in ("max_tokens", "messages"):
                if required not in body:
                    return 400, anthropic_error(400, "invalid_request_error", f"{required}: Field required"), {}
            return 200, messages_body(body, key, state.prompt_cache), {"request-id": f"req_{key[:12]}"}

        def _send(self, status: int, payload: dict | bytes, headers: dict | None = None) -> bool:
            """Write the reply; False if the client has gone away. A Content-Length in `headers`
            that promises more than `payload` holds (a truncated reply) closes the connection
            after what there is."""
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            headers = {"Content-Length": str(len(data)), **(headers or {})}
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if int(headers["Content-Length"]) > len(data):
                    self.close_connection = True
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


def start(folder: Path, *, delay: float = 0.0, log: Path | None = None, faults: Sequence[Fault] = (),
          slow_s: float | None = None, port: int = 0, startup_s: float = 20.0, limits: Limits | None = None,
          reasoning_model: str | None = None, batch_delay: float | None = None,
          batch_faults: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """Start this server as a subprocess; returns it and its base URL (".../v1") once it listens.
    `faults` and `slow_s` are --fault and --slow-seconds (module docstring). `port` (0: a free
    one) lets a restarted server take its predecessor's URL, which is part of the call cache's key.
    The caller ends it with `stop` (or kills it, to play a crash)."""
    port_file = Path(tempfile.mkdtemp(prefix="llm-server-", dir=folder)) / "port"
    cmd = [sys.executable, __file__, "--port", str(port), "--port-file", str(port_file), "--delay", str(delay)]
    if log is not None:
        cmd += ["--log", str(log)]
    for fault in faults:
        cmd += ["--fault", str(fault)]
    if slow_s is not None:
        cmd += ["--slow-seconds", str(slow_s)]
    if limits is not None:
        cmd += limits.args()
    if reasoning_model is not None:
        cmd += ["--reasoning-model", reasoning_model]
    if batch_delay is not None:
        cmd += ["--batch-delay", str(batch_delay)]
    for fault in batch_faults:
        cmd += ["--batch-fault", fault]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + startup_s
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"llm_server exited with {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"llm_server wrote no port file in {startup_s} s")
            time.sleep(0.02)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port_file.read_text()}/v1"


def stop(proc: subprocess.Popen) -> None:
    """End a server from `start` (SIGTERM, then SIGKILL); one already dead is fine."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()


@contextmanager
def serve(folder: Path, **options) -> Iterator[str]:
    """Run this server while the block runs (`start`'s options); yields its base URL."""
    proc, url = start(folder, **options)
    try:
        yield url
    finally:
        stop(proc)


def fault_arg(spec: str) -> Fault:
    try:
        return Fault.parse(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="OpenAI-compatible test server (deterministic replies)")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--port-file", default=None, help="write the port here once listening")
    p.add_argument("--delay", type=float, default=0.0, help="seconds each POST takes")
    p.add_argument("--log", default=None, help="append a JSON line per request event")
    p.add_argument("--fault", action="append", type=fault_arg, default=[], metavar="KIND:WHEN[:TEXT]",
                   help=f"answer some POSTs with a fault; KIND one of {', '.join(KINDS)}; WHEN always, "
                        "first=N (attempts of each request) or every=K (POSTs); TEXT: only prompts containing it")
    p.add_argument("--slow-seconds", type=float, default=5.0, metavar="S", help="how long a 'slow' fault waits")
    p.add_argument("--limit-requests", type=int, default=None, help="at most N requests per --window")
    p.add_argument("--limit-tokens", type=int, default=None, help="at most N tokens per --window")
    p.add_argument("--window", type=float, default=60.0, help="seconds of the rate limits' window")
    p.add_argument("--limit-headers", action="store_true", help="send x-ratelimit-* headers")
    p.add_argument("--reasoning-model", default=None, help="also serve this name, as a reasoning model")
    p.add_argument("--batch-delay", type=float, default=0.3, help="seconds a batch takes to run")
    p.add_argument("--batch-fault", action="append", default=[], metavar="KIND:first=N",
                   help="expire, invalid (the first N batches) or line-error (the first N attempts of each line)")
    args = p.parse_args(argv)
    faults = Faults(tuple(args.fault), args.slow_seconds)
    limits = Limits(args.limit_requests, args.limit_tokens, args.window, args.limit_headers)
    server = Server(("127.0.0.1", args.port), make_handler(State(args.delay, args.log, faults, limits,
                                                                 args.reasoning_model, args.batch_delay,
                                                                 args.batch_fault)))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)  # a reader never sees half a number
    server.serve_forever()


if __name__ == "__main__":
    main()
