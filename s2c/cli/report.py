"""`s2c report DIR`."""
from __future__ import annotations

import argparse

EXAMPLE = """example:
  s2c report runs/coin-sc                 # a compiled dataset: writes runs/coin-sc/report.html
  s2c report runs/eval-coin --out eval.html"""


def cmd_report(args) -> int:
    from s2c.report.build import write_report
    from s2c.terminal import console

    dest, report = write_report(args.dir, args.out)
    log = console().print
    for note in report.notes:
        log(f"s2c: report: {note}")
    log(f"s2c: wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB, {len(report.index)} examples); "
        "open it in a browser, it needs no network")
    return 0


def register(sub) -> None:
    r = sub.add_parser("report", help="write one self-contained HTML report of a run, a compiled dataset or an eval",
                       description="Write one HTML file that works offline: the program's graph, tokens and time "
                                   "per node, the curation report, the eval table, and every example's System-2 "
                                   "trace beside the System-1 row made from it, filterable.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("dir", metavar="DIR", help="the --out of s2c run, s2c compile or s2c eval")
    r.add_argument("--out", default=None, help="the HTML file (default: DIR/report.html)")
    r.set_defaults(func=cmd_report)
