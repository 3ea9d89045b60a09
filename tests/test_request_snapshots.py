"""Request snapshots: the exact requests every shipped program sends the engine for two fixed rows,
as System 2 and as System 1 (DSPy's request snapshots), on a scripted fake engine.

    S2C_UPDATE_GOLDEN=1 python -m pytest tests/test_request_snapshots.py   # rewrite, then review
"""
from __future__ import annotations

import json

import pytest
from golden import GOLDEN, check_golden, stale

from s2c.compiler.pipeline import builtin_dir, load_program
from s2c.compiler.system1 import system1_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.run import Runner

PROGRAMS = sorted(builtin_dir().glob("*.s2"))
REQUESTS = GOLDEN / "requests"

# One reply every parse in programs/ accepts: two list lines (criteria, checks), "[[A]]",
# "Verdict: yes", "Response 0" (usc), "The answer is N." / "Therefore, the answer is N." /
# "Final answer: N" (the numbers after the last marker), \boxed{N} (debate).
REPLY = ("1. The most consistent response is Response 0. Verdict: yes [[A]]. The answer is 4. "
         "Therefore, the answer is 4.\n2. Final answer: 4 \\boxed{4}")
QUESTIONS = ("What is 2 + 2?", "Is the sky blue?")


def rows(cp) -> list[tuple[str, dict]]:
    """Two fixed rows from the declared inputs, with every gold field filled."""
    out = []
    for k, question in enumerate(QUESTIONS):
        row = {}
        for p in cp.inputs:
            if p.type == "list":
                row[p.name] = [f"{p.name} item {j} of row {k}" for j in range(3)]
            elif p.type == "number":
                row[p.name] = 3.0 + k
            else:
                row[p.name] = question if p.name == "question" else f"the {p.name} of row {k}"
        row.update({g: "4" for g in cp.golds})
        out.append((f"row{k}", row))
    return out


def reply(request, sample_index) -> str:
    """REPLY, or a choice= call's first option (reflexion's "yes, a mistake": every round runs)."""
    c = request.sampling.constraint
    return c.spec[0] if c is not None and c.kind == "choice" else REPLY


def snapshot(cp, data, tmp_path) -> list[dict]:
    """Run `cp` over `data`; the requests the engine received, in a stable order."""
    engine = FakeEngine(reply)
    out = Runner(engine, CallCache(None), progress=False).execute(cp, data, tmp_path)
    assert (out.summary.ok, out.summary.reasons("failed"), out.summary.reasons("unparsed")) == (len(data), {}, {})
    records = [{"role": r.role, "adapter": r.adapter, "sampling": r.sampling.to_dict(), **r.payload()}
               for r in engine.calls]
    return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_request_snapshot(path, tmp_path):
    cp = load_program(path)
    data = rows(cp)
    snap = {"rows": dict(data), "system2": snapshot(cp, data, tmp_path / "s2")}
    if not cp.tasks:
        snap["system1"] = "none: the program has no distill section"
    else:
        s1 = system1_program(cp, cascade=False, max_tokens=128)
        snap["system1"] = snapshot(s1, data, tmp_path / "s1")
    if cp.format == "cascade":  # a cascade-trained System 1 also runs the tasks that follow the first
        s1 = system1_program(cp, cascade=True, max_tokens=128)
        snap["system1_cascade"] = snapshot(s1, data, tmp_path / "s1-cascade")
    check_golden(REQUESTS / f"{path.stem}.json", json.dumps(snap, indent=1, ensure_ascii=False))


def test_no_stale_request_goldens():
    assert stale(REQUESTS, {f"{p.stem}.json" for p in PROGRAMS}) == []
