"""Datasets the programs run on, as rows of str fields with a stable `id`.

    >>> from s2c.data import load_source
    >>> ds = load_source("coin_flip:test", limit=2)
    >>> ds.name, ds.split, len(ds.rows), sorted(ds.rows[0])
    ('coin_flip', 'test', 2, ['answer', 'id', 'question'])
    >>> ds.rows[0]["id"]
    'coin_flip-test-0'

Spec forms:
  NAME, NAME:SPLIT      a named source (`list_sources()`), e.g. coin_flip:test, gsm8k:test
  bbh:TASK              one BIG-Bench Hard task, e.g. bbh:navigate
  NAME:PATH             a named source read from a local export, e.g. oasst2:data/oasst2.jsonl
  PATH                  a local .jsonl/.json/.csv/.parquet file (JSON and JSONL may be .gz)
  ID[:SPLIT], ID:CONFIG:SPLIT   any other Hugging Face Hub dataset, e.g. tatsu-lab/alpaca

Readers and converters are plain modules: files (local), hub (Hugging Face), synthetic
(coin_flip, last_letters, majority_vote), oasst2, mtbench, qa (gsm8k, triviaqa*, bbh). Nothing here imports
`datasets` until a Hub dataset is loaded.
"""
from __future__ import annotations

from dataclasses import replace
from functools import cache

from s2c.data import files, hub
from s2c.data.rows import (
    DataSet,
    Source,
    SourceRequest,
    apply_mapping,
    check_nonempty,
    finish,
)
from s2c.errors import S2Error, did_you_mean

__all__ = ["DataSet", "list_sources", "load_source"]

HUB_HINT = (
    "download the dataset where the Hub is reachable and pass the file instead: "
    "--data path/to/file.jsonl (or .json, .csv, .parquet)"
)


@cache
def sources() -> dict[str, Source]:
    from s2c.data import mtbench, oasst2, qa, synthetic

    return {s.name: s for s in [*synthetic.SOURCES, oasst2.SOURCE, mtbench.SOURCE, *qa.SOURCES]}


def list_sources() -> list[tuple[str, str, list[str]]]:
    """(name, description, fields) of every named source, for the CLI's help."""
    return [(s.name, s.description, list(s.fields)) for s in sources().values()]


def load_source(
    spec: str,
    *,
    split: str | None = None,
    limit: int | None = None,
    mapping: dict[str, str] | None = None,
    seed: int = 0,
) -> DataSet:
    """Load the rows `spec` names (see the module docstring for its forms).

    split: the split (for a local file, only the name used in ids; default "train").
    limit: the first N rows, in the source's order. mapping: {field: column} renames columns of
    the rows the source yields (`--map field=column`). seed: generated data, A/B order, wrong
    answers. Unusable rows are skipped and listed, located, in `DataSet.problems`.
    """
    spec = spec.strip()
    if not spec:
        raise S2Error("empty data spec", hint="name a source (coin_flip, gsm8k, ...) or a file")
    if limit is not None and limit < 0:
        raise S2Error(f"limit must be 0 or more, got {limit}")
    _check_mapping(mapping)
    head, sep, tail = spec.partition(":")
    if head in sources():
        ds = _named(sources()[head], tail if sep else None, spec, split, limit, mapping, seed)
        return replace(ds, origin=f"the named source {head}" + (f" read from {tail}" if files.looks_like_path(tail) else ""))
    if files.looks_like_path(spec):
        req = SourceRequest(files.stem(spec), split or "train", seed)
        return replace(_finish(files.read(spec, req), req, spec, limit, mapping), origin=f"the local file {spec}")
    if "/" not in head:
        near = did_you_mean(head, sources())
        if near:
            raise S2Error(f"unknown data source '{head}'", hint=near)
    return replace(_hub(spec, split, limit, mapping, seed), origin=f"the Hugging Face Hub dataset {spec}")


def _named(source: Source, arg, spec, split, limit, mapping, seed) -> DataSet:
    req = SourceRequest(source.name, "", seed)
    spec_split = None
    if arg and files.looks_like_path(arg):
        if not source.takes_path:
            raise S2Error(f"'{source.name}' is generated, it does not read files",
                          hint=f"name a split: {source.name}:{'|'.join(source.splits)}")
        req.path = arg
    elif arg and source.arg == "task":
        req.task = arg
    elif arg:
        spec_split = arg
    req.split = _split(spec_split, split, source.default_split, spec)
    _check_choices(source, req)
    records = source.read(req)
    if source.convert:
        records = source.convert(records, req)
    return _finish(records, req, spec, limit, mapping)


def _hub(spec, split, limit, mapping, seed) -> DataSet:
    parts = spec.split(":")
    if len(parts) > 3:
        raise S2Error(f"'{spec}': a Hub dataset is ID, ID:SPLIT or ID:CONFIG:SPLIT")
    repo, config = parts[0], (parts[1] if len(parts) == 3 else None)
    split = _split(parts[-1] if len(parts) > 1 else None, split, "train", spec)
    req = SourceRequest(repo.split("/")[-1], split, seed)
    taken = (f"'{spec}' is not a local file or folder, nor a named source ({', '.join(sources())}), so s2c "
             "took it as a Hugging Face Hub id; ")
    records = hub.read(repo, config, req.split, hint=taken + HUB_HINT)
    return _finish(records, req, spec, limit, mapping, label=repo)


def _finish(records, req: SourceRequest, spec: str, limit, mapping, label: str | None = None) -> DataSet:
    if mapping:
        records = apply_mapping(records, mapping, req)
    ds = finish(records, req, name=req.name, limit=limit)
    if label:
        ds.name = label
    return check_nonempty(ds, spec, limit)


def _split(from_spec: str | None, from_kwarg: str | None, default: str, spec: str) -> str:
    if from_spec and from_kwarg and from_spec != from_kwarg:
        raise S2Error(f"'{spec}' names split '{from_spec}' but split='{from_kwarg}' was also given")
    return from_spec or from_kwarg or default


def _check_choices(source: Source, req: SourceRequest) -> None:
    if source.splits and req.split not in source.splits:
        hint = did_you_mean(req.split, source.splits) or f"its splits are: {', '.join(source.splits)}"
        raise S2Error(f"'{source.name}' has no split '{req.split}'", hint=hint)
    if source.arg == "task" and not req.path:
        tasks = ", ".join(source.tasks)
        if not req.task:
            raise S2Error(f"'{source.name}' needs a task: {source.name}:TASK", hint=f"tasks: {tasks}")
        if req.task not in source.tasks:
            hint = did_you_mean(req.task, source.tasks) or f"tasks: {tasks}"
            raise S2Error(f"'{source.name}' has no task '{req.task}'", hint=hint)


def _check_mapping(mapping) -> None:
    for f, c in (mapping or {}).items():
        if not (isinstance(f, str) and f and isinstance(c, str) and c):
            raise S2Error(f"bad column mapping {f!r}={c!r}", hint="write --map FIELD=COLUMN")
