"""Train a System-1 model on a compiled dataset: LoRA SFT with per-row loss weights.

    >>> from s2c.train import TrainSettings, train
    >>> result = train("runs/bsm-data", TrainSettings(max_steps=200))   # doctest: +SKIP

`data` checks the dataset folder, `weighted` is the SFTTrainer with per-row weights, `sft` runs
it and writes the output folder, `progress`/`plot` log and draw the loss. `s2c train`
(s2c/cli/train.py) builds its flags from `TrainSettings`'s fields and defaults.
Nothing here imports torch, transformers or TRL until a model is trained.
"""
from __future__ import annotations

from s2c.train.data import TrainData, load_dataset_dir
from s2c.train.sft import TrainResult, TrainSettings, train

__all__ = ["TrainData", "TrainResult", "TrainSettings", "load_dataset_dir", "train"]
