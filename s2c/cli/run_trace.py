"""`s2c run` and `s2c trace`."""
from __future__ import annotations

import argparse
from pathlib import Path

from s2c.cli.common import (
    add_data_args,
    add_engine_args,
    data_from,
    engine_from,
    run_settings_from,
)
from s2c.terminal import console as make_console

RUN_EXAMPLE = """example:
  s2c run cot_zeroshot.s2 --data questions.jsonl --limit 8
  s2c run bsm.s2 --data judgments.jsonl --map question=prompt --engine hf"""


def cmd_run(args) -> int:
    from rich.text import Text

    from s2c import api
    from s2c.runtime.run import exit_code, token_table

    program = api.Program.load(args.program)
    console = make_console()
    log = console.print
    outcome = api.run(program, data_from(args), engine_from(args), out=args.out, settings=run_settings_from(args))
    out = outcome.run_dir
    from s2c.runtime.gold import line

    gold = outcome.gold()
    console.print(token_table(outcome.summary, tuple(line(g) for g in gold)))
    s = outcome.summary
    log(f"s2c: {s.examples} examples: {s.ok} ok, {s.failed} failed, {s.unparsed} unparsed; "
        f"{s.engine_calls} engine calls, {s.cache_hits} cache hits, {s.retries} retries -> "
        f"{out}/summary.json; traces: s2c trace {out} [--failed]; all of it: s2c report {out}")
    for g in gold:  # the program's metrics, where the data has gold
        log(Text.assemble("s2c: ", (line(g), "bold")))
    for kind in ("failed", "unparsed"):
        for nid, reasons in s.reasons(kind).items():
            for reason, k in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]:
                log(Text.assemble("  ", (nid, "yellow"), f" {kind}: {k} × {reason}"))
    return exit_code(s)


def cmd_trace(args) -> int:
    from s2c.report.trace_view import Selection, show

    sel = Selection(args.example, args.failed, args.dropped, args.limit)
    return show(Path(args.run), sel, node=args.node, full=args.full, out=make_console(stderr=False),
                log=make_console().print)


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    r = sub.add_parser("run", help="run a program over a dataset (batched, cached, resumable)",
                       description="Run a program over a dataset: every call batched on the engine, cached, "
                                   "traced. Re-running repeats no completed call.", epilog=RUN_EXAMPLE,
                       formatter_class=fmt)
    r.add_argument("program", metavar="PROGRAM")
    add_data_args(r)
    r.add_argument("--out", default=None, help="run folder (default: runs/run-PROGRAM-DATA)")
    add_engine_args(r)
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("trace", help="show one example's execution from a run folder",
                       description="Show an example's execution: each node's prompt, completions and value, its\n"
                                   "gold answer and whether the output matches it (the eval metrics), and in a\n"
                                   "compiled dataset folder its curation verdict. Which example was picked, and\n"
                                   "why, goes to stderr.",
                       epilog="examples:\n  s2c trace runs/run-bsm-judgments --example q17 --node solve\n"
                              "  s2c trace runs/data-coin_flip_sc-coin_flip --dropped --limit 3",
                       formatter_class=fmt)
    t.add_argument("run", metavar="RUN", help="a run folder (s2c run --out, an eval's DIR/system1 ...) or a compiled "
                                              "dataset folder (s2c compile --out DIR: DIR or DIR/run)")
    pick = t.add_mutually_exclusive_group()
    pick.add_argument("--example", default=None, metavar="ID",
                      help="example id (default: the first ok example in input order)")
    pick.add_argument("--failed", action="store_true", help="the examples whose status is failed or unparsed")
    pick.add_argument("--dropped", action="store_true",
                      help="the examples curation dropped, with rule and reason (a compiled dataset folder)")
    t.add_argument("--limit", type=int, default=None, metavar="N",
                   help="--failed / --dropped: show the first N (default 10; 0: all)")
    t.add_argument("--node", default=None, help="only this node")
    t.add_argument("--full", action="store_true", help="do not truncate prompts and outputs")
    t.set_defaults(func=cmd_trace)
