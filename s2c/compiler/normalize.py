"""What "equal" means, shared by the library (vote, lookup), distill's keep rules and evaluate's metrics,
and the gold metrics' scorers built on it."""
from __future__ import annotations

import ast
import json
import operator
import re

from s2c.compiler.failures import Failed

_NUMERIC = re.compile(r"[$€£]?\s*(-?[\d,]*\.?\d+)\s*%?\.?")


def normalize(x) -> str:
    """What "equal" means everywhere: vote, keep majority/matches/consistent, and the metrics.

    Case, punctuation and runs of whitespace are folded, and numbers compare by value:
    "1,000" == "1000" == "1000.0" == "$1,000", "Yes." == "yes", "[[A]]" == "a". An arithmetic
    expression of numbers (+ - * / and parentheses, nothing else) compares by its value, as
    Mind's Mirror scores SVAMP's equation answers (its code eval()s both): "(84 / 2)." ==
    "( 84.0 / 2.0 )" == "42".
    Non-text values (numbers, lists, JSON) compare by their JSON text after the same folding.
    """
    if isinstance(x, bool) or not isinstance(x, (str, int, float)):
        x = json.dumps(x, sort_keys=True, ensure_ascii=False)
    elif isinstance(x, float) and x.is_integer():
        x = int(x)
    s = re.sub(r"\s+", " ", str(x).strip().lower())
    value = _arithmetic(s)
    if value is not None:
        return value
    num = _NUMERIC.fullmatch(s)
    if num:
        try:
            v = float(num.group(1).replace(",", ""))
            return str(int(v)) if v.is_integer() else str(v)
        except ValueError:
            pass
    return re.sub(r"[^\w\s]", "", s).strip()


_ARITHMETIC = re.compile(r"[\d\s.()+\-*/]*\d[\d\s.()]*[+\-*/][\d\s.()+\-*/]*")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(s: str) -> str | None:
    """The value of `s` when it is an arithmetic expression of numbers with at least one operator
    (a final period allowed), to 10 significant digits; None otherwise (also on division by zero)."""
    s = s.removesuffix(".").strip()
    if len(s) > 200 or not _ARITHMETIC.fullmatch(s):
        return None
    try:
        v = _value(ast.parse(s, mode="eval").body)
    except (SyntaxError, ZeroDivisionError, ValueError, OverflowError):
        return None
    v = float(f"{v:.10g}")
    return str(int(v)) if v.is_integer() else str(v)


def _value(node) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


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


def correct(metric: str, pred, gold) -> bool:
    """Whether `pred` scores as `gold` under a gold metric; an answer that failed, or holds a failed
    element, counts as wrong."""
    return not (pred is None or _holds_failed(pred)) and bool(SCORERS[metric](pred, gold))


def _holds_failed(v) -> bool:
    return isinstance(v, Failed) or (isinstance(v, list) and any(_holds_failed(x) for x in v))
