"""Hostile programs never reach a traceback: each gets a located error (file:line:col, the source
line, a caret, a hint) and exit code 1 from `s2c check`, never 70 (s2c's internal error).

Each test writes a small program, runs `s2c check` (or `s2c graph`) on it from its own folder, and
asserts where the error points and what it says. Programs at the limits check clean.
"""
from __future__ import annotations

import pytest

from s2c.cli import EXIT_INTERNAL, main
from s2c.compiler.check import MAX_LLM_NODES, MAX_NODES
from s2c.compiler.library import FUNCTIONS
from s2c.compiler.pipeline import check_file
from s2c.compiler.tables import LLM_RANGES
from s2c.compiler.templates import render
from s2c.dsl.ast import MAX_BLOCK_DEPTH, MAX_EXPR_DEPTH, MAX_USE_DEPTH

HEAD = 'program p "x"\ninput q\n'


@pytest.fixture
def s2c(tmp_path, monkeypatch, capsys):
    """run(source, *command) -> (exit code, stderr) of `s2c COMMAND p.s2`, from tmp_path."""
    monkeypatch.chdir(tmp_path)

    def run(source: str, command: str = "check", name: str = "p.s2") -> tuple[int, str]:
        (tmp_path / name).write_text(source, encoding="utf-8")
        rc = main([command, name])
        assert rc != EXIT_INTERNAL
        return rc, capsys.readouterr().err

    return run


def located(err: str, where: str, phrase: str, line_text: str | None = None) -> None:
    """`where` (p.s2:LINE:COL) heads an error with `phrase`, quoting `line_text` if given."""
    head = next((l for l in err.splitlines() if l.startswith(f"{where}: error: ")), None)
    assert head is not None, err
    assert phrase in head, head
    if line_text is not None:
        n = where.split(":")[1]
        assert f"{n} | {line_text}" in err.splitlines(), err


# ---------------------------------------------------------------- 1. inconsistent dedent
def test_dedent_to_no_enclosing_block_in_a_for_body(s2c):
    src = HEAD + 'for x in take(lines(q), 3):\n        a = llm() """{{ x }}"""\n      b = lower(a)\noutput a\n'
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:5:7", "this line is indented by 6, which lines up with no enclosing block",
            "      b = lower(a)")
    assert "indent it by 8 or 0 spaces" in err


def test_dedent_to_no_enclosing_block_in_eval(s2c):
    src = (HEAD + 'gold answer\na = llm() """{{ q }}"""\noutput a\neval:\n    metric exact_match(a, answer)\n'
           '  parse = lower(completion)\n')
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:8:3", "lines up with no enclosing block")


def test_dedent_to_no_enclosing_block_in_distill(s2c):
    src = (HEAD + 'a = llm(n=3, temperature=0.7) """{{ q }}"""\nb = vote(a)\noutput b\ndistill:\n    task t(target=b) """{{ q }}"""\n'
           '  keep majority(a)\n')
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:8:3", "lines up with no enclosing block")


def test_dedent_inside_a_distill_loop_names_every_level(s2c):
    src = (HEAD + 'a = llm(n=3, temperature=0.7) """{{ q }}"""\noutput a\ndistill:\n    for x in a:\n        task t(target=x) """{{ q }}"""\n'
           '      task u(target=x) """{{ q }}"""\n')
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:8:7", "indented by 6")
    assert "indent it by 8, 4 or 0 spaces" in err


# ---------------------------------------------------------------- 2. deep nesting
def test_deep_parentheses_in_a_template(s2c):
    src = HEAD + 'a = llm() """{{ ' + "(" * 70 + "q" + ")" * 70 + ' }}"""\noutput a\n'
    rc, err = s2c(src)
    assert rc == 1
    col = len('a = llm() """{{ ') + MAX_EXPR_DEPTH + 1  # the first bracket past the limit
    located(err, f"p.s2:3:{col}", f"template nested too deeply: expressions nest at most {MAX_EXPR_DEPTH}")


def test_deep_if_blocks_in_a_template(s2c):
    src = HEAD + 'a = llm() """' + "{% if q %}" * 400 + "x" + "{% endif %}" * 400 + '"""\noutput a\n'
    rc, err = s2c(src)
    assert rc == 1
    col = len('a = llm() """') + MAX_BLOCK_DEPTH * len("{% if q %}") + 1
    located(err, f"p.s2:3:{col}", f"blocks nest at most {MAX_BLOCK_DEPTH} deep")


@pytest.mark.parametrize("expr", ["q" + "|lower" * 3000, "not " * 1000 + "q", " + ".join(["q"] * 3000),
                                  "q" + ".a" * 3000])
def test_chains_without_brackets_in_a_template(s2c, expr):
    rc, err = s2c(HEAD + 'a = llm() """\n{{ ' + expr + ' }}\n"""\noutput a\n')
    assert rc == 1
    located(err, "p.s2:4:1", "template nested too deeply")


def test_deep_calls_lists_and_fors_in_a_program(s2c):
    calls = HEAD + "a = " + "lower(" * 400 + "q" + ")" * 400 + "\noutput a\n"
    rc, err = s2c(calls)
    assert rc == 1
    located(err, f"p.s2:3:{5 + 6 * MAX_EXPR_DEPTH}", "expression nested too deeply")

    lists = HEAD + "a = " + "[" * 1000 + "q" + "]" * 1000 + "\noutput a\n"
    rc, err = s2c(lists)
    assert rc == 1
    located(err, f"p.s2:3:{5 + MAX_EXPR_DEPTH}", "expression nested too deeply")

    fors = HEAD + "".join("    " * i + f"for x{i} in lines(q):\n" for i in range(400)) + "    " * 400 + \
        "a = lower(q)\noutput a\n"
    rc, err = s2c(fors)
    assert rc == 1
    located(err, f"p.s2:{3 + MAX_BLOCK_DEPTH}:{4 * MAX_BLOCK_DEPTH + 1}", "block nested too deeply")


def test_programs_and_templates_at_the_limits_check_and_render(s2c):
    n = MAX_EXPR_DEPTH
    template = "{% if q %}" * MAX_BLOCK_DEPTH + "{{ q" + "|lower" * n + " }}{{ " + "(" * n + "q" + ")" * n + " }}" + \
        "{{ " + "[" * (n - 1) + "q" + "]" * (n - 1) + "|length }}" + "{% endif %}" * MAX_BLOCK_DEPTH
    fors = "".join("    " * i + f"for x{i} in lines(q):\n" for i in range(MAX_BLOCK_DEPTH))
    body = "    " * MAX_BLOCK_DEPTH
    src = (HEAD + fors + body + f'a = llm() """{template}"""\n'
           + body + "b = " + "lower(" * (MAX_EXPR_DEPTH - 2) + "join([a])" + ")" * (MAX_EXPR_DEPTH - 2) + "\n"
           + "output b\n")
    rc, err = s2c(src)
    assert (rc, err) == (0, "")
    assert render(template, {"q": "Yes"}) == "yesYes1"


def test_use_chains_compose_to_a_limit_and_aliased_cycles_are_cycles(s2c, tmp_path):
    for i in range(1, MAX_USE_DEPTH + 2):
        (tmp_path / f"p{i}.s2").write_text(f'program p{i} "x"\ninput q\nuse p{i + 1}\nb = p{i + 1}(q=q)\noutput b\n'
                                           if i <= MAX_USE_DEPTH else f'program p{i} "x"\ninput q\noutput q\n')
    rc, err = s2c('program p0 "x"\ninput q\nuse p1\nb = p1(q=q)\noutput b\n')
    assert rc == 1
    located(err, f"p{MAX_USE_DEPTH - 1}.s2:3:5", f"programs compose at most {MAX_USE_DEPTH} deep")

    (tmp_path / "d").mkdir()
    rc, err = s2c('program a "x"\ninput q\nuse a from "d/../a.s2"\nb = a(q=q)\noutput b\n', name="a.s2")
    assert rc == 1
    located(err, "a.s2:3:5", "program composition has a cycle: a.s2 -> a.s2")


# ---------------------------------------------------------------- 3. numeric ranges
def test_an_infinite_number_is_out_of_range(s2c):
    rc, err = s2c(HEAD + 'a = llm(max_tokens=1e999) """{{ q }}"""\noutput a\n')
    assert rc == 1
    located(err, "p.s2:3:20", "number out of range: 1e999", 'a = llm(max_tokens=1e999) """{{ q }}"""')


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "1e16", "9" * 5000])
def test_huge_literals_in_function_arguments(s2c, literal):
    rc, err = s2c(HEAD + f"a = take(lines(q), {literal})\noutput a\n")
    assert rc == 1
    # `-` is an operator: the number it negates is what is out of range
    located(err, f"p.s2:3:{20 + literal.startswith('-')}", "number out of range")


@pytest.mark.parametrize("count", ["9" * 17, "9" * 5000])  # 5,000 digits: more than Python's int() takes
def test_huge_repeat_count(s2c, count):
    rc, err = s2c(HEAD + f'repeat {count}:\n    a = llm() """{{{{ q }}}}"""\noutput a\n')
    assert rc == 1
    located(err, "p.s2:3:8", "number out of range")


@pytest.mark.parametrize("option, value, phrase", [
    ("max_tokens", "2000000", "max_tokens must be at least 1 and at most 1000000"),
    ("max_tokens", "2.5", "max_tokens must be a whole number"),
    ("n", "5000", "n must be at least 1 and at most 1000"),
    ("temperature", "3", "temperature must be at least 0 and at most 2"),
    ("top_p", "0", "top_p must be more than 0 and at most 1"),
    ("top_p", "1.5", "top_p must be more than 0 and at most 1"),
    ("seed", "-1", "seed must be at least 0 and at most 4294967295"),
    ("seed", "0.5", "seed must be a whole number"),
    ("stop", "5", "stop must be a string or a list of strings"),
    ("role", "3", "role must be a name in quotes"),
])
def test_llm_option_ranges(s2c, option, value, phrase):
    rc, err = s2c(HEAD + f'a = llm({option}={value}) """{{{{ q }}}}"""\noutput a\n')
    assert rc == 1
    located(err, f"p.s2:3:{len(f'a = llm({option}=') + 1}", phrase)


def test_llm_ranges_are_the_documented_ones():
    assert LLM_RANGES == {"temperature": (0, 2, False), "top_p": (0, 1, False), "max_tokens": (1, 1_000_000, True),
                            "n": (1, 1_000, True), "seed": (0, 2**32 - 1, True)}


@pytest.mark.parametrize("call, col", [("take(xs, -1)", 14), ("take(xs, 1.5)", 14), ("at(xs, -2)", 12),
                                       ('regex(q, "(a)", group=-1)', 27)])
def test_whole_number_arguments(s2c, call, col):
    rc, err = s2c(HEAD + f"xs = lines(q)\na = {call}\noutput a\n")
    assert rc == 1
    located(err, f"p.s2:4:{col}", "must be a whole number >= 0")


# ---------------------------------------------------------------- 4. directories
def test_use_from_a_directory(s2c):
    rc, err = s2c(HEAD + 'use x from "/etc"\nb = x(q=q)\noutput b\n')
    assert rc == 1
    located(err, "p.s2:3:12", "use x: /etc is a directory, not a .s2 file", 'use x from "/etc"')


def test_check_a_directory(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is a directory, not a program file")


def test_unreadable_program_file(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    path = tmp_path / "p.s2"
    path.write_text(HEAD + "output q\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)  # root reads a chmod 000 file anyway
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot read program file {path}: Permission denied")


# ---------------------------------------------------------------- 5. jinja filters, tests and loop
def test_unknown_filter_in_check_and_graph(s2c):
    src = HEAD + 'a = llm() """{{ q | shout }}"""\noutput a\n'
    for command in ("check", "graph"):
        rc, err = s2c(src, command)
        assert rc == 1
        located(err, "p.s2:3:21", "prompt of 'a': unknown filter 'shout'", 'a = llm() """{{ q | shout }}"""')
        assert "did you mean 'sort'?" in err


def test_unknown_filter_in_a_distill_prompt(s2c):
    src = HEAD + 'a = llm() """{{ q }}"""\noutput a\ndistill:\n    task t(target=a) """{{ q | uper }}"""\n'
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:6:32", "System-1 prompt of task 't': unknown filter 'uper'")
    assert "did you mean 'upper'?" in err


def test_unknown_test(s2c):
    rc, err = s2c(HEAD + 'a = llm() """{% if q is shouty %}x{% endif %}"""\noutput a\n')
    assert rc == 1
    located(err, "p.s2:3:25", "unknown test 'shouty'")


def test_loop_outside_a_jinja_loop(s2c):
    src = HEAD + 'a = llm() """\n{% for x in q %}{{ loop.index }}{% endfor %}\n{{ loop.index }}\n"""\noutput a\n'
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:5:4", "'loop' is only defined inside a {% for %} block")
    assert err.count("error: ") == 1  # the one inside the loop is fine


def test_include_in_a_prompt(s2c):
    rc, err = s2c(HEAD + 'a = llm() """{% include "other.j2" %}{{ q }}"""\noutput a\n')
    assert rc == 1
    located(err, "p.s2:3:14", "{% include %} cannot load other templates")


# ---------------------------------------------------------------- 6. the unrolling budget
def test_nested_repeats_fail_before_unrolling(s2c, tmp_path):
    src = (HEAD + 'repeat 64:\n    repeat 64:\n        repeat 64:\n            a = llm() """{{ q }}"""\n'
           "output a\n")
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:3:1", f"repeat 64 unrolls into 262,144 LLM calls; a program may have at most {MAX_LLM_NODES:,}")
    assert err.count("error: ") == 1  # no follow-on errors: the body is checked once
    cp = check_file(tmp_path / "p.s2")
    assert len(cp.nodes) == 2  # q and one copy of a: nothing was unrolled


def test_repeats_share_one_budget(s2c):
    one = 'repeat 60:\n    a = llm() """{{ q }}"""\n'
    rc, err = s2c(HEAD + one * 17 + "output a\n")
    assert rc == 1
    located(err, f"p.s2:{3 + 2 * 16}:1", "repeat 60 unrolls into 60 LLM calls after the 960 before it")


def test_the_budget_counts_every_value(s2c):
    src = HEAD + "a = q\nrepeat 64:\n    repeat 64:\n        repeat 64:\n            a = lower(a)\noutput a\n"
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:4:1", f"into 262,144 values after the 2 before it; a program may have at most {MAX_NODES:,}")


# ---------------------------------------------------------------- 7. quoted lines after odd line breaks
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u0085", "\f"])
def test_quoted_line_is_the_line_named(s2c, char):
    rc, err = s2c(f'program p "x"\n# a{char}b\ninput q\na = lower(qq)\noutput a\n')
    assert rc == 1
    located(err, "p.s2:4:11", "undefined name 'qq'", "a = lower(qq)")


@pytest.mark.parametrize("char", ["\u2028", "\f"])
def test_quoted_line_of_a_syntax_error_is_the_line_named(s2c, char):
    rc, err = s2c(f'program p "x"\n# a{char}b\ninput q\na = = q\noutput a\n')
    assert rc == 1
    located(err, "p.s2:4:5", "unexpected '='", "a = = q")


def test_invisible_character_is_named(s2c):
    rc, err = s2c(HEAD + "\u2028a = lower(q)\noutput a\n")
    assert rc == 1
    located(err, "p.s2:3:1", "unexpected character", " a = lower(q)")
    assert "U+2028" in err


# ---------------------------------------------------------------- 8. regexes and literal types
@pytest.mark.parametrize("pattern, col, phrase", [
    ('"["', 15, "bad regular expression: unterminated character set"),
    ('"*x"', 15, "bad regular expression: nothing to repeat"),
    ('"a(b"', 16, "bad regular expression: missing ), unterminated subpattern (at 2)"),
    ('"x\\\\"', 14, "bad regular expression: bad escape (end of pattern)"),  # \\ is one backslash
    ('"a{99999999999}"', 14, "the repetition number is too large"),
    ('"' + "(" * 2000 + ")" * 2000 + '"', 14, "regular expression nested too deeply"),
])
def test_regex_is_compiled_at_check_time(s2c, pattern, col, phrase):
    rc, err = s2c(HEAD + f"a = regex(q, {pattern})\noutput a\n")
    assert rc == 1
    located(err, f"p.s2:3:{col}", phrase)


@pytest.mark.parametrize("pattern, phrase", [
    ('"a{99999999999}"', "the repetition number is too large"),
    ('"' + "(" * 2000 + ")" * 2000 + '"', "llm() regex=: bad regular expression: nested too deeply"),
])
def test_constraint_regex_is_compiled_at_check_time(s2c, pattern, phrase):
    rc, err = s2c(HEAD + f'a = llm(regex={pattern}) """{{{{ q }}}}"""\noutput a\n')
    assert rc == 1
    located(err, "p.s2:3:15", phrase)


def test_regex_group_beyond_the_pattern(s2c):
    rc, err = s2c(HEAD + 'a = regex(q, "a", group=3)\nb = regex_all(q, "(a)", group=2)\noutput a\noutput b\n')
    assert rc == 1
    located(err, "p.s2:3:25", "regex(): group=3, but the pattern has no groups")
    located(err, "p.s2:4:31", "regex_all(): group=2, but the pattern has only 1 group")


def test_bad_regex_in_eval_parse(s2c):
    src = HEAD + 'gold answer\na = llm() """{{ q }}"""\noutput a\neval:\n    parse = regex(completion, "(A|B")\n'
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:7:32", "bad regular expression: missing ), unterminated subpattern")


def test_literal_of_the_wrong_type(s2c):
    rc, err = s2c(HEAD + 'xs = lines(q)\na = take(xs, "5")\nb = at(xs, q)\nc = lower(3)\nd = take(xs, true)\n'
                  "output a\noutput b\noutput c\noutput d\n")
    assert rc == 1
    located(err, "p.s2:4:14", "take(): 'k' needs a number, but this is text")
    assert "write the number without quotes" in err
    located(err, "p.s2:5:12", "at(): 'index' needs a number, but this is text")
    assert "read a number from a text with number(...)" in err
    located(err, "p.s2:6:11", "lower(): 'text' needs a text, but this is a number")
    located(err, "p.s2:7:14", "take(): 'k' needs a number, but this is a bool")


def test_backslash_b_in_a_plain_string_is_a_word_boundary(s2c, tmp_path):
    """Only \\n \\t \\" \\\\ are escapes, so "\\bword\\b" reaches re as written: no warning needed."""
    rc, err = s2c(HEAD + 'a = regex(q, "\\bword\\b")\nb = regex(q, r"\\bword\\b")\noutput a\noutput b\n')
    assert (rc, err) == (0, "")
    cp = check_file(tmp_path / "p.s2")
    assert cp.nodes["a"].expr.args[1].value == cp.nodes["b"].expr.args[1].value == r"\bword\b"
    assert FUNCTIONS["regex"].impl("a sword, a word.", r"\bword\b") == "word"


def test_two_repeats_refining_one_name_get_distinct_ids(s2c, tmp_path):
    """Both repeats used to write a#1 and a#2: the second overwrote the first and the graph had a cycle."""
    src = HEAD + 'a = llm() """{{ q }}"""\nrepeat 2:\n    a = llm() """{{ a }}"""\nrepeat 2:\n    a = llm() """{{ a }}!"""\noutput a\n'
    for command in ("check", "graph"):
        rc, err = s2c(src, command)
        assert (rc, err) == (0, "")
    cp = check_file(tmp_path / "p.s2")
    assert [n for n in cp.nodes if n.startswith("a")] == ["a", "a#1", "a#2", "a#1@7", "a#2@7"]
    assert cp.nodes["a#1@7"].deps == ("a#2",)
    assert cp.outputs["a"].node == "a#2@7"


def test_the_budget_counts_the_calls_of_used_programs_and_theirs(s2c, tmp_path):
    calls = "".join(f'c{i} = llm() """{{{{ q }}}} {i}"""\n' for i in range(20))
    (tmp_path / "b.s2").write_text('program b "x"\ninput q\n' + calls + "out = join([" +
                                   ", ".join(f"c{i}" for i in range(20)) + "])\noutput out\n")
    (tmp_path / "a.s2").write_text('program a "x"\ninput q\nuse b\nx = b(q=q)\noutput x\n')
    rc, err = s2c(HEAD + "use a\nrepeat 60:\n    r = a(q=q)\noutput r\n")
    assert rc == 1
    located(err, "p.s2:4:1", "repeat 60 unrolls into 1,200 LLM calls; a program may have at most 1,000")
    assert sum(n.kind == "llm" for n in check_file(tmp_path / "p.s2").nodes.values()) == 20  # one copy


# ---------------------------------------------------------------- 9. found by the fuzz (test_fuzz_programs.py)
@pytest.mark.parametrize("key", ["[1]", '{"a": 1}', "[]"])
def test_a_dictionary_key_that_is_a_list(s2c, key):
    """A list or dictionary as a key used to be a TypeError (unhashable) in the checker."""
    rc, err = s2c(HEAD + f"a = {{{key}: 2}}\noutput a\n")
    assert rc == 1
    located(err, "p.s2:3:6", "a dictionary key must be a single value: text, a number, true, false or none")


def test_shuffle_that_is_not_a_name(s2c):
    src = (HEAD + 'a = llm(n=3, temperature=0.7) """{{ q }}"""\nb = vote(a)\noutput b\ndistill:\n    task t(target=b) """{{ q }}"""\n'
           '    keep consistent(b, shuffle=["q"])\n')
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:8:10", 'shuffle= takes one input name in quotes: shuffle="choices"')


@pytest.mark.parametrize("path, phrase", [
    ("x" * 5000, "use x: cannot open " + "x" * 80 + ": File name too long"),
    ("/dev/zero", "use x: /dev/zero is not a regular file"),  # read forever
    ("/dev/stdin", "use x: /dev/stdin is not a regular file"),  # waits for input
])
def test_use_from_a_path_that_is_no_program_file(s2c, path, phrase):
    rc, err = s2c(HEAD + f'use x from "{path}"\nb = x(q=q)\noutput b\n')
    assert rc == 1
    located(err, "p.s2:3:12", phrase)


@pytest.mark.parametrize("path, phrase", [
    ("a\x00b", "template file 'a\x00b' not found next to the program"),  # a ValueError from open()
    ("/dev/zero", "cannot read template file '/dev/zero': not a regular file"),
    ("d", "cannot read template file 'd': Is a directory"),
    ("bin.j2", "cannot read template file 'bin.j2': 'utf-8' codec can't decode byte 0xff"),
])
def test_template_file_that_cannot_be_read(s2c, tmp_path, path, phrase):
    (tmp_path / "d").mkdir()
    (tmp_path / "bin.j2").write_bytes(b"{{ q }}\xff")
    rc, err = s2c(HEAD + f'a = llm(template="{path}")\noutput a\n')
    assert rc == 1
    located(err, "p.s2:3:18", f"prompt of 'a': {phrase}")


def test_repeats_around_a_repeat_with_a_bad_count_are_budgeted(s2c, tmp_path):
    """The inner `repeat 0` unrolls into nothing, but each copy of it is still visited: 64 ** 4
    visits (about a minute) unless the budget counts them."""
    src = HEAD + "".join("    " * i + "repeat 64:\n" for i in range(4)) + "    " * 4 + "repeat 0:\n" + \
        "    " * 5 + 'a = llm() """{{ q }}"""\noutput q\n'
    rc, err = s2c(src)
    assert rc == 1
    located(err, "p.s2:3:1", "repeat 64 unrolls into 16,777,216 values")
    located(err, "p.s2:7:17", "repeat needs a count >= 1")


@pytest.mark.parametrize("option", ["temperature", "top_p", "max_tokens", "n"])
def test_llm_option_none(s2c, option):
    """`temperature=none` used to reach `none < 0`: a TypeError."""
    rc, err = s2c(HEAD + f'a = llm({option}=none) """{{{{ q }}}}"""\noutput a\n')
    assert rc == 1
    located(err, f"p.s2:3:{len(f'a = llm({option}=') + 1}", f"llm(): '{option}' must be a number")


def test_llm_seed_none_is_no_seed(s2c, tmp_path):
    rc, err = s2c(HEAD + 'a = llm(seed=none) """{{ q }}"""\noutput a\n')
    assert (rc, err) == (0, "")
    assert check_file(tmp_path / "p.s2").nodes["a"].sampling.seed is None


def test_a_value_in_nested_repeats_is_reported_unused_once(s2c):
    """Each outer copy of the inner repeat used to warn again: 64 identical warnings."""
    rc, err = s2c(HEAD + "a = q\nrepeat 64:\n    repeat 64:\n        b = lower(a)\n        a = lower(a)\noutput a\n")
    assert rc == 0
    assert err.count("warning: value 'b' is never used") == 1, err
    assert "p.s2:6:9: warning: value 'b' is never used" in err.splitlines()


def test_loop_fields_render_as_jinja_renders_them_and_the_sandbox_still_holds():
    """templates._Sandbox reads loop.index0 and its kind without the sandbox's checks: the same
    text as jinja's own unsandboxed environment, and anything else on `loop` or on a value still
    goes through the sandbox."""
    import jinja2
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError

    from s2c.compiler.templates import LOOP_FIELDS
    # previtem has no value on the first item, nextitem on the last: "-" there
    source = "{% for c in cs %}" + "|".join(f"{{{{ loop.{f} if loop.{f} is defined else '-' }}}}"
                                             for f in sorted(LOOP_FIELDS)) + ";{% endfor %}"
    values = {"cs": ["x", "y", "z"]}
    expected = jinja2.Environment(undefined=StrictUndefined).from_string(source).render(values)
    assert "|x|" in expected and "|-|" in expected and render(source, values) == expected
    for unsafe in ("{% for c in cs %}{{ loop.__class__ }}{% endfor %}", "{% for c in cs %}{{ loop._after }}{% endfor %}",
                   "{{ cs.__class__ }}", "{{ cs.append }}"):
        with pytest.raises(SecurityError, match="unsafe"):
            render(unsafe, values)


def test_jinja_globals_render_as_jinja_renders_them():
    """templates.compiled keeps a template's globals as a plain dict (a ChainMap was half of a
    render): range, dict, namespace, cycler and joiner are there as in jinja's own environment,
    and a value named like one of them still wins."""
    import jinja2
    from jinja2 import StrictUndefined

    source = ("{% for i in range(3) %}{{ i }}{% endfor %};{{ dict(a=1) }};{% set ns = namespace(n=0) %}"
              "{% for c in cs %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }};{% set cy = cycler('a', 'b') %}"
              "{{ cy.next() }}{{ cy.next() }}{{ cy.next() }};{% set j = joiner('+') %}{% for c in cs %}{{ j() }}{{ c }}{% endfor %}")
    values = {"cs": ["x", "y"]}
    expected = jinja2.Environment(undefined=StrictUndefined).from_string(source).render(values)
    assert expected == "012;{'a': 1};2;aba;x+y" and render(source, values) == expected
    assert render("{{ range }}", {"range": "mine"}) == "mine"
