"""`s2c train DATASET_DIR`: the argparse face of `s2c.train.sft.train`."""
from __future__ import annotations

import argparse
from pathlib import Path

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
    p.add_argument("--epochs", metavar="E", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--max-steps", metavar="N", type=int, default=-1,
                   help="stop after N optimizer steps; overrides --epochs (default: off)")
    p.add_argument("--lr", metavar="LR", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--lora-r", metavar="R", type=int, default=16, help="LoRA rank (default 16; alpha = 2R)")
    p.add_argument("--batch-size", metavar="B", type=int, default=4, help="rows per step (default 4)")
    p.add_argument("--grad-accum", metavar="G", type=int, default=1,
                   help="micro-batches per optimizer step (default 1)")
    p.add_argument("--max-length", metavar="L", type=int, default=256,
                   help="tokens per row, prompt + completion; longer rows are cut (default 256)")
    p.add_argument("--save-steps", metavar="N", type=int, default=50,
                   help="checkpoint every N steps, and at the end (default 50)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over even if OUT/checkpoints holds a checkpoint")
    add_output_args(p, progress=False)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Train; print the adapter folder on stdout (progress and messages go to stderr)."""
    from s2c.folders import check_out
    from s2c.terminal import console, engine_output, screen
    from s2c.train.sft import default_out, train

    out = Path(args.out) if args.out else default_out(args.dataset_dir)
    check_out(out)  # before train.log goes there
    err = console()
    with engine_output(out / TRAIN_LOG, args.verbose, err, what="train"):
        result = train(
            args.dataset_dir,
            model=args.model,
            out=out,
            epochs=args.epochs,
            max_steps=args.max_steps,
            lr=args.lr,
            lora_r=args.lora_r,
            lora_alpha=2 * args.lora_r,  # the usual alpha/r = 2 scaling, so --lora-r alone changes capacity
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            max_length=args.max_length,
            save_steps=args.save_steps,
            seed=args.seed,
            resume=args.resume,
            log=lambda message: print(message, file=screen()),
            console=err,
        )
    print(result.adapter_dir, file=screen(stderr=False))
    return 0


TRAIN_LOG = "train.log"  # what transformers, TRL and torch print, in the output folder
