"""Curation without labels (and with them, for CasCoD): which examples System 1 learns from.

Rules (from the program's `distill:` section), applied in order; the first that drops an
example gives the reason:
  majority(samples, min_share)   a strict majority winner whose share >= min_share
  consistent(answer, swap=/shuffle=, map=)   the answer survives the input perturbation
  matches(answer, gold)          the answer equals the gold field (normalized); on a list of
                                 answers (one per CoT) it keeps the matching elements only
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from s2c.compiler import ir
from s2c.compiler.failures import Failed, TransformError
from s2c.compiler.library import majority_holds
from s2c.compiler.normalize import normalize
from s2c.errors import S2Error
from s2c.runtime.values import find_failed

if TYPE_CHECKING:
    from s2c.runtime.store import ExampleResult


@dataclass
class Verdict:
    keep: bool
    reason: str | None = None  # why dropped: "rule: detail"
    rule: str | None = None
    element_mask: list[bool] | None = None  # matches() over a list: which elements to keep


@dataclass
class CurationReport:
    inputs: int = 0
    kept: int = 0
    failed: Counter = field(default_factory=Counter)  # node -> examples whose output failed there
    unparsed: Counter = field(default_factory=Counter)  # node -> examples whose output a parse missed
    dropped: Counter = field(default_factory=Counter)  # rule -> examples
    reasons: Counter = field(default_factory=Counter)  # "rule: reason" -> examples
    elements_dropped: int = 0
    labels: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    gold: dict | None = None  # gold.GoldTally.as_dict(): System-2 answers that match gold, all and kept

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs, "kept": self.kept, "failed": sum(self.failed.values()),
            "failed_per_node": dict(self.failed), "unparsed": sum(self.unparsed.values()),
            "unparsed_per_node": dict(self.unparsed), "dropped_per_rule": dict(self.dropped),
            "dropped_reasons": dict(self.reasons.most_common()), "elements_dropped": self.elements_dropped,
            "label_distribution": dict(self.labels.most_common()), "warnings": self.warnings,
            "gold": self.gold,
        }


CURATIONS = ("program", "none", "gold")


def with_curation(cp: ir.CheckedProgram, curation: str) -> ir.CheckedProgram:
    """The program with its keep rules as written ("program"), with none ("none": every System-2
    answer is kept, the papers' unfiltered ablation), or with only `keep matches(TARGET, GOLD)`
    ("gold": the papers' gold-filtered ablation; TARGET is the first task's target and GOLD the
    program's one gold field)."""
    if curation == "program":
        return cp
    if curation == "none":
        return replace(cp, keeps=[])
    if len(cp.golds) != 1:
        raise S2Error(f"--curation gold needs a program with exactly one gold field; '{cp.name}' has "
                      f"{len(cp.golds)}" + (f" ({', '.join(cp.golds)})" if cp.golds else ""),
                      cp.program.header.span, hint="declare the label the gold filter compares with: gold answer")
    task = cp.tasks[0]
    rule = ir.KeepIR("matches", task.span, {"answer": task.target, "gold": cp.golds[0]})
    return replace(cp, keeps=[rule])


def value_of(expr: ir.IRExpr, res: ExampleResult):
    """A distill or eval expression (target, answer, samples) over one finished example's values."""
    return res.state.eval(expr, (), (), "distill")


def judge(cp: ir.CheckedProgram, res: ExampleResult, perturbed: dict[str, ExampleResult]) -> Verdict:
    """Apply the keep rules in order; `perturbed` maps a suffix ("~swap") to that copy's result."""
    for k in cp.keeps:
        v = _apply(cp, k, res, perturbed)
        if not v.keep or v.element_mask is not None:
            return v
    return Verdict(True)


def needs_copies(cp: ir.CheckedProgram, res: ExampleResult) -> bool:
    """Whether judging this original reads its perturbed copies: it ended ok, the rules before the
    first `consistent` keep it whole, and that rule's answer is there. Otherwise the verdict is
    the same whatever the copies hold, and a compile does not run them (RunOptions.needs_copies)."""
    if not res.ok:
        return False
    for k in cp.keeps:
        if k.rule == "consistent":
            return find_failed(value_of(k.args["answer"], res)) is None
        v = _apply(cp, k, res, {})
        if not v.keep or v.element_mask is not None:
            return False
    return False


def _apply(cp, k: ir.KeepIR, res: ExampleResult, perturbed) -> Verdict:
    if k.rule == "majority":
        samples = value_of(k.args["samples"], res)
        if isinstance(samples, Failed):
            return Verdict(False, f"majority: samples failed ({samples.reason})", "majority")
        need = float(k.args.get("min_share", 0.5))
        try:
            held = majority_holds(samples, need)
        except TransformError as e:
            return Verdict(False, f"majority: {e}", "majority")
        if not held:
            # one reason for a tie and a low share: a compile that stopped sampling early knows the
            # drop, not which (early_stop.py), and curation.jsonl is the same with it and without
            return Verdict(False, f"majority: no strict winner with a share of at least {need:.2f}", "majority")
        return Verdict(True)
    if k.rule == "consistent":
        pert = k.perturbation
        answer = value_of(k.args["answer"], res)
        if find_failed(answer) is not None:
            return Verdict(False, "consistent: the answer failed", "consistent")
        other = perturbed.get(pert.suffix)
        if other is None:
            return Verdict(False, f"consistent: the {pert.kind}ped run is missing", "consistent")
        alt = value_of(k.args["answer"], other)
        if find_failed(alt) is not None:
            return Verdict(False, f"consistent: the answer failed on the {pert.kind}ped input", "consistent")
        mapped = pert.map_back(alt, other.tag["info"])
        if normalize(mapped) != normalize(answer):
            return Verdict(False, f"consistent: answer changes under {pert.kind} "
                                  f"({answer} vs {alt}{' -> ' + str(mapped) if mapped != alt else ''})", "consistent")
        return Verdict(True)
    if k.rule == "matches":
        answer = value_of(k.args["answer"], res)
        gold = res.trace.gold.get(k.args.get("gold"))
        if gold is None:
            return Verdict(False, f"matches: the row has no gold field '{k.args.get('gold')}'", "matches")
        if isinstance(answer, list):
            mask = [not isinstance(a, Failed) and normalize(a) == normalize(gold) for a in answer]
            if not any(mask):
                return Verdict(False, "matches: no answer matches the gold label", "matches")
            return Verdict(True, None, "matches", mask if not all(mask) else None)
        if isinstance(answer, Failed):
            return Verdict(False, "matches: the answer failed", "matches")
        if normalize(answer) != normalize(gold):
            return Verdict(False, "matches: answer differs from the gold label", "matches")
        return Verdict(True)
    raise ValueError(k.rule)  # checked at compile time
