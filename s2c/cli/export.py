"""`s2c export ADAPTER --out DIR`: the argparse face of `s2c.train.export.export`."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Merge a LoRA adapter from `s2c train` into its base model and write the result as a standalone
model folder (safetensors, the tokenizer with its chat template, and s2c_export.json saying what
was merged). transformers and vLLM load it like any model; `s2c eval --model DIR` takes it. The
base model is the one the adapter was trained on (train_config.json, else adapter_config.json)
unless --model names another. DIR appears whole or not at all."""

EXAMPLE = """\
example:
  s2c export runs/train-coin --out models/coin-s1
  s2c eval rar_1step.s2 --data coin_flip:test --no-system2 --model models/coin-s1
"""


def register(subparsers) -> argparse.ArgumentParser:
    from s2c.train.export import DTYPES

    p = subparsers.add_parser(
        "export",
        help="merge a LoRA adapter into its base model: a standalone model folder",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("adapter", metavar="ADAPTER", help="the folder `s2c train` wrote, or its adapter/ subfolder")
    p.add_argument("--out", metavar="DIR", required=True, help="the model folder to write")
    p.add_argument("--model", metavar="M",
                   help="base model folder or hub id (default: the one the adapter was trained on)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="weights' dtype (default auto: the base model's own, bfloat16 for the embedded model)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Export; print the model folder on stdout (messages go to stderr)."""
    from s2c.terminal import no_transformers_bars, screen
    from s2c.train.export import export, require_packages

    require_packages()  # before no_transformers_bars imports transformers
    with no_transformers_bars():
        result = export(args.adapter, args.out, model=args.model, dtype=args.dtype, force=args.force,
                        log=lambda message: print(message, file=screen()))
    print(result.out, file=screen(stderr=False))
    return 0
