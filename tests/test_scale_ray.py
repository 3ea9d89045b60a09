"""Scale-out on a real local two-node Ray cluster (tests/helpers/ray_cluster.py): `--engine ray`
(a pool of vLLM replicas) and `--shards 2` (the whole program per shard on the workers), each
compared with one plain vLLM engine, through the s2c CLI as a user runs it.

Equality is asserted under the determinism settings of docs/scale.md: greedy decoding, one
sequence at a time (max_num_seqs=1) and no prefix caching, since bf16 numerics can change with
the batch's shape. One cluster serves every test; each command starts its own engines.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers.ray_cluster import cluster  # noqa: E402

from s2c.compiler.pipeline import load_program  # noqa: E402
from s2c.runtime.store import RunStore  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROGRAM = str(REPO / "tests" / "fixtures" / "programs" / "mini_bsm.s2")
DATA = f"oasst2:{REPO / 'tests' / 'fixtures' / 'data' / 'oasst2_sample.jsonl'}"
DETERMINISTIC = ["--vllm-arg", "max_num_seqs=1", "--vllm-arg", "enable_prefix_caching=false"]
S2C = str(Path(sys.executable).parent / "s2c")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    pytest.importorskip("ray")
    with cluster(tmp_path_factory.mktemp("ray")) as c:
        yield c


def s2c(*args, check=True, timeout=None) -> subprocess.CompletedProcess:
    r = subprocess.run([S2C, *args, "--no-progress"], check=False, capture_output=True, text=True, cwd=REPO,
                       timeout=timeout,
                       env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "VLLM_CPU_KVCACHE_SPACE": "1"})
    if check:
        assert r.returncode == 0, r.stderr[-4000:]
    return r


def compile_(out: Path, *engine) -> subprocess.CompletedProcess:
    """Every call made (--no-early-stop): the runs compared here are whole, swapped copies included,
    wherever the shards' boundaries fall."""
    return s2c("compile", PROGRAM, "--data", DATA, "--limit", "8", "--out", str(out), "--no-early-stop",
               "--cache", str(out.parent / f"{out.name}.sqlite"), *DETERMINISTIC, *engine)


def outputs(run: Path) -> dict:
    cp = load_program(PROGRAM)
    store = RunStore.open(run, cp)
    try:
        return {r.id: (r.status, r.outputs, {nid: [i.get("completions") for i in n.get("instances", ())]
                                             for nid, n in r.trace.nodes.items()})
                for r in store.all()}
    finally:
        store.close()


def dataset(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.jsonl"))}


@pytest.fixture(scope="module")
def single(ray_cluster, tmp_path_factory):
    """The reference: one plain vLLM engine in the s2c process."""
    out = tmp_path_factory.mktemp("single") / "data"
    compile_(out, "--engine", "vllm")
    return out


def test_ray_pool_of_two_replicas_equals_one_engine(ray_cluster, single, tmp_path):
    out = tmp_path / "data"
    r = compile_(out, "--engine", "ray", "--replicas", "2", "--ray-address", ray_cluster.address)
    assert "starting 2 replicas on 2 node(s)" in r.stderr
    summary = json.loads((out / "run" / "summary.json").read_text())
    counts = summary["engine_spread"]["requests_per_replica"]
    assert len(counts) == 2 and all(counts), counts  # both replicas took part
    got, want = outputs(out / "run"), outputs(single / "run")
    assert len(got) == 14 and got == want  # 7 rows, each also run with the responses swapped
    assert dataset(out) == dataset(single) and dataset(single)
    assert summary["engine"] == "ray" and summary["engine_calls"] == sum(counts)


def test_sharded_compile_equals_unsharded_and_resumes_per_shard(ray_cluster, single, tmp_path):
    out = tmp_path / "data"
    r = compile_(out, "--engine", "ray", "--shards", "2", "--ray-address", ray_cluster.address)
    summary = json.loads((out / "run" / "summary.json").read_text())
    shards = summary["shards"]
    assert len(shards) == 2 and len({s["node"] for s in shards}) == 2, shards  # one shard per node
    # each worker wrote in its own node's folder, not the driver's, and removed it when done
    homes = {str(d) for d in ray_cluster.work_dirs.values()}
    assert {str(Path(s["work_dir"]).parent) for s in shards} == homes
    assert not any(any(d.iterdir()) for d in ray_cluster.work_dirs.values())
    assert outputs(out / "run") == outputs(single / "run")
    assert dataset(out) == dataset(single)
    assert summary["examples"] == 14 and summary["engine_calls"] == sum(s["engine_calls"] for s in shards)
    # the driver's cache is the union of the shards' caches
    cache = out.parent / "data.sqlite"
    assert _rows(cache) == _rows(out / "run" / "shards" / "0" / "calls.sqlite") | _rows(
        out / "run" / "shards" / "1" / "calls.sqlite")
    # a shard resumes from its own cache shard: with the driver's cache gone, a rerun makes no call
    cache.unlink()
    r = compile_(out, "--engine", "ray", "--shards", "2", "--ray-address", ray_cluster.address)
    again = json.loads((out / "run" / "summary.json").read_text())
    assert again["engine_calls"] == 0 and again["cache_hits"] == summary["samples"], r.stderr[-2000:]
    assert dataset(out) == dataset(single)


def _rows(path: Path) -> set:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return set(db.execute("SELECT key, idx, text FROM calls").fetchall())
    finally:
        db.close()


def test_a_node_without_the_model_is_a_clear_error(ray_cluster, tmp_path):
    for flags in (["--replicas", "2"], ["--shards", "2"]):
        r = s2c("run", PROGRAM, "--data", DATA, "--limit", "2", "--out", str(tmp_path / flags[0][2:]),
                "--no-cache", "--engine", "ray", "--ray-address", ray_cluster.address, "--model",
                str(tmp_path / "no-such-model"), *flags, check=False)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "is not on this node" in r.stderr and "no-such-model" in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr


def test_resources_no_node_has_are_a_clear_error_not_a_wait(ray_cluster, tmp_path):
    for flags in (["--replicas", "2"], ["--shards", "2"]):
        r = s2c("run", PROGRAM, "--data", DATA, "--limit", "2", "--no-cache", "--engine", "ray",
                "--ray-address", ray_cluster.address, "--replica-resources", "GPU=1",
                "--out", str(tmp_path / flags[0][2:]), *flags, check=False, timeout=180)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "no node of the Ray cluster has GPU=1" in r.stderr and "CPU=1" in r.stderr, r.stderr[-2000:]


def test_a_resource_amount_that_is_not_a_number_is_a_usage_error(tmp_path):
    r = s2c("run", PROGRAM, "--data", DATA, "--limit", "1", "--no-cache", "--engine", "ray",
            "--replica-resources", "GPU=one", "--out", str(tmp_path / "o"), check=False)
    assert r.returncode == 1 and "--replica-resources GPU=one: the amount must be a number" in r.stderr
    assert "Traceback" not in r.stderr
