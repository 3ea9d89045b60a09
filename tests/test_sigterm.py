"""SIGTERM (what `kill`, `pkill`, `timeout` and job schedulers send) stops s2c the way Ctrl-C does:
the `finally` blocks close the engine, so vLLM's engine processes stop with it instead of living on
as orphans, the run store keeps what finished, and the exit code is 128 + 15. A real s2c process
on the real vLLM engine and the embedded model."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sigterm_stops_s2c_and_the_vllm_processes_it_started(tmp_path):
    psutil = pytest.importorskip("psutil")  # vLLM's own dependency
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "s2c.cli", "run", "cot_zeroshot.s2", "--data", "coin_flip", "--limit", "64",
           "--engine", "vllm", "--no-cache", "--progress-every", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        seen = []
        for line in proc.stderr:  # 64 chains of thought of up to 512 tokens: still running when killed
            seen.append(line)
            if "engine started" in line:
                break
        assert any("engine started" in line for line in seen), "".join(seen)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # vLLM's engine core (and its worker) run as processes of their own
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    _, alive = psutil.wait_procs(children, timeout=60)
    assert alive == []
    assert "s2c: terminated (SIGTERM); everything finished so far is saved" in rest
    assert "Traceback" not in rest
    assert (out / "run.sqlite").exists()
