"""s2c as a library: the objects a notebook keeps, and the functions the CLI calls after parsing
its flags into the same objects (s2c/cli/). One path for both.

    import s2c
    prog = s2c.Program.load("bsm.s2")                # or Program.from_text(".s2 text")
    with s2c.Engine("vllm") as engine:               # started once, on the first call the cache cannot serve
        run = s2c.run(prog, rows, engine)            # rows: list of dicts, DataFrame, datasets.Dataset, a file
        data = s2c.distill(prog, rows, engine)       # a DatasetDict and the curation report
        trained = s2c.train(data, s2c.TrainSettings(max_steps=20))
        result = s2c.evaluate(prog, test_rows, engine, adapters=[trained])

Every call writes the same folder the matching CLI command writes (runs/KIND-PROGRAM-DATA unless
`out` names one) and returns a typed result read from it. docs/python.md has the whole tour.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from s2c import folders, terminal
from s2c.compiler import ir
from s2c.distill.build import DistillResult, DistillSettings
from s2c.errors import Diagnostic, S2Error, did_you_mean
from s2c.runtime.engines.http import HttpOptions
from s2c.runtime.prices import Prices
from s2c.runtime.executor import RunOptions
from s2c.runtime.run import MAX_FIELD_CHARS, RunOutcome, validate_rows
from s2c.train.sft import TrainResult, TrainSettings

# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Program:
    """A checked `.s2` program and its execution graph."""

    checked: ir.CheckedProgram

    @classmethod
    def load(cls, source: str | os.PathLike) -> Program:
        """From a path, or a built-in program's name (`bsm`, `bsm.s2`). Raises CheckError when
        the program has errors (its `render()` prints each one, located)."""
        from s2c.compiler.pipeline import load_program

        return cls(load_program(source))

    @classmethod
    def from_text(cls, text: str, name: str = "<text>.s2") -> Program:
        """From `.s2` source text; `name` is the file name messages point at (`use` looks for
        other programs beside it, then among the built-ins)."""
        from s2c.compiler.pipeline import load_text

        return cls(load_text(text, name))

    @property
    def name(self) -> str:
        return self.checked.name

    @property
    def graph(self):
        """The execution graph (networkx.DiGraph): one node per call, transform and output."""
        return self.checked.graph

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Its warnings (a program with errors does not load)."""
        return list(self.checked.diagnostics)

    @property
    def inputs(self) -> list[str]:
        return [p.name for p in self.checked.inputs]

    def estimate(self) -> dict[str, Any]:
        """What one input costs before any call: LLM calls and samples per input, stages (the
        graph's own figures, as `s2c graph` shows them)."""
        return dict(self.graph.graph)

    def render(self, format: str = "mermaid") -> str:
        """The graph as mermaid, dot or json (networkx node-link) text."""
        from s2c.compiler import render

        writers = {"json": render.to_json, "dot": render.to_dot, "mermaid": render.to_mermaid}
        if format not in writers:
            raise S2Error(f"format {format!r}: one of {', '.join(writers)}")
        return writers[format](self.graph)

    def __repr__(self) -> str:
        g = self.graph.graph
        calls, stages = g["calls_per_input"], g["stages"]
        return (f"<s2c.Program {self.name!r}: inputs {', '.join(self.inputs)}; {calls} LLM call{'s' * (calls != 1)} "
                f"per input in {stages} stage{'s' * (stages != 1)}>")


def check(source: str | os.PathLike) -> list[Diagnostic]:
    """Every error and warning of a program, without raising (`s2c check`)."""
    from s2c.compiler.pipeline import check_file

    return list(check_file(source).diagnostics)


def as_program(program: Program | ir.CheckedProgram | str | os.PathLike) -> Program:
    if isinstance(program, Program):
        return program
    if isinstance(program, ir.CheckedProgram):
        return Program(program)
    return Program.load(program)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Data:
    """What a program runs on, and how to read it: a named source (`coin_flip`, `oasst2:FILE`),
    a .jsonl/.csv/.parquet file or a hub id (read by s2c.data.load_source), or rows in memory: a
    list of dicts, a pandas DataFrame, a datasets.Dataset or IterableDataset (or a DatasetDict,
    whose `split` is read, default train). Each row's `id` names its example (else row-N)."""

    source: Any
    split: str | None = None
    limit: int | None = None  # the first N rows
    map: Mapping[str, str] | None = None  # program input FIELD -> data COLUMN
    given: Mapping[str, str] | None = None  # llm NODE -> the COLUMN holding its replies (runtime/given.py)
    seed: int = 0
    max_field_chars: int = MAX_FIELD_CHARS  # longer inputs are skipped with a message

    @property
    def name(self) -> str:
        """The data's name in run ids, summaries and default folder names."""
        if isinstance(self.source, (str, os.PathLike)):
            return str(self.source)
        return type(self.source).__name__

    def rows_for(self, cp: ir.CheckedProgram, log=print) -> Rows:
        """The rows `cp` can run, each checked against its inputs; a bad row is skipped with its
        location and why (row N and field), never silently."""
        for flag, value, least in (("limit", self.limit, 0), ("max_field_chars", self.max_field_chars, 1)):
            if value is not None and value < least:
                raise S2Error(f"{_flag(flag)} {value}: must be at least {least}")
        fields_ = [p.name for p in cp.inputs] + list(cp.golds)
        for field_, column in (self.map or {}).items():  # a typo here would skip every row as "missing"
            if field_ not in fields_:
                raise S2Error(f"--map {field_}={column}: the program has no input or gold field '{field_}'",
                              hint=did_you_mean(field_, fields_) or f"its fields: {', '.join(fields_)}")
        if isinstance(self.source, (str, os.PathLike)):
            from s2c.data import load_source

            ds = load_source(str(self.source), split=self.split, limit=self.limit, mapping=dict(self.map or {}) or None,
                             seed=self.seed)
            records, locations, problems, origin, split = ds.rows, ds.locations, list(ds.problems), ds.origin, ds.split
        else:
            records, locations = self._records(), None
            problems, origin, split = [], f"{len(records)} rows in a {self.name}", self.split or "train"
        rows, bad = validate_rows(cp, records, self.name, locations=locations, max_field_chars=self.max_field_chars,
                                  given=self.given_nodes(cp))
        problems += bad
        log(f"s2c: data: {len(rows)} rows from {origin}, split {split}"
            + (f" ({len(problems)} skipped)" if problems else ""), soft_wrap=True)
        shown = 20 if rows else 3  # no row can run: a few say why, the error says the rest
        for p in problems[:shown]:
            log(f"s2c: {p}", soft_wrap=True)  # one line each, however long
        if len(problems) > shown:
            log(f"s2c: ... and {len(problems) - shown} more skipped rows"
                + (" (see rows.json in the run folder)" if rows else ""))
        if not rows:
            raise S2Error(f"no usable rows in {self.name}: all {len(problems)} were skipped",
                          hint=f"the program reads: {', '.join(p.name for p in cp.inputs)}; use --map FIELD=COLUMN")
        for g in cp.golds:  # scored by metrics and keep matches: absent everywhere, they score nothing
            if all(row.get(g) is None for _, row in rows):
                log(f"s2c: warning: gold field '{g}' is in none of the {len(rows)} rows: metrics and keep "
                    f"matches({g}) score nothing; --map {g}=COLUMN reads it from another column", soft_wrap=True)
        return Rows(rows, problems, split)

    def given_nodes(self, cp: ir.CheckedProgram) -> dict[str, str]:
        """The given nodes (node id -> column), each checked to be one of `cp`'s llm calls."""
        from s2c.runtime.given import check_given

        return check_given(cp, self.given or {})

    def _records(self) -> list[dict]:
        """Rows in memory as plain dicts: a DataFrame's NaN and numpy scalars become None and
        Python values, as a .jsonl file's would be; `map` renames columns."""
        src = self.source
        if isinstance(src, Mapping) and src and all(hasattr(v, "__iter__") and not isinstance(v, str)
                                                    for v in src.values()):  # a datasets.DatasetDict: one split
            split = self.split or "train"
            if split not in src:
                raise S2Error(f"split {split!r}: the data has {', '.join(map(str, src))}", hint="pass Data(..., split=NAME)")
            src = src[split]
        if hasattr(src, "to_dict") and hasattr(src, "columns"):  # pandas.DataFrame
            src = src.astype(object).where(src.notna(), None).to_dict("records")
        elif not isinstance(src, Iterable) or isinstance(src, Mapping):
            raise S2Error(f"data of type {type(src).__name__}: pass rows (a list of dicts, a DataFrame, a "
                          "datasets.Dataset), a file or a named source")
        out = []
        for i, row in enumerate(src):
            if self.limit is not None and i >= self.limit:
                break
            if isinstance(row, Mapping):
                row = {k: _plain(v) for k, v in row.items()}
                for field_, column in (self.map or {}).items():
                    if column in row:
                        row[field_] = row[column]
            out.append(row)  # not a dict: validate_rows says so, with its row number
        return out


def _plain(value):
    """A numpy scalar or array from a DataFrame or Dataset, as the Python value it holds."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Rows:
    """Rows checked against a program: (id, row) pairs that run, and the skipped rows' messages."""

    rows: list[tuple[str, dict]]
    skipped: list[str]
    split: str


def as_data(data) -> Data:
    return data if isinstance(data, Data) else Data(data)


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class EngineSettings:
    """Which engine serves a program's calls, and on what (the CLI's engine flags)."""

    kind: str = "auto"  # auto, vllm, hf, openai, anthropic, ray
    model: str | None = None  # a model folder or hub id; None: the embedded SmolLM2-135M-Instruct
    # a program's role -> another model on this engine, or an engine of its own (EngineSettings, or
    # an s2c.Engine a notebook holds): the teacher on a server while the student runs here
    roles: Mapping[str, Any] = field(default_factory=dict)
    base_url: tuple[str, ...] = ()  # openai, anthropic: one server, or several of the same model
    vllm_args: Mapping[str, Any] = field(default_factory=dict)  # vllm and ray: arguments for vllm.LLM
    lora: bool = False  # vllm: serve LoRA adapters per request (eval with adapters turns it on)
    ray_address: str = "auto"  # ray: auto, HOST:PORT, ray://HOST:PORT, or local
    replicas: int | None = None  # ray: vLLM engines in the pool (default 1)
    replica_resources: Mapping[str, float] | None = None  # ray: each replica's or shard's resources
    shards: int | None = None  # ray: cut the input into N shards, each run whole on a worker
    # openai: concurrency, rate limits, retries and timeout, per server (--concurrency, --rpm, --tpm, ...)
    http: HttpOptions = HttpOptions()
    reasoning: bool | None = None  # openai: the models are reasoning models (None: known by name)

    def check(self) -> None:
        from s2c.runtime.engines import ENGINES

        if self.kind not in ENGINES or self.kind == "fake":
            raise S2Error(f"engine {self.kind!r}: one of {', '.join(e for e in ENGINES if e != 'fake')}")
        for flag, value in (("--replicas", self.replicas), ("--shards", self.shards)):
            if value is not None and value < 1:
                raise S2Error(f"{flag} {value}: must be at least 1")
        ray_flags = [f for f, v in (("--replicas", self.replicas), ("--shards", self.shards),
                                    ("--replica-resources", self.replica_resources)) if v]
        if ray_flags and self.kind != "ray":
            raise S2Error(f"{', '.join(ray_flags)}: only with --engine ray (the engine here is {self.kind})")
        if self.shards and self.replicas:
            raise S2Error("--shards and --replicas: a sharded run has one engine per shard",
                          hint="drop --replicas; --shards N runs N engines")
        self.http.check()
        http_flags = [f for f, on in (("--concurrency", self.http.concurrency != HttpOptions.concurrency),
                                      ("--rpm", self.http.rpm), ("--tpm", self.http.tpm),
                                      ("--retries", self.http.retries != HttpOptions.retries),
                                      ("--timeout", self.http.timeout != HttpOptions.timeout),
                                      ("--batch", self.http.batch)) if on]
        if http_flags and self.kind not in ("openai", "anthropic", "auto") and not any(
                isinstance(m, EngineSettings) for m in self.roles.values()):
            raise S2Error(f"{', '.join(http_flags)}: only for a server (--engine openai, or --role-url); "
                          f"the engine here is {self.kind}")
        if self.vllm_args and self.kind not in ("vllm", "ray", "auto"):
            raise S2Error(f"--vllm-arg: only with --engine vllm or ray (the engine here is {self.kind})")
        bound = [r for r, m in self.roles.items() if not isinstance(m, str)]
        if bound and self.shards:
            raise S2Error(f"--role-url {', '.join(bound)}: a sharded run has one engine per shard and cannot "
                          "send a role elsewhere", hint="drop --shards, or serve the role on the shards' engine")
        for role in bound:
            other = self.roles[role]
            if not isinstance(other, (EngineSettings, Engine)):
                raise S2Error(f"role {role!r}: a model name, an s2c.EngineSettings or an s2c.Engine, "
                              f"not {type(other).__name__}")


class Engine:
    """An inference engine a notebook creates once and passes to run, distill and evaluate; it
    stays up between them and closes with `close()` (or a `with` block). A local engine (vllm,
    hf) starts on the first call the cache cannot serve, so a rerun served by the cache starts
    nothing. Settings are EngineSettings' fields:

        s2c.Engine("vllm", model="path/to/model", lora=True)
        s2c.Engine("openai", base_url=["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"])
        s2c.Engine("ray", shards=4, ray_address="local")
    """

    def __init__(self, kind: str = "auto", model: str | None = None, **settings):
        if isinstance(settings.get("base_url"), str):
            settings["base_url"] = (settings["base_url"],)
        self.settings = EngineSettings(kind, model, **settings)
        self.settings.check()
        self._engine = None  # the runtime engine (or the ShardPool), made on first use
        self._made: list[Engine] = []  # engines made for roles bound to engines of their own
        self._starts = 0  # starts of engines closed since
        self._log: tuple[Path, bool] | None = None  # the last call's engine.log, and whether it was verbose
        self.log: Callable[..., object] = terminal.console().print

    @classmethod
    def from_settings(cls, settings: EngineSettings | str | None) -> Engine:
        """An engine for EngineSettings, or for an engine's name (None: auto)."""
        if isinstance(settings, EngineSettings):
            return cls(**{f.name: getattr(settings, f.name) for f in fields(EngineSettings)})
        return cls(settings or "auto")

    @property
    def name(self) -> str:
        return getattr(self._engine, "name", None) or getattr(self._engine, "engine_name", None) or self.settings.kind

    @property
    def starts(self) -> int:
        """How many times this object started an inference engine: 0 until a call the cache
        cannot serve, then 1 for as long as it stays open (a notebook's run, distill and
        evaluate share that one start)."""
        return self._starts + (getattr(self._engine, "starts", 1) if self._engine is not None else 0)

    def runner(self, cp: ir.CheckedProgram, cache, options: RunOptions, progress: bool | float = True, console=None):
        """The runner that executes `cp` on this engine (runtime.run.Runner, or ShardRunner with
        shards), made for one call of run, distill or evaluate."""
        roles = dict(self.settings.roles)
        unknown = set(roles) - {n.role for n in cp.llm_nodes()}
        if unknown:
            raise S2Error(f"--role {', '.join(sorted(unknown))}: the program has no such role",
                          hint=f"its roles: {', '.join(sorted({n.role for n in cp.llm_nodes()}))}")
        engine = self._open()
        if self.settings.shards:
            from s2c.runtime.shards import ShardRunner

            return ShardRunner(engine, cache, options, console)
        from s2c.runtime.run import Runner

        return Runner(engine, cache, options, progress, console)

    def serving(self, model: str) -> Engine:
        """An engine of the same settings for another model (eval serves a merged adapter so); the
        roles bound to engines of their own stay there."""
        models = {r: m for r, m in self.settings.roles.items() if isinstance(m, str)}
        other = Engine.from_settings(replace(self.settings, model=model, lora=False, roles=models))
        other.log = self.log
        return other

    def _open(self):
        if self._engine is None:
            self._engine = self._make()
        return self._engine

    def _make(self):
        """The runtime engine; with roles bound to engines of their own, a RoleEngines that sends
        each role's requests to its engine (each made here, or the s2c.Engine passed)."""
        bound = {r: m for r, m in self.settings.roles.items() if not isinstance(m, str)}
        default = self._make_default()
        if not bound:
            return default
        from s2c.runtime.engines import describe
        from s2c.runtime.engines.roles import RoleEngines

        self._bound = {r: m if isinstance(m, Engine) else Engine.from_settings(m) for r, m in bound.items()}
        self._made = [e for r, e in self._bound.items() if not isinstance(bound[r], Engine)]
        for e in self._bound.values():
            e.log = self.log
        engine = RoleEngines(default, {r: e._open() for r, e in self._bound.items()})
        self.log(f"s2c: roles on engines of their own: {describe(engine)}")
        return engine

    def _make_default(self):
        from s2c.runtime.engines import choose_auto, constraints_of, describe, make_engine
        from s2c.runtime.engines.lazy import LazyEngine
        from s2c.runtime.engines.local import resolve_roles

        s, log = self.settings, self.log
        options: dict[str, Any] = {}
        if s.base_url:
            options["base_url"] = s.base_url[0] if len(s.base_url) == 1 else list(s.base_url)
        name = choose_auto(options) if s.kind == "auto" else s.kind
        if name == "openai":
            options.update(http=s.http, reasoning=s.reasoning, log=log)
        elif name == "anthropic":
            options.update(http=s.http, log=log)
        if s.lora:
            options["enable_lora"] = True
        if s.vllm_args and name not in ("vllm", "ray"):
            raise S2Error(f"--vllm-arg: only with --engine vllm or ray (the engine here is {name})")
        options.update(s.vllm_args)
        roles = {r: m for r, m in s.roles.items() if isinstance(m, str)}
        if s.shards:
            from s2c.runtime.shards import ShardPool

            resources = dict(s.replica_resources) if s.replica_resources else None
            pool = ShardPool(s.shards, s.ray_address, s.model, roles, resources, options)
            log(f"s2c: ray: {s.shards} shards, each a vllm engine with {resources or {'CPU': 1}}")
            return pool
        if name == "ray":
            engine = make_engine("ray", s.model, roles=roles, address=s.ray_address, replicas=s.replicas or 1,
                                 replica_resources=dict(s.replica_resources) if s.replica_resources else None,
                                 log=log, **options)
        elif name in ("vllm", "hf"):  # local engines start on the first call the cache cannot serve
            engine = LazyEngine(name, resolve_roles(s.model, roles, log),
                                lambda: make_engine(s.kind, s.model, roles=roles, **options), log=log,
                                constraints=constraints_of(name))
            log(f"s2c: {describe(engine)} (started on the first call the cache cannot serve)")
            return engine
        else:
            engine = make_engine(s.kind, s.model, roles=roles, **options)
        log(f"s2c: {describe(engine)}")
        return engine

    def close(self) -> None:
        """Stop the engine. What it prints while stopping (vLLM's shutdown) goes to the engine.log
        of the last call that used it, as the rest of its output did."""
        self._starts = self.starts
        engine, self._engine = self._engine, None
        made, self._made = self._made, []
        if engine is None or not hasattr(engine, "close"):  # a ShardPool holds no engine of its own
            return
        if getattr(engine, "bound", None):  # RoleEngines: close the engines made for it, not one passed in
            for e in made:
                e.close()
            engine = engine.default
        log, verbose = self._log or (None, True)
        quiet = SimpleNamespace(print=lambda *a, **k: None)  # that log's warnings were named when its call ended
        with terminal.engine_output(log, verbose, quiet, append=True) if log else contextlib.nullcontext():
            engine.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "not started" if not self.starts else "started"
        return f"<s2c.Engine {self.settings.kind} {self.settings.model or '(embedded model)'}: {state}>"


# --------------------------------------------------------------------------- how calls run


@dataclass(frozen=True)
class RunSettings:
    """How run, distill and evaluate execute and what they show (the CLI's shared flags)."""

    cache: str | os.PathLike | None = "default"  # the call cache file; "default": ~/.cache/s2c/calls.sqlite; None: none
    window: int = 64  # requests in flight on the engine (--chunk-size)
    max_errors: int | None = None  # stop once more examples than this have failed
    refresh: frozenset[str] = frozenset()  # nodes whose calls are recomputed instead of read from the cache
    progress: bool | float = True  # bars on a terminal (or in a notebook); a number: a line every N seconds
    verbose: bool = False  # show what the engine prints instead of writing it to engine.log
    prices: Prices | None = None  # USD per million tokens per model (--prices FILE, --price): costs are reported
    max_cost: float | None = None  # USD: no call starts that could take what the run paid past it (--max-cost)

    def check(self) -> None:
        for flag, value, least in (("--chunk-size", self.window, 1), ("--max-errors", self.max_errors, 0)):
            if value is not None and value < least:
                raise S2Error(f"{flag} {value}: must be at least {least}")
        if self.max_cost is not None and not self.max_cost > 0:
            raise S2Error(f"--max-cost {self.max_cost:g}: a budget in US dollars, more than 0")
        if self.progress is not True and self.progress is not False and not self.progress > 0:
            raise S2Error(f"--progress-every {self.progress:g}: must be more than 0 seconds",
                          hint="pass --no-progress to turn progress off")

    def cache_path(self) -> Path | None:
        from s2c.runtime.cache import default_cache_path

        if self.cache is None:
            return None
        return Path(default_cache_path() if self.cache == "default" else self.cache)

    def options(self) -> RunOptions:
        return RunOptions(window=self.window, max_errors=self.max_errors, refresh=frozenset(self.refresh),
                          prices=self.prices, max_cost=self.max_cost)


@dataclass
class _Job:
    """What run, distill and evaluate share once their own checks have passed: the program's
    rows, the folder they hold, the engine and its runner, with the engine's output sent to a log."""

    cp: ir.CheckedProgram
    rows: Rows
    out: Path
    engine: Engine
    runner: Any
    console: Any


@contextlib.contextmanager
def _job(cp: ir.CheckedProgram, data: Data, engine, out: Path, settings: RunSettings,
         log_folder: str = "", system1: bool = False) -> Iterator[_Job]:
    """The set-up the three commands share, in the order that fails fast: the settings, the
    output folder and the call cache (cheap checks) before the data is read, the data before an
    engine starts. The folder is held for this process (folders.own) while the block runs, and an
    engine made here (from EngineSettings or a name) is closed inside it, its output in the log.
    A run whose every llm call is given from the data gets no engine, unless the engine also
    serves System 1 (`system1`: eval)."""
    from s2c.runtime.cache import CallCache

    settings.check()
    own = not isinstance(engine, Engine)
    eng = Engine.from_settings(engine) if own else engine
    given = data.given_nodes(cp)  # a bad node name is refused before the folder or the data is touched
    folders.check_out(out)
    console = terminal.console()
    CallCache(settings.cache_path()).close()  # opening it is the check: a folder, not SQLite, unwritable
    rows = data.rows_for(cp, console.print)
    eng._log = (out / log_folder / terminal.ENGINE_LOG, settings.verbose)
    with folders.own(out), terminal.engine_output(out / log_folder / terminal.ENGINE_LOG, settings.verbose, console):
        cache = CallCache(settings.cache_path())
        options = replace(settings.options(), given=given)
        try:
            if given and not system1 and all(n.id in given for n in cp.llm_nodes()):  # no call to make
                from s2c.runtime.given import NoEngine
                from s2c.runtime.run import Runner

                console.print(f"s2c: every llm call is given from the data ({', '.join(given)}): no engine")
                runner = Runner(NoEngine(), cache, options, settings.progress, console)
            else:
                runner = eng.runner(cp, cache, options, settings.progress, console)
            yield _Job(cp, rows, out, eng, runner, console)
        finally:
            cache.close()
            if own:
                eng.close()


def _out(out, kind: str, program: Program, data: Data) -> Path:
    return Path(out) if out else folders.default_out(kind, program.checked.program.file, data.name)


# --------------------------------------------------------------------------- run


def run(program, data, engine: Engine | EngineSettings | str | None = None, *, out: str | os.PathLike | None = None,
        settings: RunSettings = RunSettings()) -> RunOutcome:
    """Run `program` over `data` (`s2c run`): every call batched on the engine and cached, every
    finished example kept in OUT/run.sqlite. Returns the run: its summary, its examples read
    lazily from the store, `to_pandas()` and `to_dataset()`."""
    prog, data = as_program(program), as_data(data)
    out = _out(out, "run", prog, data)
    with _job(prog.checked, data, engine, out, settings) as job:
        return job.runner.execute(job.cp, job.rows.rows, out, skipped=job.rows.skipped,
                                  meta={"data": data.name, "split": job.rows.split})


# --------------------------------------------------------------------------- distill


def distill(program, data, engine: Engine | EngineSettings | str | None = None, *, out: str | os.PathLike | None = None,
            settings: RunSettings = RunSettings(), distill: DistillSettings | None = None) -> DistillResult:
    """Run the System-2 program (and its perturbed copies) over `data`, curate the answers with
    the distill section's keep rules, and write System-1 training rows (`s2c compile`)."""
    from s2c.distill.build import distill_program
    from s2c.distill.curate import with_curation
    from s2c.distill.rows import tasks_for

    prog, data = as_program(program), as_data(data)
    cp = prog.checked
    distill = replace(distill or DistillSettings(), data=data.name, seed=data.seed)
    if not cp.tasks:
        raise S2Error(f"program '{cp.name}' has no distill section: nothing to compile",
                      cp.program.header.span, hint='add: distill:\n    task NAME(target=OUTPUT) """System-1 prompt"""')
    with_curation(cp, distill.curation)  # a curation the program cannot take is refused before any data is read
    tasks_for(cp, distill.format or cp.format)  # and so is a format it cannot take (cot without a rationale)
    if not 0 <= distill.val_split < 1:
        raise S2Error("--val-split must be in [0, 1)")
    out = _out(out, "data", prog, data)
    with _job(cp, data, engine, out, settings, log_folder="run") as job:
        res = distill_program(cp, job.rows.rows, job.runner, out, distill, skipped=job.rows.skipped)
    return res


# --------------------------------------------------------------------------- train


def train(dataset: DistillResult | str | os.PathLike, settings: TrainSettings = TrainSettings(), *,
          model: str | None = None, out: str | os.PathLike | None = None, resume: bool = True,
          verbose: bool = False) -> TrainResult:
    """Fine-tune a LoRA adapter on a distilled dataset (`s2c train`): TRL's SFTTrainer with PEFT,
    each row's loss weighted; `model` is the base (default: the embedded model), and a rerun
    into the same `out` resumes from its last checkpoint unless `resume=False`. What
    transformers, TRL and torch print goes to OUT/train.log."""
    from s2c.train.sft import default_out
    from s2c.train.sft import train as train_sft

    folder = dataset.out if isinstance(dataset, DistillResult) else Path(dataset)
    out = Path(out) if out else default_out(folder)
    folders.check_out(out)  # before train.log goes there
    console = terminal.console()
    with terminal.engine_output(out / TRAIN_LOG, verbose, console, what="train"), terminal.no_transformers_bars(verbose):
        return train_sft(folder, settings, model=model, out=out, resume=resume,
                         log=lambda message: print(message, file=terminal.screen()), console=console)


TRAIN_LOG = "train.log"  # what transformers, TRL and torch print, in the output folder


# --------------------------------------------------------------------------- estimate


def estimate(program, data, engine: Engine | EngineSettings | str | None = None, *, sample: int = 20,
             compile: bool = True, prices: Prices | None = None, pilot: int = 0,
             settings: RunSettings = RunSettings()):
    """What a run (`compile=False`) or a compile of `program` over `data` will make and cost, before
    any call (`s2c estimate`): calls with samples and perturbed copies, prompt tokens of the first
    `sample` rows' rendered prompts scaled to every row, worst-case generated tokens, and the cost
    at `prices`. Tokens are counted by an HTTP engine's server (vLLM's /tokenize, Anthropic's
    count_tokens) where it has one, by a local model's tokenizer, else approximated (the result's
    `tokenizer` says which). No local engine starts.

    `pilot=N` makes real calls: the first N rows run (into the call cache of `settings`, so the
    run that follows does not pay for them again), and each node's calls and prompt tokens are
    scaled by what those rows really made against what the estimate rendered for them: the
    fan-outs over lists the model writes and the replies prompts quote, which no estimate knows
    before a call. Returns runtime.estimate.RunEstimate."""
    from s2c.runtime.estimate import estimate_run

    prog, data = as_program(program), as_data(data)
    cp = prog.checked
    if sample < 1 or pilot < 0:
        raise S2Error(f"--sample {sample}, --pilot {pilot}: a sample of at least 1 row, a pilot of 0 or more")
    rows = data.rows_for(cp, terminal.console().print).rows
    engine_settings = engine.settings if isinstance(engine, Engine) else \
        engine if isinstance(engine, EngineSettings) else EngineSettings(engine or "auto")
    engine_settings.check()
    count, tokenizer, models, opened = None, "", {}, None
    if pilot or engine_settings.kind in ("openai", "anthropic") or engine_settings.base_url:
        opened = engine if isinstance(engine, Engine) else Engine.from_settings(engine_settings)
    if opened is not None and (engine_settings.kind in ("openai", "anthropic") or engine_settings.base_url):
        runtime = opened._open()
        models = {n.role: runtime.model_id(n.role) for n in cp.llm_nodes()} | {"default": runtime.model_id()}
        probe = getattr(runtime, "count_tokens", None)
        if probe is not None and probe(_probe_request()) is not None:
            count, tokenizer = probe, f"the server's own count ({runtime.model_id()})"
    else:
        count, tokenizer, models = _local_counter(engine_settings)
    try:
        est = estimate_run(cp, rows[:sample], len(rows), count=count, tokenizer=tokenizer, compile=compile,
                           prices=prices, models=models)
        if pilot:
            _calibrate(est, cp, rows[:pilot], opened, settings, data.seed, count, tokenizer, compile)
        return est
    finally:
        if opened is not None and not isinstance(engine, Engine):
            opened.close()


def _calibrate(est, cp: ir.CheckedProgram, rows, engine: Engine, settings: RunSettings, seed: int, count,
               tokenizer: str, compile: bool) -> None:
    """Scale `est`'s nodes by what a real run of `rows` made against what the estimate rendered
    for the same rows."""
    import tempfile

    from s2c.distill.build import with_perturbed
    from s2c.runtime.cache import CallCache
    from s2c.runtime.estimate import estimate_run

    cache = CallCache(settings.cache_path())
    try:
        runner = engine.runner(cp, cache, settings.options(), progress=False)
        inputs = list(with_perturbed(cp, rows, seed)) if compile else rows
        with tempfile.TemporaryDirectory(prefix="s2c-pilot-") as folder:
            made = runner.execute(cp, inputs, folder).summary
    finally:
        cache.close()
    rendered = estimate_run(cp, rows, len(rows), count=count, tokenizer=tokenizer, compile=compile)
    for node, guess in zip(est.nodes, rendered.nodes):
        real = made.nodes.get(node.node)
        if real is None:
            continue
        calls = guess.calls * len(rows) * rendered.copies
        prompt = guess.prompt_tokens * len(rows) * rendered.copies
        call_scale = real.samples / calls if calls else 1.0
        node.calls *= call_scale
        node.max_generated *= call_scale
        node.prompt_tokens = node.prompt_tokens * (real.prompt_tokens / prompt) if prompt else node.prompt_tokens
        node.quoted_max = 0.0  # measured: the pilot's prompts held the replies they quote
    est.pilot = len(rows)
    est.tokenizer += f"; scaled by a pilot run of {len(rows)} rows (its calls are in the cache)"


def _probe_request():
    from s2c.calls import Message, Request

    return Request(messages=(Message("user", "hello"),))


def _local_counter(settings: EngineSettings):
    """A local model's tokenizer (transformers, with its chat template) as a counter, its name and
    the model identities; (None, "", {}) where transformers or the model's tokenizer is missing."""
    import importlib.util

    from s2c.runtime.model import resolve_model

    if importlib.util.find_spec("transformers") is None:
        return None, "", {}
    ref = resolve_model(settings.model, log=lambda *_: None)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ref.path)
    except (OSError, ValueError):
        return None, "", {}

    def count(request) -> int:
        if request.messages is not None:
            msgs = [{"role": m.role, "content": m.content} for m in request.messages]
            ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
            return len(ids["input_ids"] if isinstance(ids, Mapping) else ids)  # newer transformers: a BatchEncoding
        return len(tok(request.prompt or "")["input_ids"])

    return count, f"the tokenizer of {ref.name}", {"default": ref.cache_identity}


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class EvalSettings:
    """Which systems `s2c eval` compares, and how System 1 answers."""

    system1: bool = True  # the base model with the System-1 prompt
    system2: bool = True  # the System-2 program itself
    max_tokens: int = 128  # System 1's generation budget
    merge_adapters: bool = False  # serve each adapter merged into its base, as `s2c export` ships it


@dataclass
class EvalResult:
    """The papers' table: each system's metrics and generated tokens per input with 95 % CIs, and
    for every two systems the paired difference and McNemar's exact test."""

    folder: Path
    systems: list  # evaluate.evaluate.SystemResult, in the table's order
    comparisons: list  # evaluate.stats.Comparison
    meta: dict
    program: ir.CheckedProgram

    @property
    def exit(self) -> int:
        """The CLI's exit code: EXIT_ALL_FAILED when a system's every example failed."""
        return max((r.exit for r in self.systems), default=0)

    def table(self):
        """The table as the CLI prints it (a rich Table)."""
        from s2c.evaluate.report import table

        return table(self.systems, self.program, self.meta)

    def comparison_lines(self) -> list[str]:
        from s2c.evaluate.report import comparison_lines

        return comparison_lines(self.comparisons)

    def to_pandas(self):
        """One row per system: each metric and its CI, generated tokens per input and its CI, n."""
        import pandas as pd

        rows = []
        for r in self.systems:
            d = r.as_dict()
            row = {"system": d["name"], "kind": d["kind"], "n": d["n"], "unparsed": d["unparsed"]}
            for metric, value in d["metrics"].items():
                ci = d["ci"].get(metric) or (None, None)
                row |= {metric: value, f"{metric}_ci_low": ci[0], f"{metric}_ci_high": ci[1]}
            ci = d["mean_generated_tokens_ci"] or (None, None)
            row |= {"generated_tokens": d["mean_generated_tokens"], "generated_tokens_ci_low": ci[0],
                    "generated_tokens_ci_high": ci[1]}
            rows.append(row)
        return pd.DataFrame(rows).set_index("system")

    def _repr_html_(self) -> str:
        from rich.console import Console

        # force_jupyter=False: in a kernel rich would also draw each print in the cell, beside the html returned
        console = Console(record=True, width=140, file=open(os.devnull, "w"), force_jupyter=False)  # noqa: SIM115
        try:
            console.print(self.table())
            for line in self.comparison_lines():
                console.print(line, soft_wrap=True)
            return console.export_html(inline_styles=True)
        finally:
            console.file.close()

    def __repr__(self) -> str:
        return f"<s2c.EvalResult {self.folder}: " + ", ".join(r.name for r in self.systems) + ">"


def evaluate(program, data, engine: Engine | EngineSettings | str | None = None, *, adapters=(), out: str | os.PathLike | None = None,
             settings: RunSettings = RunSettings(), eval: EvalSettings = EvalSettings()) -> EvalResult:
    """System 1, System 2 and each distilled adapter on the same held-out inputs (`s2c eval`).
    `adapters`: folders (or TrainResults) of `s2c train`, a list (the first is named 'Distilled
    System 1') or a {name: folder} dict."""
    from s2c.evaluate.evaluate import (
        evaluate_system,
        merge_adapter,
        resolve_adapter,
        systems_for,
    )
    from s2c.evaluate.report import chart, write_results
    from s2c.evaluate.stats import compare_all

    prog, data = as_program(program), as_data(data)
    cp = prog.checked
    if not cp.tasks:
        raise S2Error(f"program '{cp.name}' has no distill section, so it has no System-1 prompt to evaluate",
                      cp.program.header.span)
    if not cp.metrics:
        raise S2Error(f"program '{cp.name}' has no eval section", cp.program.header.span,
                      hint="add: eval:\n    metric normalized_match(OUTPUT, GOLD_FIELD)")
    named = _named_adapters(adapters)
    resolved = [(name, resolve_adapter(path)) for name, path in named]
    settings_ = engine.settings if isinstance(engine, Engine) else \
        engine if isinstance(engine, EngineSettings) else EngineSettings(engine or "auto")
    kind = settings_.kind
    if eval.merge_adapters and kind not in ("auto", "vllm", "hf"):
        raise S2Error(f"--merge-adapters: only with a local engine (vllm or hf); --engine {kind} serves "
                      "a model s2c cannot replace", hint="export the adapter (s2c export) and serve that folder")
    # one engine serves every system; vLLM serves adapters through LoRA requests when started with
    # LoRA on, hf loads them with PEFT. merge_adapters: each merged adapter gets an engine of its own
    lora = bool(resolved) and not eval.merge_adapters and kind in ("auto", "vllm")
    if lora and not settings_.lora:
        if isinstance(engine, Engine):  # already made, maybe started: LoRA cannot be turned on now
            raise S2Error("adapters on a vllm engine need LoRA turned on when the engine is made",
                          hint="s2c.Engine('vllm', lora=True), or evaluate(..., eval=EvalSettings(merge_adapters=True))")
        engine = replace(settings_, lora=True)
    systems = systems_for(cp, resolved, system1=eval.system1, system2=eval.system2, max_tokens=eval.max_tokens)
    out = _out(out, "eval", prog, data)
    results = []
    with _job(cp, data, engine, out, settings, system1=True) as job:
        if eval.merge_adapters:  # all merged first: a bad adapter stops eval before any system ran
            systems = [merge_adapter(s, out / "merged", job.console.print) if s.adapter else s for s in systems]
        for system in systems:
            job.console.print(f"s2c: {system.name}" + (f" ({system.merged or system.adapter})" if system.adapter else "")
                              + (f": {' then '.join(t.name for t in system.program.tasks)}"
                                 if system.kind != "system2" else ""))
            with contextlib.ExitStack() as stack:
                runner = job.runner
                if system.merged:
                    served = stack.enter_context(job.engine.serving(system.merged))
                    runner = served.runner(cp, runner.cache, runner.options, settings.progress, job.console)
                results.append(evaluate_system(cp, system, job.rows.rows, runner, out))
        meta = {"program": cp.name, "data": data.name, "examples": len(job.rows.rows),
                "skipped_rows": len(job.rows.skipped), "engine": job.runner.engine_name,
                "model": job.runner.model_id("default"),
                "models": {role: job.runner.model_id(role) for role in sorted({n.role for n in cp.llm_nodes()} | {"default"})},
                "max_tokens_system1": eval.max_tokens}
        comparisons = compare_all([(r.name, r.outcomes) for r in results], ir.metric_labels(cp.metrics))
        write_results(out, results, comparisons, meta)
        chart(out / "results.png", [r.as_dict() for r in results], ir.metric_labels(cp.metrics), cp.name)
    return EvalResult(out, results, comparisons, meta, cp)


def _named_adapters(adapters) -> list[tuple[str, str]]:
    """[(name, folder)] from {name: folder}, or a list of folders, TrainResults or "NAME=DIR"
    strings (the CLI's --adapter): an unnamed first is 'Distilled System 1', the others 'adapter N'."""
    if isinstance(adapters, Mapping):
        return [(name, str(getattr(a, "out", a))) for name, a in adapters.items()]
    out = []
    for i, item in enumerate(adapters):
        name, sep, path = str(getattr(item, "out", item)).partition("=") if isinstance(item, str) else ("", "", "")
        if not sep:
            name, path = ("Distilled System 1" if i == 0 else f"adapter {i + 1}"), str(getattr(item, "out", item))
        out.append((name, path))
    return out
