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

    from s2c import api
    from s2c.cli.common import data_from, engine_from, run_settings_from
    from s2c.distill.build import DistillSettings
    from s2c.runtime.run import exit_code, token_table
    from s2c.terminal import console as make_console

    program = api.Program.load(args.program)
    console = make_console()
    log = console.print
    settings = DistillSettings(format=args.format, val_split=args.val_split, curation=args.curation,
                               early_stop=args.early_stop)
    res = api.distill(program, data_from(args), engine_from(args), out=args.out, settings=run_settings_from(args),
                      distill=settings)
    out, summary = res.out, res.summary
    from s2c.runtime.gold import line

    r = res.report
    console.print(token_table(summary, (line(r["gold"], kept=True),) if r["gold"] else ()))
    how = "" if args.curation == "program" else f" (--curation {args.curation})"
    log(Text.assemble(("curation", "bold"), f"{how}: {r['inputs']} inputs, ", (f"{r['kept']} kept", "green"),
                      "".join(f", {n} {what}" for what, n in [("failed", r["failed"]), ("unparsed", r["unparsed"]),
                              *((f"dropped by {rule}", n) for rule, n in r["dropped_per_rule"].items())])))
    for reason, n in list(r["dropped_reasons"].items())[:5]:
        log(f"  {n} × {reason}")
    if r["gold"]:
        log(Text.assemble("  ", (line(r["gold"], kept=True), "bold")))
    if r["label_distribution"]:
        log(f"  kept labels: {r['label_distribution']}")
    for w in r["warnings"]:
        log(Text.assemble(("warning:", "yellow"), f" {w}"))
    sizes = ", ".join(f"{k} {v['rows']} rows" for k, v in res.sizes.items())
    log(f"s2c: wrote {out} ({sizes}, format {res.meta['format']}); traces: s2c trace {out} [--dropped]; "
        f"all of it: s2c report {out}")
    return exit_code(summary)


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
    c.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                   help="make every call, as a plain run would. By default a compile makes no call that cannot "
                        "change the dataset: a sampled call read only by vote() and keep majority() stops drawing "
                        "once the samples left cannot change the vote or the verdict (s2c graph says which calls), "
                        "and a perturbed copy runs only where its original's verdict reads it. The dataset is the "
                        "same, byte for byte")
    c.add_argument("--out", default=None, help="dataset folder (default: runs/data-PROGRAM-DATA)")
    add_engine_args(c)
    c.set_defaults(func=cmd_compile)
