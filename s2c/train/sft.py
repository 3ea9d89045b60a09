"""Fine-tune a LoRA adapter on a dataset folder from `s2c compile` (TRL SFT, per-row weights).

    >>> r = train("runs/coinflip-data", TrainSettings(max_steps=100))    # doctest: +SKIP
    >>> r.adapter_dir                                                    # doctest: +SKIP
    PosixPath('runs/train-coinflip-data/adapter')

`TrainSettings` holds every knob with its default, once: `s2c train` builds its flags from it.

The output folder holds `adapter/` (a PEFT adapter: `PeftModel.from_pretrained(base, out/"adapter")`),
`train_config.json` (settings, dataset, base model, row counts per task, results),
`loss_log.jsonl` (one record per step), `loss.png` and `checkpoints/`. Re-running with the same
`out` resumes from the last checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from s2c.errors import S2Error, require
from s2c.train.data import TrainData, load_dataset_dir
from s2c.train.plot import plot_loss
from s2c.train.progress import make_callbacks, read_loss_log, trim_loss_log

# A checkpoint only continues a run that trained the same adapter on the same rows.
RESUME_KEYS = ("dataset_sha256", "model", "lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length")
LOSS_REDUCTION = "sum over rows of weight * mean completion-token NLL, divided by the rows in the batch"
PACKAGES = ("transformers", "torch", "datasets", "peft", "trl")  # what training imports: s2c[train]


@dataclass(frozen=True)
class TrainSettings:
    """Every knob of a run, with its default: passed around whole, written to train_config.json,
    and the source of `s2c train`'s flags (`--lora-r` for `lora_r`, ...)."""

    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 2e-4  # LoRA takes a larger rate than full fine-tuning (TRL's 2e-5 default)
    lora_r: int = 16
    lora_alpha: int | None = None  # None: 2 * lora_r (see `alpha`)
    lora_dropout: float = 0.05
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256  # prompt + completion tokens; longer rows are cut at the end
    seed: int = 0
    save_steps: int = 50  # a checkpoint to resume from every this many steps, and at the end

    @property
    def alpha(self) -> int:
        """The LoRA alpha the run uses: `lora_alpha`, else 2 * `lora_r` (the usual alpha/r = 2
        scaling, so changing the rank alone changes capacity, not the update's scale)."""
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    def record(self) -> dict:
        """The settings as train_config.json holds them: the values the run used (alpha resolved)."""
        return {**asdict(self), "lora_alpha": self.alpha}

    def check(self) -> None:
        def bad(flag, value, need):
            raise S2Error(f"{flag} {value}: {need}")

        if self.max_steps <= 0 and not self.epochs > 0:
            bad("--epochs", self.epochs, "must be > 0 (or give --max-steps N)")
        for flag, value in (("--lora-r", self.lora_r), ("--batch-size", self.batch_size),
                            ("--grad-accum", self.grad_accum), ("--save-steps", self.save_steps)):
            if value < 1:
                bad(flag, value, "must be >= 1")
        if self.lora_alpha is not None and self.lora_alpha < 1:
            bad("--lora-alpha", self.lora_alpha, "must be >= 1")
        if not self.lr > 0:
            bad("--lr", self.lr, "must be > 0")
        if not 0 <= self.lora_dropout < 1:
            bad("--lora-dropout", self.lora_dropout, "must be in [0, 1)")
        if self.max_length < 16:
            bad("--max-length", self.max_length, "must be >= 16 tokens")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    adapter_dir: Path
    steps: int  # optimizer steps in total, those before a resume included
    final_loss: float | None  # the last logged training loss (weighted)
    loss_log: Path
    plot: Path
    config: Path
    resumed_from: Path | None = None
    seconds_per_step: float | None = None  # of this invocation's steps
    peak_memory_mb: float | None = None  # peak RSS on CPU, peak allocated on CUDA


def default_out(dataset_dir) -> Path:
    return Path("runs") / f"train-{Path(dataset_dir).resolve().name}"


def train(dataset_dir, settings: TrainSettings = TrainSettings(), *, model: str | None = None, out=None,
          resume: bool = True, log=print, callbacks=(), console=None) -> TrainResult:
    """Check the dataset, fine-tune a LoRA adapter on it, write the output folder (see module doc).

    `model` is the base model (a folder or hub id; None: the embedded SmolLM2-135M-Instruct);
    `out` defaults to `default_out(dataset_dir)`, and with `resume` a checkpoint there is
    continued. `callbacks` are extra `transformers.TrainerCallback`s; the progress bar goes to
    `console` (a rich Console; default stderr). Raises `S2Error` for bad input.
    """
    settings.check()
    data = load_dataset_dir(dataset_dir)  # before the model: a bad row fails in a second
    require_packages()  # before the model too: the embedded one is dequantized with them
    ref = _resolve(model, log)
    out = Path(out) if out else default_out(dataset_dir)
    paths = _Paths(out)
    config = config_record(settings, data, ref)
    checkpoint = _prepare_out(paths, config, resume, log)
    _write_json(paths.config, {**config, "status": "running"})

    trainer = build_trainer(data, ref.path, settings, paths.checkpoints, log,
                            [*make_callbacks(paths.loss_log, log, console), *callbacks])
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        for cb in trainer.callback_handler.callbacks:
            getattr(cb, "close", lambda: None)()
    seconds = time.perf_counter() - started
    if data.validation is not None:
        metrics = trainer.evaluate()  # also logged to loss_log.jsonl as eval_loss
        log(f"s2c: validation loss {metrics['eval_loss']:.4f} on {len(data.validation.rows)} rows")
    trainer.model.save_pretrained(paths.adapter)
    trainer.processing_class.save_pretrained(paths.adapter)
    return _finish(paths, config, data, trainer.state.global_step, seconds, checkpoint, log)


def require_packages() -> None:
    """A `MissingExtra` naming s2c[train] now, before any model loads, when a package is missing."""
    for name in PACKAGES:
        require(name, "train", "s2c train")


def build_trainer(data: TrainData, model_path: str, settings: TrainSettings, output_dir: Path,
                  log=print, callbacks=()):
    """The real `WeightedSFTTrainer` for `data`: what `train` runs, and what the tests inspect."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import SFTConfig

    from s2c.train.weighted import weighted_sft_trainer

    precision = _precision()
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        max_length=settings.max_length,
        seed=settings.seed,
        data_seed=settings.seed,
        completion_only_loss=True,  # the prompt is context, never a target
        packing=False,  # one row per sequence: the per-row weights need row boundaries
        bf16=precision == "bf16",  # TRL defaults to True; on CPU fp32 is the safe, fast choice
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        model_init_kwargs={"dtype": torch.bfloat16 if precision == "bf16" else torch.float32},
        gradient_checkpointing=False,  # small models at max_length 256: speed, not memory, binds
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,  # the last two checkpoints are enough to resume from
        eval_strategy="no",
        report_to="none",
        push_to_hub=False,
        dataloader_num_workers=0,
        disable_tqdm=True,  # our own progress (s2c.train.progress) replaces tqdm
    )
    peft_config = LoraConfig(r=settings.lora_r, lora_alpha=settings.alpha,
                             lora_dropout=settings.lora_dropout, target_modules="all-linear",
                             bias="none", task_type="CAUSAL_LM")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        trainer = weighted_sft_trainer()(
            model=model_path,
            args=args,
            train_dataset=datasets.Dataset.from_list(data.train.rows),
            eval_dataset=datasets.Dataset.from_list(data.validation.rows) if data.validation else None,
            peft_config=peft_config,
            callbacks=list(callbacks),
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts to stdout
    _report_truncation(trainer, data, settings.max_length, log)
    return trainer


def config_record(settings: TrainSettings, data: TrainData, ref) -> dict:
    """What train_config.json holds before the run: everything needed to reproduce it."""
    from importlib.metadata import version

    splits = {"train": data.train, "validation": data.validation}
    used = settings.record()
    return {
        "dataset": str(data.dir.resolve()),
        "dataset_files": {k: str(s.path.resolve()) for k, s in splits.items() if s},
        "dataset_sha256": _sha256(data.train.path),
        "dataset_meta": data.meta,
        # how an adapter answers at inference (a cascade answers in two passes); eval reads it here
        "format": data.meta.get("format"),
        "rows": {k: len(s.rows) for k, s in splits.items() if s},
        "tasks": {k: s.tasks for k, s in splits.items() if s},
        "weight_per_task": _weights(data),
        "model": ref.identity,
        "model_path": str(ref.path),
        "settings": used,
        **{k: used[k] for k in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length")},
        "lora_target_modules": "all-linear",
        "precision": _precision(),
        "device": _device_name(),
        "loss": LOSS_REDUCTION,
        "completion_only_loss": True,
        "versions": {p: version(p) for p in ("s2c", "torch", "transformers", "trl", "peft", "datasets")},
    }


class _Paths:
    """The files of an output folder."""

    def __init__(self, out: Path):
        self.out = out
        self.adapter = out / "adapter"
        self.checkpoints = out / "checkpoints"
        self.config = out / "train_config.json"
        self.loss_log = out / "loss_log.jsonl"
        self.plot = out / "loss.png"


def _prepare_out(paths: _Paths, config: dict, resume: bool, log) -> Path | None:
    """Find the checkpoint to resume from (checking it fits this run), or clear a previous run."""
    checkpoint = _last_checkpoint(paths.checkpoints) if resume else None
    if checkpoint is None:
        if paths.checkpoints.exists():
            log(f"s2c: starting over in {paths.out} (removing its old checkpoints)")
            shutil.rmtree(paths.checkpoints)
        paths.out.mkdir(parents=True, exist_ok=True)
        paths.loss_log.unlink(missing_ok=True)
        return None
    _check_resumable(paths.config, config, checkpoint)
    step = _checkpoint_step(checkpoint)
    log(f"s2c: resuming from checkpoint {checkpoint} (step {step}); pass --no-resume to start over")
    trim_loss_log(paths.loss_log, step)
    return checkpoint


def _check_resumable(config_path: Path, config: dict, checkpoint: Path) -> None:
    try:
        before = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no record of the old run: trust the checkpoint, as Trainer would
    changed = [k for k in RESUME_KEYS if k in before and before[k] != config[k]]
    if changed:
        what = ", ".join(f"{k}: {before[k]!r} -> {config[k]!r}" for k in changed)
        raise S2Error(
            f"cannot resume from {checkpoint}: the run changed ({what})",
            hint="pass --no-resume to start over, or --out DIR to train into another folder",
        )


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder))
    return Path(last) if last else None


def _checkpoint_step(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return int(checkpoint.name.rsplit("-", 1)[-1])


def _finish(paths, config, data, steps, seconds, checkpoint, log) -> TrainResult:
    """Draw the loss, complete train_config.json with the results, say where the adapter is."""
    new_steps = steps - (_checkpoint_step(checkpoint) if checkpoint else 0)
    records = read_loss_log(paths.loss_log)
    losses = [r["loss"] for r in records if "loss" in r]
    final = losses[-1] if losses and isinstance(losses[-1], float) else None
    plot_loss(records, paths.plot, title=f"s2c train {data.dir.name}")
    per_step = seconds / new_steps if new_steps else None
    peak = _peak_memory_mb()
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    result = {"steps": steps, "final_loss": final, "eval_loss": evals[-1] if evals else None,
              "seconds": round(seconds, 2), "seconds_per_step": per_step and round(per_step, 3),
              "peak_memory_mb": round(peak, 1), "resumed_from": str(checkpoint) if checkpoint else None,
              "adapter": str(paths.adapter)}
    _write_json(paths.config, {**config, "status": "done", "result": result})
    log(f"s2c: trained {steps} steps, final loss {final if final is None else round(final, 4)}; "
        f"adapter in {paths.adapter}")
    return TrainResult(paths.out, paths.adapter, steps, final, paths.loss_log, paths.plot, paths.config,
                       checkpoint, per_step, peak)


def _report_truncation(trainer, data: TrainData, max_length: int, log) -> None:
    """TRL cuts rows at max_length and drops those left with no completion token: say so."""
    kept = trainer.train_dataset
    dropped = len(data.train.rows) - len(kept)
    if not len(kept):
        raise S2Error(f"{data.train.path}: every row's prompt fills --max-length {max_length} tokens, "
                      "leaving no completion token to learn from", hint="raise --max-length")
    cut = sum(len(ids) >= max_length for ids in kept["input_ids"])
    if dropped:
        log(f"s2c: warning: {dropped} of {len(data.train.rows)} training rows are skipped: their prompt "
            f"fills --max-length {max_length}; raise --max-length")
    if cut:
        log(f"s2c: warning: {cut} training rows are cut at --max-length {max_length} tokens")


def _resolve(model, log):
    from s2c.runtime.engines.base import EngineError
    from s2c.runtime.model import resolve_model

    try:
        return resolve_model(model, log=log)
    except EngineError as e:
        raise S2Error(str(e), hint="omit --model to train the embedded SmolLM2-135M-Instruct") from e


def _precision() -> str:
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _device_name() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource  # Unix only, like the RSS it reads

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return kb / 2**20 if sys.platform == "darwin" else kb / 2**10


def _weights(data: TrainData) -> dict[str, dict]:
    """Per task: the min, mean and max row weight (e.g. lambda for Mind's Mirror rationale rows)."""
    seen: dict[str, list] = {}
    for r in data.train.rows:
        seen.setdefault(r["task"], []).append(r["weight"])
    return {t: {"min": min(w), "mean": sum(w) / len(w), "max": max(w)} for t, w in sorted(seen.items())}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a crash never leaves half a config
