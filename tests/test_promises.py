"""Two promises of docs/reliability.md that no other test proves:

- data text is never evaluated as a template: whatever a row holds reaches the engine, and the
  System-1 training rows, exactly as written;
- `kill -9` during `s2c compile` never leaves a partial file under a final name, and the compile
  resumed after the kills writes what an uninterrupted one writes.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.llm_server import serve

from s2c.compiler.pipeline import load_program
from s2c.distill.build import CURATION, DistillSettings, distill_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner

REPO = Path(__file__).resolve().parents[1]

# What a hostile row might hold: jinja expressions, statements, comments, raw blocks, attribute
# walks towards Python internals, s2c's own variable names, other template languages, and markup.
PAYLOADS = [
    "{{ 7*7 }}", "{{7*'7'}}", "{{ question }}", "{{ response_a }}", "{{ config }}", "{{ self }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__ }}", "{{ range(10**9) | list }}", "{{ loop.index }}", "{{ x | shout }}",
    "{% for i in range(3) %}{{ i }}{% endfor %}", "{% if true %}yes{% endif %}", "{% include '/etc/passwd' %}",
    "{% raw %}{{ 1 }}{% endraw %}", "{# a comment #}", "{% set x = 1 %}", "{%- macro m() -%}{%- endmacro -%}",
    "{{", "}}", "{%", "%}", "{#", "#}", "{{ unclosed", "{% endfor %}", "${7*7}", "#{7*7}", "<%= 7*7 %>",
    "[/x] [bold]b[/bold]", '"""', "'''", "\\{{ 7 }}", "{{ '\\x00' }}", "\u2028{{ 1 }}\u2029", "{{ \"\" ~ 1 }}",
]


def rows_with(payloads: list[str], seed: int = 0) -> list[tuple[str, dict]]:
    """One row per payload in each field, plus payloads mixed at random into ordinary text."""
    rng = random.Random(seed)
    rows = []
    for i, p in enumerate(payloads):
        rows.append((f"p{i}", {"question": p, "response_a": f"a {p}", "response_b": f"{p} b"}))
    for i in range(60):
        mixed = " ".join(rng.choice(payloads + ["plain", "words", "here"]) for _ in range(rng.randint(2, 6)))
        rows.append((f"m{i}", {"question": mixed, "response_a": rng.choice(payloads), "response_b": mixed[::-1]}))
    return rows


def test_data_text_reaches_the_engine_and_the_training_rows_as_written(tmp_path):
    cp = load_program(REPO / "tests/fixtures/programs/two_step.s2")
    rows = [(i, {"question": r["question"] + " | " + r["response_a"], "answer": "yes"}) for i, r in rows_with(PAYLOADS)]
    engine = FakeEngine(lambda request, index: "Final answer: yes")
    distill_program(cp, rows, Runner(engine, CallCache(None), progress=False), tmp_path / "data", DistillSettings(data="payloads"))
    sent = [request_text(r) for r in engine.calls]
    assert len(sent) == 2 * len(rows)  # draft and review, for every row
    for ex_id, row in rows:
        # the text reaches the engine exactly: nothing evaluated, stripped or escaped
        assert sum(row["question"] in s for s in sent) >= 2, (ex_id, row["question"])
    assert not any("49" in s for s in sent)  # no {{ 7*7 }} was ever computed
    # splitlines(): U+2028 in a row is escaped in the file, so even it sees one row per line
    train = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["example_id"] for r in train) == sorted(i for i, _ in rows)  # every row kept (gold matches)
    questions = dict(rows)
    for r in train:
        assert r["prompt"][-1]["content"] == questions[r["example_id"]]["question"], r["example_id"]


# --- kill -9 during compile --------------------------------------------------------------------

ROWS, KILLS, DELAY, SEED = 120, 6, 0.05, 99


def write_rows(path: Path) -> Path:
    with path.open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"id": f"q{i}", "question": f"Which is better for case {i}?",
                                "response_a": f"short {i}", "response_b": f"long {i * 7 % 31}"}) + "\n")
    return path


def compile_command(url: str, data: Path, cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "s2c.cli", "compile", "bsm.s2", "--data", str(data), "--engine", "openai",
            "--base-url", url, "--model", "echo-model", "--cache", str(cache), "--out", str(out),
            "--chunk-size", "16", "--val-split", "0.2", "--no-progress"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def whole(path: Path) -> None:
    """Raise if a file under a final name is not a complete file of its kind."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".jsonl":
        text = path.read_text()
        assert text == "" or text.endswith("\n"), f"{path} ends mid-line"
        for line in text.splitlines():
            json.loads(line)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.read_table(path)


def test_kill_9_during_compile_leaves_no_partial_file_under_a_final_name(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    out, cache = tmp_path / "data", tmp_path / "calls.sqlite"
    rng = random.Random(SEED)
    # when each kill comes: two at random moments of the run, one while curation writes its files,
    # one once they have their final names (the card may not be written yet)
    moments = [("run", None), ("run", None), ("curating", out / f".{CURATION}.tmp"), ("renamed", out / CURATION)]
    seen_final: set[str] = set()
    hit = []
    with serve(tmp_path, delay=DELAY) as url:
        cmd = compile_command(url, data, cache, out)
        for name, sign in moments:
            if sign is not None:
                for f in (out / f".{CURATION}.tmp", out / CURATION, out / "README.md"):
                    f.unlink(missing_ok=True)  # so that the sign is this attempt's
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + (rng.uniform(0.5, 2.5) if sign is None else 120)
            while time.monotonic() < deadline and proc.poll() is None and not (sign and sign.exists()):
                time.sleep(0.0005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                hit.append(name)
            proc.wait()
            for path in out.rglob("*"):
                if path.is_file() and not path.name.startswith("."):
                    whole(path)  # complete, or not there under this name
                    seen_final.add(str(path.relative_to(out)))
            if (out / "README.md").exists():  # the card is written last: the rest is complete
                assert (out / "train.jsonl").exists() and (out / CURATION).exists()
        done = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        ref = subprocess.run(compile_command(url, data, tmp_path / "ref.sqlite", tmp_path / "ref"), cwd=tmp_path,
                             env=env(), capture_output=True, text=True, timeout=300, check=False)
        assert ref.returncode == 0, ref.stderr
    print(f"\nkill -9 during compile: killed in {hit}; files seen under final names after the kills: "
          f"{sorted(seen_final)}")
    assert hit[:3] == ["run", "run", "curating"]  # the last may find the process already done
    for name in ("train.jsonl", "validation.jsonl", CURATION):  # the card differs: its call counts
        assert (out / name).read_text() == (tmp_path / "ref" / name).read_text(), name
    assert not list(out.rglob(".*.tmp"))
