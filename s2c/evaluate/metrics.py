"""Task metrics for `s2c eval`: one prediction (or Failed) and one gold value per example."""
from __future__ import annotations

import re

from s2c.compiler.functions import Failed
from s2c.distill.curate import normalize


def _choice(x) -> str:
    s = str(x).strip()
    m = re.search(r"\[\[([A-Za-z])\]\]|^\(?([A-Za-z])\)?[.:]?$", s)
    return (m.group(1) or m.group(2)).upper() if m else normalize(s)


SCORERS = {
    "exact_match": lambda a, g: str(a).strip() == str(g).strip(),
    "normalized_match": lambda a, g: normalize(a) == normalize(g),
    "choice_accuracy": lambda a, g: _choice(a) == _choice(g),
    "agreement": lambda a, g: _choice(a) == _choice(g),  # agreement with human labels (ties count)
}


def score(metric: str, preds: list, golds: list) -> float | None:
    """Mean over examples with a gold value; an unparseable prediction counts as wrong."""
    pairs = [(p, g) for p, g in zip(preds, golds) if g not in (None, "")]
    if not pairs:
        return None
    f = SCORERS[metric]
    return sum(0 if isinstance(p, Failed) or p is None else bool(f(p, g)) for p, g in pairs) / len(pairs)


def inconsistency(original: list, swapped_mapped: list) -> float | None:
    """Share of examples whose answer changes when the compared inputs are swapped (position bias).
    An answer that cannot be read on either side counts as inconsistent."""
    if not original:
        return None
    bad = sum(isinstance(a, Failed) or isinstance(b, Failed) or a is None or b is None or normalize(a) != normalize(b)
              for a, b in zip(original, swapped_mapped))
    return bad / len(original)
