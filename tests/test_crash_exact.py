"""kill -9 at random moments repeats only the calls that were in flight, and the resumed run ends
with exactly the outputs of an uninterrupted one.

`s2c run bsm.s2` runs as a real process against tests/helpers/llm_server.py (a real HTTP server,
its own process, answering every request after DELAY seconds and logging when it received each
request and when it finished writing each reply). The run is killed with SIGKILL KILLS times at
random moments, restarted each time with the same command and cache, then left to finish. The
server's log then says which calls were made more than once; each earlier attempt of such a call
must have been in flight at a kill: received before it, and answered no more than WINDOW before
it (a reply the client had held longer would have been committed to the call cache).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.llm_server import serve

from s2c.runtime.store import RunStore

REPO = Path(__file__).resolve().parents[1]
ROWS = 200  # 5 calls a row at 80 calls/s (8 connections, DELAY each): ~12 s of work, well
            # more than the KILLS runs get done, so that every kill finds the run still going
KILLS = 10
DELAY = 0.1
WINDOW = 0.05  # seconds between the server writing a reply and the client caching it, at most
SEED = 1234
TIMEOUT = 120


def write_rows(path: Path) -> Path:
    topics = ("tides", "prime numbers", "photosynthesis", "compound interest", "the moon", "volcanoes")
    with path.open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({
                "id": f"q{i}",
                "question": f"How would you explain {topics[i % len(topics)]} to a child? (case {i})",
                "response_a": f"A short answer, number {i}.",
                "response_b": f"A longer answer with an example, number {i * 7 % 101}.",
            }) + "\n")
    return path


def run_command(url: str, data: Path, cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "s2c.cli", "run", "bsm.s2", "--data", str(data), "--engine", "openai",
            "--base-url", url, "--model", "echo-model", "--cache", str(cache), "--out", str(out),
            "--chunk-size", "16"]


def run_to_end(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, check=False, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{' '.join(cmd)}\nexit {done.returncode}\nstderr:\n{done.stderr}"
    return done


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


# --- what a run folder holds (adapt here if the run folder's layout changes) ---------------------


def read_outputs(run_dir: Path) -> dict[str, dict]:
    """Example id -> what must not depend on kills: status, outputs, every node's completions."""
    return {r.example_id: {"status": r.status, "outputs": r.outputs, "completions": _completions(r.nodes)}
            for r in RunStore.open(run_dir).traces()}


def _completions(node) -> list:
    """Every `completions` list anywhere in a trace's nodes, in a stable order."""
    if isinstance(node, dict):
        found = [node["completions"]] if "completions" in node else []
        return found + [c for k in sorted(node) if k != "completions" for c in _completions(node[k])]
    if isinstance(node, list):
        return [c for item in node for c in _completions(item)]
    return []


# --- what the server's log says ------------------------------------------------------------------


@dataclass
class Attempt:
    n: int  # the server's number for this POST
    key: str
    recv: float
    done: float | None = None  # when the reply was written; None: never answered (aborted)


def read_log(path: Path) -> tuple[list[Attempt], dict[str, int]]:
    attempts: dict[int, Attempt] = {}
    events = {"recv": 0, "done": 0, "aborted": 0, "fault": 0}
    for line in path.read_text().splitlines():
        e = json.loads(line)
        events[e["event"]] += 1
        if e["event"] == "recv":
            attempts[e["n"]] = Attempt(e["n"], e["key"], e["t"])
        elif e["event"] == "done":
            attempts[e["n"]].done = e["t"]
    return sorted(attempts.values(), key=lambda a: a.n), events


def thrown_away(attempts: list[Attempt]) -> list[Attempt]:
    """Attempts of a call that the server saw again later: the client did not keep their reply."""
    last = {a.key: a for a in attempts}  # attempts are in arrival order
    return [a for a in attempts if last[a.key] is not a]


def in_flight(a: Attempt, kills: list[float]) -> bool:
    """Was the attempt in flight at some kill: received by then, not answered long before?"""
    answered = a.done if a.done is not None else float("inf")
    return any(a.recv <= k + WINDOW and answered >= k - WINDOW for k in kills)


def lead(a: Attempt, kills: list[float]) -> float:
    """How long before the kill that ended its run the attempt was answered (< 0: after it)."""
    kill = min((k for k in kills if k + WINDOW >= a.recv), default=float("inf"))
    return kill - (a.done if a.done is not None else float("inf"))


def test_the_log_analysis_tells_in_flight_repeats_from_lost_replies():
    kill = 100.0
    attempts = [
        Attempt(1, "kept", 99.0, 99.1),
        Attempt(2, "in-flight", 99.95, 100.05), Attempt(5, "in-flight", 101.0, 101.1),
        Attempt(3, "just-answered", 99.9, 99.97), Attempt(6, "just-answered", 101.0, 101.1),
        Attempt(4, "lost", 99.5, 99.6), Attempt(7, "lost", 101.0, 101.1),  # answered 0.4 s before
    ]
    wasted = thrown_away(attempts)
    assert [a.n for a in wasted] == [2, 3, 4]
    assert [in_flight(a, [kill]) for a in wasted] == [True, True, False]


# --- the test ------------------------------------------------------------------------------------


def test_kill_9_at_random_moments_repeats_only_calls_in_flight(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    rng = random.Random(SEED)
    log, cache, out = tmp_path / "server.log", tmp_path / "calls.sqlite", tmp_path / "run"
    kills: list[float] = []
    start = time.time()
    with serve(tmp_path, delay=DELAY, log=log) as url:
        cmd = run_command(url, data, cache, out)
        for i in range(KILLS):
            with open(tmp_path / f"killed-{i}.err", "w+") as err:
                proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
                time.sleep(rng.uniform(0.3, 2.0))
                if proc.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"run {i} exited with {proc.returncode} before its kill "
                                         f"(raise ROWS if it finished):\n{err.read()}")
                kills.append(time.time())
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        final = run_to_end(cmd, tmp_path)
    with serve(tmp_path, delay=DELAY, log=tmp_path / "reference.log") as url:
        run_to_end(run_command(url, data, tmp_path / "reference.sqlite", tmp_path / "reference"), tmp_path)

    # (a) the interrupted run ends with what an uninterrupted one computes, for every row
    got, want = read_outputs(out), read_outputs(tmp_path / "reference")
    assert len(want) == ROWS and all(r["status"] == "ok" for r in want.values())
    assert all(len(r["completions"]) == 5 for r in want.values())  # branch, 3 x solve, merge
    assert {r["outputs"]["verdict"] for r in want.values()} == {"A", "B"}
    assert got == want

    attempts, events = read_log(log)
    ref_attempts, ref_events = read_log(tmp_path / "reference.log")
    keys = {a.key for a in attempts}
    assert keys == {a.key for a in ref_attempts}  # the same calls, whatever the kills
    assert ref_events["recv"] == len(keys) and ref_events["done"] == len(keys)  # no kill, no repeat

    # (b) a call is made again only if it was in flight at a kill
    wasted = thrown_away(attempts)
    lost = [a for a in wasted if not in_flight(a, kills)]
    repeats = events["recv"] - len(keys)
    print(f"\ncrash-exact: {KILLS} kills at {[round(k - start, 2) for k in kills]} s; {len(keys)} distinct "
          f"calls, {events['recv']} received, {repeats} repeated calls, {events['done']} answered, "
          f"{events['aborted']} aborted; {len(lost)} repeated calls were answered more than "
          f"{WINDOW * 1000:.0f} ms before any kill")
    leads = [lead(a, kills) * 1000 for a in wasted if a.done is not None]
    if leads:
        print(f"crash-exact: replies thrown away were written from {-max(leads):.1f} to {-min(leads):.1f} ms "
              "after the kill that ended their run (negative: before it)")
    print("crash-exact: final run:", " ".join(l for l in final.stderr.splitlines() if l.startswith("s2c: ")))
    assert all(last.done is not None for last in {a.key: a for a in attempts}.values())
    assert not lost, (f"{len(lost)} calls were repeated although their reply was written well before any kill, "
                      f"e.g. (POST number, seconds received-to-answered) {[(a.n, a.done and round(a.done - a.recv, 3)) for a in lost[:5]]}")

    # (c) every repeat is a reply thrown away: replies beyond one per call == repeated calls (less
    # any reply the server could not write because its client was gone)
    print(f"crash-exact: 'done' events - distinct calls = {events['done'] - len(keys)}; "
          f"repeats = {repeats}")
    assert events["done"] - len(keys) == repeats - events["aborted"]
