"""Hypothesis strategies for fuzzing `s2c check`, and the property every case must keep.

Cases are (a) the shipped programs (programs/*.s2, examples/*.s2) mutated along the grammar's
lines and tokens: lines deleted, duplicated, swapped, re-indented or spliced in from another
program; a token replaced by another of its kind or by a hostile value; an expression wrapped in
deep nesting; statements wrapped in `repeat` / `for` blocks; jinja fragments put into prompts;
and (b) hostile programs written from scratch: nested repeats, deep templates, bad regexes, bad
`use` and template= paths, hostile literals in options, keep rules and metrics, statements of
every kind over random expressions, and programs that use a mutated shipped program.

The property (`run_case`) is the one `s2c check` promises: a program checks clean, or gets errors
that name a file, line and column; it never ends in a traceback (the CLI's internal-error handler,
exit 70). tests/test_fuzz_programs.py runs a fast profile of it; scripts/fuzz.py a long one.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from s2c.compiler.library import FUNCTIONS
from s2c.compiler.tables import KEEP_RULES, LLM_OPTIONS, METRICS, TASK_OPTIONS
from s2c.dsl.parser import _lark

REPO = Path(__file__).resolve().parents[1]
CORPUS: dict[str, str] = {p.name: p.read_text(encoding="utf-8")
                          for p in sorted([*REPO.glob("programs/*.s2"), *REPO.glob("examples/*.s2")])}
CASE_SECONDS = 20  # a case still running after this is a hang: a failure, not a stalled run

# ---------------------------------------------------------------- the grammar's tokens
_TERMINALS = {t.name: t for t in _lark().terminals}
KEYWORDS = sorted(t.pattern.value for t in _TERMINALS.values() if t.pattern.type == "str" and t.pattern.value.isalpha())
OPERATORS = sorted(t.pattern.value for t in _TERMINALS.values()
                   if t.pattern.type == "str" and not t.pattern.value.isalpha())
# One regex over the source, kinds named after the grammar's terminals; WORD is NAME or a keyword.
_TOKEN = re.compile("|".join(f"(?P<{k}>{p})" for k, p in [
    ("COMMENT", r"#[^\n]*"),
    ("LONG_STRING", _TERMINALS["LONG_STRING"].pattern.to_regexp()),
    ("STRING", _TERMINALS["STRING"].pattern.to_regexp()),
    ("NUMBER", _TERMINALS["NUMBER"].pattern.to_regexp()),
    ("WORD", r"[a-zA-Z_][a-zA-Z0-9_]*"),
    ("OP", "|".join(re.escape(o) for o in OPERATORS)),
]))


def tokens(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each token the grammar knows; anything else is skipped."""
    return [(m.lastgroup, m.start(), m.end()) for m in _TOKEN.finditer(text)]


NAMES = sorted({text[s:e] for text in CORPUS.values() for k, s, e in tokens(text)
                if k == "WORD" and text[s:e] not in KEYWORDS}
               | set(FUNCTIONS) | set(LLM_OPTIONS) | set(KEEP_RULES) | set(METRICS) | set(TASK_OPTIONS)
               | {"completion", "loop", "q", "x", "_"})

# ---------------------------------------------------------------- hostile values
NUMBERS = ["0", "-0", "1", "-1", "2", "63", "64", "65", "1000", "1001", "0.5", "1.5", "-0.5", "2.0", "1e15", "-1e15",
           "1e16", "1e999", "-1e999", "1e-999", "1e308", "9" * 17, "9" * 5000, "0" * 40 + "1", "4294967295",
           "4294967296", "nan", "inf", "-inf", "1_000", "0x10", "1e", "1.", ".5", "--1", "1e+5"]
STRINGS = ['""', '"x"', r'"\"', '"\\\\"', '"["', '"*x"', '"(a"', '"a{99999999999}"', '"(?P<a>x)(?P<a>y)"',
           '"' + "(" * 2000 + ")" * 2000 + '"', '"{{"', '"{%"', '"}}"', '"{{ q | shout }}"', '"{% if %}"', '"[/x]"',
           '"[bold red]x[/]"', '"[/]"', '"\u2028"', '"\x00"', '"\ufeff"', '"' + "a" * 20000 + '"', '""""""',
           '"""{{ q }}"""', '"""\n"""', 'r"\\b(\\w+)\\b"', 'R""', '"A"', '"chat"', '"completion"',
           # file names, for use and template=: next to the program (see workspace()), devices, folders
           '"/etc"', '"."', '"d"', '"/dev/null"', '"/dev/zero"', '"/dev/stdin"', '"a\x00b"', '"judge.j2"', '"x.j2"',
           '"lib.s2"', '"broken.s2"', '"binary.s2"', '"p.s2"']
CHARS = ["\u2028", "\u2029", "\u0085", "\f", "\v", "\x00", "\ufeff", "\t", "\r", "\r\n", "\x1c", "\u200b", "\u0301",
         "\udcff", "\\", "\\\n", "\n", " ", '"', '"""', "#", "é", "\U0001f600", "ℌ", "[", "(", "{", ":", "="]
JINJA = ["{{", "{%", "}}", "%}", "{#", "#}", "{{ q }}", "{{ q | shout }}", "{{ q|lower|upper|trim }}",
         "{% if q %}", "{% endif %}", "{% for a in q %}", "{% endfor %}", "{% else %}", "{{ loop.index }}",
         "{% set loop = 1 %}", "{% include 'x.j2' %}", "{% import 'x' as y %}", "{% extends 'x' %}",
         "{% macro m() %}{% endmacro %}", "{% raw %}", "{% endraw %}", "{{ q is shouty }}", "{{ q.__class__ }}",
         "{{ (((((q))))) }}", "{{ q[0][1][2] }}", "{{ range(10**9) }}", "{{ 1/0 }}", "{{ undefined_name }}",
         "{%- set x = q -%}", "{% filter upper %}", "{% endfilter %}", "{{ q ~ }}", "{{ q if }}", "{{ lipsum() }}"]
INDENTS = ["", " ", "  ", "   ", "    ", "     ", "        ", "\t", "\t ", " \t", "    " * 20, "\f", "\u2028"]
REPEAT_COUNTS = [0, 1, 2, 3, 8, 16, 63, 64, 65, 1000, 10**20]


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _pos(draw, n: int) -> int:
    return draw(st.integers(0, max(0, n - 1)))


# ---------------------------------------------------------------- (a) mutations of a program
def m_delete_line(draw, text):
    ls = _lines(text)
    del ls[_pos(draw, len(ls))]
    return "\n".join(ls)


def m_duplicate_lines(draw, text):
    ls = _lines(text)
    i = _pos(draw, len(ls))
    j = draw(st.integers(i, min(len(ls), i + 12)))
    k = draw(st.sampled_from([1, 2, 64]))
    return "\n".join(ls[:j] + ls[i:j] * k + ls[j:])


def m_swap_lines(draw, text):
    ls = _lines(text)
    i, j = _pos(draw, len(ls)), _pos(draw, len(ls))
    ls[i], ls[j] = ls[j], ls[i]
    return "\n".join(ls)


def m_reindent_line(draw, text):
    ls = _lines(text)
    i = _pos(draw, len(ls))
    ls[i] = draw(st.sampled_from(INDENTS)) + ls[i].lstrip(" \t")
    return "\n".join(ls)


def m_splice_line(draw, text):
    other = _lines(CORPUS[draw(st.sampled_from(sorted(CORPUS)))])
    ls = _lines(text)
    i, j = _pos(draw, len(ls)), _pos(draw, len(other))
    return "\n".join(ls[:i] + other[j:j + draw(st.integers(1, 6))] + ls[i:])


_SAME_KIND = {"WORD": NAMES + ["x" * 5000, "q" * 300, "__class__", "self", "tru", "nonee"], "NUMBER": NUMBERS,
              "STRING": STRINGS, "LONG_STRING": STRINGS, "OP": OPERATORS, "COMMENT": ["#", "# \u2028 x", "#\\", "# {{"]}
_ANY_KIND = [CHARS, OPERATORS, NUMBERS, STRINGS, KEYWORDS, NAMES]


def _replacement(draw, kind: str) -> str:
    """Mostly a token of the same kind (the program still parses and reaches the checker)."""
    if draw(st.integers(0, 2)):
        return draw(st.sampled_from(_SAME_KIND[kind]))
    return draw(st.sampled_from(draw(st.sampled_from(_ANY_KIND))))


def m_replace_token(draw, text):
    toks = tokens(text)
    if not toks:
        return text
    kind, s, e = toks[_pos(draw, len(toks))]
    return text[:s] + _replacement(draw, kind) + text[e:]


def m_rename(draw, text):
    """Every use of a name becomes another name: a function's, a keyword, an input's, a long one."""
    words = sorted({text[s:e] for k, s, e in tokens(text) if k == "WORD" and text[s:e] not in KEYWORDS})
    if not words:
        return text
    old = draw(st.sampled_from(words))
    new = draw(st.sampled_from(NAMES + KEYWORDS + ["x" * 300, "loop", "completion"]))
    return re.sub(rf"\b{old}\b", lambda m: new, text)


def m_insert_char(draw, text):
    i = _pos(draw, len(text) + 1)
    return text[:i] + draw(st.sampled_from(CHARS)) * draw(st.sampled_from([1, 1, 3, 1000])) + text[i:]


def m_wrap_deep(draw, text):
    """An expression (a name after `=`, `(`, `,` or `[`) in calls, lists or dicts, up to past the limit."""
    spots = [(s, e) for k, s, e in tokens(text) if k in ("WORD", "NUMBER", "STRING")
             and re.search(r"[=(,\[]\s*$", text[max(0, s - 8):s])]
    if not spots:
        return text
    s, e = spots[_pos(draw, len(spots))]
    n = draw(st.sampled_from([1, 2, 31, 32, 33, 100, 1000]))
    opener, closer = draw(st.sampled_from([("lower(", ")"), ("[", "]"), ('{"k": ', "}"), ("join([", "])"),
                                           ("(", ")"), ("take(", ", 1)")]))
    return text[:s] + opener * n + text[s:e] + closer * n + text[e:]


def m_nest_block(draw, text):
    """Lines i..j put inside `repeat N:` / `for v in ...:` headers, one level deeper per header."""
    ls = _lines(text)
    i = _pos(draw, len(ls))
    j = draw(st.integers(i, min(len(ls), i + 8)))
    heads = draw(st.lists(st.sampled_from([f"repeat {n}:" for n in REPEAT_COUNTS] +
                                          ["for x in lines(q):", "for item in xs:", "repeat:", "for in :"]),
                          min_size=1, max_size=draw(st.sampled_from([2, 5, 20]))))
    indent = ls[i][:len(ls[i]) - len(ls[i].lstrip(" "))]
    step = draw(st.sampled_from(["    ", "    ", "  ", "\t"]))
    header = [indent + step * d + h for d, h in enumerate(heads)]
    body = [step * len(heads) + line for line in ls[i:j]]
    return "\n".join(ls[:i] + header + body + ls[j:])


def m_jinja(draw, text):
    """A jinja fragment inside a prompt or string, or a {{ }} hole made deep."""
    strings = [(s, e) for k, s, e in tokens(text) if k in ("LONG_STRING", "STRING") and e - s > 2]
    if not strings:
        return text
    s, e = strings[_pos(draw, len(strings))]
    i = draw(st.integers(s + 1, e - 1))
    frag = draw(st.sampled_from(JINJA + ["{% if q %}" * 17, "{{ " + "(" * 33 + "q" + ")" * 33 + " }}",
                                         "{{ q" + "|lower" * 40 + " }}", "{{ " + "not " * 40 + "q }}"]))
    return text[:i] + frag + text[i:]


def m_truncate(draw, text):
    return text[:_pos(draw, len(text) + 1)]


MUTATIONS = [m_delete_line, m_duplicate_lines, m_swap_lines, m_reindent_line, m_splice_line, m_replace_token,
             m_rename, m_insert_char, m_wrap_deep, m_nest_block, m_jinja, m_jinja, m_truncate]


@st.composite
def mutated_programs(draw) -> str:
    """A shipped program with one to four mutations."""
    text = CORPUS[draw(st.sampled_from(sorted(CORPUS)))]
    for _ in range(draw(st.integers(1, 4))):
        text = draw(st.sampled_from(MUTATIONS))(draw, text)
    return text


# ---------------------------------------------------------------- (b) hostile programs from scratch
HEAD = 'program p "fuzz"\ninput q\ninput xs: list\ngold answer\n'


def literals():
    """Half plausible values (so the program reaches the checker), half hostile ones."""
    return st.one_of(st.sampled_from(["0", "1", "3", "0.5", '"x"', '"A"', '"\\n"', "true", "false", "none", "q", "xs",
                                      "answer", "completion", "x", '["a", "b"]', '{"A": "B"}']),
                     st.sampled_from(NUMBERS + STRINGS))


def expressions(max_leaves: int = 12):
    """Expressions of the grammar: literals and names in calls, lists, dicts and keyword arguments."""
    def extend(inner):
        args = st.lists(st.one_of(inner, st.tuples(st.sampled_from(NAMES), inner).map(lambda kv: f"{kv[0]}={kv[1]}")),
                        max_size=4).map(", ".join)
        return st.one_of(
            st.tuples(st.sampled_from(sorted(FUNCTIONS) + ["llm", "nope", "usc"]), args).map(lambda t: f"{t[0]}({t[1]})"),
            st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(st.tuples(inner, inner), max_size=3).map(lambda ps: "{" + ", ".join(f"{k}: {v}" for k, v in ps) + "}"),
        )
    return st.recursive(literals(), extend, max_leaves=max_leaves)


SMALL_EXPRESSIONS = expressions(4)  # built once: a strategy built per draw costs ~10 ms


@st.composite
def templates(draw) -> str:
    """A jinja template built inside-out from layers: blocks, brackets, filters, operators, tags."""
    layers = draw(st.lists(st.sampled_from([
        "{%% if q %%}%s{%% endif %%}", "{%% for a in xs %%}%s{{ loop.index }}{%% endfor %%}",
        "{%% set v %%}%s{%% endset %%}", "{%% filter upper %%}%s{%% endfilter %%}", "{%% with a = q %%}%s{%% endwith %%}",
        "{%% macro m() %%}%s{%% endmacro %%}{{ m() }}", "{%% call m() %%}%s{%% endcall %%}", "{%% raw %%}%s{%% endraw %%}",
        "%s{%% if q %%}", "%s{%% endfor %%}", "{{ (%s) }}", "%s|shout", "%s{{ q is shouty }}", "{%% include %s %%}",
    ]), max_size=draw(st.sampled_from([3, 20, 40]))))
    inner = draw(st.sampled_from(["{{ q }}", "{{ " + "(" * 40 + "q" + ")" * 40 + " }}", "{{ q" + "|lower" * 40 + " }}",
                                  "{{ " + " + ".join(["q"] * 40) + " }}", "{{ q.a.b.c }}", "{{ loop }}", "{{", "x"]))
    for layer in reversed(layers):
        inner = layer % inner
    return inner


@st.composite
def nested_repeats(draw) -> str:
    depth = draw(st.integers(1, 6))
    lines, pad = [], ""
    for d in range(depth):
        lines.append(pad + draw(st.sampled_from([f"repeat {n}:" for n in REPEAT_COUNTS] + ["for x in xs:"])))
        pad += "    "
        if draw(st.booleans()):
            lines.append(pad + draw(st.sampled_from(['a = llm() """{{ q }}"""', "b = lower(q)", "c = lib(q=q)"])))
    lines.append(pad + draw(st.sampled_from(['a = llm(n=8, temperature=0.7) """{{ q }}"""', "a = lower(q)", "a = lib(q=q)",
                                             'a = llm() """{{ a }}"""'])))
    return HEAD + "use lib\n" + "\n".join(lines) + "\noutput a\n"


@st.composite
def bad_regexes(draw) -> str:
    pattern = draw(st.one_of(st.sampled_from([s[1:-1] for s in STRINGS if s.startswith('"')]),
                             st.text(alphabet="()[]{}*+?|\\^$.a1,:<>=!P#-", max_size=30)))
    pattern = pattern.replace("\n", "").replace('"', '\\"')
    group = draw(st.sampled_from(["", ", group=0", ", group=1", ", group=-1", ", group=99", ", group=1.5",
                                  ', group="1"', ", group=1e999"]))
    fn = draw(st.sampled_from(["regex", "regex_all"]))
    where = draw(st.sampled_from(["assign", "parse", "keep"]))
    call = f'{fn}({"completion" if where == "parse" else "q"}, "{pattern}"{group})'
    body = 'a = llm(n=3, temperature=0.7) """{{ q }}"""\nb = vote(a)\noutput b\n'
    if where == "assign":
        return HEAD + body + f"c = {call}\noutput c\n"
    if where == "parse":
        return HEAD + body + f"eval:\n    metric exact_match(b, answer)\n    parse = {call}\n"
    return HEAD + body + f'distill:\n    task t(target=b) """{{{{ q }}}}"""\n    keep matches(b, answer, parse={call})\n'


USE_PATHS = ["", ".", "..", "/", "/etc", "/dev/null", "/dev/zero", "/dev/stdin", "/proc/self/status", "d", "d/",
             "lib.s2", "broken.s2", "binary.s2", "p.s2", "./p.s2", "d/../p.s2", "missing.s2", "a\x00b", "x" * 5000,
             "../" * 60 + "etc/passwd", "judge.j2", "~/x.s2", "lib.s2/x", "\u2028", "{{ q }}", "[/x]", "two.s2"]


@st.composite
def bad_uses(draw) -> str:
    name = draw(st.sampled_from(["lib", "bsm", "usc", "x", "p", "llm_x", "lower"]))
    path = draw(st.one_of(st.none(), st.sampled_from(USE_PATHS)))
    use = f"use {name}" + (f' from "{path}"' if path is not None else "")
    kwargs = draw(st.lists(st.tuples(st.sampled_from(["q", "question", "xs", "zz"]), literals()), max_size=3))
    call = f"{name}(" + ", ".join(f"{k}={v}" for k, v in kwargs) + ")"
    return HEAD + use + "\n" + draw(st.sampled_from([f"b = {call}\noutput b\n", f"output b = {call}\n",
                                                     f"for x in xs:\n    b = {call}\noutput b\n"]))


@st.composite
def hostile_options(draw) -> str:
    """llm() options, tasks, keep rules and metrics with hostile literals and expressions."""
    opts = draw(st.lists(st.tuples(st.sampled_from(sorted(LLM_OPTIONS) + ["nope"]), SMALL_EXPRESSIONS), max_size=4))
    llm = "a = llm(" + ", ".join(f"{k}={v}" for k, v in opts) + ') """{{ q }}"""\n'
    rule = draw(st.tuples(st.sampled_from(sorted(KEEP_RULES) + ["nope"]), st.lists(SMALL_EXPRESSIONS, max_size=4)))
    metric = draw(st.tuples(st.sampled_from(sorted(METRICS) + ["nope"]), st.lists(SMALL_EXPRESSIONS, max_size=4)))
    task = draw(st.lists(st.tuples(st.sampled_from(sorted(TASK_OPTIONS) + ["nope"]), SMALL_EXPRESSIONS), max_size=4))
    fmt = draw(st.sampled_from(["", " system1", " cascade", " nope"]))
    return (HEAD + llm + f"b = {draw(SMALL_EXPRESSIONS)}\noutput a\noutput b\n"
            + f"distill{fmt}:\n    task t(" + ", ".join(f"{k}={v}" for k, v in task) + ') """{{ q }}"""\n'
            + f"    keep {rule[0]}({', '.join(rule[1])})\n"
            + f"eval:\n    metric {metric[0]}({', '.join(metric[1])})\n    parse = {draw(SMALL_EXPRESSIONS)}\n")


@st.composite
def deep_templates(draw) -> str:
    where = draw(st.sampled_from(["prompt", "system", "task"]))
    t = draw(templates()).replace('"""', "")
    if where == "prompt":
        return HEAD + f'a = llm() """{t}"""\noutput a\n'
    if where == "system":
        return HEAD + f'a = llm(system="{t.replace(chr(34), "")}") """{{{{ q }}}}"""\noutput a\n'
    return HEAD + f'a = llm() """{{{{ q }}}}"""\noutput a\ndistill:\n    task t(target=a) """{t}"""\n'


@st.composite
def composed_programs(draw) -> tuple[str, dict[str, str]]:
    """A program using a mutated shipped program, m.s2, bound to its inputs (so that it is inlined
    and checked, and its errors point into m.s2); m.s2 may use the program back (a cycle)."""
    lib = draw(mutated_programs())
    if draw(st.integers(0, 5)) == 0:
        lib = lib.replace("\ninput", "\nuse p\ninput", 1)
    inputs = [n for line in lib.split("\n") if line.startswith("input ")
              for n in re.findall(r"(\w+)(?:\s*:\s*\w+)?\s*(?:,|$)", line[6:])]
    call = "m(" + ", ".join(f"{n}={draw(st.sampled_from(['q', 'xs', 'q']))}" for n in inputs) + ")"
    body = draw(st.sampled_from([f"b = {call}\n", f"repeat 3:\n    b = {call}\n", f"for x in xs:\n    b = {call}\n",
                                 f"repeat 64:\n    repeat 64:\n        b = {call}\n"]))
    use = draw(st.sampled_from(["use m", 'use m from "m.s2"', 'use m from "./m.s2"']))
    return HEAD + use + "\n" + body + "output b\n", {"m.s2": lib}


_VARS = ["a", "b", "c", "q", "xs", "answer", "x"]  # few names, so statements read each other's values


@st.composite
def statement_soups(draw) -> str:
    """Statements of every kind over random expressions: assignments, llm calls, for and repeat
    blocks, outputs, in any order, reading each other's values (the checker's typing paths)."""
    def stmt(pad: str, depth: int) -> list[str]:
        kinds = ["assign", "assign", "llm"] + ["for", "repeat"] * (depth < 3) + ["output"] * (depth == 0)
        kind = draw(st.sampled_from(kinds))
        name = draw(st.sampled_from(_VARS))
        if kind == "assign":
            return [f"{pad}{name} = {draw(SMALL_EXPRESSIONS)}"]
        if kind == "llm":
            opt = draw(st.sampled_from(["", "n=3", "n=1", "temperature=0.5", 'stop=["x"]', "seed=none", "mode=\"completion\""]))
            return [f'{pad}{name} = llm({opt}) """{{{{ {draw(st.sampled_from(_VARS))} }}}}"""']
        if kind == "output":
            return [f"output {name}" + draw(st.sampled_from(["", f" = {draw(SMALL_EXPRESSIONS)}"]))]
        head = f"for {name} in {draw(SMALL_EXPRESSIONS)}:" if kind == "for" else \
            f"repeat {draw(st.sampled_from(REPEAT_COUNTS[:8]))}:"
        body = [line for _ in range(draw(st.integers(1, 3))) for line in stmt(pad + "    ", depth + 1)]
        return [pad + head] + body

    lines = [line for _ in range(draw(st.integers(1, 8))) for line in stmt("", 0)]
    return HEAD + "\n".join(lines) + "\n" + draw(st.sampled_from(["output a\n", "output b = a\n", "output c\n"]))


def generated_programs():
    return st.one_of(nested_repeats(), deep_templates(), bad_regexes(), bad_uses(), hostile_options(),
                     composed_programs(), statement_soups())


def programs():
    """Every kind of case: mostly mutations of the shipped programs (they reach deepest)."""
    return st.one_of(mutated_programs(), mutated_programs(), mutated_programs(), generated_programs())


# ---------------------------------------------------------------- the property
def workspace(folder: Path) -> Path:
    """The folder cases are checked in: what `use` and template= may find next to the program."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "judge.j2", folder / "judge.j2")
    (folder / "lib.s2").write_text('program lib "a used program"\ninput q\nr = lower(q)\noutput r\n', encoding="utf-8")
    (folder / "two.s2").write_text('program two "two outputs"\ninput q\noutput q\noutput r = upper(q)\n',
                                   encoding="utf-8")
    (folder / "broken.s2").write_text('program broken "x"\ninput q\nr = = q\noutput r\n', encoding="utf-8")
    (folder / "binary.s2").write_bytes(b'program bin "x"\n\xff\xfe\ninput q\n')
    (folder / "d").mkdir(exist_ok=True)
    return folder


@dataclass
class Outcome:
    rc: int | None  # 0 ok, 1 errors; None when it raised
    seconds: float
    stderr: str = ""
    error: BaseException | None = None
    signature: str | None = None  # for a failure: exception type @ innermost s2c frame
    problems: list[str] = field(default_factory=list)  # broken promises other than a traceback

    @property
    def failed(self) -> bool:
        return self.error is not None or bool(self.problems)


class CaseTimeout(Exception):
    """A case ran past CASE_SECONDS."""


def _alarm(signum, frame):
    raise CaseTimeout(f"still checking after {CASE_SECONDS} s")


_LOCATED = re.compile(r"^.+:\d+:\d+: error: ")


def run_case(case: str | tuple[str, dict[str, str]], folder: Path, limit: float = CASE_SECONDS) -> Outcome:
    """`s2c check` on the case's program written to folder/p.s2 (with the other files a case may
    have): the CLI's own check command, so that any exception that escapes it is one that its
    internal-error handler would catch."""
    from s2c.cli import cmd_check

    text, files = (case, {}) if isinstance(case, str) else case
    for name in ("m.s2",):  # a file of an earlier case must not be found by this one
        (folder / name).unlink(missing_ok=True)
    for name, body in files.items():
        (folder / name).write_bytes(body.encode("utf-8", "surrogateescape"))
    path = folder / "p.s2"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))  # "\udcff" becomes the byte 0xff
    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cmd_check(argparse.Namespace(files=[str(path)], quiet=True))
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        return Outcome(None, time.perf_counter() - start, err.getvalue(), e, signature(e))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    out = Outcome(rc, time.perf_counter() - start, err.getvalue())
    errors = [line for line in out.stderr.splitlines()  # the head lines, not a quoted source line or a hint
              if "error: " in line and not line.startswith(" ") and not re.match(r"\d+ \| ", line)]
    if rc not in (0, 1):
        out.problems.append(f"exit code {rc}")
    if (rc == 1) != bool(errors):
        out.problems.append(f"exit code {rc} with {len(errors)} error line(s)")
    out.problems += [f"error without a location: {line[:120]}" for line in errors
                     if not _LOCATED.match(line) and not line.startswith("error: " + str(path))]
    if out.problems:
        out.signature = "unlocated: " + re.sub(r"['\"].*", "", out.problems[0].split("error: ")[-1])[:60]
    return out


def signature(e: BaseException) -> str:
    """`Type @ s2c/module.py:LINE in function`: the innermost frame in s2c's own code."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/s2c/" in f.filename]
    where = f"{frames[-1].filename.split('/s2c/', 1)[1]}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    return f"{type(e).__name__} @ s2c/{where}"
