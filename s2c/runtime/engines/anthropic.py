"""Anthropic's Messages API as an engine (`--engine anthropic`): POST /v1/messages with the
x-api-key and anthropic-version headers, on http.py's machinery (concurrency, rate limits from
--rpm/--tpm and the anthropic-ratelimit-* headers, a 429's pause, retries, failover, the key kept
secret).

    engine = AnthropicEngine("claude-haiku-4-5", http=HttpOptions(concurrency=16, tpm=400_000))

It speaks the API directly over httpx rather than through the official SDK, as the openai engine
does: one client and one retry and rate-limit policy for every HTTP engine, and the SDK's own
retries would stack on s2c's (the SDK is a test's client of the test server instead, proving
that server follows the API's contract).

How a request maps:
- the system prompt goes in `system`, apart from the messages; a prompt (completion mode)
  becomes one user message;
- `max_tokens` is required, and always sent; temperature and top_p as the program says (top_p
  only when it is not 1), `stop` as `stop_sequences`; the API takes no seed;
- n > 1 becomes n requests (the API samples one reply per request); greedy n > 1 is one request
  whose reply is copied, as for the openai engine;
- **prompt caching**: the calls of a fan-out share a long prefix (BSM's solve calls all start
  with the instructions, the question and both responses). The engine remembers the last
  prompts it sent per model and, where a new one shares at least `cache_min_chars` characters
  (about the 1,024 tokens the API needs to cache a prefix) with one of them, sends that prefix
  as its own text block marked `cache_control: {"type": "ephemeral"}`. Usage then reports
  `cache_read_input_tokens`, which cost the cached-input price.

Token counts: `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` is the
prompt (cache reads counted as cached), `output_tokens` the generated. A reply with no text block
is retried, as a 200 without a completion is for the openai engine. Constrained decoding is not
offered: a program with choice=, regex= or json= is refused before any call.
"""
from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Sequence

from s2c.runtime.engines.base import Completion, EngineError, Request
from s2c.runtime.engines.http import DEFAULT_HTTP, HttpEngine, HttpOptions, Retry

DEFAULT_BASE_URL = "https://api.anthropic.com"
VERSION = "2023-06-01"
RECENT = 64  # prompts remembered per model, for the shared prefix of a fan-out
FINISH = {"max_tokens": "length"}  # end_turn, stop_sequence: "stop"


def normalize_base_url(url: str) -> str:
    """`https://api.anthropic.com/v1/` -> `https://api.anthropic.com` (paths add /v1)."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


class AnthropicEngine(HttpEngine):
    name = "anthropic"
    constraints = frozenset()

    def __init__(
        self,
        model: str | None = None,
        *,
        roles: dict[str, str] | None = None,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        http: HttpOptions = DEFAULT_HTTP,
        cache_min_chars: int = 4096,
        log=None,
    ):
        """`model` is the model's name (None: the first the server lists); `roles` map roles to
        other names. `base_url` is one URL or a list (default https://api.anthropic.com, or
        ANTHROPIC_BASE_URL); the key is ANTHROPIC_API_KEY unless `api_key` is given."""
        url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        urls = list(dict.fromkeys(normalize_base_url(u) for u in ([url] if isinstance(url, str) else url)))
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        headers = {"anthropic-version": VERSION, **({"x-api-key": key} if key else {})}
        super().__init__(urls, headers, http, secret=key, log=log)
        self.cache_min_chars = cache_min_chars
        self._recent: dict[str, deque[str]] = {}
        self._recent_lock = threading.Lock()
        try:
            listed = {u: self._served_models(u) for u in urls}
            default = model or next(iter(listed[urls[0]]), None)
            if default is None:
                raise EngineError(f"the server at {urls[0]} lists no models; pass the model's name as --model")
            self._names = {"default": default, **(roles or {})}
            for u, served in listed.items():
                self._require(u, served)
        except BaseException:
            self.close()
            raise
        if http.batch:
            from s2c.runtime.engines.batch import Batches

            self._batches = Batches(AnthropicBatches(self), self._completions, retries=http.retries,
                                    poll_s=http.batch_poll, redact=self._redact)

    # ------------------------------------------------------------ models
    def _served_models(self, url: str) -> list[str]:
        """GET /v1/models: proves the server is up, and says what it serves ([] if it will not say)."""
        import httpx

        try:
            response = self._client.get(f"{url}/v1/models", timeout=10.0)
        except httpx.HTTPError as e:
            raise EngineError(self._redact(f"cannot reach the Anthropic API at {url} ({e}); check --base-url "
                                           "(or ANTHROPIC_BASE_URL) and the network")) from e
        if response.status_code in (401, 403):
            raise EngineError(f"the Anthropic API at {url} refused the API key (HTTP {response.status_code}); "
                              "set ANTHROPIC_API_KEY")
        if response.status_code != 200:
            return []
        try:
            return [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return []

    def _require(self, url: str, served: list[str]) -> None:
        unknown = sorted({n for n in self._names.values() if served and n not in served})
        if unknown:
            raise EngineError(f"the Anthropic API at {url} serves {', '.join(served)}; not {', '.join(unknown)}: "
                              "pass one of those as --model")

    def _check_server(self, url: str) -> None:
        self._require(url, self._served_models(url))

    # ------------------------------------------------------------ requests
    def _refuse(self, request: Request) -> str | None:
        if request.adapter is not None:
            return "the anthropic engine cannot serve LoRA adapters"
        return None

    def _body(self, request: Request) -> tuple[str, dict]:
        s = request.sampling
        model = self._name(request.role)
        messages = list(request.messages) if request.messages is not None else []
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        if request.messages is None:
            turns = [{"role": "user", "content": request.prompt or ""}]
        body: dict = {"model": model, "max_tokens": s.max_tokens, "messages": turns, "temperature": s.temperature}
        if s.top_p != 1.0:
            body["top_p"] = s.top_p
        if s.stop:
            body["stop_sequences"] = list(s.stop)
        if system:
            body["system"] = system
        self._mark_shared_prefix(model, body)
        return "/v1/messages", body

    def _mark_shared_prefix(self, model: str, body: dict) -> None:
        """Where the first user message shares a long prefix with a prompt sent before (a
        fan-out's siblings), send that prefix as its own block with cache_control."""
        first = next((t for t in body["messages"] if t["role"] == "user"), None)
        if first is None or self.cache_min_chars <= 0:
            return
        text = first["content"]
        with self._recent_lock:
            recent = self._recent.setdefault(model, deque(maxlen=RECENT))
            shared = max((_common_prefix(text, other) for other in recent), default=0)
            recent.append(text)
        if shared >= self.cache_min_chars and shared < len(text):
            first["content"] = [{"type": "text", "text": text[:shared], "cache_control": {"type": "ephemeral"}},
                                {"type": "text", "text": text[shared:]}]

    def _post(self, path: str, body: dict, request: Request, retries: list[str]) -> list[Completion]:
        """One request per sample (the API returns one reply); greedy: one, copied."""
        n, post = request.sampling.n, super()._post
        if n == 1 or request.sampling.temperature <= 0:
            return post(path, body, request, retries) * n
        return [c for _ in range(n) for c in post(path, body, request, retries)]

    def _completions(self, data, request: Request) -> list[Completion]:
        try:
            texts = [b["text"] for b in data["content"] if b.get("type") == "text"]
            usage = data.get("usage") or {}
            read = int(usage.get("cache_read_input_tokens") or 0)
            prompt = int(usage.get("input_tokens") or 0) + int(usage.get("cache_creation_input_tokens") or 0) + read
            generated = int(usage.get("output_tokens") or 0)
            reason = FINISH.get(data.get("stop_reason"), "stop")
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise Retry("unexpected shape", f"unexpected shape of a 200 reply: {str(data)[:300]}") from e
        if not texts:
            raise Retry("no text", f"a 200 reply with no text block (stop_reason {data.get('stop_reason')!r})")
        return [Completion("".join(texts), prompt, generated, reason, read)]

    def _error_detail(self, status: int, text: str) -> str:
        """The API's error body in one line: `invalid_request_error: max_tokens: Field required`."""
        try:
            error = json.loads(text)["error"]
            return f"{error['type']}: {' '.join(str(error['message']).split())}"
        except (ValueError, KeyError, TypeError):
            return " ".join(text[:500].split())

    def count_tokens(self, request: Request) -> int | None:
        """The prompt's tokens as the API counts them (POST /v1/messages/count_tokens)."""
        import httpx

        _, body = self._body(request)
        body = {k: body[k] for k in ("model", "messages", "system") if k in body}
        try:
            response = self._client.post(f"{self._servers[0].url}/v1/messages/count_tokens", json=body, timeout=30.0)
            return int(response.json()["input_tokens"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None


class AnthropicBatches:
    """Anthropic's Message Batches (batch.BatchClient): POST /v1/messages/batches with the
    requests' params, polled at /v1/messages/batches/ID until its processing_status is "ended",
    and its results read from results_url (JSONL: succeeded, errored, canceled, expired)."""

    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def __init__(self, engine: AnthropicEngine):
        self.engine = engine

    @property
    def url(self) -> str:
        return self.engine._servers[0].url

    def create(self, items: list[tuple[str, str, dict]]) -> str:
        requests = [{"custom_id": cid, "params": body} for cid, _, body in items]
        return self.engine._call("POST", f"{self.url}/v1/messages/batches", json={"requests": requests}).json()["id"]

    def status(self, batch_id: str):
        from s2c.runtime.engines.batch import Status

        b = self.engine._call("GET", f"{self.url}/v1/messages/batches/{batch_id}").json()
        counts = b.get("request_counts") or {}
        total = sum(int(v) for v in counts.values())
        return Status(b.get("processing_status", "?"), b.get("processing_status") == "ended",
                      total - int(counts.get("processing", 0)), total)

    def results(self, batch_id: str):
        from s2c.runtime.engines.batch import Line

        b = self.engine._call("GET", f"{self.url}/v1/messages/batches/{batch_id}").json()
        url = b.get("results_url") or f"{self.url}/v1/messages/batches/{batch_id}/results"
        out: dict[str, Line] = {}
        for raw in self.engine._call("GET", url).text.splitlines():
            if not raw.strip():
                continue
            rec = json.loads(raw)
            result = rec.get("result") or {}
            if result.get("type") == "succeeded":
                out[rec["custom_id"]] = Line(data=result["message"])
            elif result.get("type") == "errored":
                error = (result.get("error") or {}).get("error") or {}
                out[rec["custom_id"]] = Line(error=f"batch line failed ({error.get('type', '?')}): {error.get('message', '')}")
            # canceled and expired lines are left out: batch.Batches sends them again
        return out


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slices: C-speed comparisons
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo

