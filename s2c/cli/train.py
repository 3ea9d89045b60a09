"""`s2c train DATASET_DIR`: the argparse face of `s2c.train.sft.train`; its flags are `TrainSettings`'s fields."""
from __future__ import annotations

import argparse
import dataclasses
import typing

from s2c.cli.common import add_output_args

DESCRIPTION = """\
Fine-tune a LoRA adapter on the dataset folder `s2c compile` wrote (TRL SFT: the loss is on
the completion only, and each row's loss is scaled by its 'weight'). Writes OUT/adapter,
OUT/train_config.json, OUT/loss_log.jsonl, OUT/loss.png and OUT/checkpoints/; running the
same command again resumes from the last checkpoint. What transformers, TRL and torch print goes
to OUT/train.log (-v: to the console)."""

EXAMPLE = """\
example:
  s2c train runs/bsm-data --max-steps 200 --out runs/bsm-lora
"""


# The flag of each TrainSettings field (`--lora-r` for lora_r): metavar and help. Type and default
# come from the field, so a default is written once, in TrainSettings, and shown by --help.
FLAGS = {
    "epochs": ("E", "passes over the data"),
    "max_steps": ("N", "stop after N optimizer steps; overrides --epochs"),
    "lr": ("LR", "peak learning rate"),
    "lora_r": ("R", "LoRA rank"),
    "lora_alpha": ("A", "LoRA alpha: the adapter's update is scaled by A/R"),
    "lora_dropout": ("P", "dropout on the LoRA layers' input"),
    "batch_size": ("B", "rows per step"),
    "grad_accum": ("G", "micro-batches per optimizer step"),
    "max_length": ("L", "tokens per row, prompt + completion; longer rows are cut"),
    "seed": ("S", "random seed"),
    "save_steps": ("N", "checkpoint every N steps, and at the end"),
}
# What a default means, where its value does not say it.
DEFAULT_MEANS = {"max_steps": "off", "lora_alpha": "2R"}


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a LoRA adapter on a dataset folder from `s2c compile`",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset_dir", metavar="DATASET_DIR", help="folder with train.jsonl (from `s2c compile`)")
    p.add_argument("--model", metavar="M", help="base model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/train-<DATASET_DIR name>)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over even if OUT/checkpoints holds a checkpoint")
    add_settings_args(p.add_argument_group("training settings"))
    add_output_args(p, progress=False)
    p.set_defaults(func=run)
    return p


def add_settings_args(group) -> None:
    """One flag per TrainSettings field, in field order, with the field's type and default."""
    from s2c.train.sft import TrainSettings

    hints = typing.get_type_hints(TrainSettings)
    for f in dataclasses.fields(TrainSettings):
        metavar, help_ = FLAGS[f.name]  # a new field needs its flag here
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=metavar,
                           type=_scalar(hints[f.name]), default=f.default,
                           help=f"{help_} (default {_shown(f.name, f.default)})")


def settings_from(args):
    """The TrainSettings the parsed flags give."""
    from s2c.train.sft import TrainSettings

    return TrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)})


def _scalar(hint) -> type:
    """`int` for `int | None`: what a flag's value parses as."""
    return next((a for a in typing.get_args(hint) if a is not type(None)), hint)


def _shown(name: str, default) -> str:
    value = "" if default is None else format(default, "g") if isinstance(default, float) else str(default)
    return ": ".join(v for v in (value, DEFAULT_MEANS.get(name)) if v)


def run(args) -> int:
    """Train; print the adapter folder on stdout (progress and messages go to stderr)."""
    from s2c import api
    from s2c.terminal import screen

    result = api.train(args.dataset_dir, settings_from(args), model=args.model, out=args.out, resume=args.resume,
                       verbose=args.verbose)
    print(result.adapter_dir, file=screen(stderr=False))
    return 0
