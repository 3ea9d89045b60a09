"""Row plumbing shared by every source: located records in, a `DataSet` of string rows out.

A reader yields `Record`s (a raw row plus where it came from); a source's converter turns raw
records into rows with its contract fields; `finish` coerces values, gives every row a stable id,
applies the limit and returns the `DataSet`. Rows that cannot be used go to `problems` with their
location, e.g. `data.jsonl:17: row 17: field 'question' is missing; skipped`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from s2c.errors import S2Error, did_you_mean


@dataclass
class DataSet:
    """The rows a program runs on: dicts of str fields (lists/dicts kept as they are) + `id`."""

    name: str
    split: str
    rows: list[dict]
    problems: list[str] = field(default_factory=list)  # rows skipped, each with its location
    locations: list[str] = field(default_factory=list)  # where each row came from, for messages
    origin: str = ""  # what the spec was taken as: "local file x.jsonl", "Hugging Face Hub dataset ..."

    def __len__(self) -> int:
        return len(self.rows)

    def require(self, fields: Iterable[str]) -> DataSet:
        """Keep the rows that have every field; the others become located problems.

        Raises S2Error when no row has one of the fields: that is a wrong column, not a bad row.
        """
        fields = list(fields)
        if self.rows:
            for f in fields:
                if not any(f in row for row in self.rows):
                    columns = sorted({c for row in self.rows for c in row if c != "id"})
                    hint = did_you_mean(f, columns) or "rename a column with --map FIELD=COLUMN"
                    raise S2Error(
                        f"{self.name}: no row has the field '{f}'; "
                        f"its columns are: {', '.join(columns) or '(none)'}",
                        hint=f"{hint} (e.g. --map {f}={columns[0] if columns else 'COLUMN'})",
                    )
        keep, where, problems = [], [], list(self.problems)
        for i, row in enumerate(self.rows):
            missing = [f for f in fields if f not in row]
            loc = self.locations[i] if i < len(self.locations) else f"{self.name}: row {i + 1}"
            if missing:
                problems.append(f"{loc}: field '{missing[0]}' is missing or null; skipped")
            else:
                keep.append(row)
                where.append(loc)
        return replace(self, rows=keep, problems=problems, locations=where)


@dataclass
class Record:
    """One raw row and its place in the source."""

    where: str  # "data.jsonl:17: row 17", "openai/gsm8k[train]: row 3": prefix for messages
    index: int  # 0-based position among the source's rows: the default id, stable across fixes
    row: dict


@dataclass
class SourceRequest:
    """What `load_source` asks of a source, resolved from the spec and keyword arguments."""

    name: str  # the source's name, used in default ids
    split: str
    seed: int = 0
    path: str | None = None  # `NAME:PATH`: read this local file instead of the Hub
    task: str | None = None  # `bbh:TASK`
    problems: list[str] = field(default_factory=list)  # readers and converters append here

    def skip(self, rec: Record, message: str) -> None:
        self.problems.append(f"{rec.where}: {message}; skipped")


Reader = Callable[[SourceRequest], Iterable[Record]]
Converter = Callable[[Iterable[Record], SourceRequest], Iterable[Record]]


@dataclass(frozen=True)
class Source:
    """A named data source: `NAME`, `NAME:SPLIT` (or `NAME:TASK`) and, for real data, `NAME:PATH`."""

    name: str
    description: str
    fields: tuple[str, ...]  # the contract: what the .s2 programs declare as inputs
    read: Reader  # raw records, from a local file when `request.path` is set
    convert: Converter | None = None  # raw records -> rows with `fields`
    default_split: str = "train"
    splits: tuple[str, ...] = ()  # known splits, checked up front (empty: the Hub checks)
    takes_path: bool = True  # `NAME:PATH` reads a local export
    arg: str = "split"  # what `NAME:X` names: "split" or "task"
    tasks: tuple[str, ...] = ()  # the tasks `NAME:TASK` may name


def apply_mapping(records: Iterable[Record], mapping: dict[str, str], req: SourceRequest) -> Iterator[Record]:
    """`{"question": "prompt"}`: field `question` takes column `prompt` (which is dropped)."""
    used = set(mapping.values())
    told = False
    for rec in records:
        missing = [c for c in mapping.values() if c not in rec.row]
        if missing:
            field_ = next(f for f, c in mapping.items() if c == missing[0])
            cols = "" if told else f" (its columns: {', '.join(sorted(rec.row)) or 'none'})"
            req.skip(rec, f"column '{missing[0]}' for --map {field_}={missing[0]} is missing{cols}")
            told = True
            continue
        row = {k: v for k, v in rec.row.items() if k not in used}
        row.update({f: rec.row[c] for f, c in mapping.items()})
        yield Record(rec.where, rec.index, row)


def coerce(value):
    """Field values are strings; lists and dicts stay as they are. (Nulls never get here: `finish`
    drops them, so a null field is a missing one.)"""
    if isinstance(value, (str, list, dict)):
        return value
    return str(value)


def finish(records: Iterable[Record], req: SourceRequest, *, name: str, limit: int | None) -> DataSet:
    """Coerce, give ids (the row's own `id`, else `{name}-{split}-{index}`), dedupe, limit."""
    rows, where, seen = [], [], {}
    if limit != 0:
        for rec in records:
            row = {k: coerce(v) for k, v in rec.row.items() if v is not None}  # null = missing
            rid = row.get("id")
            if not isinstance(rid, str) or not rid.strip():
                rid = f"{name}-{req.split}-{rec.index}"
            row["id"] = rid
            if rid in seen:
                req.skip(rec, f"duplicate id '{rid}' (first at {seen[rid]})")
                continue
            seen[rid] = rec.where
            rows.append(row)
            where.append(rec.where)
            if limit is not None and len(rows) >= limit:
                break
    return DataSet(name, req.split, rows, req.problems, where)


def check_nonempty(ds: DataSet, what: str, limit: int | None) -> DataSet:
    """An empty result is a mistake the user should hear about, with the first reasons."""
    if ds.rows or limit == 0:
        return ds
    if ds.problems:
        more = f" (and {len(ds.problems) - 1} more)" if len(ds.problems) > 1 else ""
        raise S2Error(
            f"{what}: no usable rows; all {len(ds.problems)} were skipped. First: {ds.problems[0]}{more}",
            hint="if the columns are named differently, map them: --map FIELD=COLUMN",
        )
    raise S2Error(f"{what}: no rows")


def parse_list(value) -> list:
    """A list field from any export: a list, a JSON-encoded list, or one string."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return [value]
        return parsed if isinstance(parsed, list) else [value]
    return [] if value in (None, "") else [value]
