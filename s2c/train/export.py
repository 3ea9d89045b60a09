"""Merge a LoRA adapter from `s2c train` into its base model: the distilled System 1 as a model folder.

    >>> r = export("runs/train-coin", "models/coin-s1")        # doctest: +SKIP
    >>> r.out, r.base, r.dtype                                  # doctest: +SKIP
    (PosixPath('models/coin-s1'), 'smollm2-135m', 'bfloat16')

The folder holds config.json, generation_config.json, model.safetensors, the tokenizer the adapter
was trained with (chat template included) and s2c_export.json (the adapter, the base model, the
train run's config). It has no adapter files: each LoRA layer is folded into its weight,
W' = W + (alpha / r) * B @ A, so `AutoModelForCausalLM.from_pretrained(DIR)`, `vllm.LLM(DIR)` and
`s2c eval --model DIR` load it as they load any model.

The base model is the one the adapter was trained on: train_config.json's `model` (the embedded
model is recorded by name, so it resolves on any machine), else adapter_config.json's
`base_model_name_or_path`; `model=` overrides both. The merge is done in float32 and the result
saved in the base's own dtype (bfloat16 for the embedded model) unless `dtype` says otherwise.
An adapter's weight change that is small next to a weight's rounding step is partly rounded away
in 16 bits; `ExportResult.rounding` measures how much (see `_rounding`).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from s2c.errors import S2Error, require

DTYPES = ("auto", "bfloat16", "float16", "float32")  # auto: the base model's own dtype
RECORD = "s2c_export.json"
ADAPTER_HINT = "pass the folder `s2c train` wrote, or its adapter/ subfolder"
PACKAGES = ("transformers", "torch", "peft")  # what a merge imports; peft comes with s2c[train], not s2c[hf]


@dataclass(frozen=True)
class ExportResult:
    out: Path
    adapter: Path
    base: str  # the base model's identity: 'smollm2-135m', a folder, or a hub id
    dtype: str  # what model.safetensors holds
    layers: int  # LoRA layers merged
    rounding: float  # RMS of what saving in `dtype` changed in the merged weights / RMS of the LoRA change
    seconds: float
    bytes: int  # the folder's size


def export(adapter, out, *, model: str | None = None, dtype: str = "auto", force: bool = False,
           log=print) -> ExportResult:
    """Merge `adapter` (a train output folder or its adapter/) into its base model; write `out`.

    `out` appears whole or not at all: the model is written to a temporary folder beside it and
    renamed at the end. An existing non-empty `out` is replaced only with `force`. Raises
    `S2Error` for what a user can fix.
    """
    started = time.perf_counter()
    require_packages()
    if dtype not in DTYPES:
        raise S2Error(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    adapter_dir = find_adapter(adapter)
    adapter_config = _read_json(adapter_dir / "adapter_config.json")
    if adapter_config.get("peft_type") != "LORA":
        raise S2Error(f"{adapter_dir}: a {adapter_config.get('peft_type')} adapter, not LoRA; only LoRA "
                      "adapters can be merged", hint=ADAPTER_HINT)
    train_config, train_config_path = read_train_config(adapter_dir)
    out = Path(out)
    _check_out(out, force, {"the adapter": adapter_dir})
    ref, source = base_model(adapter_dir, adapter_config, train_config, model, log)
    if ref.local:
        _check_out(out, force, {"the base model": Path(ref.path)})
    log(f"s2c: merging {adapter_dir} into {ref.name} (base model from {source})")
    merged, tokenizer, stats = _merge(ref, adapter_dir, dtype)
    record = {
        "adapter": str(adapter_dir.resolve()),
        "base_model": ref.identity,
        "base_model_path": os.path.abspath(ref.path) if ref.local else ref.path,
        "base_model_from": source,
        "dtype": stats["dtype"],
        "lora": {k: adapter_config.get(k) for k in ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora")},
        "lora_layers_merged": stats["layers"],
        "rounding_vs_lora_change": stats["rounding"],
        "train_config_file": str(train_config_path.resolve()) if train_config_path else None,
        "train_config": train_config,
        "versions": _versions(),
    }
    size = _write_atomically(out, force, lambda tmp: _save(merged, tokenizer, record, tmp))
    seconds = time.perf_counter() - started
    log(f"s2c: wrote {out} ({stats['dtype']}, {size / 2**20:.0f} MiB, {stats['layers']} LoRA layers merged) "
        f"in {seconds:.1f} s")
    if stats["rounding"] > 0.05:
        log(f"s2c: note: rounding to {stats['dtype']} changed the merged weights by {stats['rounding']:.0%} of "
            "the adapter's own change (RMS), so on prompts unlike the training data the greedy output can differ "
            "from base + adapter; --dtype float32 keeps the merge exact, for a runtime that runs float32")
    return ExportResult(out, adapter_dir, ref.identity, stats["dtype"], stats["layers"], stats["rounding"],
                        seconds, size)


def require_packages() -> None:
    """A `MissingExtra` naming s2c[train] now, before any model loads, when a package is missing."""
    for name in PACKAGES:
        require(name, "train", "s2c export")


def find_adapter(path) -> Path:
    """The adapter folder: `path` itself, or `path`/adapter (the folder `s2c train` wrote)."""
    p = Path(path)
    if not p.exists():
        raise S2Error(f"{path}: no such folder", hint=ADAPTER_HINT)
    if not p.is_dir():
        raise S2Error(f"{path}: is a file, not an adapter folder", hint=ADAPTER_HINT)
    for folder in (p, p / "adapter"):
        if (folder / "adapter_config.json").is_file():
            return folder
    if (p / RECORD).exists() or (p / "config.json").exists():
        raise S2Error(f"{path}: a model folder, not a LoRA adapter (it has no adapter_config.json)",
                      hint=f"a model folder needs no export: pass it to `s2c eval --model {path}`")
    raise S2Error(f"{path}: no LoRA adapter there (no adapter_config.json in it or in {p / 'adapter'})",
                  hint=ADAPTER_HINT)


def read_train_config(adapter_dir: Path) -> tuple[dict | None, Path | None]:
    """train_config.json of the run that made the adapter (beside it, as `s2c train` writes it)."""
    for path in (adapter_dir / "train_config.json", adapter_dir.parent / "train_config.json"):
        if path.is_file():
            return _read_json(path), path
    return None, None


def base_model(adapter_dir: Path, adapter_config: dict, train_config: dict | None, model: str | None, log=print):
    """The base model to merge into, and where its name came from: (ModelRef, source)."""
    from s2c.runtime.engines.base import EngineError
    from s2c.runtime.model import EMBEDDED, cache_dir, resolve_model

    recorded = adapter_config.get("base_model_name_or_path")
    if model:
        spec, source = model, "--model"
    elif train_config and train_config.get("model"):
        spec, source = train_config["model"], "train_config.json"
    elif recorded:
        spec, source = recorded, "adapter_config.json"
        if _same_path(recorded, cache_dir() / "models" / "SmolLM2-135M-Instruct"):
            spec = EMBEDDED  # the embedded model's dequantized copy: resolve it as training did
    else:
        raise S2Error(f"{adapter_dir}: the adapter does not say which model it was trained on",
                      hint="pass --model with the base model (omit it only for adapters from `s2c train`)")
    if source != "--model" and os.path.isabs(spec) and not os.path.exists(spec):
        raise S2Error(f"base model {spec} (recorded in {source}) is missing",
                      hint="pass --model with the folder of the model the adapter was trained on")
    try:
        ref = resolve_model(spec, log=log)
    except EngineError as e:
        raise S2Error(f"base model: {e}", hint="pass --model with the model the adapter was trained on, or omit "
                      "it to use the one recorded with the adapter") from e
    if model and train_config and train_config.get("model") not in (None, ref.identity):
        log(f"s2c: note: the adapter was trained on {train_config['model']}; merging into {ref.identity} (--model)")
    return ref, source


def _merge(ref, adapter_dir: Path, dtype: str):
    """Base + adapter merged, in `dtype`; the tokenizer (the adapter's, else the base's); and stats."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        target = _target_dtype(AutoConfig.from_pretrained(ref.path), dtype)  # before the float32 load hides it
    except (OSError, ValueError) as e:
        raise S2Error(f"cannot load base model {ref.name}: {e}", hint="pass --model with the base model") from e
    peft_model = _load(ref, adapter_dir)
    layers, rounding = _rounding(peft_model, target, adapter_dir)
    model = peft_model.merge_and_unload().to(target)
    tok_from = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else ref.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_from)
    except (OSError, ValueError) as e:
        raise S2Error(f"no tokenizer in {adapter_dir} or in base model {ref.name}: {_one_line(e)}",
                      hint="pass --model with a base model folder that has its tokenizer") from e
    return model, tokenizer, {"dtype": str(target).removeprefix("torch."), "layers": layers,
                              "rounding": round(rounding, 4)}


def _load(ref, adapter_dir: Path):
    """The base model in float32 with the adapter on it, unmerged (PEFT's PeftModel)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:
        base = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise S2Error(f"cannot load base model {ref.name}: {e}", hint="pass --model with the base model") from e
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir))
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: load_state_dict's size mismatch
        raise S2Error(f"{adapter_dir} does not fit base model {ref.name}: {_one_line(e)}",
                      hint="pass --model with the model the adapter was trained on") from e


def _rounding(peft_model, target, adapter_dir: Path) -> tuple[int, float]:
    """(LoRA layers, what casting the merged weights to `target` loses, relative to the LoRA change).

    The merge runs in float32: W' = W + dW, dW = (alpha / r) * B @ A as PEFT computes it, so the
    only loss is the final cast. Returned: ||cast(W') - W'|| / ||dW|| over every merged layer. It
    is 0 in float32; in bfloat16 a short run's dW can be as small as a weight's rounding step, and
    that much of it is lost (vLLM running a float32 export in bfloat16 would lose the same).
    A non-finite W' (a diverged run) is an error, as PEFT's safe_merge makes it.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    lost = change = 0.0
    layers = 0
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not (isinstance(module, LoraLayer) and "default" in module.lora_A):
                continue
            delta = module.get_delta_weight("default").float()
            merged = module.get_base_layer().weight.float() + delta
            if not torch.isfinite(merged).all():
                raise S2Error(f"{adapter_dir}: merging gives non-finite weights in {name}",
                              hint="the adapter is broken (a diverged run?); train it again")
            lost += (merged.to(target).float() - merged).pow(2).sum().item()
            change += delta.pow(2).sum().item()
            layers += 1
    return layers, (lost / change) ** 0.5 if change else 0.0


def _target_dtype(config, dtype: str):
    """`dtype` as a torch dtype; auto: the base's own (its config.json), float32 if it names none."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    own = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(own, str):
        own = getattr(torch, own.removeprefix("torch."), None)
    return own if own in (torch.bfloat16, torch.float16, torch.float32) else torch.float32


def _save(model, tokenizer, record: dict, folder: Path) -> None:
    # transformers 5 always writes safetensors (its save_pretrained has no safe_serialization flag)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # the chat template too: chat_template.jinja
    (folder / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def _check_out(out: Path, force: bool, reads: dict[str, Path] | None = None) -> None:
    """Refuse an --out that is a file, is non-empty (without --force), or holds what we read."""
    if out.exists() and not out.is_dir():
        raise S2Error(f"--out {out}: is a file, not a folder", hint="pass a folder path for the model")
    blocker = next((a for a in out.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise S2Error(f"--out {out}: {blocker} is a file, so no folder can be made under it",
                      hint="pass a path whose parent folders are folders")
    for what, inside in (reads or {}).items():
        if _within(inside, out):
            raise S2Error(f"--out {out}: holds {what} ({inside}), which the export reads",
                          hint="pass another --out, e.g. a new folder beside the train run")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise S2Error(f"--out {out}: the folder exists and is not empty",
                      hint="pass --force to replace it, or another --out")


def _write_atomically(out: Path, force: bool, write) -> int:
    """`write(tmp)` into a temporary folder beside `out`, then rename it to `out`: a crash or ^C
    leaves no half-written `out`. An old `out` (empty, or any with `force`) is moved aside first
    and deleted after. Returns the folder's size in bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"  # mkdir, not mkdtemp: the umask's mode
    try:
        tmp.mkdir()
    except OSError as e:
        raise S2Error(f"--out {out}: cannot write in {out.parent} ({e.strerror or e})",
                      hint="pass a folder you can write to") from None
    old = None
    try:
        write(tmp)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        _check_out(out, force)  # again: something may have filled it while we merged
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)  # put the old folder back: never lose it to a failed export
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return size


def _one_line(e: Exception, limit: int = 300) -> str:
    """A library's error as one line (load_state_dict lists every size mismatch on its own line)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise S2Error(f"{path}: cannot read it ({e})", hint="the adapter folder is damaged; train it again") from None
    if not isinstance(value, dict):
        raise S2Error(f"{path}: expected a JSON object", hint="the adapter folder is damaged; train it again")
    return value


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("s2c", "torch", "transformers", "peft"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            continue
    return out
