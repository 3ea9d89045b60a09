"""What a run will make and cost, before any call (`s2c estimate`).

For each llm node of the program and each of the first rows of the data, the node's prompts are
rendered from the row, as the run will render them, and their tokens counted:

- **Calls** per input: one per instance, the fan-out over a list the row holds counted from the row,
  a list the run makes (an llm's lines, a sampled call) at its static bound (or 5, as `s2c graph`
  assumes); samples count as calls, as `s2c graph` counts them. Compile also runs the perturbed
  copies the keep rules compare with (BSM's swap): `copies` is 2 there.
- **Prompt tokens**: what the rendered prompts hold. A value the run makes before the call (an
  earlier call's reply, what a transform makes of it) is not known yet and renders empty, so this
  counts the prompts' own text and the data's; `quoted_max` is how much more the earlier replies
  those prompts quote could add at most (their max_tokens). A pilot (api.estimate(pilot=N)) runs
  the first rows for real and scales each node by what they made, which is the only way to know
  a fan-out over a list the model writes. Tokens are counted by the model's own
  tokenizer where one is known (`tokenizer` names it: a vLLM server's /tokenize, a local model's
  tokenizer with its chat template), else approximated at 4 characters a token, and `tokenizer`
  says "approximation: 4 characters a token".
- **Generated tokens**: the worst case, max_tokens for every sample of every call.
- **Cost**, with prices: the prompt tokens at the input price plus the worst-case generated tokens
  at the output price: what the run costs at most, bar the quoted replies.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from s2c.calls import Message
from s2c.compiler import ir
from s2c.compiler.graph import list_bound
from s2c.compiler.system1 import render_request
from s2c.runtime.engines.base import Request
from s2c.runtime.prices import Prices

ASSUMED = 5  # the length of a list the run makes, where it has no static bound (as s2c graph assumes)
CHARS_PER_TOKEN = 4
APPROXIMATION = f"approximation: {CHARS_PER_TOKEN} characters a token"

Counter = Callable[[Request], int]


@dataclass
class NodeEstimate:
    node: str
    calls: float = 0.0  # per input, samples counted
    prompt_tokens: float = 0.0  # per input, from the rendered prompts
    quoted_max: float = 0.0  # per input: the most the earlier replies a prompt quotes could add
    max_generated: float = 0.0  # per input: max_tokens for every sample


@dataclass
class RunEstimate:
    program: str
    rows: int  # rows the estimate is for
    sampled: int  # rows whose prompts were rendered
    copies: int  # 1, or 1 + the perturbed copies compile runs
    tokenizer: str
    nodes: list[NodeEstimate] = field(default_factory=list)
    prices: dict[str, object] = field(default_factory=dict)  # role's node -> Price (for the cost)
    pilot: int = 0  # rows run for real to scale the estimate (api.estimate(pilot=N)); 0: no call made

    def total(self, name: str) -> float:
        """A node figure summed over the nodes, for every row and copy."""
        return sum(getattr(n, name) for n in self.nodes) * self.rows * self.copies

    def cost(self) -> float | None:
        """The most the run costs at the prices (None: not every node's model has one)."""
        if not self.nodes or any(self.prices.get(n.node) is None for n in self.nodes):
            return None
        per_input = sum(self.prices[n.node].cost(round(n.prompt_tokens), 0, round(n.max_generated)) for n in self.nodes)
        return per_input * self.rows * self.copies

    def as_dict(self) -> dict:
        cost = self.cost()
        return {"program": self.program, "rows": self.rows, "sampled_rows": self.sampled, "copies": self.copies,
                "tokenizer": self.tokenizer, "pilot_rows": self.pilot,
                "calls": round(self.total("calls")), "prompt_tokens": round(self.total("prompt_tokens")),
                "quoted_max": round(self.total("quoted_max")), "max_generated_tokens": round(self.total("max_generated")),
                "cost_at_most": None if cost is None else round(cost, 6),
                "nodes": {n.node: {"calls_per_input": round(n.calls, 3), "prompt_tokens_per_input": round(n.prompt_tokens, 1),
                                   "quoted_max_per_input": round(n.quoted_max, 1),
                                   "max_generated_per_input": round(n.max_generated, 1)} for n in self.nodes}}


def estimate_run(cp: ir.CheckedProgram, rows: Sequence[tuple[str, dict]], total_rows: int, *, count: Counter | None,
                 tokenizer: str, compile: bool, prices: Prices | None = None,
                 models: dict[str, str] | None = None) -> RunEstimate:
    """The estimate over `rows` (the sample), scaled to `total_rows`. `count` counts a request's
    prompt tokens (None: the approximation); `models` (role -> model identity) picks the prices."""
    count = count or approximate
    est = RunEstimate(cp.name, total_rows, len(rows), 1 + (len(cp.perturbations) if compile else 0),
                      tokenizer if count is not approximate else APPROXIMATION)
    for node in cp.llm_nodes():
        ne = NodeEstimate(node.id)
        for _, row in rows:
            history = _history(cp, node, row)
            for variables, times in _instances(cp, node, row):
                request = render_request(node, variables, history=history)
                ne.prompt_tokens += count(request) * times
                ne.calls += node.sampling.n * times
                ne.max_generated += node.sampling.n * node.sampling.max_tokens * times
                ne.quoted_max += _quoted_max(cp, node) * times
        k = max(1, len(rows))
        ne.calls, ne.prompt_tokens, ne.quoted_max, ne.max_generated = (
            ne.calls / k, ne.prompt_tokens / k, ne.quoted_max / k, ne.max_generated / k)
        est.nodes.append(ne)
        if prices is not None and models is not None:
            est.prices[node.id] = prices.for_model(models.get(node.role, models.get("default", "")))
    return est


def approximate(request: Request) -> int:
    text = request.prompt if request.messages is None else "".join(m.content for m in request.messages)
    return math.ceil(len(text or "") / CHARS_PER_TOKEN)


def _instances(cp: ir.CheckedProgram, node: ir.Node, row: dict) -> list[tuple[dict, int]]:
    """The node's prompt variables per distinct instance for this row, and how many instances
    render that way: a loop over a list the row holds gives one per item; any other loop renders
    once, times its bound."""
    variants: list[tuple[dict, int]] = [({}, 1)]
    for lid in node.loops:
        loop = cp.loops[lid]
        items = _row_list(cp, loop.iterable, row)
        if items is not None:
            variants = [({**v, lid: item}, t) for v, t in variants for item in items]
        else:
            bound = list_bound(cp, None, loop.iterable)
            variants = [({**v, lid: ""}, t * (bound if bound is not None else ASSUMED)) for v, t in variants]
    return [({name: _value(cp, ref, row, items) for name, ref in node.vars.items()}, t) for items, t in variants]


def _history(cp: ir.CheckedProgram, node: ir.Node, row: dict) -> tuple[Message, ...]:
    """The conversation a continue= call extends, as the estimate renders it: the earlier calls'
    messages, with their replies empty (not known before any call)."""
    if node.continues is None:
        return ()
    earlier = cp.nodes[node.continues]
    variables, _ = _instances(cp, earlier, row)[0]
    request = render_request(earlier, variables, history=_history(cp, earlier, row))
    if request.messages is None:
        return ()
    return (*request.messages, Message("assistant", ""))


def _row_list(cp: ir.CheckedProgram, ref: ir.Ref, row: dict) -> list | None:
    """The list a loop goes over when the row holds it (an input, not a value the run makes)."""
    if isinstance(ref, ir.NodeRef) and cp.nodes[ref.node].kind == "input":
        value = row.get(cp.nodes[ref.node].name)
        return value if isinstance(value, list) else None
    return None


def _value(cp: ir.CheckedProgram, ref: ir.Ref, row: dict, items: dict):
    """A prompt variable's value for the estimate: the row's where it is an input (or an item of
    a list the row holds), else empty (the run makes it: unknown before any call)."""
    if isinstance(ref, ir.ItemRef):
        return items.get(ref.loop, "")
    node = cp.nodes[ref.node]
    if node.kind == "input":
        return row.get(node.name, "")
    return [] if node.type.depth > 0 else ""


def _quoted_max(cp: ir.CheckedProgram, node: ir.Node) -> int:
    """The most the earlier replies this prompt quotes could add: their max_tokens (all samples),
    through the values made of them."""
    seen: set[str] = set()
    todo = [r.node if isinstance(r, ir.NodeRef) else cp.loops[r.loop].iterable for r in node.vars.values()]
    todo = [t.node if isinstance(t, ir.NodeRef) else t for t in todo if not isinstance(t, ir.ItemRef)]
    total = 0
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        other = cp.nodes[nid]
        if other.kind == "llm":  # every instance this prompt collects (those outside its own loops)
            times = 1
            for lid in other.loops:
                if lid not in node.loops:
                    bound = list_bound(cp, None, cp.loops[lid].iterable)
                    times *= bound if bound is not None else ASSUMED
            total += other.sampling.max_tokens * other.sampling.n * times
        elif other.kind == "transform":
            todo.extend(other.deps)
    return total
