"""Trainer callbacks: the loss log (`loss_log.jsonl`) and progress on stderr.

On a terminal, progress is a rich bar with step and loss; elsewhere (CI, pipes) one line per
logged step through `log`, so a captured run still shows its losses.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

LOG_KEYS = {"loss": "loss", "learning_rate": "lr", "epoch": "epoch", "grad_norm": "grad_norm",
            "nll": "nll", "mean_token_accuracy": "token_accuracy", "eval_loss": "eval_loss",
            "eval_nll": "eval_nll"}


def trim_loss_log(path: Path, last_step: int) -> None:
    """Keep the records up to `last_step` (the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def read_loss_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_callbacks(loss_log: Path, log, console=None):
    """[LossLogCallback, ProgressCallback], built on first use (transformers is imported here).
    The bar goes to `console` (default: a rich console on stderr)."""
    from transformers import TrainerCallback

    class LossLogCallback(TrainerCallback):
        """Append one JSON line per logged step: step, loss, lr, epoch (and a few more)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & logs.keys()):
                return
            record = {"step": state.global_step}
            record.update({short: _num(logs[key]) for key, short in LOG_KEYS.items() if key in logs})
            with open(loss_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            from rich.console import Console

            self.console = console or Console(stderr=True)
            self.bar = self.task = None
            self.max_steps = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.max_steps = state.max_steps
            if self.console.is_terminal:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.description}"), TimeRemainingColumn(),
                                    console=self.console, transient=False)
                self.task = self.bar.add_task("", total=state.max_steps, completed=state.global_step)
                self.bar.start()

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            text = f"loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0):.2e}"
            if self.bar:
                self.bar.update(self.task, description=text)
            else:
                log(f"s2c: step {state.global_step}/{self.max_steps}  {text}")

        def on_train_end(self, args, state, control, **kwargs):
            self.close()

        def close(self):
            if self.bar:
                self.bar.stop()
                self.bar = None

    return [LossLogCallback(), ProgressCallback()]


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)  # JSON has no NaN; keep it visible as a string
