"""MT-Bench human pairwise judgments (Zheng et al. 2023), first turn only, as A/B/C preferences.

Raw schema (`lmsys/mt_bench_human_judgments`, splits "human" and "gpt4_pair"): question_id,
model_a, model_b, winner ("model_a"/"model_b"/"tie"/"tie (bothbad)"), judge,
conversation_a/conversation_b (lists of {role, content}), turn (1 or 2). One row per judge vote.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from s2c.data import hub
from s2c.data.rows import Record, Source, SourceRequest, parse_list

REPO = "lmsys/mt_bench_human_judgments"
HINT = (
    "export the judgments where the Hub is reachable "
    "(datasets.load_dataset('lmsys/mt_bench_human_judgments', split='human').to_json('mtbench.jsonl')) "
    "and pass the file: --data mtbench:path/to/mtbench.jsonl"
)
LABELS = {"model_a": "A", "model_b": "B", "tie": "C", "tie (bothbad)": "C"}  # C: a tie


def convert(records: Iterable[Record], req: SourceRequest) -> Iterator[Record]:
    for rec in records:
        row = rec.row
        if str(row.get("turn", "")).strip() != "1":
            continue  # turn-2 judgments grade the follow-up answer, in context
        winner = str(row.get("winner", "")).strip()
        if winner not in LABELS:
            req.skip(rec, f"winner {winner!r} is not one of {', '.join(LABELS)}")
            continue
        conv_a, conv_b = parse_list(row.get("conversation_a")), parse_list(row.get("conversation_b"))
        question = _first(conv_a, "user")
        a, b = _first(conv_a, "assistant"), _first(conv_b, "assistant")
        if question is None or a is None or b is None:
            side = "conversation_a" if question is None or a is None else "conversation_b"
            req.skip(rec, f"{side} has no first user message and assistant reply")
            continue
        yield Record(rec.where, rec.index, {
            "id": f"mtbench-{req.split}-{rec.index}",  # one row per vote: no id column to reuse
            "question": question,
            "response_a": a,
            "response_b": b,
            "label": LABELS[winner],
        })


def _first(conversation: list, role: str) -> str | None:
    for msg in conversation:
        if isinstance(msg, dict) and msg.get("role") == role and msg.get("content"):
            return msg["content"]
    return None


SOURCE = Source(
    "mtbench",
    "MT-Bench human judgments, turn 1: question, two model answers, winner A/B or C (tie)",
    ("question", "response_a", "response_b", "label"),
    hub.reader(REPO, hint=HINT),
    convert,
    default_split="human",
)
