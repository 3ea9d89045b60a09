"""A run's summary as a struct: the counts the executor kept, per node and in all, what ran it,
and how long. `to_json` is summary.json (schema 2, docs/reliability.md); `merge` adds two runs'
summaries (the shards of a sharded run), so nothing re-sums a dict by its keys.

    >>> s = RunSummary.merge_all([a, b])          # doctest: +SKIP
    >>> s.examples == a.examples + b.examples     # doctest: +SKIP
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from s2c.runtime.executor import NodeStats

SCHEMA = 2


@dataclass
class RunSummary:
    """What a run did (summary.json): built once by Runner.execute, merged across shards."""

    program: str
    program_file: str
    engine: str
    models: dict[str, str]  # role -> the model's identity (its cache key part)
    adapter: str | None
    examples: int = 0
    ok: int = 0
    failed: int = 0
    unparsed: int = 0
    rows_skipped: int = 0
    copies_skipped: int = 0  # a compile's perturbed copies not run: their original's curation does not read them
    wall_seconds: float = 0.0
    engine_startup_seconds: float = 0.0  # a lazily started engine's start-up, charged to no node
    engine_spread: dict | None = None  # requests per server or replica (openai, ray)
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    stopped: str | None = None  # why --max-errors or an interrupt stopped the run
    meta: dict[str, Any] = field(default_factory=dict)  # data, split, run_id, system: top-level keys of summary.json
    shards: list[dict] | None = None  # a sharded run: each shard's own figures
    prices: dict | None = None  # the prices the run was given (prices.Prices.as_dict()): then it has costs

    # the run's totals, from its nodes
    def _total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.nodes.values())

    @property
    def engine_calls(self) -> int:
        return self._total("engine_calls")

    @property
    def cache_hits(self) -> int:
        return self._total("cache_hits")

    @property
    def samples(self) -> int:
        return self._total("samples")

    @property
    def prompt_tokens(self) -> int:
        return self._total("prompt_tokens")

    @property
    def generated_tokens(self) -> int:
        return self._total("generated_tokens")

    @property
    def engine_generated_tokens(self) -> int:
        """Generated tokens of the calls the engine served in this run; the rest of
        `generated_tokens` came from the call cache, paid for when those calls were made."""
        return self._total("engine_generated_tokens")

    @property
    def cost(self) -> float:
        """USD this run paid for the calls the engine served (0 without prices)."""
        return sum(s.cost for s in self.nodes.values())

    @property
    def cost_made(self) -> float:
        """USD every completion the run used cost to make: the cache's at the run's prices."""
        return sum(s.cost_made for s in self.nodes.values())

    @property
    def retries(self) -> int:
        return sum(sum(s.retries.values()) for s in self.nodes.values())

    @property
    def rows_given(self) -> int:
        return self.examples + self.rows_skipped

    @property
    def generated_tokens_per_example(self) -> float:
        return round(self.generated_tokens / max(1, self.examples), 2)

    @property
    def calls_per_example(self) -> float:
        return round(self.samples / max(1, self.examples), 2)

    @property
    def generated_tokens_per_second(self) -> float:
        return round(self.generated_tokens / self.wall_seconds, 1) if self.wall_seconds > 0 else 0.0

    def merge(self, other: RunSummary) -> RunSummary:
        """Two runs of one program as one (the shards of a sharded run): counts summed, also per
        node and per reason; the longer engine start-up kept (shards start theirs at once);
        what ran them taken from the first."""
        nodes = {nid: s.merged(other.nodes[nid]) if nid in other.nodes else s for nid, s in self.nodes.items()}
        nodes.update({nid: s for nid, s in other.nodes.items() if nid not in self.nodes})
        return replace(self, examples=self.examples + other.examples, ok=self.ok + other.ok,
                       failed=self.failed + other.failed, unparsed=self.unparsed + other.unparsed,
                       rows_skipped=self.rows_skipped + other.rows_skipped,
                       copies_skipped=self.copies_skipped + other.copies_skipped,
                       wall_seconds=max(self.wall_seconds, other.wall_seconds),  # the parts run at once
                       engine_startup_seconds=max(self.engine_startup_seconds, other.engine_startup_seconds),
                       nodes=nodes, stopped=self.stopped or other.stopped)

    @classmethod
    def merge_all(cls, parts: list[RunSummary]) -> RunSummary:
        merged = parts[0]
        for p in parts[1:]:
            merged = merged.merge(p)
        return merged

    def to_json(self) -> dict:
        """summary.json, in its key order."""
        out = {
            "schema": SCHEMA,
            "program": self.program,
            "program_file": self.program_file,
            "engine": self.engine,
            "models": self.models,
            "adapter": self.adapter,
            "examples": self.examples,
            "ok": self.ok,
            "failed": self.failed,
            "unparsed": self.unparsed,
            "rows_given": self.rows_given,
            "rows_skipped": self.rows_skipped,
            **({"copies_not_run": self.copies_skipped} if self.copies_skipped else {}),
            "engine_calls": self.engine_calls,
            "cache_hits": self.cache_hits,
            "samples": self.samples,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "generated_tokens_per_example": self.generated_tokens_per_example,
            "calls_per_example": self.calls_per_example,
            "wall_seconds": round(self.wall_seconds, 2),
            "engine_startup_seconds": round(self.engine_startup_seconds, 2),
            "generated_tokens_per_second": self.generated_tokens_per_second,
            "engine_spread": self.engine_spread,
            **({"prices": self.prices, "cost": {"paid": round(self.cost, 6), "made": round(self.cost_made, 6),
                                                "made_per_example": round(self.cost_made / max(1, self.examples), 6)}}
               if self.prices is not None else {}),
            "nodes": {nid: s.as_dict(costs=self.prices is not None) for nid, s in self.nodes.items()},
            "failures": self.reasons("failed"),
            "unparsed_reasons": self.reasons("unparsed"),
            "retry_reasons": self.reasons("retries"),
            "stopped": self.stopped,
            **self.meta,
        }
        if self.shards is not None:
            out["shards"] = self.shards
        return out

    def reasons(self, kind: str) -> dict[str, dict[str, int]]:
        """Per node, how many instances `kind` (failed, unparsed, retries) befell, by reason."""
        return {nid: dict(getattr(s, kind)) for nid, s in self.nodes.items() if getattr(s, kind)}
