"""Read and check the dataset folder `s2c compile` writes, before any model is loaded.

A row is TRL's conversational prompt-completion format plus s2c's columns:

    {"prompt": [{"role": "user", "content": "..."}],
     "completion": [{"role": "assistant", "content": "..."}],
     "task": "predict", "weight": 1.0, "example_id": "...", "run_id": "..."}

Every mistake is an `S2Error` whose span is `file:row:col` (the row is the line number in the
JSONL file, the column points at the offending key), so `s2c train` says where and what.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from s2c.errors import S2Error, Span

ROLES = ("system", "user", "assistant", "tool")
COMPILE_HINT = "`s2c train` takes the folder `s2c compile` writes, with train.jsonl in it"


@dataclass(frozen=True)
class Split:
    """One checked split: rows reduced to the columns training needs."""

    path: Path
    rows: list[dict]  # {"prompt", "completion", "task", "weight"}

    @property
    def tasks(self) -> dict[str, int]:
        return dict(sorted(Counter(r["task"] for r in self.rows).items()))


@dataclass(frozen=True)
class TrainData:
    dir: Path
    train: Split
    validation: Split | None = None
    meta: dict = field(default_factory=dict)


def load_dataset_dir(dataset_dir) -> TrainData:
    """Check `dataset_dir` and return its splits; raises `S2Error` naming file, row and problem."""
    d = Path(dataset_dir)
    if not d.exists():
        raise S2Error(f"dataset folder {d} does not exist", hint=COMPILE_HINT)
    if not d.is_dir():
        raise S2Error(f"{d} is a file; `s2c train` takes the dataset folder", hint=COMPILE_HINT)
    train = _load_split(d, "train")
    if train is None:
        raise S2Error(f"dataset folder {d} has no train.jsonl", hint=COMPILE_HINT)
    if not any(r["weight"] > 0 for r in train.rows):
        raise S2Error(
            f"{train.path}: every row has weight 0, so there is nothing to learn",
            hint="give the rows to learn from a positive 'weight'",
        )
    return TrainData(d, train, _load_split(d, "validation"), _read_meta(d))


def _load_split(d: Path, name: str) -> Split | None:
    jsonl, parquet = d / f"{name}.jsonl", d / f"{name}.parquet"
    if jsonl.exists():
        return Split(jsonl, _check_rows(jsonl, _jsonl_rows(jsonl)))
    if parquet.exists():  # the same rows in another container; row numbers count from 1
        import pyarrow.parquet as pq  # comes with `datasets`; reads without touching its cache

        records = pq.read_table(parquet).to_pylist()
        return Split(parquet, _check_rows(parquet, ((i, "", r) for i, r in enumerate(records, 1))))
    return None


def _jsonl_rows(path: Path):
    """Yield (line number, raw line, parsed object) for each non-blank line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")  # so a JSON error's column is on this line
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise S2Error(
                    f"row {lineno} is not valid JSON: {e.msg}", Span(str(path), lineno, e.colno)
                ) from None
            yield lineno, line, obj


def _check_rows(path: Path, rows) -> list[dict]:
    out = [_check_row(path, lineno, line, obj) for lineno, line, obj in rows]
    if not out:
        raise S2Error(f"{path.name} has no rows", Span(str(path), 1, 1), hint=COMPILE_HINT)
    return out


def _check_row(path: Path, lineno: int, line: str, obj) -> dict:
    def fail(message: str, key: str | None = None, hint: str | None = None):
        col = line.find(f'"{key}"') + 1 if key else 0
        raise S2Error(f"row {lineno}: {message}", Span(str(path), lineno, max(col, 1)), hint=hint)

    if not isinstance(obj, dict):
        fail(f"expected a JSON object, got {_kind(obj)}")
    for key in ("prompt", "completion"):
        if key not in obj:
            fail(f"missing '{key}'", hint="each row needs 'prompt' and 'completion' message lists")
    prompt = _messages(obj["prompt"], "prompt", lambda m: fail(m, "prompt"))
    completion = _messages(obj["completion"], "completion", lambda m: fail(m, "completion"))
    if not any(m["role"] == "assistant" for m in completion):
        fail("'completion' has no assistant message", "completion")
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        fail(f"'weight' must be a number, got {_kind(weight)} {json.dumps(weight)}", "weight")
    if not math.isfinite(weight) or weight < 0:
        fail(f"'weight' must be a finite number >= 0, got {weight}", "weight")
    task = obj.get("task", "default")
    if not isinstance(task, str):
        fail(f"'task' must be a string, got {_kind(task)}", "task")
    return {"prompt": prompt, "completion": completion, "task": task, "weight": float(weight)}


def _messages(value, key: str, fail) -> list[dict]:
    """A non-empty list of {"role", "content"} dicts with known roles and string content."""
    if not isinstance(value, list) or not value:
        what = "an empty list" if value == [] else f"{_kind(value)}"
        fail(f"'{key}' must be a non-empty list of messages like "
             f'{{"role": "user", "content": "..."}}, got {what}')
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            fail(f"'{key}'[{i}] must be a message with a string 'content', got {_short(m)}")
        if m.get("role") not in ROLES:
            fail(f"'{key}'[{i}] has role {json.dumps(m.get('role'))}; expected one of {', '.join(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _read_meta(d: Path) -> dict:
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # meta.json is optional and informational only
    return meta if isinstance(meta, dict) else {}


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _short(v) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
