"""Execute a checked program over many examples: dataflow per example, batched per engine call.

Each (example, node) becomes ready as soon as that example's own inputs to the node are computed.
Transforms run at once; LLM instances are rendered, looked up in the cache, and the misses join a
pool. The pool is sent to the engine in bounded chunks, ordered by node and then by prompt text
so that requests sharing a prefix sit next to each other (BSM's solve calls differ only in the
criterion) and the engine's prefix cache hits. Every completion is committed to the cache with
its chunk; every finished example is appended to the run's traces.
"""
from __future__ import annotations

import heapq
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import networkx as nx

from s2c.compiler import ir
from s2c.compiler.functions import Failed
from s2c.compiler.templates import render
from s2c.runtime.cache import CallCache, call_key, engine_model
from s2c.runtime.engines.base import Completion, EngineError, EngineFailure, Message, Request
from s2c.runtime.values import ExampleValues, find_failed, to_json


@dataclass
class NodeStats:
    engine_calls: int = 0  # requests sent to the engine
    samples: int = 0  # completions used (cached or not)
    cache_hits: int = 0  # completions served from the cache
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    failed: Counter = field(default_factory=Counter)  # reason -> instances

    def as_dict(self) -> dict:
        return {
            "engine_calls": self.engine_calls, "samples": self.samples, "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
            "seconds": round(self.seconds, 3), "failed": sum(self.failed.values()),
            "failures": dict(self.failed),
        }


@dataclass
class ExampleResult:
    id: str
    row: dict
    values: dict[str, Any]  # node id -> assembled value (Failed objects inside where they failed)
    outputs: dict[str, Any]
    failed: dict[str, str]  # node id -> first failure reason
    state: ExampleValues | None = field(default=None, repr=False)  # per-instance values, for distill/eval
    prompt_tokens: int = 0
    generated_tokens: int = 0
    calls: int = 0

    @property
    def ok(self) -> bool:
        return all(find_failed(v) is None for v in self.outputs.values())


@dataclass
class _Pending:
    ex: "_Example"
    node: ir.Node
    prefix: tuple
    request: Request
    key: str
    have: dict[int, Completion]
    trace: dict
    text: str  # what the model reads: the sort key that puts shared prefixes side by side


class _Example:
    def __init__(self, cp, ex_id: str, row: dict, waiting: dict[str, int]):
        self.id = ex_id
        self.row = row
        self.values = ExampleValues(cp, row)
        self.waiting = dict(waiting)
        self.pending: dict[str, int] = {}
        self.done: set[str] = set()
        self.trace: dict[str, dict] = {}
        self.prompt_tokens = self.generated_tokens = self.calls = 0
        self.failed: dict[str, str] = {}


class Executor:
    def __init__(self, cp: ir.CheckedProgram, engine, *, cache: CallCache | None = None, chunk_size: int = 64,
                 max_errors: int | None = None, refresh: set[str] | frozenset = frozenset(),
                 on_example: Callable[[dict], None] | None = None, progress=None):
        self.cp = cp
        self.engine = engine
        self.cache = cache or CallCache(None)
        self.chunk_size = chunk_size
        self.max_errors = max_errors
        self.refresh = set(refresh)
        self.on_example = on_example  # gets each finished example's trace record
        self.progress = progress
        self.stats: dict[str, NodeStats] = defaultdict(NodeStats)
        self._plan()

    # ------------------------------------------------------------ plan
    def _plan(self):
        cp = self.cp
        g = cp.graph if cp.graph is not None else None
        self.order = [n for n in (nx.topological_sort(g) if g is not None else cp.nodes) if cp.nodes[n].kind != "input"]
        self.rank = {n: i for i, n in enumerate(self.order)}
        deps: dict[str, set[str]] = {}
        for nid in self.order:
            node = cp.nodes[nid]
            d = set(node.deps)
            for lid in node.loops:  # the loop's iterable decides how many instances there are
                it = cp.loops[lid].iterable
                if isinstance(it, ir.NodeRef):
                    d.add(it.node)
            d = {x for x in d if cp.nodes[x].kind != "input" and x != nid}
            deps[nid] = d
        self.dependents: dict[str, list[str]] = defaultdict(list)
        for nid, ds in deps.items():
            for d in ds:
                self.dependents[d].append(nid)
        self.waiting0 = {nid: len(ds) for nid, ds in deps.items()}

    # ------------------------------------------------------------ run
    def run(self, rows: list[tuple[str, dict]]) -> list[ExampleResult]:
        """rows: (example id, row) pairs, already validated against the program's inputs."""
        self.results: dict[str, ExampleResult] = {}
        self.errors = 0
        self.ready: deque = deque()
        # a heap of (node rank, prompt text, arrival, request): pops come out by node, then by
        # prompt, so requests that share a prefix are sent side by side
        self.pool: list[tuple[int, str, int, _Pending]] = []
        self.arrivals = 0
        examples = [_Example(self.cp, ex_id, row, self.waiting0) for ex_id, row in rows]
        self.unfinished = len(examples)
        for ex in examples:
            if not self.order:
                self._finish(ex)
            for nid in self.order:
                if ex.waiting[nid] == 0:
                    self.ready.append((ex, nid))
        while True:
            while self.ready:
                ex, nid = self.ready.popleft()
                self._start(ex, self.cp.nodes[nid])
            if not self.pool:
                break
            self._dispatch()
        order = {ex_id: i for i, (ex_id, _) in enumerate(rows)}
        return sorted(self.results.values(), key=lambda r: order[r.id])

    def _start(self, ex: _Example, node: ir.Node):
        instances = ex.values.instances(node)
        tr = ex.trace.setdefault(node.id, {"kind": node.kind, "instances": []})
        if isinstance(instances, Failed):
            ex.values.set(node.id, (), instances)  # never read per instance: its loops failed
            self._fail(ex, node, instances)
            self._done(ex, node)
            return
        if node.kind == "transform":
            t0 = time.perf_counter()
            for p in instances:
                v = ex.values.eval(node.expr, p, node.loops, node.id)
                ex.values.set(node.id, p, v)
                if isinstance(v, Failed):
                    self._fail(ex, node, v, p)
                if not node.internal:
                    tr["instances"].append({"index": list(p), "value": to_json(v)})
            self.stats[node.id].seconds += time.perf_counter() - t0
            self._done(ex, node)
            return
        waiting = 0
        for p in instances:
            item = self._request(ex, node, p, tr)
            if item is not None:
                self.arrivals += 1
                heapq.heappush(self.pool, (self.rank[node.id], item.text, self.arrivals, item))
                waiting += 1
        if waiting:
            ex.pending[node.id] = waiting
            if self.progress:
                self.progress.add_total(node.id, waiting)
        else:
            self._done(ex, node)

    def _request(self, ex: _Example, node: ir.Node, p: tuple, tr: dict) -> _Pending | None:
        """Render one LLM instance; serve it from the cache if every sample is there."""
        inst = {"index": list(p)}
        tr["instances"].append(inst)
        variables = ex.values.template_vars(node, p)
        if isinstance(variables, Failed):
            ex.values.set(node.id, p, variables)
            inst["error"] = variables.reason
            self._fail(ex, node, variables, p)
            return None
        try:
            prompt = render(node.prompt.value, variables)
            system = render(node.system.value, variables) if node.system else None
        except Exception as e:  # jinja runtime errors: undefined attribute, index out of range...
            v = Failed(f"template error: {type(e).__name__}: {e}", node.id)
            ex.values.set(node.id, p, v)
            inst["error"] = v.reason
            self._fail(ex, node, v, p)
            return None
        if node.mode == "chat":
            msgs = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
            req = Request(messages=msgs, sampling=node.sampling, role=node.role)
        else:
            req = Request(prompt=(system + "\n\n" if system else "") + prompt, sampling=node.sampling, role=node.role)
        inst.update(req.payload())
        key = call_key(engine_model(self.engine, node.role), req)
        n = node.sampling.n
        have = {} if node.id in self.refresh else self.cache.get(key, n)
        if len(have) == n:
            self._complete(ex, node, p, [have[i] for i in range(n)], inst, cached=n)
            return None
        return _Pending(ex, node, p, req, key, have, inst, (system or "") + "\x00" + prompt)

    def _dispatch(self):
        chunk = [heapq.heappop(self.pool)[3] for _ in range(min(self.chunk_size, len(self.pool)))]
        # ask only for the samples the cache does not have
        reqs = [replace(it.request, sampling=replace(it.request.sampling, n=it.node.sampling.n - len(it.have)))
                for it in chunk]
        t0 = time.perf_counter()
        results = self._generate(reqs)
        dt = (time.perf_counter() - t0) / max(1, len(chunk))
        puts = []
        for it, res in zip(chunk, results):
            st = self.stats[it.node.id]
            st.engine_calls += 1
            st.seconds += dt
            it.ex.calls += 1
            it.trace["seconds"] = round(dt, 4)
            if isinstance(res, EngineFailure):
                v = Failed(f"engine: {res.reason}", it.node.id)
                it.ex.values.set(it.node.id, it.prefix, v)
                it.trace["error"] = v.reason
                self._fail(it.ex, it.node, v, it.prefix)
            else:
                model = self.engine.model_id(it.node.role)
                missing = [i for i in range(it.node.sampling.n) if i not in it.have]
                for i, c in zip(missing, res):
                    it.have[i] = c
                    puts.append((it.key, i, c, model))
                if len(it.have) < it.node.sampling.n:
                    v = Failed(f"engine returned {len(res)} of {len(missing)} samples", it.node.id)
                    it.ex.values.set(it.node.id, it.prefix, v)
                    self._fail(it.ex, it.node, v, it.prefix)
                else:
                    n_cached = it.node.sampling.n - len(missing)
                    self._complete(it.ex, it.node, it.prefix, [it.have[i] for i in range(it.node.sampling.n)],
                                   it.trace, cached=n_cached)
            if self.progress:
                self.progress.advance(it.node.id, 0 if isinstance(res, EngineFailure) else
                                      sum(c.completion_tokens for c in res))
        self.cache.put_many(puts)  # committed before anything downstream runs
        for it in chunk:
            it.ex.pending[it.node.id] -= 1
            if it.ex.pending[it.node.id] == 0:
                self._done(it.ex, it.node)

    def _generate(self, reqs: list[Request]):
        """Engine errors: retried once; if the batch still fails, each request fails with the reason."""
        last = None
        for _ in range(2):
            try:
                out = self.engine.generate(reqs)
                if len(out) != len(reqs):
                    raise RuntimeError(f"engine returned {len(out)} results for {len(reqs)} requests")
                return out
            except EngineError:
                raise  # the engine cannot run at all: stop and say why (completed calls are cached)
            except Exception as e:  # noqa: BLE001 - recorded per request, the run goes on
                last = e
        return [EngineFailure(f"{type(last).__name__}: {last}") for _ in reqs]

    def _complete(self, ex: _Example, node: ir.Node, p: tuple, comps: list[Completion], inst: dict, cached: int):
        st = self.stats[node.id]
        st.samples += len(comps)
        st.cache_hits += cached
        pt = sum(c.prompt_tokens for c in comps[:1])  # the prompt is read once per call
        gt = sum(c.completion_tokens for c in comps)
        st.prompt_tokens += pt
        st.generated_tokens += gt
        ex.prompt_tokens += pt
        ex.generated_tokens += gt
        texts = [c.text for c in comps]
        ex.values.set(node.id, p, texts if node.sampling.n > 1 else texts[0])
        inst.update(completions=texts, prompt_tokens=pt, generated_tokens=gt, cached=cached,
                    finish_reasons=[c.finish_reason for c in comps])

    def _fail(self, ex: _Example, node: ir.Node, v: Failed, p: tuple = ()):
        if v.node == node.id:  # count a failure where it happened, not where it propagated
            self.stats[node.id].failed[v.reason] += 1
        ex.failed.setdefault(node.id, v.reason)

    def _done(self, ex: _Example, node: ir.Node):
        ex.done.add(node.id)
        for d in self.dependents.get(node.id, ()):
            ex.waiting[d] -= 1
            if ex.waiting[d] == 0:
                self.ready.append((ex, d))
        if len(ex.done) == len(self.order):
            self._finish(ex)

    def _finish(self, ex: _Example):
        cp = self.cp
        values = {}
        for nid in self.order:
            node = cp.nodes[nid]
            try:
                values[nid] = ex.values.assemble(node, ())
            except KeyError:
                values[nid] = ex.values.store.get(nid, {}).get((), Failed("not computed", nid))
        outputs = {name: ex.values.lookup(ref, (), ()) for name, ref in cp.outputs.items()}
        res = ExampleResult(ex.id, ex.row, values, outputs, ex.failed, ex.values, ex.prompt_tokens,
                            ex.generated_tokens, ex.calls)
        self.results[ex.id] = res
        self.unfinished -= 1
        if not res.ok:
            self.errors += 1
        if self.on_example:
            self.on_example({
                "example_id": ex.id, "status": "ok" if res.ok else "failed",
                "inputs": {p.name: ex.row.get(p.name) for p in cp.inputs},
                "outputs": to_json(outputs), "failed": ex.failed, "nodes": ex.trace,
                "prompt_tokens": ex.prompt_tokens, "generated_tokens": ex.generated_tokens, "engine_calls": ex.calls,
            })
        if self.max_errors is not None and self.errors > self.max_errors:
            raise TooManyErrors(self.errors, self.max_errors)


class TooManyErrors(Exception):
    def __init__(self, errors: int, limit: int):
        super().__init__(f"{errors} examples failed (--max-errors {limit}); stopping the run")
        self.errors, self.limit = errors, limit
