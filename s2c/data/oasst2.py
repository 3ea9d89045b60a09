"""OpenAssistant oasst2 as pairwise preferences: an English first-turn prompt, two of its
assistant replies with different human ranks, and which one people preferred.

Raw schema (one message per row, the Hub dataset and the `*.messages.jsonl(.gz)` export):
message_id, parent_id (None for a tree's first prompt), message_tree_id, role
("prompter"/"assistant"), text, lang, rank (0 = best among siblings; None = unranked), deleted, ...
The `*.trees.jsonl(.gz)` export (nested `prompt.replies`) is flattened to the same messages.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Iterator

from s2c.data import hub
from s2c.data.rows import Record, Source, SourceRequest

REPO = "OpenAssistant/oasst2"
HINT = (
    "download the oasst2 export where the Hub is reachable (the dataset's parquet files, or "
    "2023-11-05_oasst2_ready.messages.jsonl.gz) and pass it: --data oasst2:path/to/oasst2.jsonl"
)


def convert(records: Iterable[Record], req: SourceRequest) -> Iterator[Record]:
    messages = [m for m in _messages(records, req) if not m.row.get("deleted")]
    replies = defaultdict(list)
    for m in messages:
        if not _is_root(m.row):
            replies[str(m.row["parent_id"])].append(m)
    for m in messages:
        row = m.row
        if not (_is_root(row) and row.get("role") == "prompter" and row.get("lang") == "en"):
            continue
        pair = best_pair(replies[str(row["message_id"])], req)
        if pair is None:
            continue  # fewer than two ranked replies with different ranks: no preference to learn
        yield Record(m.where, m.index, pair_row(row, *pair, seed=req.seed))


def best_pair(replies: list[Record], req: SourceRequest):
    """The best-ranked reply and the next one with a worse rank: (better, worse), or None."""
    ranked = []
    for r in replies:
        if r.row.get("role") != "assistant" or r.row.get("rank") is None:
            continue
        try:
            ranked.append((int(r.row["rank"]), str(r.row["message_id"]), r.row))
        except (TypeError, ValueError):
            req.skip(r, f"rank {r.row['rank']!r} is not a number")
    ranked.sort(key=lambda t: t[:2])
    if not ranked:
        return None
    worse = next((t for t in ranked if t[0] > ranked[0][0]), None)
    return (ranked[0][2], worse[2]) if worse else None


def pair_row(prompt: dict, better: dict, worse: dict, *, seed: int) -> dict:
    """A/B order drawn per prompt from (seed, message_id), so it does not depend on other rows."""
    pid = str(prompt["message_id"])
    swap = random.Random(f"oasst2:{seed}:{pid}").random() < 0.5
    a, b = (worse, better) if swap else (better, worse)
    return {
        "id": pid,
        "question": prompt["text"],
        "response_a": a["text"],
        "response_b": b["text"],
        "label": "B" if swap else "A",
    }


def _is_root(row: dict) -> bool:
    return row.get("parent_id") in (None, "")


def _messages(records: Iterable[Record], req: SourceRequest) -> Iterator[Record]:
    """Flat messages with the fields the pairing needs; trees are flattened first."""
    for rec in records:
        tree = rec.row.get("prompt")
        flat = _flatten(rec, tree, None) if isinstance(tree, dict) and "message_id" not in rec.row else [rec]
        for m in flat:
            missing = [f for f in ("message_id", "role", "text") if m.row.get(f) in (None, "")]
            if missing:
                req.skip(m, f"field '{missing[0]}' is missing")
            else:
                yield m


def _flatten(tree: Record, msg: dict, parent_id) -> Iterator[Record]:
    """A `trees` export row -> its messages, each with the `parent_id` the nesting implied."""
    row = {k: v for k, v in msg.items() if k != "replies"}
    row["parent_id"] = parent_id
    yield Record(f"{tree.where} (message {msg.get('message_id')})", tree.index, row)
    for reply in msg.get("replies") or []:
        if isinstance(reply, dict):
            yield from _flatten(tree, reply, msg.get("message_id"))


SOURCE = Source(
    "oasst2",
    "OpenAssistant oasst2: English turn-1 prompts with two human-ranked replies (A/B preference)",
    ("question", "response_a", "response_b", "label"),
    hub.reader(REPO, hint=HINT),
    convert,
)
