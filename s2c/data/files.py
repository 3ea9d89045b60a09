"""Read local data files (JSONL, JSON, CSV, Parquet; JSON and JSONL may be gzipped) as records.

Plain Python for the text formats, so that one bad line is a located problem
(`data.jsonl:17: malformed JSON ...; skipped`) instead of a failed load; pyarrow for Parquet.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator

from s2c.data.rows import Record, SourceRequest
from s2c.errors import S2Error

EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".jsonl.gz", ".ndjson.gz", ".json.gz")
WRAPPER_KEYS = ("examples", "data", "rows")  # {"examples": [...]}: the list under one of these
_SUPPORTED = ".jsonl, .json, .csv or .parquet (JSON and JSONL may be .gz)"


def looks_like_path(text: str) -> bool:
    """A spec (or the part after `NAME:`) that names a local file rather than a split or Hub id."""
    return (
        text.lower().endswith(EXTENSIONS)
        or text.startswith(("/", "./", "../", "~"))
        or os.path.exists(text)  # a folder too: an error here, never a Hub lookup
        or ("/" in text and os.path.isdir(text.split("/", 1)[0]))  # data/typo: under a local folder
    )


def stem(path: str) -> str:
    """`data/train.jsonl.gz` -> `train`: the dataset's name, used in default ids."""
    base = os.path.basename(path)
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


def read(path: str, req: SourceRequest) -> Iterator[Record]:
    """Records of a local file; raises S2Error now (not on first iteration) if it cannot be read."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        raise S2Error(f"{path}: is a directory, not a data file", hint=f"pass one {_SUPPORTED} file")
    if not os.path.isfile(path):
        raise S2Error(f"{path}: no such file", hint=f"--data takes a {_SUPPORTED} file, or a source name")
    low = path.lower()
    if low.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        return _jsonl(path, req)
    if low.endswith((".json", ".json.gz")):
        return _json(path, req)
    if low.endswith(".csv"):
        return _csv(path, req)
    if low.endswith(".parquet"):
        return _parquet(path)
    raise S2Error(f"{path}: unsupported file type", hint=f"use {_SUPPORTED}")


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _jsonl(path: str, req: SourceRequest) -> Iterator[Record]:
    with _open_bytes(path) as f:
        index = -1
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            index += 1  # malformed lines count as rows, so fixing one does not shift later ids
            where = f"{path}:{line_no}: row {index + 1}"
            try:
                row = json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                req.problems.append(f"{where}: not UTF-8 text ({e.reason} at byte {e.start}); skipped")
                continue
            except json.JSONDecodeError as e:
                req.problems.append(f"{where}: malformed JSON ({e.msg} at column {e.colno}); skipped")
                continue
            if not isinstance(row, dict):
                req.problems.append(f"{where}: expected a JSON object, got {_kind(row)}; skipped")
                continue
            yield Record(where, index, row)


def _json(path: str, req: SourceRequest) -> Iterator[Record]:
    with _open_bytes(path) as f:
        text = f.read().decode("utf-8-sig", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line under a .json name: read it as JSONL
            return _jsonl(path, req)
        raise S2Error(f"{path}:{e.lineno}:{e.colno}: malformed JSON ({e.msg})") from None
    if isinstance(data, dict):  # a wrapper such as BIG-Bench Hard's {"canary": .., "examples": [..]}
        lists = [k for k in WRAPPER_KEYS if isinstance(data.get(k), list)]
        data = data[lists[0]] if lists else data
    if not isinstance(data, list):
        raise S2Error(
            f"{path}: expected a list of objects at the top level (or under "
            f"{', '.join(map(repr, WRAPPER_KEYS))}), got {_kind(data)}",
            hint="write the rows as a JSON list, or one object per line in a .jsonl file",
        )
    return _json_items(path, data, req)


def _json_items(path: str, data: list, req: SourceRequest) -> Iterator[Record]:
    for i, row in enumerate(data):
        where = f"{path}: row {i + 1}"
        if isinstance(row, dict):
            yield Record(where, i, row)
        else:
            req.problems.append(f"{where}: expected a JSON object, got {_kind(row)}; skipped")


def _csv(path: str, req: SourceRequest) -> Iterator[Record]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise S2Error(f"{path}:1: no header row", hint="the first line names the columns")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise S2Error(f"{path}:1: duplicate column name '{dupes[0]}' in the header")
        index, start = -1, reader.line_num + 1
        for values in reader:
            where, start = f"{path}:{start}", reader.line_num + 1  # a quoted value may span lines
            if not values:
                continue
            index += 1
            if len(values) != len(header):
                req.problems.append(
                    f"{where}: row {index + 1}: {len(values)} values for {len(header)} columns; skipped"
                )
                continue
            yield Record(f"{where}: row {index + 1}", index, dict(zip(header, values)))


def _parquet(path: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise S2Error(f"{path}: not a readable Parquet file ({e})") from None
    return _parquet_rows(path, pf)


def _parquet_rows(path, pf) -> Iterator[Record]:
    index = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield Record(f"{path}: row {index + 1}", index, row)
            index += 1


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else "null"
    )
