"""`s2c eval`: the papers' table — System 1, System 2, distilled System 1 — with #tokens, 95 % CIs,
and a paired test between every two systems."""
from __future__ import annotations

import argparse

EXAMPLE = """example:
  s2c eval cot_sc.s2 --data coin_flip:test --limit 100 --adapter runs/train-coin/adapter
  s2c eval bsm.s2 --data mtbench:judgments.jsonl --adapter distilled=runs/a --adapter s1-baseline=runs/b"""


def cmd_eval(args) -> int:
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
    from s2c.errors import S2Error
    from s2c.evaluate.evaluate import (
        evaluate_system,
        merge_adapter,
        resolve_adapter,
        systems_for,
    )
    from s2c.evaluate.metrics import labels
    from s2c.evaluate.report import chart, comparison_lines, table, write_results
    from s2c.evaluate.stats import compare_all

    console = make_console()
    log = console.print
    cp = load_program(args.program)
    if not cp.tasks:
        raise S2Error(f"program '{cp.name}' has no distill section, so it has no System-1 prompt to evaluate",
                      cp.program.header.span)
    if not cp.metrics:
        raise S2Error(f"program '{cp.name}' has no eval section", cp.program.header.span,
                      hint="add: eval:\n    metric normalized_match(OUTPUT, GOLD_FIELD)")
    adapters = []
    for i, spec in enumerate(args.adapter):
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = ("Distilled System 1" if i == 0 else f"adapter {i + 1}"), spec
        adapters.append((name, resolve_adapter(path)))
    if args.merge_adapters and args.engine not in ("auto", "vllm", "hf"):
        raise S2Error(f"--merge-adapters: only with a local engine (vllm or hf); --engine {args.engine} serves "
                      "a model s2c cannot replace", hint="export the adapter (s2c export) and serve that folder")
    systems = systems_for(cp, adapters, system1=not args.no_system1, system2=not args.no_system2,
                          max_tokens=args.max_tokens)
    progress = progress_setting(args)
    out = check_run_args(args, "eval")
    ds, rows, problems = load_rows(args, cp, log)
    results = []
    with own(out), engine_output(out / ENGINE_LOG, args.verbose, console):
        args.log_dir = out
        # one engine serves every system; vLLM serves adapters through LoRA requests when started with
        # LoRA on, hf loads them with PEFT. --merge-adapters: each merged adapter gets an engine of its own
        lora = adapters and not args.merge_adapters and args.engine in ("auto", "vllm")
        engine = open_engine(args, cp, log, **({"enable_lora": True} if lora else {}))
        cache = open_cache(args)
        try:
            if args.merge_adapters:  # all merged first: a bad adapter stops eval before any system ran
                systems = [merge_adapter(s, out / "merged", log) if s.adapter else s for s in systems]
            for system in systems:
                log(f"s2c: {system.name}" + (f" ({system.merged or system.adapter})" if system.adapter else "")
                    + (f": {' then '.join(t.name for t in system.program.tasks)}" if system.kind != "system2" else ""))
                served = open_engine(argparse.Namespace(**{**vars(args), "model": system.merged}), cp, log) \
                    if system.merged else engine
                try:
                    results.append(evaluate_system(cp, system, rows, served, out, cache=cache,
                                                   options=run_options(args), console=console, progress=progress))
                finally:
                    if served is not engine:
                        served.close()
        finally:
            cache.close()
            engine.close()
        meta = {"program": cp.name, "data": args.data, "examples": len(rows), "skipped_rows": len(problems),
                "engine": engine.name, "model": engine.model_id("default"), "max_tokens_system1": args.max_tokens}
        comparisons = compare_all([(r.name, r.outcomes) for r in results], labels(cp.metrics))
        write_results(out, results, comparisons, meta)
        chart(out / "results.png", [r.as_dict() for r in results], labels(cp.metrics), cp.name)
        console.print(table(results, cp, meta), soft_wrap=False)
        for line in comparison_lines(comparisons):
            console.print(line, soft_wrap=True)  # not cut at the table's width
        log(f"s2c: wrote {out}/results.json, {out}/results.png, {out}/predictions.jsonl; traces: "
            + ", ".join(f"s2c trace {r.run_dir}" for r in results) + f"; all of it: s2c report {out}")
    return max((r.exit for r in results), default=0)  # EXIT_ALL_FAILED when a system's every example failed


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
