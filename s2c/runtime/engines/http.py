"""What every HTTP engine shares: concurrency, rate limits, retries with backoff, failover between
servers, and keeping the API key out of every message. An engine for one provider's API
(openai.py) subclasses `HttpEngine` and says only how a request becomes a body (`_body`), how a
200 reply becomes completions (`_completions`), how a server proves it is up and serves the model
(`_check_server`) and how its error bodies read (`_error_detail`).

Each submitted request is one HTTP call on a thread pool (`concurrency` at a time per server, the
pool lives as long as the engine); `collect` hands back every call that has finished, as soon as it
has, so the executor can cache each result the moment it exists.

**Retries.** An attempt fails, and is retried with exponential backoff (`retries` times, honouring
Retry-After), on a connection error, a timeout or a cut-off body (reason: httpx's name for it,
"ReadTimeout", "RemoteProtocolError"), on 408, 429 and 5xx ("HTTP 503"), and on a 200 that holds no
completion (the subclass's `_completions` raises Retry). A request that still fails, or gets
another 4xx (not retried: it would fail the same way), becomes an EngineFailure naming what went
wrong, and the others go on.

**Rate limits.** Three things keep a run under a provider's limits rather than burning retries:
- `rpm` and `tpm`, the limits the user gives, per server: requests start paced evenly at 90 % of
  them (a generic cell rate: each request moves the next allowed start by 1/rate, and its tokens
  by tokens/rate), so that no window of a minute, or shorter, sees more than the limit. A
  request's tokens are its prompt's, estimated from its characters at the fewest characters per
  token this server has reported so far (3 until it reports usage), plus `max_tokens` for each
  sample: what providers count against the limit when the request arrives. A reply's usage that
  shows more prompt tokens than estimated moves the pace on by the difference.
- The limits the provider reports: OpenAI's `x-ratelimit-remaining-requests` / `-tokens` with
  `x-ratelimit-reset-*` ("1s", "6m0s", "20ms"), Anthropic's `anthropic-ratelimit-*-remaining` with
  `-reset` (an RFC 3339 time). When one says nothing is left, no request starts on that server
  until the reset.
- A 429 pauses every worker on that server together, for its Retry-After (or the backoff), and the
  request is retried after it.

**Several servers** (a list of base URLs). A request goes to the first server with a free slot in
its own order of the servers, a rendezvous hash of its model name and the first PREFIX_CHARS
characters of what it sends: requests that share a prefix go to the same server, whose prefix
cache then hits, and spill over to the next one only while that server is full. A server that an
attempt cannot reach (a connection error, a timeout, a cut-off body) is marked down, and the
attempt goes to the next healthy server at once, with "server down: URL" in `Finished.retries` and
no retry spent. A down server is probed (`_check_server`) after backoff, 2 * backoff, ... (at most
PROBE_MAX_S) seconds, and takes requests again once it answers.

**Keys.** The key goes in a header and nowhere else: every error message an engine makes passes
through `_redact`, which removes the key and anything shaped like one. Sending a key over plain
http:// to a host that is not this machine gets a warning.
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
import math
import random
import re
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from s2c.errors import S2Error
from s2c.runtime.engines.base import (
    Completion,
    EngineError,
    EngineFailure,
    Finished,
    Request,
    Result,
    Streaming,
)

RETRY_STATUS = {408, 429, 500, 502, 503, 504, 529}  # 529: Anthropic's overloaded
PREFIX_CHARS = 256  # how much of a request picks its server (prefix affinity)
PROBE_MAX_S = 30.0  # the longest pause between two probes of a down server
PACE = 0.9  # requests start at this share of --rpm / --tpm
FIRST_CHARS_PER_TOKEN = 3.0  # until a server reports usage: fewer characters per token than most tokenizers
MAX_RETRY_AFTER_S = 60.0
KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,})")


@dataclass(frozen=True)
class HttpOptions:
    """How an HTTP engine talks to its servers (the CLI's --concurrency, --rpm, --tpm, --retries,
    --timeout). Limits are per server."""

    concurrency: int = 8  # requests in flight per server
    rpm: float | None = None  # requests per minute the server allows (None: no limit set)
    tpm: float | None = None  # tokens per minute: prompt + max_tokens per sample, as providers count
    retries: int = 3  # further attempts of a request that failed in a way worth retrying
    timeout: float = 300.0  # seconds for one attempt (connecting: at most 10)
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    batch: bool = False  # send the requests through the provider's batch API (batch.py), at its batch price
    batch_poll: float = 10.0  # seconds between two polls of an open batch

    def check(self) -> None:
        for flag, value, least in (("--concurrency", self.concurrency, 1), ("--retries", self.retries, 0)):
            if value != int(value) or value < least:
                raise S2Error(f"{flag} {value}: a whole number >= {least}")
        for flag, value in (("--rpm", self.rpm), ("--tpm", self.tpm), ("--timeout", self.timeout),
                            ("--batch-poll", self.batch_poll)):
            if value is not None and not value > 0:
                raise S2Error(f"{flag} {value}: must be more than 0")


DEFAULT_HTTP = HttpOptions()


class Failed(Exception):
    """A request that failed for good (after retries, or not retryable)."""


class Retry(Exception):
    """One attempt failed in a way worth trying again; `reason` is what `Finished.retries` shows."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class Unreachable(Retry):
    """The server gave no reply at all (transport error): with several, it is marked down."""


class RateLimit:
    """One server's pace (from --rpm and --tpm), what its headers said is left, and its pause
    after a 429. Not thread-safe: the engine holds its lock around every call."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.request_rate = rpm * PACE / 60 if rpm else None  # per second
        self.token_rate = tpm * PACE / 60 if tpm else None
        self.next_request = 0.0  # monotonic time the next request may start (the cell rate's clock)
        self.next_tokens = 0.0
        self.paused_until = 0.0  # a 429's Retry-After, or the reset of a limit the headers say is spent
        self.chars_per_token = FIRST_CHARS_PER_TOKEN

    def tokens(self, chars: int, max_out: int) -> int:
        """What a request of `chars` prompt characters and `max_out` generated tokens counts."""
        return math.ceil(chars / self.chars_per_token) + max_out

    def wait(self, now: float, tokens: int) -> float:
        """Seconds before a request of `tokens` may start here (0: now)."""
        due = self.paused_until
        if self.request_rate:
            due = max(due, self.next_request)
        if self.token_rate:
            due = max(due, self.next_tokens)
        return max(0.0, due - now)

    def take(self, now: float, tokens: int) -> None:
        if self.request_rate:
            self.next_request = max(self.next_request, now) + 1 / self.request_rate
        if self.token_rate:
            self.next_tokens = max(self.next_tokens, now) + tokens / self.token_rate

    def settle(self, chars: int, estimated_prompt: int, prompt_tokens: int) -> None:
        """A reply's usage: learn this server's characters per token, and pay for prompt tokens
        the estimate missed."""
        if prompt_tokens > 0 and chars > 0:
            self.chars_per_token = min(self.chars_per_token, chars / prompt_tokens)
        if self.token_rate and prompt_tokens > estimated_prompt:
            self.next_tokens += (prompt_tokens - estimated_prompt) / self.token_rate

    def pause(self, now: float, seconds: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)

    def learn(self, now: float, headers: Mapping[str, str]) -> None:
        """Pause until the reset of a limit the provider's headers say is spent."""
        for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
            for remaining, reset in ((f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}"),
                                     (f"anthropic-ratelimit-{kind}-remaining", f"anthropic-ratelimit-{kind}-reset")):
                left = _number(headers.get(remaining))
                if left is not None and left <= 0:
                    seconds = _reset_seconds(headers.get(reset))
                    if seconds is not None:
                        self.pause(now, min(seconds, MAX_RETRY_AFTER_S))


class Server:
    """One base URL: its health, its counts and its rate limit (guarded by the engine's lock)."""

    __slots__ = ("error", "failed_over", "in_flight", "limit", "rate_limited", "requests", "up", "url")

    def __init__(self, url: str, options: HttpOptions):
        self.url = url
        self.up = True
        self.error = ""  # why it is down
        self.in_flight = 0
        self.requests = 0  # POSTs sent to it
        self.failed_over = 0  # of those, the ones that got no reply and went to another server
        self.rate_limited = 0  # of those, the ones answered 429
        self.limit = RateLimit(options.rpm, options.tpm)


class HttpEngine(Streaming):
    """The shared machinery; see the module docstring. Subclasses set `name` and implement
    `_body`, `_completions` and `_check_server`, and call `_start` once their checks passed."""

    def __init__(self, urls: Sequence[str], headers: dict[str, str], options: HttpOptions,
                 secret: str | None = None, log=None):
        httpx = self._httpx()
        options.check()
        self.options = options
        self._secret = secret
        self._servers = [Server(u, options) for u in urls]
        self.base_url = ",".join(sorted(urls))  # the URL; several sorted and joined, as in model_id
        slots = options.concurrency * len(urls)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(options.timeout, connect=min(options.timeout, 10.0)),
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
        )
        self._cond = threading.Condition()  # guards the servers' health, counts and limits
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix=f"s2c-{self.name}")
        self._running: dict[Future, Hashable] = {}  # in submission order
        self._batches = None  # batch.Batches, in batch mode (a provider's engine sets it)
        if secret:
            for u in urls:
                if _plain_http_off_host(u) and log is not None:
                    log(f"s2c: warning: the API key goes to {u} over plain http://, readable on the way; "
                        "use https://")

    @staticmethod
    def _httpx():
        from s2c.errors import require

        return require("httpx", "openai", "the HTTP engines", error=EngineError)

    # ------------------------------------------------------------ what a provider's engine says
    def _body(self, request: Request) -> tuple[str, dict]:
        """The path (after the base URL) and the JSON body of `request`."""
        raise NotImplementedError

    def _completions(self, data, request: Request) -> list[Completion]:
        """The completions in a 200 reply's JSON; raises Retry on a reply that holds none."""
        raise NotImplementedError

    def _check_server(self, url: str) -> None:
        """Raise EngineError unless the server at `url` is up and serves this engine's models."""
        raise NotImplementedError

    def _error_detail(self, status: int, text: str) -> str:
        """One line for a reply with an error status (the provider's error message)."""
        return text[:500]

    # ------------------------------------------------------------ models by role
    # `_names`: role -> the model's name on the server(s), set by the provider's engine once its
    # servers said what they serve
    def model_id(self, role: str = "default") -> str:
        return f"{self._name(role)}@{self.base_url}"

    def _name(self, role: str) -> str:
        return self._names.get(role, self._names["default"])

    def role_models(self) -> dict[str, str]:
        return dict(self._names)

    def _call(self, method: str, url: str, **kw):
        """One request outside the retried path (a batch API's upload, poll or results): the
        reply, or EngineError with the provider's error in one line, without the key."""
        import httpx

        try:
            response = self._client.request(method, url, **kw)
        except httpx.TransportError as e:
            raise EngineError(self._redact(f"{method} {url}: {type(e).__name__}: {e}")) from e
        if response.status_code != 200:
            raise EngineError(self._redact(f"{method} {url}: HTTP {response.status_code}: "
                                           f"{self._error_detail(response.status_code, response.text)}"))
        return response

    def _limits(self, body: dict) -> tuple[int, int]:
        """What a request counts against a token limit: its prompt's characters, and the tokens it
        may generate (all samples)."""
        seen = "".join(_text(m.get("content")) for m in body.get("messages") or ()) + str(body.get("prompt", ""))
        seen += _text(body.get("system"))
        out = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0) * int(body.get("n") or 1)
        return len(seen), out

    # ------------------------------------------------------------ the Streaming protocol
    def server_stats(self) -> dict[str, dict]:
        """Per server: {"requests": POSTs sent, "failed_over": of those, the ones that got no
        reply and went to another server, "rate_limited": answered 429, "down": down now}."""
        with self._cond:
            return {s.url: {"requests": s.requests, "failed_over": s.failed_over, "rate_limited": s.rate_limited,
                            "down": not s.up} for s in self._servers}

    def spread(self) -> dict | None:
        """summary.json's engine_spread: per server, with several, or once one answered 429."""
        stats = self.server_stats()
        return {"servers": stats} if len(stats) > 1 or any(s["rate_limited"] for s in stats.values()) else None

    @property
    def batch(self) -> bool:
        """Requests go through the provider's batch API (priced at its batch prices)."""
        return self._batches is not None

    @property
    def window(self) -> int | None:
        """In batch mode, how many requests the executor may hand over at once: a wave is every
        request the dataflow has ready (None: the run's --chunk-size)."""
        return self._batches.client.max_requests if self._batches is not None else None

    def batch_states(self) -> list[str]:
        """Each open batch's state, for progress ([] online)."""
        return self._batches.states() if self._batches is not None else []

    def attach_run(self, run_dir) -> None:
        """The run folder: in batch mode, its batches.jsonl journal (batch.Batches.attach)."""
        if self._batches is not None:
            self._batches.attach(run_dir)

    def submit(self, tag: Hashable, request: Request) -> None:
        if self._batches is not None:
            refused = self._refuse(request)
            if refused:
                self._batches.finished.append(Finished(tag, EngineFailure(refused), ()))
                return
            self._batches.submit(tag, request, *self._body(request))
            return
        self._running[self._pool.submit(self._serve, request)] = tag

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        if self._batches is not None:
            return self._batches.collect(max_seconds)
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
        return self._batches.pending() if self._batches is not None else len(self._running)

    def close(self) -> None:
        """Drop queued requests; calls in flight end with the client (nothing collects them)."""
        self._closed.set()  # probes stop; workers waiting for a slot give up
        with self._cond:
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._running.clear()
        self._client.close()

    # ------------------------------------------------------------ one request
    def _serve(self, request: Request) -> tuple[Result, tuple[str, ...]]:
        """One request, on a worker thread: its result and the reasons of its retries."""
        refused = self._refuse(request)
        if refused:
            return EngineFailure(refused), ()
        path, body = self._body(request)
        retries: list[str] = []
        try:
            return self._post(path, body, request, retries), tuple(retries)
        except Failed as e:
            return EngineFailure(self._redact(str(e))), tuple(retries)

    def _refuse(self, request: Request) -> str | None:
        """Why this engine cannot serve `request` at all (None: it can)."""
        return None

    def _post(self, path: str, body: dict, request: Request, retries: list[str]) -> list[Completion]:
        """POST until a reply holds the completions; appends the reason of each retried attempt
        to `retries`."""
        order = self._order(body)
        for attempt in range(self.options.retries + 1):
            try:
                return self._attempt(path, body, order, request, retries)
            except Retry as e:
                if attempt == self.options.retries:
                    raise Failed(f"{e} (gave up after {attempt + 1} attempts)" if attempt else str(e)) from e
                retries.append(e.reason)
                if e.retry_after is None or e.reason != "HTTP 429":  # a 429 paused its server already
                    self._sleep(attempt, e.retry_after)
        raise AssertionError("unreachable")

    def _order(self, body: dict) -> list[Server]:
        """The servers in this request's order of preference: highest random weight of its model
        and prefix first (rendezvous hashing), so that a server's leaving moves only its share."""
        if len(self._servers) == 1:
            return self._servers
        seen = ("".join(f"{m['role']}\n{_text(m['content'])}\n" for m in body["messages"])
                if "messages" in body else str(body.get("prompt", "")))
        key = f"{body.get('model')}\x00{seen[:PREFIX_CHARS]}".encode()
        return sorted(self._servers, reverse=True,
                      key=lambda s: hashlib.blake2b(s.url.encode() + b"\x00" + key, digest_size=8).digest())

    def _attempt(self, path: str, body: dict, order: list[Server], request: Request,
                 retries: list[str]) -> list[Completion]:
        """One attempt: the POST goes to the first healthy server in `order` with a free slot
        whose limits let it start. With several servers, one that gives no reply is marked down
        and the POST goes to the next at once ("server down: URL" in `retries`; no attempt spent)."""
        chars, out = self._limits(body)
        for _ in range(2 * len(order)):  # a bound, should servers keep leaving and rejoining
            server, estimate = self._acquire(order, chars, out)
            try:
                data = self._send(server, path, body)
                completions = self._completions(data, request)
                with self._cond:
                    server.limit.settle(chars, estimate - out, completions[0].prompt_tokens if completions else 0)
                return completions
            except Unreachable as e:
                if len(order) == 1:
                    raise  # nowhere else to go: an ordinary retry, after a backoff
                self._mark_down(server, e)
                retries.append(f"server down: {server.url}")
            finally:
                self._release(server)
        raise Failed(f"POST {path}: gave up after {2 * len(order)} servers went down under it")

    def _acquire(self, order: list[Server], chars: int, out: int) -> tuple[Server, int]:
        """Take a slot on the first healthy server in `order` that has one and whose limits let
        a request start now; waits while none does. Returns it and the tokens the request counts
        there. Raises Failed while every server is down."""
        with self._cond:
            while not self._closed.is_set():
                up = [s for s in order if s.up]
                if not up:
                    raise Failed(f"all {len(order)} servers are down: "
                                 + "; ".join(f"{s.url} ({s.error})" for s in order))
                now = time.monotonic()
                soonest = None
                for s in up:
                    if s.in_flight >= self.options.concurrency:
                        continue
                    tokens = s.limit.tokens(chars, out)
                    delay = s.limit.wait(now, tokens)
                    if delay == 0:
                        s.limit.take(now, tokens)
                        s.in_flight += 1
                        s.requests += 1
                        return s, tokens
                    soonest = delay if soonest is None else min(soonest, delay)
                self._cond.wait(soonest)  # None: until a slot frees
        raise Failed("the engine was closed")

    def _release(self, server: Server) -> None:
        with self._cond:
            server.in_flight -= 1
            self._cond.notify_all()  # a slot, or a pace another worker waits on

    def _mark_down(self, server: Server, error: Unreachable) -> None:
        """`server` gave no reply: no requests go to it until a probe finds it answering."""
        with self._cond:
            server.failed_over += 1
            if not server.up:
                return  # another request found out first, and its probe runs
            server.up = False
            server.error = str(error)
            self._cond.notify_all()  # waiters for a slot may have no server left
        threading.Thread(target=self._probe, args=(server,), name=f"s2c-{self.name}-probe", daemon=True).start()

    def _probe(self, server: Server) -> None:
        """Ask a down server after growing pauses until it answers and serves the models (it
        rejoins) or the engine is closed."""
        for k in itertools.count():
            if self._closed.wait(min(self.options.backoff * 2**k, PROBE_MAX_S)):
                return
            try:
                self._check_server(server.url)
            except EngineError as e:
                with self._cond:  # read under the lock by the calls that fail over
                    server.error = self._redact(str(e))
                continue
            with self._cond:
                server.up = True
                self._cond.notify_all()
            return

    def _send(self, server: Server, path: str, body: dict) -> dict:
        import httpx

        try:
            response = self._client.post(server.url + path, json=body)
        except httpx.TransportError as e:  # connect error, timeout, reset, truncated body
            name = type(e).__name__
            raise Unreachable(name, self._redact(f"POST {server.url}{path}: {name}: {e}")) from e
        status = response.status_code
        with self._cond:
            server.limit.learn(time.monotonic(), response.headers)
        if status == 200:
            try:
                return response.json()
            except ValueError as e:  # a garbled body: the next attempt may be whole
                raise Retry("invalid JSON", f"POST {path}: invalid JSON in a 200 reply: "
                                            f"{self._redact(response.text[:200])!r}") from e
        detail = self._redact(f"POST {path}: HTTP {status}: {self._error_detail(status, response.text)}")
        if status == 429:  # every worker on this server waits, not just this one
            wait_s = _retry_after(response.headers)
            with self._cond:
                server.rate_limited += 1
                server.limit.pause(time.monotonic(), wait_s if wait_s is not None else self.options.backoff)
            raise Retry("HTTP 429", detail, wait_s if wait_s is not None else self.options.backoff)
        if status in RETRY_STATUS:
            raise Retry(f"HTTP {status}", detail, _retry_after(response.headers))
        raise Failed(detail)

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = self.options.backoff * 2**attempt * (1 + random.random() / 4)  # jitter spreads retries
        if retry_after is not None:
            delay = max(delay, retry_after)
        time.sleep(delay)

    def _redact(self, text: str) -> str:
        """`text` without the API key, or anything shaped like a provider's key."""
        if self._secret:
            text = text.replace(self._secret, "[API key]")
        return KEY_SHAPES.sub("[API key]", text)


def _text(content) -> str:
    """A message's content as text: a string, or content blocks (Anthropic's) with texts."""
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content or "")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After (seconds; an HTTP date is ignored) or retry-after-ms, at most MAX_RETRY_AFTER_S."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return min(ms / 1000, MAX_RETRY_AFTER_S)
    s = _number(headers.get("retry-after"))
    return min(s, MAX_RETRY_AFTER_S) if s is not None else None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def _reset_seconds(value: str | None) -> float | None:
    """A reset header as seconds from now: OpenAI's "1s", "6m0s", "20ms", plain seconds, or
    Anthropic's RFC 3339 time."""
    if not value:
        return None
    value = value.strip()
    if (n := _number(value)) is not None:
        return max(0.0, n)
    parts = DURATION.findall(value)
    if parts and "".join(a + u for a, u in parts) == value:
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        return sum(float(a) * scale[u] for a, u in parts)
    try:
        when = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def _plain_http_off_host(url: str) -> bool:
    """http:// to a host that is not this machine (a key sent there can be read on the way)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
