"""What "equal" means, shared by the library (vote, lookup), distill's keep rules and evaluate's metrics."""
from __future__ import annotations

import json
import re

_NUMERIC = re.compile(r"[$€£]?\s*(-?[\d,]*\.?\d+)\s*%?\.?")


def normalize(x) -> str:
    """What "equal" means everywhere: vote, keep majority/matches/consistent, and the metrics.

    Case, punctuation and runs of whitespace are folded, and numbers compare by value:
    "1,000" == "1000" == "1000.0" == "$1,000", "Yes." == "yes", "[[A]]" == "a".
    Non-text values (numbers, lists, JSON) compare by their JSON text after the same folding.
    """
    if isinstance(x, bool) or not isinstance(x, (str, int, float)):
        x = json.dumps(x, sort_keys=True, ensure_ascii=False)
    elif isinstance(x, float) and x.is_integer():
        x = int(x)
    s = re.sub(r"\s+", " ", str(x).strip().lower())
    num = _NUMERIC.fullmatch(s)
    if num:
        try:
            v = float(num.group(1).replace(",", ""))
            return str(int(v)) if v.is_integer() else str(v)
        except ValueError:
            pass
    return re.sub(r"[^\w\s]", "", s).strip()
