"""`s2c compile`."""
from __future__ import annotations

import argparse

from s2c.compiler.tables import DISTILL_FORMATS
from s2c.distill.curate import CURATIONS

EXAMPLE = """example:
  s2c compile rar_2step.s2 --data coin_flip --limit 32 --out data/rar-coin
  s2c compile bsm.s2 --data oasst2:path/to/oasst2.jsonl --val-split 0.1"""


def cmd_compile(args) -> int:
    from rich.text import Text

    from s2c.cli.common import (
        ENGINE_LOG,
        check_run_args,
        engine_output,
        load_rows,
        open_cache,
        open_engine,
        own,
        progress_setting,
        run_options,
    )
    from s2c.cli.common import console as make_console
    from s2c.compiler.pipeline import load_program
    from s2c.distill.build import distill_program
    from s2c.distill.curate import with_curation
    from s2c.errors import S2Error
    from s2c.runtime.run import exit_code, token_table

    console = make_console()
    log = console.print
    cp = load_program(args.program)
    if not cp.tasks:
        raise S2Error(f"program '{cp.name}' has no distill section: nothing to compile",
                      cp.program.header.span, hint='add: distill:\n    task NAME(target=OUTPUT) """System-1 prompt"""')
    with_curation(cp, args.curation)  # a --curation the program cannot take is refused before any data is read
    if not 0 <= args.val_split < 1:
        raise S2Error("--val-split must be in [0, 1)")
    progress = progress_setting(args)
    out = check_run_args(args, "data")
    ds, rows, problems = load_rows(args, cp, log)
    with own(out), engine_output(out / "run" / ENGINE_LOG, args.verbose, console):  # beside the run it served
        args.log_dir = out
        engine = open_engine(args, cp, log)
        cache = open_cache(args)
        try:
            res = distill_program(cp, rows, engine, out, cache=cache, data=args.data, options=run_options(args),
                                  fmt=args.format, seed=args.seed, val_split=args.val_split, skipped=problems,
                                  console=console, progress=progress, curation=args.curation)
        finally:
            cache.close()
            engine.close()
        import json

        summary = json.loads((out / "run" / "summary.json").read_text())
        console.print(token_table(summary))
        r = res.report
        how = "" if args.curation == "program" else f" (--curation {args.curation})"
        log(Text.assemble(("curation", "bold"), f"{how}: {r['inputs']} inputs, ", (f"{r['kept']} kept", "green"),
                          "".join(f", {n} {what}" for what, n in [("failed", r["failed"]), ("unparsed", r["unparsed"]),
                                  *((f"dropped by {rule}", n) for rule, n in r["dropped_per_rule"].items())])))
        for reason, n in list(r["dropped_reasons"].items())[:5]:
            log(f"  {n} × {reason}")
        if r["label_distribution"]:
            log(f"  kept labels: {r['label_distribution']}")
        for w in r["warnings"]:
            log(Text.assemble(("warning:", "yellow"), f" {w}"))
        sizes = ", ".join(f"{k} {v['rows']} rows" for k, v in res.sizes.items())
        log(f"s2c: wrote {out} ({sizes}, format {res.meta['format']}); traces: s2c trace {out} [--dropped]; all of it: s2c report {out}")
    return exit_code(summary)  # the engine's warnings, if any, were named last (engine_output)


def register(sub) -> None:
    from s2c.cli.common import add_data_args, add_engine_args

    c = sub.add_parser("compile", help="run a System-2 program and write curated System-1 training data",
                       description="Run the program over the data (cached, resumable), curate the outputs with the "
                                   "distill section's keep rules, and write TRL prompt-completion rows.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("program", metavar="PROGRAM")
    add_data_args(c)
    c.add_argument("--format", choices=DISTILL_FORMATS, default=None,
                   help="row format (default: the one the program's distill section declares)")
    c.add_argument("--val-split", type=float, default=0.0, help="fraction of examples for validation.jsonl")
    c.add_argument("--curation", choices=CURATIONS, default="program",
                   help="which inputs to keep: the program's keep rules (default), none (every System-2 answer: "
                        "the papers' unfiltered ablation), or gold (only answers equal to the gold field: the "
                        "gold-filtered ablation)")
    c.add_argument("--out", default=None, help="dataset folder (default: runs/data-PROGRAM-DATA)")
    add_engine_args(c)
    c.set_defaults(func=cmd_compile)
