"""Every ```python block of docs/python.md runs, in order, in one namespace, as the cells of one
notebook: one engine, started once, serves the whole page. They run from a temporary working
folder holding a copy of examples/ (so `runs/` and the saved dataset go there) with a fresh call
cache, on the embedded model through vLLM-for-CPU.

A block that cannot run here has, on the line right before it, `<!-- not run: REASON -->`; it is
skipped, and the reason must be given. Every block, run or not, must at least compile."""
from __future__ import annotations

import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "python.md"
NOT_RUN = re.compile(r"^<!--\s*not run:(.*?)-->$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    code: str
    not_run: str | None  # the reason, for a block marked `not run`


def blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.match(before)
            out.append(Block(start + 1, "\n".join(lines[start + 1:end]) + "\n",
                             marker.group(1).strip() if marker else None))
            i = end
        i += 1
    return out


def test_every_block_compiles_and_every_skipped_one_says_why():
    text = DOCS.read_text(encoding="utf-8")
    found = blocks(text)
    assert len(found) >= 15
    for b in found:
        compile(b.code, f"{DOCS.name}:{b.line}", "exec")
        assert b.not_run != "", f"{DOCS.name}:{b.line}: `not run` without a reason"
    markers = [line for line in text.splitlines() if "not run" in line and line.startswith("<!--")]
    assert len(markers) == sum(b.not_run is not None for b in found) == 3  # each marker is right above a block
    assert {b.not_run for b in found if b.not_run} == {
        "CI has no OpenAI-compatible server and no Ray cluster", "no Hugging Face Hub can be reached from CI",
        ("it starts a second vLLM engine for the merged model, minutes on CI's CPU; tests/test_export.py runs "
         "--merge-adapters")}


@pytest.mark.slow
def test_the_python_examples_run_in_one_namespace(tmp_path, s2c_home, monkeypatch, capsys):
    pytest.importorskip("vllm")
    pytest.importorskip("pandas")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    timings = []
    for b in blocks(DOCS.read_text(encoding="utf-8")):
        if b.not_run:
            continue
        t0 = time.time()
        # the page's own code; a failing block's traceback names its line in docs/python.md
        exec(compile(b.code, f"{DOCS}:{b.line}", "exec"), namespace)  # noqa: S102
        timings.append((b.line, time.time() - t0))
    out = capsys.readouterr()
    with capsys.disabled():
        print(f"\ndocs/python.md: {sum(t for _, t in timings):.0f} s; slowest blocks (line, s): "
              + ", ".join(f"{line}: {t:.0f}" for line, t in sorted(timings, key=lambda x: -x[1])[:4]), file=sys.stderr)

    engine = namespace["engine"]
    assert engine._engine is None  # closed by the page's last block (its eval block asserts one start-up)
    assert "typo.s2:6:12: error: prompt of 'answer' uses undefined variable 'questoin'" in out.out
    assert "<s2c.Program 'majority_steps': inputs question; 5 LLM calls per input in 1 stage>" in out.out
    assert namespace["run"].summary.examples == 4 and namespace["data"].report["inputs"] == 4
    assert (tmp_path / "datasets" / "majority-s1" / "README.md").exists()
    assert (namespace["trained"].adapter_dir / "adapter_config.json").exists()
    result = namespace["result"]
    assert [r.name for r in result.systems] == ["System 1", "System 2", "Distilled System 1"]
    assert all(r.n == 4 for r in result.systems)
    # what vLLM printed is in the run folders' engine.log, not on the console
    assert "Loading safetensors" not in out.out + out.err
    assert any("Loading safetensors" in p.read_text(errors="replace") for p in tmp_path.glob("runs/**/engine.log"))
