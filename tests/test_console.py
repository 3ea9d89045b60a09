"""What a user sees: s2c's own lines on the console, what the engine and its libraries print in
the run folder's engine.log (-v: on the console), and plain progress lines off a terminal."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.llm_server import serve
from rich.console import Console

from s2c.cli import main
from s2c.compiler.pipeline import load_program
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.run import _duration, _Progress
from s2c.terminal import WORTH_READING, log_note

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

# Writes the way an engine does (native code on fds 1 and 2, Python's print, warnings and logging,
# a child process), and the way s2c does (its console, a product on stdout), inside engine_output.
NOISY = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from s2c.terminal import console, engine_output, screen
    c = console()
    c.print("s2c: before")
    with engine_output(Path(sys.argv[1]) / "engine.log", sys.argv[2] == "-v", c):
        os.write(1, b"native stdout\\n")
        os.write(2, b"native stderr\\n")
        print("python stdout")
        print("python stderr", file=sys.stderr)
        warnings.warn("a FutureWarning", FutureWarning)
        logging.basicConfig(stream=sys.stdout, format="(EngineCore pid=7) WARNING 11-23 07:18:12 [x.py:1] %(message)s")
        logging.getLogger("vllm").warning("the KV cache is full")
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"])
        c.print("s2c: during")
        print("the product", file=screen(stderr=False))
    c.print("s2c: after")
""")
ENGINE_LINES = ["native stdout", "native stderr", "python stdout", "python stderr", "FutureWarning",
                "the KV cache is full", "child out", "child err"]


def run_noisy(tmp_path, flag: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NOISY, str(tmp_path), flag], capture_output=True, text=True,
                          env=ENV, timeout=60, check=True)


def test_engine_output_goes_to_the_log_and_s2c_keeps_the_console(tmp_path):
    done = run_noisy(tmp_path, "-")
    assert done.stdout == "the product\n"  # a product still reaches stdout
    log = tmp_path / "engine.log"
    assert done.stderr.splitlines() == [
        "s2c: before", "s2c: during",
        f"s2c: engine: 1 warning worth reading (the KV cache is full); see {log}",
        "s2c: after"]
    text = log.read_text()
    assert all(line in text for line in ENGINE_LINES)
    assert "s2c:" not in text


def test_verbose_leaves_the_engine_output_on_the_console(tmp_path):
    done = run_noisy(tmp_path, "-v")
    shown = done.stdout + done.stderr
    assert all(line in shown for line in ENGINE_LINES)
    assert "s2c: during" in done.stderr and "worth reading" not in shown
    assert not (tmp_path / "engine.log").exists()


# A Jupyter kernel: sys.stdout and sys.stderr send text to the cell and are not descriptors 1 and 2;
# vLLM binds its logger to sys.stdout when it is imported (here `late`, inside the first call).
IN_A_CELL = textwrap.dedent("""
    import io, logging, os, sys, warnings
    from pathlib import Path
    from s2c.terminal import console, engine_output
    user, cell = sys.stdout, io.StringIO()
    sys.stdout = sys.stderr = cell
    early = logging.getLogger("early")
    early.addHandler(logging.StreamHandler(sys.stdout))
    c = console()
    c.print("s2c: before")
    with engine_output(Path(sys.argv[1]) / "engine.log", False, c):
        print("python stdout")
        print("python stderr", file=sys.stderr)
        warnings.warn("a FutureWarning", FutureWarning)
        early.warning("early logger inside")
        late = logging.getLogger("late")
        late.addHandler(logging.StreamHandler(sys.stdout))
        late.warning("late logger inside")
        bound = logging.StreamHandler()  # as transformers makes its handler: flush bound to sys.stderr's
        bound.flush = sys.stderr.flush
        logging.getLogger("bound").addHandler(bound)
        os.write(1, b"native stdout\\n")
        c.print("s2c: during")
    early.warning("early logger after")
    late.warning("late logger after")
    with engine_output(Path(sys.argv[1]) / "engine2.log", False, c):  # the next call
        late.warning("late logger in the next call")
    c.print("s2c: after")
    user.write(cell.getvalue())
""")


def test_in_a_notebook_the_kernels_streams_and_the_loggers_on_them_go_to_the_log_too(tmp_path):
    done = subprocess.run([sys.executable, "-c", IN_A_CELL, str(tmp_path)], capture_output=True, text=True, env=ENV,
                          timeout=60, check=True)
    assert done.stdout.splitlines() == ["s2c: before", "s2c: during", "early logger after", "late logger after",
                                        "s2c: after"]
    text = (tmp_path / "engine.log").read_text()
    assert all(line in text for line in ["python stdout", "python stderr", "FutureWarning", "early logger inside",
                                         "late logger inside", "native stdout"])
    assert "s2c:" not in text and "after" not in text
    assert (tmp_path / "engine2.log").read_text() == "late logger in the next call\n"


def test_log_note_names_only_the_lines_worth_reading(tmp_path):
    log = tmp_path / "engine.log"
    benign = [  # what every vLLM-CPU start prints
        "(MainProcess pid=8578) WARNING 11-23 07:17:53 [vllm.py:1703] Enforce eager set, disabling torch.compile",
        "(Worker pid=8771) WARNING 11-23 07:18:05 [cpu_worker.py:114] libtcmalloc is not found in LD_PRELOAD.",
        "Triton is installed, but doesn't include CPU backend. Disabling Triton.",
        "Loading safetensors checkpoint shards: 100% Completed | 1/1 [00:00<00:00,  3.05it/s]",
    ]
    log.write_text("\n".join(benign) + "\n")
    assert log_note(log) is None
    worth = [
        "(EngineCore pid=9) WARNING 11-23 07:20:00 [vllm.py:9] s2c: vLLM preempted 12 requests because its KV cache was full",
        "(MainProcess pid=8) WARNING 11-23 07:20:01 [vllm.py:9] s2c: vLLM preempted 12 requests because its KV cache was full",
        "(EngineCore pid=9) WARNING 11-23 07:20:02 [attn.py:3] Falling back to the torch SDPA backend",
        "RuntimeError: something broke",
    ]
    log.write_text("\n".join(benign + worth) + "\n")
    assert log_note(log) == (  # the same message from two processes counts once
        "s2c: engine: 3 warnings worth reading (s2c: vLLM preempted 12 requests because its KV cache was full); "
        f"see {log}")
    assert log_note(tmp_path / "missing.log") is None


def test_vllm_engine_says_how_many_requests_it_preempted_in_vllms_log():
    pytest.importorskip("vllm")
    from vllm.v1.metrics.reader import Counter, Gauge

    from s2c.runtime.engines.vllm import VLLMEngine

    class LLM:  # what close() reads: vLLM's metrics; and what it shuts down
        def get_metrics(self):
            return [Gauge("vllm:num_requests_running", {}, 0.0), Counter("vllm:num_preemptions", {"engine": "0"}, 3)]

    engine = object.__new__(VLLMEngine)  # no model started: only the bookkeeping close() uses
    engine._llms, engine._running = {"m": LLM()}, {}
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("vllm.s2c").addHandler(handler)
    try:
        engine.close()
    finally:
        logging.getLogger("vllm.s2c").removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        ("s2c: vLLM preempted 3 requests because its KV cache was full; they were computed again. "
         "A larger KV cache avoids it (on CPU: VLLM_CPU_KVCACHE_SPACE, in GiB)")]
    assert WORTH_READING.search(records[0].getMessage())


# --- progress ------------------------------------------------------------------------------------


def bsm_rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which answer is right about {i}?",
                                        "response_a": "a short one", "response_b": "a long one"}) + "\n"
                            for i in range(n)))
    return path


def run_cli(url: str, data: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "s2c.cli", "run", "bsm.s2", "--data", str(data), "--engine", "openai",
           "--base-url", url, "--model", "echo-model", "--no-cache", "--out", str(out), "--chunk-size", "4", *flags]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=ENV, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done


PLAIN = re.compile(r"^s2c: (\d+)/8 examples · (\d+) calls( · \d+ in flight)?( · [\d,]+ tok/s)?( · ETA [\dms]+)?$")


def test_off_a_terminal_progress_is_a_plain_line_every_few_seconds_and_no_progress_turns_it_off(tmp_path):
    data = bsm_rows(tmp_path / "rows.jsonl", 8)
    with serve(tmp_path, delay=0.1) as url:  # 40 calls, 4 at a time: about a second of work
        shown = run_cli(url, data, tmp_path / "a", "--progress-every", "0.1")
        quiet = run_cli(url, data, tmp_path / "b", "--no-progress")
    lines = [m for m in map(PLAIN.match, shown.stderr.splitlines()) if m]
    assert len(lines) >= 3, shown.stderr
    done = [int(m[1]) for m in lines]
    calls = [int(m[2]) for m in lines]
    assert done == sorted(done) and calls == sorted(calls) and calls[-1] > 0
    assert any(m[3] for m in lines)  # requests in the engine
    assert any(m[5] for m in lines)  # an ETA once examples finish
    assert shown.stdout == "" and not (tmp_path / "a" / "engine.log").exists()  # the server process printed nothing
    assert not [line for line in quiet.stderr.splitlines() if PLAIN.match(line)]
    assert "8 examples: 8 ok" in quiet.stderr


def test_progress_line_shows_what_is_known_of_a_streamed_input():
    cp = load_program("bsm.s2")
    p = _Progress(cp, FakeEngine(), Console(file=io.StringIO()), every=30)

    class Totals:
        examples = 0

    rows = p.follow((r for r in [("a", {}), ("b", {}), ("c", {})]), Totals)
    assert p.line() == "s2c: 0/0+ examples · 0 calls"
    next(rows), next(rows)
    assert p.line() == "s2c: 0/2+ examples · 0 calls"  # at least 2: the input is not read to its end
    list(rows)
    Totals.examples = 1
    assert p.line().startswith("s2c: 1/3 examples · 0 calls · ETA ")


def test_duration_reads_like_a_clock():
    assert [_duration(s) for s in (4.6, 100, 3599, 7380)] == ["5s", "1m40s", "59m59s", "2h03m"]


def test_progress_every_must_be_positive(tmp_path, capsys):
    assert main(["run", "bsm.s2", "--data", "coin_flip", "--progress-every", "0", "--out", str(tmp_path)]) == 1
    assert "--progress-every 0: must be more than 0 seconds" in capsys.readouterr().err
