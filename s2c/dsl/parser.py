"""Parse .s2 source text into AST dataclasses (s2c.dsl.ast). lark types never leave this module.

    >>> from s2c.dsl.parser import parse
    >>> p = parse('program hi "says hi"\\ninput name\\ngreet = llm() "Say hi to {{ name }}"\\noutput greet\\n')
    >>> p.name, [i.name for i in p.inputs]
    ('hi', ['name'])
"""
from __future__ import annotations

import functools
import math
import re
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    VisitError,
)
from lark.indenter import Indenter

from s2c.dsl import ast as A
from s2c.errors import S2Error, Span, source_lines

# What a user sees instead of a terminal name.
TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": "a string",
    "LONG_STRING": 'a """text block"""',
    "INT": "a whole number",
    "NUMBER": "a number",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//' or '%'",
    "TYPE_NAME": "a type (text, list or number)",
    "_NL": "end of line",
    "_INDENT": "an indented block",
    "_DEDENT": "end of the indented block",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "DOT": "'.'",
    "TRUE": "true",
    "FALSE": "false",
    "$END": "end of file",
}


def _human(term: str) -> str:
    if term in TERMINAL_NAMES:
        return TERMINAL_NAMES[term]
    if term.isupper():  # keyword terminals are named after their text, e.g. FOR -> 'for'
        return f"'{term.lower()}'"
    return term


class _BadDedent(Exception):
    """A line dedented to a column no enclosing block uses (lark's DedentError, with a position)."""

    def __init__(self, nl: Token, indent: int, levels: tuple[int, ...]):
        super().__init__(f"dedent to {indent}")
        self.line = nl.end_line  # the _NL token ends with the indentation of the next line
        self.col = len(nl.rsplit("\n", 1)[1]) + 1
        self.indent, self.levels = indent, levels


class _S2Indenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 4

    def handle_NL(self, token: Token):
        if self.paren_level == 0:
            indent_str = token.rsplit("\n", 1)[1]
            indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
            if indent < self.indent_level[-1] and indent not in self.indent_level:
                raise _BadDedent(token, indent, tuple(self.indent_level))
        yield from super().handle_NL(token)


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text()
    return Lark(
        grammar,
        parser="lalr",
        postlex=_S2Indenter(),
        propagate_positions=True,
        maybe_placeholders=True,
    )


# ---------------------------------------------------------------- string literals
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(body: str) -> str:
    """Only \\n \\t \\" \\\\ are escapes; any other backslash stays, so regexes read naturally."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body)


def make_text(tok: Token, file: str) -> A.Text:
    """A STRING or LONG_STRING token -> Text with a map from template lines to file positions.

    Triple-quoted blocks are dedented: a newline right after the opening quotes and the
    whitespace before the closing quotes are dropped, and the common indentation is removed.
    Their content is taken verbatim (no escapes): it is a jinja template.
    """
    raw = tok.value
    raw_prefix = raw[0] in "rR"
    body_start = 1 if raw_prefix else 0
    span = Span(file, tok.line, tok.column, tok.end_line, tok.end_column)
    if not raw.startswith('"""', body_start):
        body = raw[body_start + 1 : -1]
        value = body if raw_prefix else _unescape(body)
        return A.Text(value, False, ((tok.line, tok.column + body_start + 1),), span)
    body = raw[body_start + 3 : -3]
    lines = body.split("\n")
    origin = [(tok.line + i, 1) for i in range(len(lines))]
    origin[0] = (tok.line, tok.column + body_start + 3)
    if len(lines) > 1 and not lines[0].strip():
        lines, origin = lines[1:], origin[1:]
    if len(lines) > 1 and not lines[-1].strip():
        lines, origin = lines[:-1], origin[:-1]
    first_inline = origin and origin[0][0] == tok.line  # text began on the quotes' line
    body_lines = lines[1:] if first_inline else lines
    indents = [len(l) - len(l.lstrip(" \t")) for l in body_lines if l.strip()]
    cut = min(indents) if indents else 0
    out, out_origin = [], []
    for i, (line, (fl, fc)) in enumerate(zip(lines, origin)):
        if i == 0 and first_inline:
            out.append(line)
            out_origin.append((fl, fc))
        else:
            out.append(line[cut:])
            out_origin.append((fl, fc + cut))
    return A.Text("\n".join(out), True, tuple(out_origin), span)


# ---------------------------------------------------------------- tree -> AST
def _number(tok: Token, file: str) -> int | float:
    """A number literal, at most MAX_NUMBER in size (1e999 would be infinite, and a 5,000-digit
    integer is more than Python converts)."""
    digits = tok.lstrip("-").split(".")[0].split("e")[0].split("E")[0]
    v = float(tok) if any(c in tok for c in ".eE") else int(tok) if len(digits) <= 16 else math.inf
    if not abs(v) <= A.MAX_NUMBER:
        raise S2Error(f"number out of range: {str(tok)[:20]}", _tok_span(tok, file),
                      f"a number in a program is at most {A.MAX_NUMBER:.0e} in size".replace("e+", "e"))
    return v


def _span(meta, file: str) -> Span | None:
    if getattr(meta, "empty", True):
        return None
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token, file: str) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True, inline=True)
class _ToAST(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta):
        return _span(meta, self.file)

    # expressions
    def name(self, meta, tok):
        return A.Name(str(tok), _tok_span(tok, self.file))

    def string(self, meta, tok):
        return make_text(tok, self.file)

    def number(self, meta, tok):
        return A.Literal(_number(tok, self.file), _tok_span(tok, self.file))

    def bool(self, meta, tok):
        return A.Literal(str(tok) == "true", _tok_span(tok, self.file))

    def none(self, meta):
        return A.Literal(None, self._s(meta))

    def list(self, meta, *items):
        return A.ListExpr(tuple(i for i in items if i is not None), self._s(meta))

    def pair(self, meta, k, v):
        return (k, v)

    def dict(self, meta, *pairs):
        return A.DictExpr(tuple(p for p in pairs if p is not None), self._s(meta))

    def kwarg(self, meta, name, value):
        return A.Kwarg(str(name), value, _tok_span(name, self.file))

    def arguments(self, meta, *args):
        return [a for a in args if a is not None]

    def call(self, meta, name, args):
        args = args or []
        pos = tuple(a for a in args if not isinstance(a, A.Kwarg))
        kws = tuple(a for a in args if isinstance(a, A.Kwarg))
        return A.Call(str(name), pos, kws, self._s(meta), _tok_span(name, self.file))

    def prompt(self, meta, tok):
        return make_text(tok, self.file)

    # declarations and statements
    def header(self, meta, name, desc):
        return A.Header(str(name), make_text(desc, self.file), self._s(meta))

    def param(self, meta, name, type_):
        return A.Param(str(name), str(type_) if type_ else "text", _tok_span(name, self.file))

    def input_decl(self, meta, *params):
        return A.InputDecl(tuple(params), self._s(meta))

    def gold_decl(self, meta, *names):
        return A.GoldDecl(tuple(A.Name(str(n), _tok_span(n, self.file)) for n in names), self._s(meta))

    def use_decl(self, meta, name, path):
        return A.UseDecl(str(name), make_text(path, self.file) if path else None, _tok_span(name, self.file))

    def llm_assign(self, meta, target, args, prompt):
        args = args or []
        pos = [a for a in args if not isinstance(a, A.Kwarg)]
        if pos:
            raise S2Error(
                "llm(...) takes only named options; the prompt goes after the parentheses",
                getattr(pos[0], "span", None),
                hint='write: x = llm(max_tokens=256) """your prompt"""',
            )
        return A.LLMAssign(str(target), tuple(args), prompt, _tok_span(target, self.file))

    def assign(self, meta, target, value):
        return A.Assign(str(target), value, _tok_span(target, self.file))

    def binop(self, meta, left, op, right):
        return A.BinOp(str(op), left, right, self._s(meta))

    def and_op(self, meta, left, right):
        return A.BinOp("and", left, right, self._s(meta))

    def or_op(self, meta, left, right):
        return A.BinOp("or", left, right, self._s(meta))

    def not_op(self, meta, operand):
        return A.Not(operand, self._s(meta))

    def neg(self, meta, operand):
        if isinstance(operand, A.Literal) and type(operand.value) in (int, float):
            return A.Literal(-operand.value, self._s(meta))
        return A.BinOp("-", A.Literal(0, self._s(meta)), operand, self._s(meta))

    def _loop_names(self, first, second):
        """`for x in` -> (x, None); `for i, x in` -> (x, i)."""
        return (str(first), None) if second is None else (str(second), str(first))

    def for_stmt(self, meta, first, second, iterable, *body):
        var, index = self._loop_names(first, second)
        return A.For(var, iterable, tuple(body), self._s(meta), index)

    def repeat_stmt(self, meta, count, index, *body):
        return A.Repeat(_number(count, self.file), tuple(body), self._s(meta), str(index) if index else None)

    def scan_stmt(self, meta, first, second, iterable, bound, *body):
        var, index = self._loop_names(first, second)
        return A.Scan(var, iterable, _number(bound, self.file), tuple(body), self._s(meta), index)

    def while_stmt(self, meta, cond, bound, *body):
        return A.While(cond, _number(bound, self.file), tuple(body), self._s(meta))

    def if_stmt(self, meta, cond, *rest):
        *body, orelse = rest
        return A.If(cond, tuple(body), tuple(orelse or ()), self._s(meta))

    def else_block(self, meta, *body):
        return list(body)

    def output_decl(self, meta, name, value):
        return A.Output(str(name), value, _tok_span(name, self.file))

    def task(self, meta, name, args, prompt):
        args = args or []
        pos = [a for a in args if not isinstance(a, A.Kwarg)]
        if pos:
            raise S2Error(
                "task(...) takes only named options (target=, weight=, system=)",
                getattr(pos[0], "span", None),
                hint='write: task judge(target=verdict) """System-1 prompt"""',
            )
        return A.Task(str(name), tuple(args), prompt, _tok_span(name, self.file))

    def task_for(self, meta, var, iterable, *tasks):
        return A.TaskFor(str(var), iterable, tuple(tasks), self._s(meta))

    def keep(self, meta, rule):
        return A.Keep(rule, self._s(meta))

    def distill(self, meta, fmt, *items):
        return A.Distill(str(fmt) if fmt else None, tuple(items), self._s(meta))

    def metric(self, meta, call):
        return A.Metric(call, self._s(meta))

    def parse(self, meta, value):
        return A.Parse(value, self._s(meta))

    def eval(self, meta, *items):
        return A.Eval(tuple(items), self._s(meta))

    def start(self, meta, header, *items):
        return (header, tuple(items))


# ---------------------------------------------------------------- errors
KEYWORDS = ("program", "input", "gold", "use", "from", "llm", "for", "in", "repeat", "scan", "while", "if", "else",
            "and", "or", "not", "output", "distill", "task", "keep", "eval", "metric", "parse", "true", "false", "none")
NOT_S2 = {"elif", "def", "import", "return", "print", "with", "try", "let", "var", "break", "continue"}


def _line(lines: list[str], n: int) -> str:
    return lines[n - 1] if 1 <= n <= len(lines) else ""


def _next_code_line(lines: list[str], after: int) -> int:
    """The first line after `after` that is not blank or a comment (where an indent shows)."""
    for n in range(after + 1, len(lines) + 1):
        if lines[n - 1].strip() and not lines[n - 1].lstrip().startswith("#"):
            return n
    return after


def _prev_code_line(lines: list[str], before: int) -> int:
    for n in range(before - 1, 0, -1):
        if lines[n - 1].strip() and not lines[n - 1].lstrip().startswith("#"):
            return n
    return 0


def _unexpected_character(lines: list[str], line: int, col: int, file: str) -> S2Error:
    code = _line(lines, line)
    rest = code[col - 1 :]
    ch = rest[:1]
    span = Span(file, line, col, line, col + 1)
    if rest.startswith('"') and code[max(0, col - 3) : col + 0].endswith('"""'):  # lexed as "" then "
        return S2Error('this """text block""" is never closed', Span(file, line, col - 2, line, col + 1),
                       'end it with """ (a block may span lines)')
    if ch == '"':
        return S2Error("this string is not closed on its line", span,
                       'a "string" ends on the line it starts; for text over several lines use a """block"""')
    hint = None
    if ch == "'":
        hint = "strings use double quotes: \"...\" or a \"\"\"block\"\"\""
    elif ch == "\t":
        hint = "indent with spaces"
    elif ch and not ch.isprintable():
        hint = f"an invisible character (U+{ord(ch):04X}); delete it"
    return S2Error(f"unexpected character {ch!r}", span, hint)


def _token_text(tok: Token) -> str:
    text = str(tok)
    first = text.split("\n", 1)[0]
    if len(first) > 40 or first != text:
        first = first[:37] + "..."
    return repr(first)


def _syntax_hint(tok: Token, expected: list[str], lines: list[str], line: int) -> str | None:
    text = _line(lines, line)
    words = text.split()
    first = words[0].rstrip(":") if words else ""
    if first == "elif":
        return "'elif' is not part of the .s2 language: write else: with an if inside it"
    if first in NOT_S2:
        return f"'{first}' is not part of the .s2 language; see docs/language.md"
    kw = re.match(r"\s*(\w+)\s*=(?!=)", text)
    if kw and kw.group(1) in KEYWORDS and not (kw.group(1) == "parse" and tok.type != "EQUAL"):
        return f"'{kw.group(1)}' is a keyword of the language and cannot be a name; choose another name"
    if "'='" in expected and re.match(r"\s*\w+\s+[^\s=]", text):
        return f"is a '=' missing? write: {words[0]} = ..."
    if tok.type == "LLM":
        return 'llm(...) is a statement of its own: x = llm(...) """prompt""", then use x'
    if "'program'" in expected:
        return 'a program starts with: program NAME "what it does"'
    prev = _prev_code_line(lines, line)
    if prev and _line(lines, prev).rstrip().endswith(":") and tok.type not in ("_INDENT",):
        indent = len(text) - len(text.lstrip())
        prev_indent = len(_line(lines, prev)) - len(_line(lines, prev).lstrip())
        if indent <= prev_indent:
            return f"the block after ':' on line {prev} is empty: indent its statements under it"
    if "')'" in expected and text.count("(") > text.count(")"):
        return "is a ')' missing?"
    return None


# A """ left open mid-file runs to the next """, usually the one opening the next prompt: from
# there on code is read as text and text as code, and lark's error comes later, at some word of a
# prompt. The block that ends where code opens a block (`x = llm(...) """`) is the one never closed.
_TEXT_TOKENS = re.compile(r'#[^\n]*|(?P<block>"""[\s\S]*?""")|"(?:[^"\\\n]|\\.)*"')
_OPENS_A_BLOCK = re.compile(r"(?:\bllm\s*\(.*\)|^\s*task\s+\w+\s*\(.*\)|=)\s*[rR]?\Z")


def _unclosed_block(text: str, file: str, line: int, col: int) -> S2Error | None:
    """The error for a text block that took in code, if one ends before the error at line:col."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]  # lark counts lines at \n only
    at = starts[line - 1] + col - 1 if 1 <= line <= len(starts) else len(text)
    for m in _TEXT_TOKENS.finditer(text, 0, at):
        if m.group("block") is None or "\n" not in m.group("block"):
            continue
        close = m.end() - 3
        if not _OPENS_A_BLOCK.search(text[text.rfind("\n", 0, close) + 1 : close]):
            continue
        open_line, close_line = text.count("\n", 0, m.start()) + 1, text.count("\n", 0, close) + 1
        open_col = m.start() - starts[open_line - 1] + 1
        return S2Error('this """text block""" is never closed', Span(file, open_line, open_col, open_line, open_col + 3),
                       f'it ends only at the """ on line {close_line}, so the code up to there was read as its '
                       'text: close it with """ where the text ends')
    return None


def _syntax_error(e: UnexpectedInput, text: str, file: str) -> S2Error:
    lines = source_lines(text)
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    unclosed = _unclosed_block(text, file, line, col)  # a line < 1 (end of file) searches it all
    if unclosed is not None:
        return unclosed
    if isinstance(e, UnexpectedCharacters):
        return _unexpected_character(lines, line, col, file)
    # operators may follow any expression: listing them would hide what is missing
    # (`accepts`: what lark's LALR tables accept here exactly; `expected` merges states)
    expected = sorted({_human(t) for t in getattr(e, "accepts", None) or getattr(e, "expected", None) or set()
                       if t not in ("ADD_OP", "MUL_OP", "COMP_OP", "AND", "OR")})
    if isinstance(e, UnexpectedEOF):
        return S2Error(
            "unexpected end of file" + (f", expected {', '.join(expected)}" if expected else ""),
            Span(file, line if line > 0 else len(lines) or 1, max(col, 1)),
        )
    tok: Token = e.token  # type: ignore[attr-defined]
    width = 1
    if tok.type == "$END":  # point just past the last character
        line = len(lines) or 1
        col = len(_line(lines, line)) + 1
        got = "end of file"
    elif tok.type == "_NL":
        got = "end of line"
    elif tok.type == "_INDENT":  # lark puts it at the end of the line before: show the indented line
        got = "indentation"
        line = _next_code_line(lines, line)
        code = _line(lines, line)
        col = len(code) - len(code.lstrip()) + 1
        width = max(1, len(code.strip()))
    elif tok.type == "_DEDENT":
        got = "end of an indented block"
    else:
        got = _token_text(tok)
        width = max(1, min(len(str(tok).split("\n", 1)[0]), len(_line(lines, line)) - col + 1))
    msg = f"unexpected {got}"
    if expected and len(expected) <= 6:
        msg += f", expected {' or '.join(expected)}" if len(expected) <= 2 else f", expected one of: {', '.join(expected)}"
    if got == "indentation":
        hint = "only the body of a for / repeat / scan / distill / eval block is indented"
    else:
        hint = _syntax_hint(tok, expected, lines, line)
    return S2Error(msg, Span(file, line, col, line, col + width), hint)


def _dedent_error(e: _BadDedent, text: str, file: str) -> S2Error:
    unclosed = _unclosed_block(text, file, e.line, e.col)
    if unclosed is not None:
        return unclosed
    code = _line(source_lines(text), e.line)
    levels = [str(n) for n in reversed(e.levels)]
    levels = " or ".join([", ".join(levels[:-1]), levels[-1]] if len(levels) > 1 else levels)
    return S2Error(f"this line is indented by {e.indent}, which lines up with no enclosing block",
                   Span(file, e.line, e.col, e.line, e.col + max(1, len(code.strip()))),
                   f"indent it by {levels} spaces, like the lines of the block it belongs to")


# Nodes of the parse tree that nest: a limit on each kind keeps the recursive stages after the parser
# (the transformer below, the checker, the printer) within Python's recursion limit.
_EXPR_NODES = {"call", "list", "dict", "binop", "neg", "and_op", "or_op", "not_op"}
_BLOCK_NODES = {"for_stmt", "repeat_stmt", "scan_stmt", "while_stmt", "if_stmt", "else_block", "task_for"}


def _check_nesting(tree: Tree, file: str) -> None:
    """Raise S2Error at the first expression or block nested past the limits (an iterative walk:
    the LALR parser builds any depth without recursion, but a recursive walk would not survive)."""
    stack = [(tree, 0, 0)]
    while stack:
        node, exprs, blocks = stack.pop()
        exprs += node.data in _EXPR_NODES
        blocks += node.data in _BLOCK_NODES
        if exprs > A.MAX_EXPR_DEPTH or blocks > A.MAX_BLOCK_DEPTH:
            what, limit = (("expression", A.MAX_EXPR_DEPTH) if exprs > A.MAX_EXPR_DEPTH
                           else ("block", A.MAX_BLOCK_DEPTH))
            hint = ("name an inner part first: x = ..., then use x" if what == "expression"
                    else "split the work into programs and compose them with use")
            kinds = ("calls, lists, dictionaries and operators" if what == "expression"
                     else "for, repeat, scan, while and if blocks")
            raise S2Error(f"{what} nested too deeply: {kinds} nest at most {limit} deep",
                          Span(file, node.meta.line, node.meta.column, node.meta.line, node.meta.column + 1),
                          hint)
        stack.extend((c, exprs, blocks) for c in reversed(node.children) if isinstance(c, Tree))


def parse(text: str, file: str = "<string>") -> A.Program:
    """Source text -> Program. Raises S2Error (with file:line:col) at the first syntax error."""
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, file) from None
    except _BadDedent as e:
        raise _dedent_error(e, text, file) from None
    _check_nesting(tree, file)
    try:
        header, items = _ToAST(file).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, S2Error):
            raise e.orig_exc from None
        raise
    return A.Program(file, header, items, text)


def parse_file(path: str | Path) -> A.Program:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise S2Error(f"no such program file: {path}") from None
    except IsADirectoryError:
        raise S2Error(f"{path} is a directory, not a program file",
                      hint=f"name a .s2 file, e.g. {path / 'NAME.s2'}") from None
    except OSError as e:  # permission denied, a broken device: the file cannot be read
        raise S2Error(f"cannot read program file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise S2Error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse(text, str(path))
