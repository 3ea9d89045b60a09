"""The transformers engine: `model.generate` in bounded, left-padded batches.

Requests are grouped by (model, adapter, sampling parameters without the seed), sorted by
prompt length inside a group (less padding) and cut into chunks of at most `batch_size` rows
(a request sampled n times takes n rows). A chunk shares one `torch.manual_seed`, derived from
its requests' seeds: a seeded request is reproducible when it is batched with the same
companions, which a rerun of the same program does. Token counts are exact: prompt tokens
without padding, generated tokens up to and including EOS or the token that completed a stop
string (transformers' `stop_strings` ends a row there; the text is then cut before the stop
string, as vLLM and the OpenAI API do).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from s2c.errors import require
from s2c.runtime.engines.base import (
    BatchStream,
    Completion,
    EngineError,
    EngineFailure,
    Request,
    Result,
    Sampling,
)
from s2c.runtime.engines.local import RoleModels, cpu_dtype, resolve_roles
from s2c.runtime.model import ModelRef

INSTALL_HINT = "pip install 's2c[hf]' (torch, transformers)"


class _Loaded:
    """One model and its tokenizer; LoRA adapters are added to it on first use."""

    def __init__(self, ref: ModelRef, dtype: str, device: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(ref.path, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(
                ref.path, dtype=getattr(torch, dtype)
            ).to(device)
        except (OSError, ValueError) as e:
            raise EngineError(f"hf: cannot load model {ref.name!r} from {ref.path}: {e}") from e
        self.model.eval()
        self.device = device
        if self.tokenizer.pad_token_id is None:  # left padding needs some pad token
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.adapters: dict[str, str] = {}  # adapter folder -> PEFT adapter name
        self.max_len = getattr(self.model.config, "max_position_embeddings", None)

    def render(self, request: Request) -> list[int]:
        """The prompt token ids, exactly as the model will read them."""
        if request.messages is not None:
            if not self.tokenizer.chat_template:
                raise EngineError(
                    "hf: this model has no chat template; send completion-mode requests "
                    "(a `prompt`) or use an instruct model"
                )
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                add_generation_prompt=True,
                tokenize=False,
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(request.prompt or "")["input_ids"]

    def with_adapter(self, adapter: str | None):
        """The module to call generate on, with `adapter` active (or the plain base model)."""
        import contextlib

        if adapter is None:
            if self.adapters:  # the base model lives inside the PeftModel now
                return self.model, self.model.disable_adapter()
            return self.model, contextlib.nullcontext()
        if adapter not in self.adapters:
            self._load_adapter(adapter)
        self.model.set_adapter(self.adapters[adapter])
        return self.model, contextlib.nullcontext()

    def _load_adapter(self, folder: str) -> None:
        PeftModel = require("peft", "train", "a LoRA adapter on the hf engine", error=EngineError).PeftModel
        name = f"a{len(self.adapters)}"
        try:
            if self.adapters:
                self.model.load_adapter(folder, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
        except (OSError, ValueError) as e:
            raise EngineError(f"hf: cannot load LoRA adapter {folder}: {e}") from e
        self.model.eval()
        self.adapters[folder] = name


class HFEngine(BatchStream, RoleModels):
    name = "hf"

    def __init__(
        self,
        model: str | None = None,
        *,
        roles: dict[str, str] | None = None,
        batch_size: int = 8,
        dtype: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        log=print,
    ):
        """Load every distinct model named by `model` and `roles` now, so errors show up early.

        `threads` sets torch's CPU thread count for the whole process (None: torch's default,
        one per core). On a busy machine 1 thread is steadier: with one thread per core, every
        small op waits for a core that another process holds (see docs/benchmarks.md).
        """
        torch = require("torch", "hf", "the hf engine", install=INSTALL_HINT, error=EngineError)
        require("transformers", "hf", "the hf engine", install=INSTALL_HINT, error=EngineError)
        if threads:
            torch.set_num_threads(threads)
        self.batch_size = batch_size
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (cpu_dtype() if device == "cpu" else "bfloat16")  # None: local.cpu_dtype on a CPU
        self._refs = resolve_roles(model, roles, log)
        self._models: dict[str, _Loaded] = {}
        for ref in self._refs.values():
            if ref.path not in self._models:
                self._models[ref.path] = _Loaded(ref, dtype, device)

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, list[int]]]] = {}
        for i, request in enumerate(requests):
            loaded = self._models[self._ref(request.role).path]
            ids = loaded.render(request)
            if not ids:
                results[i] = EngineFailure("the prompt is empty")
                continue
            if loaded.max_len and len(ids) >= loaded.max_len:
                results[i] = EngineFailure(
                    f"prompt has {len(ids)} tokens; the model reads at most {loaded.max_len}"
                )
                continue
            key = (self._ref(request.role).path, request.adapter, replace(request.sampling, seed=None))
            groups.setdefault(key, []).append((i, ids))
        for (path, adapter, sampling), members in groups.items():
            members.sort(key=lambda m: len(m[1]))
            # batch_size bounds the rows of a generate call; each request takes n of them
            per_call = max(1, self.batch_size // (1 if sampling.temperature <= 0 else sampling.n))
            for start in range(0, len(members), per_call):
                chunk = members[start : start + per_call]
                seeds = [requests[i].sample_seed() for i, _ in chunk]
                outs = self._run(self._models[path], adapter, sampling, [ids for _, ids in chunk], seeds)
                for (i, _), out in zip(chunk, outs):
                    results[i] = out
        return results  # type: ignore[return-value]

    def _run(
        self,
        loaded: _Loaded,
        adapter: str | None,
        sampling: Sampling,
        prompts: list[list[int]],
        seeds: list[int | None],
    ) -> list[Result]:
        import torch

        tok = loaded.tokenizer
        batch = tok.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(loaded.device)
        greedy = sampling.temperature <= 0
        n_rows = 1 if greedy else sampling.n  # greedy samples are all the same: compute one
        kwargs = {
            "max_new_tokens": sampling.max_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(loaded.eos_ids),
            "do_sample": not greedy,
            "num_return_sequences": n_rows,
        }
        if not greedy:
            # top_k=0: no top-k cut, like vLLM and the OpenAI API (transformers' default is 50)
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        if any(s is not None for s in seeds):
            torch.manual_seed(_chunk_seed(seeds))
        model, context = loaded.with_adapter(adapter)
        with torch.inference_mode(), context:
            out = model.generate(**batch, **kwargs)
        generated = out[:, batch["input_ids"].shape[1] :].tolist()
        results: list[Result] = []
        for row, ids in enumerate(prompts):
            rows = generated[row * n_rows : (row + 1) * n_rows]
            samples = [self._completion(loaded, gen, len(ids), sampling) for gen in rows]
            results.append(samples * sampling.n if greedy else samples)
        return results

    @staticmethod
    def _completion(loaded: _Loaded, gen: list[int], prompt_len: int, sampling: Sampling) -> Completion:
        pad = loaded.tokenizer.pad_token_id
        end = next((k for k, t in enumerate(gen) if t in loaded.eos_ids or t == pad), None)
        if end is None:
            length, reason = len(gen), "length"
        else:  # the model's own EOS counts as a generated token; padding does not
            length, reason = (end + 1 if gen[end] in loaded.eos_ids else end), "stop"
        text = loaded.tokenizer.decode(gen[: length if end is None else end], skip_special_tokens=True)
        cuts = [text.find(s) for s in sampling.stop if s and s in text]
        if cuts:
            # a stop string ended the row, so what follows it is padding, even when pad == EOS
            text, reason = text[: min(cuts)], "stop"
            length = len(gen) if end is None else end
        return Completion(text, prompt_len, length, reason)

    def close(self) -> None:
        self._models.clear()


def _chunk_seed(seeds: list[int | None]) -> int:
    """One torch seed for a chunk, stable across runs (Python's hash() is salted)."""
    digest = hashlib.sha256(repr(seeds).encode()).digest()
    return int.from_bytes(digest[:8], "little")

