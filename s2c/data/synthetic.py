"""Generated symbolic-reasoning tasks, with fixed, disjoint splits drawn from one seeded stream:
coin_flip and last_letters from Wei et al. (2022), "Chain-of-Thought Prompting", and s2c's own
majority_vote (issue 11: a task whose steps the embedded model can do one at a time and whose whole
mapping, a majority, a small LoRA can learn; parity, coin flip's, it did not).

    >>> from s2c.data import load_source
    >>> row = load_source("coin_flip:test", limit=1).rows[0]
    >>> row["question"].startswith("A coin is heads up."), row["answer"] in ("yes", "no")
    (True, True)
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources

from s2c.data.rows import Record, Source, SourceRequest

# Split sizes (the paper evaluates on 500 test items; 1000 train rows is plenty to distill from).
SPLITS = {"train": 1000, "validation": 200, "test": 500}
PEOPLE = (2, 3, 4)  # names per item; Wei et al. used 2 in-domain and 3-4 for length generalization
VOTERS = (3, 5, 7)  # odd, so there is never a tie

LAST_LETTERS = 'Take the last letters of each words in "{words}" and concatenate them.'


@cache
def names() -> tuple[str, ...]:
    text = resources.files("s2c.data").joinpath("words.txt").read_text(encoding="utf-8")
    return tuple(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def coin_flip_item(rng: random.Random) -> dict:
    people = rng.sample(names(), rng.choice(PEOPLE))
    flips = [rng.random() < 0.5 for _ in people]
    steps = " ".join(
        f"{p} flips the coin." if f else f"{p} does not flip the coin." for p, f in zip(people, flips)
    )
    heads = sum(flips) % 2 == 0  # an even number of flips leaves it heads up
    return {
        "question": f"A coin is heads up. {steps} Is the coin still heads up?",
        "answer": "yes" if heads else "no",
    }


def majority_vote_item(rng: random.Random) -> dict:
    people = rng.sample(names(), rng.choice(VOTERS))
    votes = [rng.random() < 0.5 for _ in people]
    steps = " ".join(
        f"{p} votes for the proposal." if v else f"{p} votes against the proposal." for p, v in zip(people, votes)
    )
    return {
        "question": f"{len(people)} people vote on a proposal. {steps} Do more people vote for it than against it?",
        "answer": "yes" if 2 * sum(votes) > len(votes) else "no",
    }


def last_letters_item(rng: random.Random) -> dict:
    words = rng.sample(names(), rng.choice(PEOPLE))
    return {
        "question": LAST_LETTERS.format(words=" ".join(words)),
        "answer": "".join(w[-1].lower() for w in words),
    }


def generate(task: str, make: Callable[[random.Random], dict], seed: int) -> dict[str, list[dict]]:
    """All splits at once from one stream, deduplicated, so no question is in two splits."""
    rng = random.Random(f"{task}:{seed}")
    items, seen = [], set()
    total = sum(SPLITS.values())
    while len(items) < total:
        item = make(rng)
        if item["question"] not in seen:
            seen.add(item["question"])
            items.append(item)
    out, start = {}, 0
    for split, size in SPLITS.items():
        out[split] = items[start : start + size]
        start += size
    return out


def _source(task: str, description: str, make: Callable[[random.Random], dict]) -> Source:
    """A generated task: every split from one seeded stream, no file to read."""
    def read(req: SourceRequest) -> Iterator[Record]:
        for i, item in enumerate(generate(task, make, req.seed)[req.split]):
            yield Record(f"{task}[{req.split}, seed {req.seed}]: row {i + 1}", i, item)

    return Source(task, f"generated: {description}", ("question", "answer"), read, splits=tuple(SPLITS),
                  takes_path=False)


SOURCES = [
    _source("coin_flip", "is the coin still heads up after 2-4 people flip it or not? (Wei et al. 2022)",
            coin_flip_item),
    _source("last_letters", "concatenate the last letters of 2-4 names (Wei et al. 2022)", last_letters_item),
    _source("majority_vote", "do more of 3, 5 or 7 named people vote for a proposal than against it? (s2c)",
            majority_vote_item),
]
