"""The option and rule tables the checker reads names and kinds from: llm options, keep rules, formats, metrics.

What each rule, format and metric does lives above, in the runtime, distill and evaluate.
"""
from __future__ import annotations

from typing import Any

from s2c.compiler.types import Param

P = Param

# Options an llm(...) call takes: name -> (kind, default).
LLM_OPTIONS: dict[str, tuple[str, Any]] = {
    "temperature": ("number", 0.0),
    "top_p": ("number", 1.0),
    "max_tokens": ("number", 256),
    "stop": ("list", []),
    "seed": ("number", None),
    "n": ("number", 1),
    "mode": ("literal", "chat"),  # chat | completion
    "role": ("literal", "default"),  # the model role, bound at run time with --role NAME=MODEL
    "system": ("text", None),  # a jinja template too
    "template": ("literal", None),  # a template file next to the program, instead of an inline prompt
    "continue": ("literal", None),  # an earlier chat call whose conversation (its messages and reply) this one continues
    # constrained decoding (at most one): the engine only lets the model write a reply in the language
    "choice": ("list", None),  # one of these texts
    "regex": ("literal", None),  # a full match of this regular expression
    "json": ("any", None),  # a JSON object with these typed fields: json={"answer": "text", "score": "number"}
}

# The field types a json= constraint declares, as JSON Schema types and as the checker's types.
JSON_FIELD_TYPES: dict[str, dict] = {
    "text": {"type": "string"},
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "list[text]": {"type": "array", "items": {"type": "string"}},
    "list[number]": {"type": "array", "items": {"type": "number"}},
}

# The numeric llm options' ranges: name -> (lowest, highest, whole number only). Past them a value is a
# typo, or one an engine would refuse after the run has started.
LLM_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0, 2, False),  # what OpenAI-compatible servers accept
    "top_p": (0, 1, False),  # a probability mass (0 itself is refused: more than 0)
    "max_tokens": (1, 1_000_000, True),  # more than any model's context
    "n": (1, 1_000, True),  # samples per call; each is a request
    "seed": (0, 2**32 - 1, True),  # what every engine's generator takes
}

# Curation rules in `distill: keep RULE(...)`.
KEEP_RULES: dict[str, tuple[Param, ...]] = {
    "majority": (P("samples", "list"), P("min_share", "number", 0.5)),
    "consistent": (P("answer", "any"), P("swap", "list", None), P("map", "any", None), P("shuffle", "literal", None)),
    "matches": (P("answer", "any"), P("gold", "any")),
}

# Options of `task NAME(...)` in distill.
TASK_OPTIONS: dict[str, tuple[str, Any]] = {
    "target": ("any", ...),
    "rationale": ("any", None),  # the reasoning behind target: the `cot` format trains on rationale + target
    "weight": ("number", 1.0),
    "system": ("text", None),
    "template": ("literal", None),
    "after": ("literal", None),  # earlier task(s) whose output the prompt reads (a cascade)
}

DISTILL_FORMATS = ("system1", "label", "cot", "multitask", "cascade")

# Metrics in `eval: metric NAME(prediction, gold)`.
METRICS: dict[str, tuple[Param, ...]] = {
    "exact_match": (P("answer", "any"), P("gold", "any")),
    "normalized_match": (P("answer", "any"), P("gold", "any")),
    "choice_accuracy": (P("answer", "any"), P("gold", "any")),
    "agreement": (P("answer", "any"), P("gold", "any")),
    # % of examples whose answer changes when two inputs are swapped (position bias)
    "swap_inconsistency": (P("answer", "any"), P("swap", "list"), P("map", "any", None)),
}
