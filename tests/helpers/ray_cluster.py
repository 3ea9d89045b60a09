"""A real two-node Ray cluster on this machine, loopback only, for the scale-out tests:

    with cluster(tmp) as c:     # c.address "127.0.0.1:PORT"; c.work_dirs: each node's S2C_WORK_DIR
        ...

`ray start --head` and a second `ray start --address` run as foreground processes (`--block`),
one CPU each and a resource naming the node ("head", "node2"), so one replica or shard lands on
each. Token auth is off while the cluster runs (RAY_AUTH_MODE=disabled, for its nodes and the
drivers started meanwhile). Each node gets its own S2C_WORK_DIR (where shard workers write) and a small vLLM KV cache.
Leaving the block stops both nodes (terminate, then kill).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Cluster:
    address: str
    work_dirs: dict[str, Path]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


# One driver that connects once and polls: a probe process per poll spends seconds importing ray
# on a loaded 2-core machine. It prints the alive count it ends with.
_PROBE = """
import ray, sys, time
ray.init(address=sys.argv[1], log_to_driver=False)
n, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
alive = 0
while time.time() < deadline:
    alive = sum(1 for x in ray.nodes() if x["Alive"])
    if alive >= n:
        break
    time.sleep(1)
print(alive)
"""


def _wait_nodes(address: str, n: int, env: dict, logs: list[Path], timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    tries: list[str] = []
    while time.time() < deadline:
        left = max(deadline - time.time(), 1.0)
        try:
            out = subprocess.run([sys.executable, "-c", _PROBE, address, str(n), f"{left:.0f}"],
                                 capture_output=True, text=True, env=env, timeout=left + 60)
        except subprocess.TimeoutExpired:
            tries.append("the probe did not return")
            continue
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        tries.append(f"probe exit {out.returncode}: {(out.stdout + out.stderr).strip()[-600:]}")
        time.sleep(2)
    tails = "\n".join(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                      for log in logs if log.exists())
    raise RuntimeError(f"the Ray cluster at {address} did not reach {n} nodes in {timeout:.0f} s\n"
                       f"--- probes\n" + "\n".join(tries[-3:]) + f"\n{tails}\n--- processes\n{_busiest()}")


def _busiest() -> str:
    """The processes using the most CPU (what else was running while the cluster did not form)."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,rss,etime,args", "--sort=-pcpu"], capture_output=True, text=True)
    return "\n".join(line[:160] for line in out.stdout.splitlines()[:12])


@contextlib.contextmanager
def cluster(tmp: Path, cpus: int = 1):
    tmp = Path(tmp)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Token auth (on by default in Ray 2.60) is off for this loopback-only cluster, for its nodes and
    # for the drivers this process starts while the block runs: a token another cluster left in
    # ~/.ray/auth_token makes `ray.init(address=...)` fail with "Failed to connect".
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    common = ["--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
    work = {name: tmp / f"work-{name}" for name in ("head", "node2")}
    for d in work.values():
        d.mkdir(parents=True, exist_ok=True)
    procs = []
    logs = []
    short = tmp / "ray-head"
    try:
        # Ray's sockets live under the temp dir and an AF_UNIX path holds at most 107 bytes:
        # pytest's tmp path plus Ray's session name passed that (node2 then never joined)
        short = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        for name, args in (("head", ["--head", "--port", str(port), "--include-dashboard", "false",
                                     "--temp-dir", str(short)]),
                           ("node2", ["--address", address])):
            log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 (closed below)
            logs.append(log)
            procs.append(subprocess.Popen(
                [_ray(), "start", *args, *common, "--resources", f'{{"{name}": 1}}'],
                env={**env, "S2C_WORK_DIR": str(work[name])}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
            if name == "head":
                _wait_nodes(address, 1, env, [tmp / "head.log"])
        _wait_nodes(address, 2, env, [tmp / "head.log", tmp / "node2.log"])
        yield Cluster(address, work)
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, 9)
                p.wait()
        for log in logs:
            log.close()
        shutil.rmtree(short, ignore_errors=True)
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
