"""What the subcommands share: the engine, data and run flags, and how each group is parsed into
the API's objects (s2c/api.py): `engine_from`, `data_from`, `run_settings_from`. A command parses
its flags into those objects and calls the same function a notebook calls."""
from __future__ import annotations

import argparse
import json

from s2c.errors import S2Error
from s2c.runtime.engines.http import HttpOptions


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine, model and cache flags shared by run, compile and eval."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="auto", choices=["auto", "vllm", "hf", "openai", "anthropic", "ray"],
                   help="inference engine (default: auto, see README; openai and anthropic: a provider's API or a "
                        "server, docs/api-teachers.md; ray: vLLM replicas on a Ray cluster, docs/scale.md)")
    g.add_argument("--model", default=None,
                   help="model folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--role", action="append", default=[], metavar="ROLE=MODEL",
                   help="model for a role a program names, e.g. --role teacher=path/to/model (with --role-url: "
                        "the model's name on that server)")
    g.add_argument("--role-url", action="append", default=[], metavar="ROLE=URL",
                   help="serve a role on an OpenAI-compatible server of its own while the other roles use --engine, "
                        "e.g. --role-url teacher=http://127.0.0.1:8000/v1 (repeat for several servers of that "
                        "role; docs/teachers.md)")
    g.add_argument("--base-url", action="append", default=[], metavar="URL",
                   help="openai and anthropic engines: server URL (or S2C_OPENAI_BASE_URL, ANTHROPIC_BASE_URL); "
                        "repeat it for several servers of "
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
    h = p.add_argument_group("servers (--engine openai or anthropic, --role-url; limits are per server; "
                             "docs/api-teachers.md)")
    h.add_argument("--concurrency", type=int, default=HttpOptions.concurrency, metavar="N",
                   help=f"requests in flight per server (default {HttpOptions.concurrency})")
    h.add_argument("--rpm", type=float, default=None, metavar="N",
                   help="requests per minute the server allows: requests start evenly paced at 90%% of it")
    h.add_argument("--tpm", type=float, default=None, metavar="N",
                   help="tokens per minute the server allows (prompt + max_tokens per sample, as providers count "
                        "them): paced at 90%% of it")
    h.add_argument("--retries", type=int, default=HttpOptions.retries, metavar="N",
                   help=f"further attempts of a request that failed in a way worth retrying (default {HttpOptions.retries})")
    h.add_argument("--timeout", type=float, default=HttpOptions.timeout, metavar="SECONDS",
                   help=f"seconds for one attempt (default {HttpOptions.timeout:g})")
    h.add_argument("--batch", action="store_true",
                   help="send the calls through the provider's batch API (OpenAI's Batch API, Anthropic's Message "
                        "Batches): each wave of ready calls is one batch, at the batch price, back within 24 h; a "
                        "killed run re-attaches to its batches (batches.jsonl in the run folder)")
    h.add_argument("--batch-poll", type=float, default=HttpOptions.batch_poll, metavar="SECONDS",
                   help=f"seconds between two polls of an open batch (default {HttpOptions.batch_poll:g})")
    c = p.add_argument_group("cost (docs/api-teachers.md)")
    c.add_argument("--prices", default=None, metavar="FILE",
                   help="prices per model, USD per million tokens (TOML: [\"gpt-4o-mini\"] input = 0.15, output = 0.6, "
                        "cached_input, batch_input, batch_output): costs appear in the table, summary.json and the card")
    c.add_argument("--price", action="append", default=[], metavar="MODEL=input:USD,output:USD",
                   help="one model's prices (per million tokens), over --prices; repeatable")
    c.add_argument("--max-cost", type=float, default=None, metavar="USD",
                   help="stop before a call could take what the run paid past USD (counting the worst case of the "
                        "calls in flight); rerun with a higher budget to go on")
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


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="SOURCE",
                   help="a .jsonl/.csv/.parquet file, a named source (coin_flip, oasst2, ...), or a hub id")
    g.add_argument("--split", default=None)
    g.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read program input FIELD from data column COLUMN")
    g.add_argument("--given", action="append", default=[], metavar="NODE=COLUMN",
                   help="read llm node NODE's replies from data column COLUMN instead of generating them "
                        "(existing teacher outputs; docs/teachers.md)")
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


def parse_vllm_args(items: list[str]) -> dict:
    """--vllm-arg KEY=VALUE pairs, each VALUE read as JSON where it parses (1, false, {"a": 1})."""
    out = {}
    for key, value in parse_pairs(items, "--vllm-arg").items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out




def engine_from(args):
    """The engine the flags name (s2c.api.EngineSettings): the command's call makes it, and closes
    it before the engine's log is closed."""
    from s2c.api import EngineSettings

    resources = {}
    for k, v in parse_pairs(args.replica_resources, "--replica-resources").items():
        try:
            resources[k] = float(v)
        except ValueError:
            raise S2Error(f"--replica-resources {k}={v}: the amount must be a number",
                          hint="e.g. --replica-resources GPU=1 --replica-resources CPU=4") from None
    roles: dict = parse_pairs(args.role, "--role")
    urls: dict[str, list[str]] = {}
    for item in args.role_url:
        role, url = next(iter(parse_pairs([item], "--role-url").items()))
        urls.setdefault(role, []).append(url)
    http = HttpOptions(concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, retries=args.retries,
                       timeout=args.timeout, batch=args.batch, batch_poll=args.batch_poll)
    for role, server in urls.items():  # that role's model name there: its --role, else the server's first
        roles[role] = EngineSettings("openai", roles.get(role), base_url=tuple(server), http=http)
    settings = EngineSettings(args.engine, args.model, roles=roles, http=http,
                              base_url=tuple(args.base_url), vllm_args=parse_vllm_args(args.vllm_arg),
                              ray_address=args.ray_address, replicas=args.replicas,
                              replica_resources=resources or None, shards=args.shards)
    settings.check()
    return settings


def data_from(args):
    """The data the flags name (s2c.api.Data)."""
    from s2c.api import Data

    return Data(args.data, split=args.split, limit=args.limit, map=parse_pairs(args.map, "--map"),
                given=parse_pairs(args.given, "--given"), seed=args.seed,
                **({"max_field_chars": args.max_field_chars} if args.max_field_chars is not None else {}))


def run_settings_from(args):
    """How the calls run (s2c.api.RunSettings)."""
    from s2c.api import RunSettings

    from s2c.runtime.prices import Prices

    return RunSettings(cache=None if args.no_cache else (args.cache or "default"), window=args.chunk_size,
                       max_errors=args.max_errors, refresh=frozenset(args.refresh),
                       progress=False if args.no_progress else True if args.progress_every is None else args.progress_every,
                       verbose=args.verbose, prices=Prices.load(args.prices, args.price), max_cost=args.max_cost)
