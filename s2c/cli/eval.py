"""`s2c eval`: the papers' table — System 1, System 2, distilled System 1 — with #tokens, 95 % CIs,
and a paired test between every two systems."""
from __future__ import annotations

import argparse

EXAMPLE = """example:
  s2c eval cot_sc.s2 --data coin_flip:test --limit 100 --adapter runs/train-coin/adapter
  s2c eval bsm.s2 --data mtbench:judgments.jsonl --adapter distilled=runs/a --adapter s1-baseline=runs/b"""


def cmd_eval(args) -> int:
    from s2c import api
    from s2c.cli.common import data_from, engine_from, run_settings_from
    from s2c.terminal import console as make_console

    program = api.Program.load(args.program)
    console = make_console()
    settings = api.EvalSettings(system1=not args.no_system1, system2=not args.no_system2, max_tokens=args.max_tokens,
                                merge_adapters=args.merge_adapters)
    res = api.evaluate(program, data_from(args), engine_from(args), adapters=args.adapter, out=args.out,
                       settings=run_settings_from(args), eval=settings)
    out = res.folder
    console.print(res.table(), soft_wrap=False)
    for line in res.comparison_lines():
        console.print(line, soft_wrap=True)  # not cut at the table's width
    console.print(f"s2c: wrote {out}/results.json, {out}/results.png, {out}/predictions.jsonl; traces: "
                  + ", ".join(f"s2c trace {r.run_dir}" for r in res.systems) + f"; all of it: s2c report {out}")
    return res.exit  # EXIT_ALL_FAILED when a system's every example failed


def register(sub) -> None:
    from s2c.cli.common import add_data_args, add_engine_args

    e = sub.add_parser("eval", help="compare System 1, System 2 and distilled System 1 on held-out data",
                       description="Evaluate the base model with the System-1 prompt, the System-2 program, and "
                                   "LoRA adapters on the same inputs: task metrics and generated tokens per input, "
                                   "each with a 95% bootstrap CI, and for every two systems the "
                                   "difference with its paired CI and an exact McNemar test.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("program", metavar="PROGRAM")
    add_data_args(e)
    e.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                   help="a LoRA adapter from s2c train (repeatable; the first is 'Distilled System 1')")
    e.add_argument("--merge-adapters", action="store_true",
                   help="merge each adapter into its base (as s2c export does) and serve it as a model of its "
                        "own: what export ships, and on CPU much faster than vLLM's LoRA (docs/benchmarks.md); "
                        "answers can differ from the unmerged adapter's by the merge's rounding")
    e.add_argument("--max-tokens", type=int, default=128, help="System 1's generation budget (default 128)")
    e.add_argument("--no-system1", action="store_true", help="skip the base System 1")
    e.add_argument("--no-system2", action="store_true", help="skip running the System-2 program")
    e.add_argument("--out", default=None, help="results folder (default: runs/eval-PROGRAM-DATA)")
    add_engine_args(e)
    e.set_defaults(func=cmd_eval)
