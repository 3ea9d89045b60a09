"""The transform library and the operators, over types.py and failures.py; the checker and runtime call it.

These are the only code a .s2 program can run besides LLM calls. Each function has a signature
(checked at compile time) and a pure implementation. An implementation that cannot produce a value
raises `TransformError`; the runtime marks that value failed with the reason, skips what depends on
it, and carries on.
"""
from __future__ import annotations

import json as _json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from s2c.compiler.failures import Failed, NoMatch, TransformError
from s2c.compiler.normalize import normalize
from s2c.compiler.types import ANY, BOOL, JSON, NUMBER, TEXT, Param, Type


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Param, ...]
    result: Callable[[list[Type]], Type]
    impl: Callable[..., Any]
    doc: str
    aggregates: bool = False  # skips Failed elements of its list argument instead of failing


def _valid(xs):
    return [x for x in xs if not isinstance(x, Failed)]


# ---------------------------------------------------------------- implementations
def _str(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _regex(text: str, pattern: str, group: int = 1) -> str:
    matches = list(re.finditer(pattern, text))
    if not matches:
        raise NoMatch(f"no match for /{pattern}/ in the text")
    m = matches[-1]  # the last match: final verdicts come at the end of an answer
    return m.group(group if m.re.groups >= group else 0)


def _regex_all(text: str, pattern: str, group: int = 1) -> list[str]:
    return [m.group(group if m.re.groups >= group else 0) for m in re.finditer(pattern, text)]


def _spans(text: str, marker: str) -> list[re.Match]:
    """Where a marker occurs, in any case (markers are phrases: "Final answer:" finds "final answer:")."""
    return list(re.finditer(re.escape(marker), text, re.IGNORECASE)) if marker else []


def _after(text: str, marker: str) -> str:
    found = _spans(text, marker)
    if not found:
        raise NoMatch(f"marker {marker!r} not found in the text")
    return text[found[-1].end():].strip()


def _before(text: str, marker: str) -> str:
    found = _spans(text, marker)
    if not found:
        raise NoMatch(f"marker {marker!r} not found in the text")
    return text[:found[0].start()].strip()


def _contains(text: str, marker: str) -> bool:
    return bool(_spans(text, marker))


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")


def _lines(text: str) -> list[str]:
    return [_BULLET.sub("", l).strip() for l in text.splitlines() if l.strip()]


def _a_list(xs) -> list:
    """A list argument that indexing would misread: a JSON object or a text from data, which the
    checker cannot rule out (json() may give either)."""
    if not isinstance(xs, list):
        raise TransformError(f"needs a list, got {_kind(xs)}")
    return xs


def _take(xs: list, k: int) -> list:
    _a_list(xs)
    if k < 0:
        raise TransformError(f"take: k must be >= 0, got {k}")
    return list(xs)[: int(k)]


def _at(xs: list, index):
    if isinstance(index, bool) or not isinstance(index, (int, float)) or index != int(index):
        raise TransformError(f"at: the index must be a whole number, got {index!r}")
    i = int(index)
    if not 0 <= i < len(_a_list(xs)):
        raise TransformError(f"at: index {i} is out of range for a list of {len(xs)}")
    return xs[i]


def _first(xs: list):
    """The first element that did not fail; when every one failed, the first's failure."""
    if not _a_list(xs):
        raise TransformError("first: the list is empty")
    return next(iter(_valid(xs)), xs[0])


def _last(xs: list):
    """The last element that did not fail (the last round's answer that ran); when every one
    failed, the last's failure."""
    if not _a_list(xs):
        raise TransformError("last: the list is empty")
    valid = _valid(xs)
    return valid[-1] if valid else xs[-1]


_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _number(text) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    m = _NUM.search(str(text))
    if not m:
        raise NoMatch("no number in the text")
    v = float(m.group(0).replace(",", ""))
    return int(v) if v.is_integer() else v


def _choice(text: str, options: list[str]) -> str:
    best = None
    for opt in options:
        m = re.search(r"(?<![A-Za-z0-9])" + re.escape(str(opt)) + r"(?![A-Za-z0-9])", text, re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), opt)
    if best is None:
        raise NoMatch(f"none of {list(options)} appears in the text")
    return best[1]


def _first_json(text: str):  # not `_json`: that name is the json module here
    dec = _json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return dec.raw_decode(text[i:])[0]
            except ValueError:
                continue
    raise NoMatch("no JSON object or array in the text")


def _get(obj, key):
    if isinstance(obj, str):  # a reply holding JSON (a json= call's): its first JSON value
        obj = _first_json(obj)
    try:
        return obj[key if not isinstance(obj, list) else int(key)]
    except (KeyError, IndexError, TypeError, ValueError):
        raise TransformError(f"get: no {key!r} in the value") from None


def vote_counts(xs: list) -> tuple[Any, float, Counter]:
    """Winner (first-seen among ties), its share of the valid samples, and the counts."""
    valid = _valid(xs)
    if not valid:
        raise TransformError("vote: no valid samples")
    counts = Counter(normalize(x) for x in valid)
    top = max(counts.values())
    winner = next(x for x in valid if counts[normalize(x)] == top)
    return winner, top / len(valid), counts


def majority_holds(xs: list, min_share: float) -> bool:
    """keep majority's test: the valid samples have a strict winner (no tie at the top) holding at
    least min_share of them. Raises TransformError where none is valid."""
    _, share, counts = vote_counts(xs)
    top = counts.most_common(2)
    return not (len(top) > 1 and top[0][1] == top[1][1]) and share >= min_share


def _vote(xs):
    return vote_counts(xs)[0]


def _vote_share(xs):
    return vote_counts(xs)[1]


def _nums(xs) -> list[float]:
    out = [x for x in _valid(xs) if isinstance(x, (int, float)) and not math.isnan(x)]
    if not out:
        raise TransformError("no valid numbers to aggregate")
    return out


def _mean(xs):
    v = _nums(xs)
    return sum(v) / len(v)


def _sum(xs):
    return sum(_nums(xs))


def _count(xs):
    return len(_valid(xs))


def _join(xs, sep="\n"):
    return sep.join(str(x) for x in _valid(xs))


def _compare(a, b, labels=("A", "B", "C")):
    labels = list(labels)
    if len(labels) != 3:
        raise TransformError("compare: labels must be [if a > b, if b > a, if equal]")
    return labels[0] if a > b else labels[1] if b > a else labels[2]


def _arg_best(pick):
    def impl(scores, items=None):
        valid = [(s, i) for i, s in enumerate(scores)
                 if not isinstance(s, Failed) and isinstance(s, (int, float)) and not isinstance(s, bool)
                 and not math.isnan(s)]
        if not valid:
            raise TransformError("no valid scores")
        if items is not None and len(items) != len(scores):
            raise TransformError(f"{len(scores)} scores for {len(items)} items")
        best = pick(s for s, _ in valid)
        i = next(i for s, i in valid if s == best)  # ties go to the first
        return i if items is None else items[i]
    return impl


def _lookup(key, table, default=None):
    if not isinstance(table, dict):
        raise TransformError("the table must be a dictionary: {\"sure\": 3, \"likely\": 2}")
    want = normalize(key)
    for k, v in table.items():
        if normalize(k) == want:
            return v
    if default is None:
        raise NoMatch(f"{_str(key)[:60]!r} is not one of {list(table)}")
    return default


# ---------------------------------------------------------------- operators: + - * / // %
def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _whole(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _add(a, b):
    if _is_num(a) and _is_num(b):
        return _whole(a + b)
    if isinstance(a, str) and isinstance(b, str) or isinstance(a, list) and isinstance(b, list):
        return a + b
    raise TransformError(f"cannot add {_kind(a)} and {_kind(b)}")


def _arith(name, op):
    def impl(a, b):
        if not (_is_num(a) and _is_num(b)):
            raise TransformError(f"'{name}' needs two numbers, got {_kind(a)} and {_kind(b)}")
        if name in ("/", "//", "%") and b == 0:
            raise TransformError(f"'{name}' by zero")
        return _whole(op(a, b))
    return impl


def _equal(a, b) -> bool:
    return normalize(a) == normalize(b)


def _order(name, op):
    def impl(a, b):
        if _is_num(a) and _is_num(b) or isinstance(a, str) and isinstance(b, str):
            return op(a, b)
        raise TransformError(f"'{name}' compares two numbers or two texts, got {_kind(a)} and {_kind(b)}")
    return impl


def _truth(name):
    def check(v):
        if not isinstance(v, bool):
            raise TransformError(f"'{name}' needs true or false, got {_kind(v)}")
        return v
    return check


def _at_most(xs, k):
    if len(_a_list(xs)) > k:
        raise TransformError(f"the list has {len(xs)} items, more than the scan's bound of {_str(k)} "
                             f"(raise it: up to {len(xs)}, or shorten the list with take())")
    return xs


def _kind(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "a number" if _is_num(v) else "a text" if isinstance(v, str) else "a list" if isinstance(v, list) \
        else type(v).__name__


def _binary_type(ts: list[Type]) -> Type:
    a, b = ts
    return b if a.base == "any" else a


# ---------------------------------------------------------------- the table
def _same(i):
    return lambda ts: ts[i]


def _elem(i):
    return lambda ts: ts[i].elem()


def _const(t):
    return lambda ts: t

def _best_type(ts: list[Type]) -> Type:
    return ts[1].elem() if len(ts) > 1 else NUMBER


P = Param
FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("regex", (P("text", "text"), P("pattern", "literal"), P("group", "number", 1, 0)), _const(TEXT), _regex,
                 "The last match of a regular expression; its group 1 if it has one. Fails when nothing matches."),
        Function("regex_all", (P("text", "text"), P("pattern", "literal"), P("group", "number", 1, 0)), _const(TEXT.listed()), _regex_all,
                 "Every match of a regular expression, as a list."),
        Function("after", (P("text", "text"), P("marker", "text")), _const(TEXT), _after,
                 "The text after the last occurrence of a marker (in any case), stripped. Fails when the marker is absent."),
        Function("before", (P("text", "text"), P("marker", "text")), _const(TEXT), _before,
                 "The text before the first occurrence of a marker (in any case), stripped. Fails when the marker is absent."),
        Function("contains", (P("text", "text"), P("marker", "text")), _const(BOOL), _contains,
                 "Whether the text holds the marker, in any case: a condition for while and if "
                 "(while not contains(feedback, \"no mistakes\") up to 3:)."),
        Function("lines", (P("text", "text"),), _const(TEXT.listed()), _lines,
                 "The non-blank lines of a text, stripped, with list bullets (-, *, 1., (1)) removed."),
        Function("take", (P("list", "list"), P("k", "number", ..., 0)), _same(0), _take,
                 "The first k elements of a list."),
        Function("at", (P("list", "list"), P("index", "number", ..., 0)), _elem(0), _at,
                 "The element at a 0-based index (e.g. a number() read from a model's answer). "
                 "Fails when the index is out of range."),
        Function("first", (P("list", "list"),), _elem(0), _first,
                 "The first element of a list that did not fail.", aggregates=True),
        Function("last", (P("list", "list"),), _elem(0), _last,
                 "The last element of a list that did not fail (the last answer that ran).", aggregates=True),
        Function("strip", (P("text", "text"),), _const(TEXT), lambda t: t.strip(), "Whitespace removed at both ends."),
        Function("wrap", (P("text", "scalar"), P("before", "text", ""), P("after", "text", "")), _const(TEXT),
                 lambda t, before="", after="": f"{before}{_str(t)}{after}",
                 "The text with fixed text before and after it, e.g. wrap(verdict, \"[[\", \"]]\") -> [[A]]."),
        Function("lower", (P("text", "text"),), _const(TEXT), lambda t: t.lower(), "Lower case."),
        Function("upper", (P("text", "text"),), _const(TEXT), lambda t: t.upper(), "Upper case."),
        Function("number", (P("text", "scalar"),), _const(NUMBER), _number,
                 "The first number in a text (commas removed). Fails when there is none."),
        Function("choice", (P("text", "text"), P("options", "list")), _const(TEXT), _choice,
                 "The option that appears first in the text (whole word, any case). Fails when none does."),
        Function("json", (P("text", "text"),), _const(JSON), _first_json,
                 "The first JSON object or array in the text."),
        Function("get", (P("value", "any"), P("key", "scalar")), _const(ANY), _get,
                 "A field of a JSON object (or an element of a JSON array); of a text, of the first JSON value "
                 "in it (a json= call's reply: get(reply, \"answer\"), its field checked and typed)."),
        Function("join", (P("list", "list"), P("sep", "text", "\n")), _const(TEXT), _join,
                 "The elements of a list joined into one text.", aggregates=True),
        Function("count", (P("list", "list"),), _const(NUMBER), _count,
                 "How many valid elements a list has.", aggregates=True),
        Function("vote", (P("list", "list"),), _elem(0), _vote,
                 "Majority vote: the most common element (compared case- and space-insensitively); "
                 "ties go to the first seen. Failed samples are left out.", aggregates=True),
        Function("vote_share", (P("list", "list"),), _const(NUMBER), _vote_share,
                 "The share of valid samples that agree with the majority winner (0..1).", aggregates=True),
        Function("mean", (P("list", "list"),), _const(NUMBER), _mean,
                 "The mean of a list of numbers (failed elements left out).", aggregates=True),
        Function("sum", (P("list", "list"),), _const(NUMBER), _sum,
                 "The sum of a list of numbers (failed elements left out).", aggregates=True),
        Function("argmax", (P("scores", "list"), P("items", "list", None)), _best_type, _arg_best(max),
                 "The 0-based index of the highest score (ties: the first), or with items=, the item at it. "
                 "Failed scores are left out.", aggregates=True),
        Function("argmin", (P("scores", "list"), P("items", "list", None)), _best_type, _arg_best(min),
                 "The 0-based index of the lowest score (ties: the first), or with items=, the item at it. "
                 "Failed scores are left out.", aggregates=True),
        Function("lookup", (P("key", "scalar"), P("table", "any"), P("default", "any", None)), _const(ANY), _lookup,
                 "The value a literal dictionary gives a key, keys compared as vote compares them "
                 "(lookup(word, {\"sure\": 3, \"likely\": 2, \"impossible\": 0})). A key not in the table "
                 "is unparsed, unless default= is given."),
        Function("compare", (P("a", "number"), P("b", "number"), P("labels", "list", ["A", "B", "C"])), _const(TEXT), _compare,
                 "labels[0] if a > b, labels[1] if b > a, else labels[2]. Applied to summed scores it is the symbolic "
                 "merge of Branch-Solve-Merge (Saha et al. 2023), e.g. compare(sum(score_a), sum(score_b)); "
                 "programs/bsm.s2 merges with an LLM call instead."),
    ]
}

# The operators, as functions the runtime applies like the library's (not callable by name).
OPERATORS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("+", (P("a", "any"), P("b", "any")), _binary_type, _add,
                 "Adds two numbers, or joins two texts or two lists (a list keeps its failed elements).",
                 aggregates=True),
        *(Function(op, (P("a", "number"), P("b", "number")), _const(NUMBER), _arith(op, impl), doc)
          for op, impl, doc in [
              ("-", lambda a, b: a - b, "Subtracts."),
              ("*", lambda a, b: a * b, "Multiplies."),
              ("/", lambda a, b: a / b, "Divides."),
              ("//", lambda a, b: a // b, "Divides, rounding down."),
              ("%", lambda a, b: a % b, "The remainder of a division."),
          ]),
        Function("==", (P("a", "scalar"), P("b", "scalar")), _const(BOOL), _equal,
                 "Equal as vote compares (normalize: case, punctuation and spaces folded, numbers by value)."),
        Function("!=", (P("a", "scalar"), P("b", "scalar")), _const(BOOL), lambda a, b: not _equal(a, b),
                 "Not equal (the negation of ==)."),
        *(Function(op, (P("a", "scalar"), P("b", "scalar")), _const(BOOL), _order(op, impl), doc)
          for op, impl, doc in [
              ("<", lambda a, b: a < b, "Less than: two numbers, or two texts in alphabetical order."),
              ("<=", lambda a, b: a <= b, "Less than or equal."),
              (">", lambda a, b: a > b, "Greater than."),
              (">=", lambda a, b: a >= b, "Greater than or equal."),
          ]),
        Function("and", (P("a", "bool"), P("b", "bool")), _const(BOOL),
                 lambda a, b: _truth("and")(a) and _truth("and")(b), "Both true."),
        Function("or", (P("a", "bool"), P("b", "bool")), _const(BOOL),
                 lambda a, b: _truth("or")(a) or _truth("or")(b), "Either true."),
        Function("not", (P("a", "bool"),), _const(BOOL), lambda a: not _truth("not")(a), "True when false."),
        # inserted by s2c, not written: `scan x in xs up to K` runs on at_most(xs, K)
        Function("at_most", (P("list", "list"), P("k", "number")), _same(0), _at_most,
                 "The list, when it has at most k items."),
    ]
}


def function(name: str) -> Function:
    """A library function or an operator, by the name an IR call holds."""
    return FUNCTIONS.get(name) or OPERATORS[name]

