"""How many System-2 answers match the gold field, where the data has one: what the papers report
for a curated dataset (the share of kept labels that are right), and what `s2c run` prints.

The answer and the comparison are the program's gold metrics' (`eval: metric
normalized_match(final, answer)`), scored by `normalize.correct` as `s2c eval` scores System 2:
an answer that failed or is unparsed counts as wrong, an input with no gold value is not scored.

    >>> tally = GoldTally.for_program(cp)[0]       # [] when the program has no gold metric (run.RunOutcome.gold)
    >>> for res in store.originals():
    ...     ok = tally.score(res, tally.answer(res))  # every input with a gold value
    ...     if kept: tally.keep(ok)            # and the ones curation kept
    >>> tally.as_dict()
    {"metric": "normalized_match", "gold": "answer", "all": {"correct": 6, "scored": 10},
     "kept": {"correct": 5, "scored": 6}}
"""
from __future__ import annotations

from dataclasses import dataclass

from s2c.compiler import ir
from s2c.compiler.normalize import correct
from s2c.runtime.store import ExampleResult


@dataclass
class GoldTally:
    metric: ir.MetricIR
    label: str  # the metric as eval's tables name it
    correct: int = 0
    scored: int = 0
    kept_correct: int = 0
    kept_scored: int = 0

    @classmethod
    def for_program(cls, cp: ir.CheckedProgram) -> list[GoldTally]:
        """One tally per gold metric of the program, in the eval section's order (the first one
        reads the label that compile's report counts)."""
        names = ir.metric_labels(cp.metrics)
        return [cls(m, name) for m, name in zip(cp.metrics, names)
                if m.gold and m.answer is not None and m.perturbation is None]

    def answer(self, res: ExampleResult):
        """The example's System-2 answer as the metric reads it (a Failed where it could not be read)."""
        return res.state.eval(self.metric.answer, (), (), "eval")

    def score(self, res: ExampleResult, answer) -> bool | None:
        """Score one original example's System-2 answer (`answer(res)`) among all; None: it has
        no gold value."""
        gold = res.trace.gold.get(self.metric.gold)
        if gold in (None, ""):
            return None
        ok = correct(self.metric.name, answer, gold)
        self.scored += 1
        self.correct += ok
        return ok

    def keep(self, scored: bool | None) -> None:
        """Count an example curation kept, with what `score` said of it."""
        if scored is not None:
            self.kept_scored += 1
            self.kept_correct += scored

    def as_dict(self, kept: bool = True) -> dict:
        """The counts; `kept=False` (a run, which curates nothing): only "all"."""
        return {"metric": self.label, "gold": self.metric.gold,
                "all": {"correct": self.correct, "scored": self.scored},
                **({"kept": {"correct": self.kept_correct, "scored": self.kept_scored}} if kept else {})}


def line(tally: dict, kept: bool = False) -> str:
    """`normalized_match(final) vs answer: 6/10 (60%)`; with `kept`, the kept labels first:
    `kept labels match answer (normalized_match): 5/6 (83%); all System-2 answers: 6/10 (60%)`."""
    if kept:
        return (f"kept labels match {tally['gold']} ({tally['metric']}): {share(tally['kept'])}; "
                f"all System-2 answers: {share(tally['all'])}")
    return f"{tally['metric']} vs {tally['gold']}: {share(tally['all'])}"


def share(part: dict) -> str:
    """`5/6 (83%)`, or `none scored` where no input had a gold value."""
    c, n = part["correct"], part["scored"]
    return f"{c}/{n} ({c / n:.0%})" if n else "none scored"
