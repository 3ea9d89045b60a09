"""What the subcommands share: the console, engine/data/cache flags and how they are opened, the
run options, and the lock that gives a run folder one owner. Below every subcommand module
(s2c/cli.py and each `*/cli.py` import from here, never the other way round)."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import os
import re
import sys
import tempfile
from pathlib import Path

from s2c.errors import S2Error

# Where s2c's own output goes while `engine_output` sends file descriptors 1 and 2 to a log:
# fd -> the stream that still reaches the user. Process-wide, as the descriptors themselves are.
_SCREEN: dict[int, io.TextIOBase] = {}


class _Screen(io.TextIOBase):
    """The user's stdout (fd 1) or stderr (fd 2), also while the engine's output goes to a log:
    the stream s2c's console, messages and products write to. Resolved at each write, so a
    console made before the redirect follows it."""

    def __init__(self, fd: int):
        self.fd = fd

    def target(self):
        return _SCREEN.get(self.fd) or (sys.stdout if self.fd == 1 else sys.stderr)

    def write(self, text: str) -> int:
        return self.target().write(text)

    def flush(self) -> None:
        self.target().flush()

    def isatty(self) -> bool:
        return self.target().isatty()

    def fileno(self) -> int:
        return self.target().fileno()

    def writable(self) -> bool:
        return True


def screen(stderr: bool = True) -> io.TextIOBase:
    """The user's stderr (or stdout) for plain `print(..., file=screen())`."""
    return _Screen(2 if stderr else 1)


def console(stderr: bool = True):
    """A console on the user's stderr (or stdout); wide enough for the tables when output is not
    a terminal (logs, CI). It keeps the terminal while `engine_output` is in force.

    Markup is off: a string prints exactly as it is, so user text (ids, model outputs, paths, a
    server's error) that holds `[/x]` or `[bold]` can neither crash a command nor turn into style.
    Style is given explicitly, as `rich.text.Text`: `Text.assemble(("ok", "green"), f" {path}")`."""
    from rich.console import Console

    stream = screen(stderr)
    # measured now: once fds 1 and 2 go to engine.log, rich could no longer ask the terminal
    width = (os.get_terminal_size(stream.fileno()).columns or 80) if stream.isatty() else 140
    return Console(file=stream, markup=False, highlight=False, emoji=False, width=width)  # no :x: -> emoji in paths


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine, model and cache flags shared by run, compile and eval."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="auto", choices=["auto", "vllm", "hf", "openai", "ray"],
                   help="inference engine (default: auto, see README; ray: vLLM replicas on a Ray cluster, "
                        "docs/scale.md)")
    g.add_argument("--model", default=None,
                   help="model folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--role", action="append", default=[], metavar="ROLE=MODEL",
                   help="model for a role a program names, e.g. --role teacher=path/to/model")
    g.add_argument("--base-url", action="append", default=[], metavar="URL",
                   help="openai engine: server URL (or S2C_OPENAI_BASE_URL); repeat it for several servers of "
                        "the same model (requests spread by prefix, a server that dies is failed over)")
    g.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="vllm and ray engines: an argument for vllm.LLM, VALUE read as JSON where it parses "
                        "(--vllm-arg max_num_seqs=1 --vllm-arg enable_prefix_caching=false)")
    g.add_argument("--cache", default=None, help="call cache file (default: ~/.cache/s2c/calls.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the call cache")
    g.add_argument("--refresh", action="append", default=[], metavar="NODE",
                   help="recompute this node's calls instead of reading them from the cache")
    g.add_argument("--chunk-size", type=int, default=64, help="requests in flight on the engine (default 64)")
    r = p.add_argument_group("scale-out on Ray (--engine ray; docs/scale.md)")
    r.add_argument("--ray-address", default="auto", metavar="ADDR",
                   help="auto (a cluster started with `ray start`), HOST:PORT, ray://HOST:PORT, or local "
                        "(start one in this process); default auto")
    r.add_argument("--replicas", type=int, default=None, metavar="N", help="vLLM engines in the pool (default 1)")
    r.add_argument("--replica-resources", action="append", default=[], metavar="NAME=AMOUNT",
                   help="Ray resources of each replica or shard (default CPU=1; on GPUs: --replica-resources "
                        "GPU=1)")
    r.add_argument("--shards", type=int, default=None, metavar="N",
                   help="cut the input into N shards, each run whole on a Ray worker with its own engine, "
                        "cache shard and run store shard, merged here")
    g.add_argument("--max-errors", type=int, default=None, help="stop when more examples than this fail")
    add_output_args(p, progress=True)


def add_output_args(p: argparse.ArgumentParser, progress: bool) -> None:
    """What the console shows: -v (run, compile, eval, train); progress flags (run, compile, eval)."""
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="show what the engine and its libraries print (vLLM, torch) instead of logging it "
                        "to engine.log in the output folder")
    if progress:
        g.add_argument("--progress-every", type=float, default=None, metavar="SECONDS",  # None: run.PROGRESS_EVERY
                       help="off a terminal (CI, nohup, a pipe): a progress line every SECONDS "
                            "(default 30); on a terminal, progress bars")
        g.add_argument("--no-progress", action="store_true", help="no progress bars or lines")


def progress_setting(args) -> float | bool:
    """execute()'s `progress`: False for none, True for its default, else the seconds between
    plain progress lines."""
    if args.no_progress:
        return False
    if args.progress_every is None:
        return True
    if not args.progress_every > 0:
        raise S2Error(f"--progress-every {args.progress_every:g}: must be more than 0 seconds",
                      hint="pass --no-progress to turn progress off")
    return args.progress_every


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="SOURCE",
                   help="a .jsonl/.csv/.parquet file, a named source (coin_flip, oasst2, ...), or a hub id")
    g.add_argument("--split", default=None)
    g.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read program input FIELD from data column COLUMN")
    g.add_argument("--limit", type=int, default=None, help="the first N rows")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-field-chars", type=int, default=None, metavar="N",
                   help="skip rows whose program input is longer than N characters (default 100,000)")


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
        options["base_url"] = args.base_url[0] if len(args.base_url) == 1 else args.base_url
    name = choose_auto(options) if args.engine == "auto" else args.engine
    vllm_args = parse_vllm_args(args.vllm_arg, name)
    ray_flags = [f for f, v in (("--replicas", args.replicas), ("--shards", args.shards),
                                ("--replica-resources", args.replica_resources)) if v]
    if ray_flags and name != "ray":
        raise S2Error(f"{', '.join(ray_flags)}: only with --engine ray (the engine here is {name})")
    if args.shards and args.replicas:
        raise S2Error("--shards and --replicas: a sharded run has one engine per shard",
                      hint="drop --replicas; --shards N runs N engines")
    if name == "ray":
        resources = {}
        for k, v in parse_pairs(args.replica_resources, "--replica-resources").items():
            try:
                resources[k] = float(v)
            except ValueError:
                raise S2Error(f"--replica-resources {k}={v}: the amount must be a number",
                              hint="e.g. --replica-resources GPU=1 --replica-resources CPU=4") from None
        resources = resources or None
        if args.shards:
            from s2c.runtime.shards import Shards

            engine = Shards(args.shards, args.ray_address, args.model, roles, resources, {**options, **vllm_args})
            log(f"s2c: ray: {args.shards} shards, each a vllm engine with {resources or {'CPU': 1}}")
            return engine
        engine = make_engine("ray", args.model, roles=roles, address=args.ray_address, replicas=args.replicas or 1,
                             replica_resources=resources, log=log, **options, **vllm_args)
        log(f"s2c: {describe(engine)}")
        return engine
    options.update(vllm_args)
    if name in ("vllm", "hf"):  # local engines start on the first call the cache cannot serve
        engine = LazyEngine(name, resolve_roles(args.model, roles, log),
                            lambda: make_engine(args.engine, args.model, roles=roles, **options), log=log)
        log(f"s2c: {describe(engine)} (started on the first call the cache cannot serve)")
    else:
        engine = make_engine(args.engine, args.model, roles=roles, **options)
        log(f"s2c: {describe(engine)}")
    return engine


def parse_vllm_args(items: list[str], engine: str) -> dict:
    """--vllm-arg KEY=VALUE pairs, each VALUE read as JSON where it parses (1, false, {"a": 1})."""
    import json

    if items and engine not in ("vllm", "ray"):
        raise S2Error(f"--vllm-arg: only with --engine vllm or ray (the engine here is {engine})")
    out = {}
    for key, value in parse_pairs(items, "--vllm-arg").items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def cache_path(args) -> Path | None:
    """The call cache file --cache names (default ~/.cache/s2c/calls.sqlite); None with --no-cache."""
    from s2c.runtime.cache import default_cache_path

    return None if args.no_cache else Path(args.cache or default_cache_path())


def open_cache(args):
    from s2c.runtime.cache import CallCache

    return CallCache(cache_path(args))


def load_rows(args, cp, log):
    from s2c.data import load_source
    from s2c.runtime.run import MAX_FIELD_CHARS, validate_rows

    ds = load_source(args.data, split=args.split, limit=args.limit, mapping=parse_pairs(args.map, "--map") or None,
                     seed=args.seed)
    rows, problems = validate_rows(cp, ds.rows, args.data, locations=ds.locations,
                                   max_field_chars=args.max_field_chars or MAX_FIELD_CHARS)
    problems = list(ds.problems) + problems
    log(f"s2c: data: {len(rows)} rows from {ds.origin}, split {ds.split}"
        + (f" ({len(problems)} skipped)" if problems else ""), soft_wrap=True)
    for p in problems[:20]:
        log(f"s2c: {p}", soft_wrap=True)  # one line each, however long
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

    return RunOptions(window=args.chunk_size, max_errors=args.max_errors, refresh=frozenset(args.refresh))


def check_run_args(args, kind: str) -> Path:
    """What run, compile and eval check before they read any data or start an engine: the numbers,
    the output folder and the call cache. Returns the output folder (--out, or the default for
    `kind`), made and known to be writable."""
    from s2c.runtime.cache import CallCache

    for flag, value, least in (("--chunk-size", args.chunk_size, 1), ("--max-errors", args.max_errors, 0),
                               ("--replicas", args.replicas, 1), ("--shards", args.shards, 1),
                               ("--limit", args.limit, 0), ("--max-field-chars", args.max_field_chars, 1)):
        if value is not None and value < least:
            raise S2Error(f"{flag} {value}: must be at least {least}")
    out = Path(args.out) if args.out else default_out(kind, args.program, args.data)
    check_out(out)
    CallCache(cache_path(args)).close()  # opening it is the check: a folder, not SQLite, unwritable
    return out


def check_out(out: Path, flag: str = "--out") -> None:
    """Make the output folder now, and prove a file can be written in it: a bad --out is an error
    before anything slow starts, not a traceback after it."""
    if out.exists() and not out.is_dir():
        raise S2Error(f"{flag} {out}: is a file, not a folder", hint=f"pass a folder path, e.g. {flag} {out}.d")
    blocker = next((a for a in out.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise S2Error(f"{flag} {out}: {blocker} is a file, so no folder can be made under it",
                      hint="pass a path whose parent folders are folders")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise S2Error(f"{flag} {out}: cannot write there ({e.strerror or e})",
                      hint="pass a folder you can write to") from None


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


ENGINE_LOG = "engine.log"

# Lines of an engine log a user should read: vLLM logs a full KV cache, a fallback to another
# implementation and its errors in these words (s2c's vLLM engine adds a line for preemptions).
WORTH_READING = re.compile(r"(?i:preempt|kv[ _-]?cache|out of memory|fall(?:ing|s)?[ -]?back)"
                           r"|\bERROR\b|Traceback|\w+Error:")
# vLLM's prefix on a log line: "(EngineCore pid=7) WARNING 11-23 07:18:12 [core.py:534] "
LOG_PREFIX = re.compile(r"^(?:\([^)]*\)\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S+\s+\S+\s+\[[^\]]*\]\s+")


@contextlib.contextmanager
def engine_output(log_file: Path, verbose: bool, console, what: str = "engine"):
    """Send what the engine and the libraries under it print to `log_file` while the block runs:
    file descriptors 1 and 2 are pointed at the file (os.dup2), so vLLM's EngineCore and worker
    processes (which inherit them), native code, Python warnings and logging handlers bound to
    sys.stdout all land there, while s2c's console (`screen`, `console`) keeps a duplicate of the
    user's terminal. On leaving, one line on `console` names the lines worth reading, if any.
    verbose (-v): nothing is redirected and no log is written."""
    if verbose or _SCREEN:  # -v, or already redirected (one log per command)
        yield None
        return
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved: dict[int, int] = {}
    opened = []
    with open(log_file, "wb") as f:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            saved[fd] = os.dup(fd)
            _SCREEN[fd] = stream
            if _on_fd(stream, fd):  # it would follow the redirect: s2c writes to the duplicate instead
                _SCREEN[fd] = open(saved[fd], "w", buffering=1, closefd=False,  # noqa: SIM115 (closed below)
                                   errors="backslashreplace", encoding=getattr(stream, "encoding", None) or "utf-8")
                opened.append(_SCREEN[fd])
            os.dup2(f.fileno(), fd)
    try:
        yield log_file
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for stream in opened:
            stream.close()  # flushes; the descriptor stays (closefd=False) until restored below
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
            del _SCREEN[fd]
        with contextlib.suppress(OSError):
            if log_file.stat().st_size == 0:  # nothing was printed (a run served by the cache): no log
                log_file.unlink()
        note = log_note(log_file, what)
        if note:
            console.print(note)


def _on_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no descriptor, or closed
        return False


def log_note(log_file: Path, what: str = "engine") -> str | None:
    """One line naming the lines of `log_file` worth reading (see WORTH_READING), or None."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = list(dict.fromkeys(LOG_PREFIX.sub("", line).strip() for line in text.splitlines()
                               if WORTH_READING.search(line)))
    if not found:
        return None
    first = found[0] if len(found[0]) <= 80 else found[0][:77] + "..."
    n = len(found)
    return f"s2c: {what}: {n} warning{'s' * (n != 1)} worth reading ({first}); see {log_file}"
