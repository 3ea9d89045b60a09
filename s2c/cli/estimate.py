"""`s2c estimate`: what a run or a compile will make and cost, before any call."""
from __future__ import annotations

import argparse
import json

EXAMPLE = """example:
  s2c estimate bsm.s2 --data oasst2 --engine openai --model gpt-4o-mini --prices prices.toml
  s2c estimate cot_sc.s2 --data gsm8k --for run --json"""


def cmd_estimate(args) -> int:
    from rich.table import Table
    from rich.text import Text

    from s2c import api
    from s2c.cli.common import data_from, engine_from, run_settings_from
    from s2c.runtime.prices import Prices
    from s2c.terminal import console as make_console

    program = api.Program.load(args.program)
    est = api.estimate(program, data_from(args), engine_from(args), sample=args.sample,
                       compile=args.for_ == "compile", prices=Prices.load(args.prices, args.price), pilot=args.pilot,
                       settings=run_settings_from(args))
    out = make_console(stderr=False)
    if args.json:
        out.print_json(json.dumps(est.as_dict()))
        return 0
    d = est.as_dict()
    copies = f" × {est.copies} (the perturbed copies compile runs)" if est.copies > 1 else ""
    copies += f" · scaled by a pilot of {est.pilot} rows" if est.pilot else ""
    t = Table(title=f"{est.program} · {est.rows} rows{copies} · prompt tokens from {est.sampled} rendered rows, "
                    f"{est.tokenizer}", title_justify="left")
    for c in ("node", "calls / input", "prompt tok / input", "+ quoted replies, at most", "≤ generated tok / input"):
        t.add_column(c, justify="left" if c == "node" else "right")
    for nid, n in d["nodes"].items():
        t.add_row(nid, f"{n['calls_per_input']:g}", f"{n['prompt_tokens_per_input']:,.1f}",
                  f"{n['quoted_max_per_input']:,.0f}", f"{n['max_generated_per_input']:,.0f}")
    t.add_row(Text("total", "bold"), Text(f"{d['calls']:,}", "bold"), Text(f"{d['prompt_tokens']:,}", "bold"),
              f"{d['quoted_max']:,}", Text(f"{d['max_generated_tokens']:,}", "bold"))
    t.caption = ("totals are for every row" + (" and copy" if est.copies > 1 else "") + "; a prompt's quoted replies "
                 "(earlier calls' output) are not known before any call and count empty, the next column says how much "
                 "they could add")
    t.caption_justify = "left"
    out.print(t)
    cost = d["cost_at_most"]
    if cost is not None:
        out.print(f"cost: at most ${cost:,.4f} (the prompt tokens, and every sample at max_tokens; quoted replies "
                  "not counted)")
    elif args.prices or args.price:
        out.print("cost: not every model of the program has a price")
    return 0


def register(sub) -> None:
    from s2c.cli.common import add_data_args, add_engine_args

    e = sub.add_parser("estimate", help="what a run or a compile will make and cost, before any call",
                       description="Count the calls (with samples and perturbed copies), the prompt tokens of the "
                                   "first rows' rendered prompts, the worst-case generated tokens and the cost, "
                                   "without making a call.", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("program", metavar="PROGRAM")
    add_data_args(e)
    e.add_argument("--for", dest="for_", choices=["compile", "run"], default="compile",
                   help="compile (default: with the perturbed copies the keep rules compare with) or run")
    e.add_argument("--sample", type=int, default=20, metavar="N", help="rows whose prompts are rendered (default 20)")
    e.add_argument("--pilot", type=int, default=0, metavar="N",
                   help="run the first N rows for real (their calls are cached, so the compile after does not pay "
                        "them again) and scale the estimate by what they made: the fan-outs over lists the model "
                        "writes and the replies prompts quote (default 0: no call is made)")
    e.add_argument("--json", action="store_true", help="print the estimate as JSON")
    add_engine_args(e)
    e.set_defaults(func=cmd_estimate)
