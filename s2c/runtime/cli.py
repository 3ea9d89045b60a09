"""`s2c run` and `s2c trace`."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from s2c.errors import S2Error

RUN_EXAMPLE = """example:
  s2c run cot_zeroshot.s2 --data questions.jsonl --limit 8
  s2c run bsm.s2 --data judgments.jsonl --map question=prompt --engine hf"""


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine, model and cache flags shared by run, compile and eval."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="auto", choices=["auto", "vllm", "hf", "openai"],
                   help="inference engine (default: auto, see README)")
    g.add_argument("--model", default=None,
                   help="model folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--role", action="append", default=[], metavar="ROLE=MODEL",
                   help="model for a role a program names, e.g. --role teacher=path/to/model")
    g.add_argument("--base-url", default=None, help="openai engine: server URL (or S2C_OPENAI_BASE_URL)")
    g.add_argument("--cache", default=None, help="call cache file (default: ~/.cache/s2c/calls.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the call cache")
    g.add_argument("--refresh", action="append", default=[], metavar="NODE",
                   help="recompute this node's calls instead of reading them from the cache")
    g.add_argument("--chunk-size", type=int, default=64, help="requests per engine batch (default 64)")
    g.add_argument("--max-errors", type=int, default=None, help="stop when more examples than this fail")


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="SOURCE",
                   help="a .jsonl/.csv/.parquet file, a named source (coin_flip, oasst2, ...), or a hub id")
    g.add_argument("--split", default=None)
    g.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read program input FIELD from data column COLUMN")
    g.add_argument("--limit", type=int, default=None, help="the first N rows")
    g.add_argument("--seed", type=int, default=0)


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k or not v:
            raise S2Error(f"{flag} {it!r}: expected NAME=VALUE")
        out[k.strip()] = v.strip()
    return out


def open_engine(args, cp, log, **extra):
    from s2c.runtime.engines import choose_auto, describe, make_engine
    from s2c.runtime.engines.lazy import LazyEngine
    from s2c.runtime.engines.local import resolve_roles

    roles = parse_pairs(args.role, "--role")
    unknown = set(roles) - {n.role for n in cp.llm_nodes()}
    if unknown:
        raise S2Error(f"--role {', '.join(sorted(unknown))}: the program has no such role",
                      hint=f"its roles: {', '.join(sorted({n.role for n in cp.llm_nodes()}))}")
    options = dict(extra)
    if args.base_url:
        options["base_url"] = args.base_url
    name = choose_auto(options) if args.engine == "auto" else args.engine
    if name in ("vllm", "hf"):  # local engines start on the first call the cache cannot serve
        engine = LazyEngine(name, resolve_roles(args.model, roles, log), lambda: make_engine(args.engine, args.model, roles=roles, **options))
        log(f"s2c: {describe(engine)} (started on the first call the cache cannot serve)")
    else:
        engine = make_engine(args.engine, args.model, roles=roles, **options)
        log(f"s2c: {describe(engine)}")
    return engine


def open_cache(args):
    from s2c.runtime.cache import CallCache, default_cache_path

    return CallCache(None if args.no_cache else (args.cache or default_cache_path()))


def load_rows(args, cp, log):
    from s2c.data import load_source
    from s2c.runtime.run import validate_rows

    ds = load_source(args.data, split=args.split, limit=args.limit, mapping=parse_pairs(args.map, "--map") or None,
                     seed=args.seed)
    rows, problems = validate_rows(cp, ds.rows, args.data)
    problems = list(ds.problems) + problems
    for p in problems[:20]:
        log(f"s2c: skipped {p}")
    if len(problems) > 20:
        log(f"s2c: ... and {len(problems) - 20} more skipped rows (see rows.json in the run folder)")
    if not rows:
        raise S2Error(f"no usable rows in {args.data}",
                      hint=f"the program reads: {', '.join(p.name for p in cp.inputs)}; use --map FIELD=COLUMN")
    return ds, rows, problems


def default_out(kind: str, program: str, data: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).stem if Path(data).exists() else data).strip("_")
    return Path("runs") / f"{kind}-{Path(program).stem}-{slug}"


def cmd_run(args) -> int:
    from s2c.compiler.pipeline import load_program
    from s2c.runtime.run import execute, token_table

    from s2c.cli import console as make_console

    console = make_console()
    log = console.print
    cp = load_program(args.program)
    ds, rows, problems = load_rows(args, cp, log)
    out = Path(args.out) if args.out else default_out("run", args.program, args.data)
    engine = open_engine(args, cp, log)
    cache = open_cache(args)
    try:
        outcome = execute(cp, rows, engine, out, cache=cache, chunk_size=args.chunk_size, max_errors=args.max_errors,
                          refresh=set(args.refresh), skipped=problems, console=console,
                          meta={"data": args.data, "split": ds.split})
    finally:
        cache.close()
        engine.close()
    console.print(token_table(outcome.summary))
    s = outcome.summary
    log(f"s2c: {s['examples']} examples, {s['failed']} failed, {s['engine_calls']} engine calls, "
        f"{s['cache_hits']} cache hits -> {out}/summary.json, traces in {out}/traces.jsonl")
    if s["failures"]:
        for nid, reasons in s["failures"].items():
            for reason, k in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]:
                log(f"  [yellow]{nid}[/]: {k} × {reason}")
    return 0


def cmd_trace(args) -> int:
    from s2c.cli import console as make_console
    from s2c.runtime.trace_view import find_trace, render_trace

    rec = find_trace(Path(args.run), args.example)
    make_console(stderr=False).print(render_trace(rec, node=args.node, full=args.full))
    return 0


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
                       description="Show one example's execution: each node's prompt, completions and value.",
                       epilog="example:\n  s2c trace runs/run-bsm-judgments --example q17 --node solve",
                       formatter_class=fmt)
    t.add_argument("run", metavar="RUN", help="a run folder (or its traces.jsonl)")
    t.add_argument("--example", default=None, help="example id (default: the first)")
    t.add_argument("--node", default=None, help="only this node")
    t.add_argument("--full", action="store_true", help="do not truncate prompts and outputs")
    t.set_defaults(func=cmd_trace)
