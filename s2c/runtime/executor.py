"""Execute a checked program over a stream of examples: dataflow per example, a bounded window of
examples and of requests in flight, each finished example handed to the run store.

Each (example, node) becomes ready as soon as that example's own inputs to the node are computed
(the edges of the program's graph). Transforms run at once; LLM instances are rendered, looked up
in the cache, and the misses join a pool. The engine is kept fed with up to `window` requests,
taken from the pool ordered by node and then by example, so that requests sharing a prefix go in
together and the engine's prefix cache hits: one example's instances of a node differ only in
their loop item (BSM's solve calls differ only in the criterion), a perturbed copy follows its
original, and every example's prompt starts with the template's own text. (Sorting by prompt
text groups no better and costs a comparison of long shared prefixes at every heap step.)
Earlier examples go first, so they finish and leave memory sooner.

Each finished request is committed to the call cache the moment the engine hands it back, before
anything that depends on it runs: after kill -9 only requests still in flight can be repeated.
A request whose cache key is already in flight (the same prompt, model, adapter and sampling, from
another example or another instance) is not sent again: it waits for that call and is served
from it as a cache hit, which the cache would have done had the first finished sooner. So a run
pays once per distinct call, and a rerun from the cache gives every example the completion it got
(with sampling, two identical calls sent at once would return two different samples, and the cache
would keep only the last).
Examples are admitted from the input as earlier ones finish (at most `examples` at once), and a
finished example is written to the store and forgotten, so memory stays flat however long the
input is.

Failures of data (the engine could not serve a request; a template or a transform failed on this
example's values) fail that value and what depends on it; the run goes on. Anything else raised
in here is a bug and propagates.
"""
from __future__ import annotations

import gc
import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

import msgspec
import networkx as nx

from s2c.compiler import ir
from s2c.compiler.early_stop import EarlyStop, decided, key, next_wave
from s2c.compiler.failures import Failed, Skipped
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache, call_key, engine_model
from s2c.runtime.engines.base import Completion, EngineError, EngineFailure
from s2c.runtime.given import value_at
from s2c.runtime.model import adapter_identity
from s2c.runtime.plan import Plan
from s2c.runtime.prices import Prices
from s2c.runtime.store import ExampleResult
from s2c.runtime.trace import Trace
from s2c.runtime.values import ExampleValues, dump_state, find_failed, to_json

SEED_BITS = 30  # a derived seed is below 2**30: seed + sample index fits every engine's seed

GC_SECONDS = 5.0  # the cyclic GC's period during a run


@dataclass(frozen=True)
class RunOptions:
    """How a run is executed (one value, passed whole)."""

    window: int = 64  # requests in the engine at once (--chunk-size)
    examples: int = 1024  # examples in flight at once: bounds memory, not the engine's batch
    max_errors: int | None = None  # stop once more examples than this have failed
    refresh: frozenset[str] = frozenset()  # nodes whose calls are recomputed, not read from the cache
    adapter: str | None = None  # a LoRA adapter every request of this run is served with
    given: Mapping[str, str] = field(default_factory=dict)  # llm node id -> the row column its replies are read from
    prices: Prices | None = None  # USD per million tokens, per model (--prices, --price)
    max_cost: float | None = None  # USD: no call starts that could take what was paid past it (--max-cost)
    # sampled calls drawn in waves that stop once their samples' decision is made (a compile's
    # early_stop.early_stops(cp, format)): llm node id -> its EarlyStop
    early_stop: Mapping[str, EarlyStop] = field(default_factory=dict)
    # a compile's perturbed copies (tagged rows) wait for their original, and run only where this
    # says its curation reads them (curate.needs_copies); None: every row runs at once
    needs_copies: Callable[[ExampleResult], bool] | None = None


@dataclass
class NodeStats:
    engine_calls: int = 0  # requests sent to the engine
    given: int = 0  # instances whose replies were read from the data (--given), not generated
    samples: int = 0  # completions used (cached or not)
    not_drawn: int = 0  # samples an early stop left undrawn: they could not change the decision
    cache_hits: int = 0  # completions served from the cache
    prompt_tokens: int = 0
    generated_tokens: int = 0
    engine_prompt_tokens: int = 0  # prompt tokens of the calls the engine served (not the call cache)
    engine_generated_tokens: int = 0  # generated tokens of those: what this run paid for (the rest came cached)
    prefix_cached_tokens: int = 0  # of those, what the engine's prefix cache served (vLLM)
    cost: float = 0.0  # USD this run paid for the calls the engine served (with prices)
    cost_made: float = 0.0  # USD every completion used cost to make, those from the cache at today's prices
    seconds: float = 0.0
    failed: Counter = field(default_factory=Counter)  # reason -> instances that failed here
    unparsed: Counter = field(default_factory=Counter)  # reason -> instances whose parse found nothing
    retries: Counter = field(default_factory=Counter)  # reason -> retried attempts (engine-side)

    def merged(self, other: NodeStats) -> NodeStats:
        """The two counts added (one node's figures from two runs, or two shards of one)."""
        return NodeStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(NodeStats)})

    def as_dict(self, costs: bool = False) -> dict:
        """summary.json's figures for one node; `costs`: with prices, its cost too."""
        return {
            "engine_calls": self.engine_calls, "samples": self.samples, "cache_hits": self.cache_hits,
            **({"not_drawn": self.not_drawn} if self.not_drawn else {}),
            **({"given": self.given} if self.given else {}),
            "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
            "engine_generated_tokens": self.engine_generated_tokens,
            "prefix_cache": {"prompt_tokens": self.engine_prompt_tokens, "cached_tokens": self.prefix_cached_tokens,
                             "hit_rate": round(self.prefix_cached_tokens / self.engine_prompt_tokens, 3)
                             if self.engine_prompt_tokens else None},
            "seconds": round(self.seconds, 3),
            "failed": sum(self.failed.values()), "failures": dict(self.failed),
            "unparsed": sum(self.unparsed.values()), "unparsed_reasons": dict(self.unparsed),
            "retries": sum(self.retries.values()), "retry_reasons": dict(self.retries),
            **({"cost": {"paid": round(self.cost, 6), "made": round(self.cost_made, 6)}} if costs else {}),
        }


@dataclass
class RunTotals:
    """Per-example counts of a run, kept as counters (never a list of examples)."""

    examples: int = 0
    ok: int = 0
    failed: int = 0  # an output failed: the engine, a template or a transform
    unparsed: int = 0  # an output is missing because a parse found nothing
    generated_tokens: int = 0
    prompt_tokens: int = 0
    copies_skipped: int = 0  # perturbed copies not run: their original's curation does not read them


def _order(rank: int, seq: int, arrival: int) -> int:
    """The pool's order, (node rank, example, arrival), as one int: unique, so the heap never
    compares the items, and one comparison per heap step instead of up to three."""
    return rank << 80 | seq << 40 | arrival


class _Pending:
    """One LLM instance waiting for the engine; also its tag in the engine. `followers`: the
    identical instances waiting for this call (same cache key, same samples wanted). `have`: its
    samples in hand, always 0..k-1; `seed`: the seed of an unseeded sampled call (derived from the
    call); `wave`, `stop`: for a call drawn in waves (early stop), the samples asked for next and
    its Waves."""

    __slots__ = ("ex", "node", "prefix", "request", "key", "have", "trace", "followers", "worst", "seed",
                 "cached", "wave", "stop")

    def __init__(self, ex, node, prefix, request, key, have, trace, seed):
        self.ex, self.node, self.prefix, self.request = ex, node, prefix, request
        self.key, self.have, self.trace, self.seed = key, have, trace, seed
        self.cached = len(have)  # of those, served by the call cache
        self.followers: list[_Pending] = []
        self.worst = 0.0  # USD it may cost, reserved against --max-cost while it is in the engine
        self.wave = 0
        self.stop: Waves | None = None


class Waves:
    """The decision state of one call drawn in waves: each decided value's keys per drawn sample
    (early_stop.Keys), computed on a scratch copy of the example's values."""

    __slots__ = ("plan", "scratch", "keys")

    def __init__(self, plan: EarlyStop, ex: _Example):
        self.plan = plan
        self.scratch = ExampleValues.__new__(ExampleValues)
        self.scratch.plan, self.scratch.cp = ex.values.plan, ex.values.cp
        self.scratch.store = dict(ex.values.store)  # its own entries for the call and its per-sample values
        self.keys: dict[str, list] = {v: [] for v in plan.values}

    def add(self, cp: ir.CheckedProgram, texts: list[str]) -> None:
        """Extend the keys to the samples `texts` (all drawn so far)."""
        x, vals = self.plan.node, self.scratch
        vals.set(x, (), texts)
        for i in range(len(next(iter(self.keys.values()))), len(texts)):
            for m in self.plan.maps:
                node = cp.nodes[m]
                vals.set(m, (i,), vals.eval(node.expr, (i,), node.loops, m))
            for v, keys in self.keys.items():
                keys.append(key(texts[i] if v == x else vals.computed(v, (i,))))

    def decided(self, undrawn: int) -> bool:
        return decided(self.plan, self.keys, undrawn)

    def next_wave(self, undrawn: int) -> int:
        return next_wave(self.plan, self.keys, undrawn)


class _Example:
    __slots__ = ("seq", "id", "row", "tag", "values", "waiting", "pending", "done", "trace",
                 "prompt_tokens", "generated_tokens", "calls", "failed")

    def __init__(self, plan: Plan, seq: int, ex_id: str, row: dict, tag, waiting: dict[str, int]):
        self.seq, self.id, self.row, self.tag = seq, ex_id, row, tag
        self.values = ExampleValues(plan, row)
        self.waiting = dict(waiting)
        self.pending: dict[str, int] = {}
        self.done = 0
        self.trace: dict[str, dict] = {}
        self.prompt_tokens = self.generated_tokens = self.calls = 0
        self.failed: dict[str, Failed] = {}


class BudgetReached(Exception):
    """--max-cost: the next call could take what was paid past the budget, with no call left in
    flight (a call that does not fit waits for those: they cost at most what they reserved)."""

    def __init__(self, paid: float, budget: float, waiting: int):
        super().__init__(f"--max-cost {budget:g} reached: ${paid:.4f} paid; {waiting} calls not started, since each "
                         "could pass the budget; rerun with a higher --max-cost to go on (what was paid for is "
                         "cached, and no call is paid twice)")
        self.paid, self.budget = paid, budget


class TooManyErrors(Exception):
    def __init__(self, errors: int, limit: int):
        super().__init__(f"{errors} examples failed (--max-errors {limit}); stopping the run")
        self.errors, self.limit = errors, limit


def check_constraints(cp: ir.CheckedProgram, engine_name: str, supported: frozenset[str],
                      given: Mapping[str, str] = {}) -> None:
    """Refuse, before any call, a run whose constrained calls (llm(choice=|regex=|json=)) the engine
    cannot enforce: no engine runs a constrained call unconstrained. A given node makes no call."""
    for node in cp.llm_nodes():
        c = node.sampling.constraint
        if c is not None and c.kind not in supported and node.id not in given:
            where = f"{node.span}: " if node.span else ""
            able = "vllm, ray" + (", openai (a vLLM server)" if c.kind != "json" else ", openai")
            raise EngineError(f"{where}'{node.name}' is constrained ({c.kind}=), which the {engine_name} "
                              f"engine cannot enforce; use an engine that can: {able}")


class Executor:
    def __init__(self, cp: ir.CheckedProgram, engine, *, cache: CallCache | None = None,
                 options: RunOptions = RunOptions(), store=None, progress=None):
        self.cp = cp
        self.engine = engine
        self.cache = cache or CallCache(None)
        self.options = options
        self.store = store  # RunStore (or anything with .add(...)): gets each finished example
        self.progress = progress
        self.stats: dict[str, NodeStats] = defaultdict(NodeStats)
        self.totals = RunTotals()
        # an engine that does not say which constraints it enforces enforces none
        check_constraints(cp, getattr(engine, "name", "?"), getattr(engine, "constraints", frozenset()), options.given)
        self.plan = Plan(cp)  # how values are read and computed, worked out once for every example of the run
        self._schedule()

    def _schedule(self):
        """Order, dependents and in-degrees from the program's graph (inputs are given)."""
        g, cp = self.cp.graph, self.cp
        self.order = [n for n in g.nodes if cp.nodes[n].kind != "input"]
        rank = {n: i for i, n in enumerate(nx.topological_sort(g))}
        self.rank = {n: rank[n] for n in self.order}
        self.dependents = {n: [d for d in g.successors(n)] for n in self.order}
        self.waiting0 = {n: sum(cp.nodes[p].kind != "input" for p in g.predecessors(n)) for n in self.order}
        self.roots = [n for n in self.order if self.waiting0[n] == 0]
        self.models = {n.role: engine_model(self.engine, n.role) for n in cp.llm_nodes() if n.id not in self.options.given}
        self.prices = _prices_by_role({role: self.engine.model_id(role) for role in self.models}, self.options)
        route = getattr(self.engine, "route", None)  # roles on engines of their own (engines/roles.py)
        self.batch_roles = {role for role in self.models
                            if getattr(route(role)[0] if route else self.engine, "batch", False) is True}
        self.paid = 0.0  # USD the engine's calls cost this run
        self.reserved = 0.0  # the most the calls in the engine may cost
        self.budget_reached = False
        # the adapter's identity reads its weights: once per run, and only for a cache
        self.adapter_id = adapter_identity(self.options.adapter) if self.cache.db is not None else None

    # ------------------------------------------------------------ run
    def run(self, rows: Iterable[tuple]) -> RunTotals:
        """rows: (example id, row) or (example id, row, tag), already validated. Finished examples
        go to the store; the totals come back."""
        self.ready: list = []
        self.pool: list[tuple[int, _Pending]] = []  # heap on _order(node rank, example, arrival)
        self.in_flight: dict[str, _Pending] = {}  # cache key -> the call in the pool or the engine
        self.arrivals = 0
        self.active = 0
        self.parked: dict[str, list[tuple[int, tuple]]] = {}  # original in flight -> its copies, waiting
        self.copies_of: dict[str, list] = {}  # original done before all its copies came -> [needed, copies to come]
        source = iter(rows)
        seq = 0
        exhausted = False
        collecting = gc.isenabled()
        if collecting:  # the cyclic GC, run on allocation counts, cost ~40 % of the per-call CPU, and
            gc.freeze()  # an example's objects form no cycles: they go when it is written out. So
            gc.disable()  # the long-lived objects are set aside and the GC runs on a clock
            last_gc = time.monotonic()  # instead, for any cycles that others (an engine) make
        try:
            while True:
                while not exhausted and self.active < self.options.examples and not self.budget_reached:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    self._admit(seq, item)
                    seq += 1
                while self.ready:
                    ex, nid = self.ready.pop()
                    self._start(ex, self.cp.nodes[nid])
                self._feed()
                if self.engine.pending():
                    self._collect()
                    if collecting and time.monotonic() - last_gc > GC_SECONDS:
                        gc.collect()
                        last_gc = time.monotonic()
                elif self.budget_reached:  # everything in flight is back and cached
                    raise BudgetReached(self.paid, self.options.max_cost, len(self.pool))
                elif self.active == 0 and exhausted:
                    break
                elif self.active >= self.options.examples or exhausted:
                    raise RuntimeError(f"executor stalled: {self.active} examples active, nothing to run")
        finally:
            if collecting:
                gc.unfreeze()
                gc.enable()
        return self.totals

    def _admit(self, seq: int, item: tuple):
        """Start an example; with needs_copies, a perturbed copy waits for its original's verdict."""
        if self.options.needs_copies is not None:
            if len(item) < 3 or item[2] is None:
                self.parked[item[0]] = []
            else:
                source = item[2]["source"]
                if source in self.parked:
                    self.parked[source].append((seq, item))
                    return
                known = self.copies_of.get(source)
                if known is not None:
                    known[1] -= 1
                    if not known[1]:
                        del self.copies_of[source]
                    if not known[0]:
                        self.totals.copies_skipped += 1
                        return
        self._enter(seq, item)

    def _copies(self, ex: _Example, result: ExampleResult) -> None:
        """An original is done: run its waiting copies if its curation reads them, else drop them."""
        copies = self.parked.pop(ex.id, None)
        if copies is None:  # (a duplicate id: the store keeps the first)
            return
        needed = self.options.needs_copies(result)
        left = len(self.cp.perturbations) - len(copies)
        if left > 0:
            self.copies_of[ex.id] = [needed, left]
        for seq, item in copies:
            if needed:
                self._enter(seq, item)
            else:
                self.totals.copies_skipped += 1

    def _enter(self, seq: int, item: tuple):
        ex_id, row = item[0], item[1]
        ex = _Example(self.plan, seq, ex_id, row, item[2] if len(item) > 2 else None, self.waiting0)
        self.active += 1
        if not self.order:
            self._finish(ex)
        for nid in self.roots:
            self.ready.append((ex, nid))

    def _feed(self):
        """Keep the engine's window full, earliest node and shared prefixes first."""
        room = (getattr(self.engine, "window", None) or self.options.window) - self.engine.pending()
        while room > 0 and self.pool and not self.budget_reached:
            it = self.pool[0][1]
            req = _engine_request(it)
            if self.options.max_cost is not None:
                it.worst = self.prices[it.node.role].worst(_chars(req), req.sampling.max_tokens * req.sampling.n)
                if self.paid + self.reserved + it.worst > self.options.max_cost:
                    if not self.engine.pending():  # it does not fit with nothing in flight: the budget is spent
                        self.budget_reached = True  # no new call, and no new example
                    break  # else wait: the calls in flight cost at most what they reserved
                self.reserved += it.worst
            heapq.heappop(self.pool)
            self.engine.submit(it, req)
            room -= 1

    def _collect(self):
        t0 = time.perf_counter()
        finished = self.engine.collect()
        dt = round((time.perf_counter() - t0) / max(1, len(finished)), 4)
        puts = []
        answered = []  # the calls that are over (a wave that must be followed by another is not)
        for it, res, retries in finished:
            node = it.node
            self.reserved -= it.worst
            st = self.stats[node.id]
            st.engine_calls += 1
            st.seconds += dt
            for reason in retries:
                st.retries[reason] += 1
            it.ex.calls += 1
            it.trace["seconds"] = dt
            failure = None
            again = False
            if isinstance(res, EngineFailure):
                failure = f"engine: {res.reason}"
                tokens = 0
            else:
                n, have = node.sampling.n, it.have
                first = len(have)
                asked = it.wave or n - first
                for i, c in zip(range(first, first + asked), res):
                    have[i] = c
                    if it.key is not None:
                        puts.append((it.key, i, c, self.models[node.role]))
                if len(res) < asked:
                    failure = f"engine returned {len(res)} of {asked} samples"
                elif it.stop is not None and len(have) < n:
                    again = self._wave(it)
                else:
                    self._complete(it.ex, node, it.prefix, res if first == 0 and len(res) == n else [have[i] for i in range(n)],
                                   it.trace, cached=it.cached)
                tokens = sum(c.completion_tokens for c in res)
                st.engine_generated_tokens += tokens
                price = self.prices.get(node.role)
                if price is not None and res:
                    paid = price.cost(res[0].prompt_tokens, res[0].cached_tokens, tokens,
                                      batch=node.role in self.batch_roles)
                    st.cost += paid
                    self.paid += paid
                if res:
                    st.engine_prompt_tokens += res[0].prompt_tokens  # read once per call
                    st.prefix_cached_tokens += res[0].cached_tokens
            if failure is not None:
                self._fail_instance(it.ex, node, it.prefix, it.trace, Failed(failure, node.id))
            if self.progress:
                self.progress.advance(node.id, tokens)
            if again:
                continue
            answered.append(it)
            for f in it.followers:
                self._follow(f, it, failure)
            if it.key is not None and self.in_flight.get(it.key) is it:
                del self.in_flight[it.key]
        self.cache.put_many(puts)  # committed before anything downstream runs
        for it in answered:
            for f in (it, *it.followers):
                pending = f.ex.pending
                pending[f.node.id] -= 1
                if pending[f.node.id] == 0:
                    self._done(f.ex, f.node)

    def _wave(self, it: _Pending) -> bool:
        """After a wave of an early-stop call: finish it if its decision is made, else queue the
        next wave (True)."""
        n, have = it.node.sampling.n, it.have
        it.stop.add(self.cp, [have[i].text for i in range(len(have))])
        undrawn = n - len(have)
        if it.stop.decided(undrawn):
            self._complete(it.ex, it.node, it.prefix, [have[i] for i in range(len(have))], it.trace,
                           cached=it.cached, undrawn=undrawn)
            return False
        it.wave = it.stop.next_wave(undrawn)
        self._queue(it)
        if self.progress:
            self.progress.add_total(it.node.id, 1)
        return True

    def _queue(self, it: _Pending) -> None:
        self.arrivals += 1
        heapq.heappush(self.pool, (_order(self.rank[it.node.id], it.ex.seq, self.arrivals), it))

    def _follow(self, f: _Pending, it: _Pending, failure: str | None):
        """Serve an identical instance from the call it waited for, as the cache would have; or
        fail it as that call failed."""
        if failure is not None:
            self._fail_instance(f.ex, f.node, f.prefix, f.trace, Failed(failure, f.node.id))
        else:
            n = f.node.sampling.n
            self._complete(f.ex, f.node, f.prefix, [it.have[i] for i in range(n)], f.trace, cached=n)
        if self.progress:
            self.progress.advance(f.node.id, 0)

    # ------------------------------------------------------------ nodes
    def _start(self, ex: _Example, node: ir.Node):
        instances = ex.values.instances(node)
        tr = ex.trace[node.id] = {"kind": node.kind, "instances": []}
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
                    self._fail(ex, node, v)
                if not node.internal or node.carried:
                    tr["instances"].append({"index": list(p), "value": to_json(v)})
            self.stats[node.id].seconds += time.perf_counter() - t0
            self._done(ex, node)
            return
        column = self.options.given.get(node.id)
        if column is not None:
            self._give(ex, node, instances, column, tr)
            return
        waiting = 0
        for p in instances:
            item = self._request(ex, node, p, tr)
            if item is None:
                continue
            waiting += 1
            shared = item.key is not None and item.stop is None  # an early-stop call's waves are its own
            lead = self.in_flight.get(item.key) if shared else None
            if lead is not None and lead.node.sampling.n == node.sampling.n and len(lead.have) == len(item.have):
                lead.followers.append(item)  # the same call is on its way: wait for it
                continue
            if shared and lead is None:
                self.in_flight[item.key] = item
            self._queue(item)
        if waiting:
            ex.pending[node.id] = waiting
            if self.progress:
                self.progress.add_total(node.id, waiting)
        else:
            self._done(ex, node)

    def _give(self, ex: _Example, node: ir.Node, instances: list[tuple], column: str, tr: dict):
        """Read a given node's replies from the row (their shape was checked with the row)."""
        tr["given"] = column
        st = self.stats[node.id]
        for p in instances:
            loops = [(self.cp.loops[lid].var, len(ex.values.loop_items(self.cp.loops[lid], p[:d], node.id)))
                     for d, lid in enumerate(node.loops)]
            v = value_at(node, column, ex.row[column], p, loops)
            inst = {"index": list(p), "given": column}
            tr["instances"].append(inst)
            if isinstance(v, Failed):
                self._fail_instance(ex, node, p, inst, v)
                continue
            ex.values.set(node.id, p, v)
            inst["completions"] = [v] if isinstance(v, str) else list(v)
            st.given += 1
            st.samples += len(inst["completions"])
        self._done(ex, node)

    def _request(self, ex: _Example, node: ir.Node, p: tuple, tr: dict) -> _Pending | None:
        """Render one LLM instance; serve it from the cache if every sample is there."""
        inst = {"index": list(p)}
        tr["instances"].append(inst)
        req = ex.values.request(node, p, self.options.adapter)
        if isinstance(req, Failed):
            return self._fail_instance(ex, node, p, inst, req)
        payload = req.payload()
        inst.update(payload)
        s = node.sampling
        n = s.n
        key = None
        have: dict[int, Completion] = {}
        if self.cache.db is not None:
            key = call_key(self.models[node.role], req, self.adapter_id)
            if node.id not in self.options.refresh:
                have = self.cache.get(key, n)
            if len(have) == n:
                self._complete(ex, node, p, [have[i] for i in range(n)], inst, cached=n)
                return None
            if have and max(have) >= len(have):  # the cache holds some later samples: use its first run of them
                have = {i: have[i] for i in range(min(set(range(n)) - set(have)))}
        seed = None
        if s.temperature > 0 and s.seed is None:  # unseeded sampling: seeded from the call itself
            seed = _derived_seed(key if key is not None and self.adapter_id is None
                                 else call_key(self.models[node.role], req, None))
        it = _Pending(ex, node, p, req, key, have, inst, seed)
        # a batch API answers a wave in minutes to hours: there a call is drawn whole, in one batch
        plan = self.options.early_stop.get(node.id) if node.role not in self.batch_roles else None
        if plan is not None:
            it.stop = Waves(plan, ex)
            if have:  # samples from the cache may decide already
                it.stop.add(self.cp, [have[i].text for i in range(len(have))])
                if it.stop.decided(n - len(have)):
                    self._complete(ex, node, p, [have[i] for i in range(len(have))], inst, cached=len(have),
                                   undrawn=n - len(have))
                    return None
            it.wave = it.stop.next_wave(n - len(have))
        return it

    def _fail_instance(self, ex, node, p, inst, v: Failed):
        ex.values.set(node.id, p, v)
        inst["skipped" if isinstance(v, Skipped) else "error"] = v.reason
        self._fail(ex, node, v)
        return None

    def _complete(self, ex: _Example, node: ir.Node, p: tuple, comps: list[Completion], inst: dict, cached: int,
                  undrawn: int = 0):
        """`undrawn`: samples an early stop did not draw; they read as Skipped."""
        st = self.stats[node.id]
        st.samples += len(comps)
        st.cache_hits += cached
        pt = comps[0].prompt_tokens if comps else 0  # the prompt is read once per call
        gt = sum(c.completion_tokens for c in comps)
        st.prompt_tokens += pt
        st.generated_tokens += gt
        price = self.prices.get(node.role)
        if price is not None:
            st.cost_made += price.cost(pt, 0, gt, batch=node.role in self.batch_roles)
        ex.prompt_tokens += pt
        ex.generated_tokens += gt
        texts = [c.text for c in comps]
        inst.update(completions=texts, prompt_tokens=pt, generated_tokens=gt, cached=cached,
                    finish_reasons=[c.finish_reason for c in comps])
        if node.sampling.n > 1:  # what each sample cost (bench/early_stop.py's oracle reads it)
            inst["sample_tokens"] = [c.completion_tokens for c in comps]
        if undrawn:
            why = f"not drawn: the decision was made by the first {len(comps)} of {len(comps) + undrawn} samples"
            texts = texts + [Skipped(why, node.id)] * undrawn
            inst["not_drawn"] = undrawn
            st.not_drawn += undrawn
        ex.values.set(node.id, p, texts if node.sampling.n > 1 else texts[0])

    def _fail(self, ex: _Example, node: ir.Node, v: Failed):
        if isinstance(v, Skipped):  # a scan iteration past its list's end: not a failure
            return
        if v.node == node.id:  # count a failure where it happened, not where it propagated
            (self.stats[node.id].unparsed if v.unparsed else self.stats[node.id].failed)[v.reason] += 1
        ex.failed.setdefault(node.id, v)

    def _done(self, ex: _Example, node: ir.Node):
        ex.done += 1
        for d in self.dependents[node.id]:
            ex.waiting[d] -= 1
            if ex.waiting[d] == 0:
                self.ready.append((ex, d))
        if ex.done == len(self.order):
            self._finish(ex)

    def _finish(self, ex: _Example):
        cp = self.cp
        outputs = {name: ex.values.lookup(ref, (), ()) for name, ref in cp.outputs.items()}
        bad = [f for f in map(find_failed, outputs.values()) if f is not None]
        status = "ok" if not bad else "unparsed" if all(f.unparsed for f in bad) else "failed"
        t = self.totals
        t.examples += 1
        t.generated_tokens += ex.generated_tokens
        t.prompt_tokens += ex.prompt_tokens
        if status == "ok":
            t.ok += 1
        elif status == "unparsed":
            t.unparsed += 1
        else:
            t.failed += 1
        self.active -= 1
        original = self.options.needs_copies is not None and ex.tag is None
        if self.store is not None or original:
            record = Trace(
                example_id=ex.id, status=status,
                inputs={p.name: ex.row.get(p.name) for p in cp.inputs},
                gold={g: ex.row.get(g) for g in cp.golds},
                outputs=to_json(outputs), failed={k: v.reason for k, v in ex.failed.items()},
                failed_at=bad[0].node if bad else None,  # where the outputs' failure began
                nodes=ex.trace, prompt_tokens=ex.prompt_tokens, generated_tokens=ex.generated_tokens,
                engine_calls=ex.calls,
            )
            source, variant = (ex.tag["source"], ex.tag["variant"]) if ex.tag else (ex.id, "")
            if self.store is not None:
                self.store.add(ex.seq, ex.id, source, variant, status, record, dump_state(ex.values), ex.tag)
            if original:
                self._copies(ex, ExampleResult(ex.id, ex.id, "", status, record, ex.values))
        if self.options.max_errors is not None and t.failed > self.options.max_errors:
            raise TooManyErrors(t.failed, self.options.max_errors)


def _chars(request) -> int:
    """A request's prompt in characters (what a budget's worst case counts)."""
    if request.messages is not None:
        return sum(len(m.content) for m in request.messages)
    return len(request.prompt or "")


def _prices_by_role(models: dict[str, str], options: RunOptions) -> dict:
    """Each role's Price; with --max-cost every role must have one (a budget cannot count a call
    whose cost it does not know)."""
    if options.prices is None:
        if options.max_cost is not None:
            raise S2Error("--max-cost needs the price of every model: give --prices FILE or --price MODEL=...",
                          hint="e.g. --price gpt-4o-mini=input:0.15,output:0.6 (USD per million tokens)")
        return {}
    out = {role: options.prices.for_model(model) for role, model in models.items()}
    if options.max_cost is not None:
        unpriced = sorted({models[r] for r, p in out.items() if p is None})
        if unpriced:
            raise S2Error(f"--max-cost needs the price of every model; none is given for {', '.join(unpriced)}",
                          hint=f"add --price {unpriced[0].split('@')[0]}=input:USD,output:USD (per million tokens)")
    return {r: p for r, p in out.items() if p is not None}


def _engine_request(it: _Pending):
    """What the engine is asked for: the samples not in hand (all but the cache's, or the next
    wave), from the first missing index on, with the call's derived seed where it has none."""
    s = it.request.sampling
    first = len(it.have)
    size = it.wave or s.n - first
    if first == 0 and size == s.n and it.seed is None:
        return it.request
    return msgspec.structs.replace(it.request, first=first, sampling=replace(
        s, n=size, seed=s.seed if it.seed is None else it.seed))


def _derived_seed(key: str) -> int:
    """An unseeded sampled call's seed, from its cache key: a function of the call alone, so that
    its sample i is the same in every run and however its samples are drawn (waves, the rest of a
    cached call)."""
    return int(key[:16], 16) >> (64 - SEED_BITS)
