"""What the subcommands share: the console, engine/data/cache flags and how they are opened, the
run options, and the lock that gives a run folder one owner. Below every subcommand module
(s2c/cli.py and each `*/cli.py` import from here, never the other way round)."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import sys
from pathlib import Path

from s2c.errors import S2Error


def console(stderr: bool = True):
    """stderr console; wide enough for the tables when output is not a terminal (logs, CI)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 140)


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


def run_options(args):
    from s2c.runtime.executor import RunOptions

    if args.chunk_size < 1:
        raise S2Error(f"--chunk-size {args.chunk_size}: must be at least 1")
    return RunOptions(window=args.chunk_size, max_errors=args.max_errors, refresh=frozenset(args.refresh))


LOCK = ".s2c.lock"


@contextlib.contextmanager
def own(folder: Path):
    """Hold `folder` for this process: a second s2c on the same --out stops at once and names the
    holder. The lock is an flock on FOLDER/.s2c.lock, which the kernel releases when its holder
    dies, so a lock left by a killed run is simply taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            raise S2Error(f"{folder} is in use by another s2c (pid {holder})",
                          hint="wait for it to finish, or pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the flock
