"""Print an AST back to .s2 source (comments are not kept). parse(print(p)) == p."""
from __future__ import annotations

from s2c.dsl import ast as A

IND = "    "


def _text(t: A.Text, indent: str) -> str:
    if t.long:
        if '"""' in t.value:
            raise ValueError('a text block cannot contain """')
        body = "\n".join((indent + l) if l.strip() else "" for l in t.value.split("\n"))
        return f'"""\n{body}\n{indent}"""'
    if "\\" in t.value and '"' not in t.value and "\n" not in t.value:
        return f'r"{t.value}"'  # raw: backslashes as written (regexes)
    escaped = t.value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t").replace("\n", "\\n")
    return '"' + escaped + '"'


def expr(e: A.Expr, indent: str = "") -> str:
    if isinstance(e, A.Text):
        return _text(e, indent)
    if isinstance(e, A.Literal):
        v = e.value
        return "none" if v is None else ("true" if v else "false") if isinstance(v, bool) else repr(v)
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.ListExpr):
        return "[" + ", ".join(expr(i, indent) for i in e.items) + "]"
    if isinstance(e, A.DictExpr):
        return "{" + ", ".join(f"{expr(k, indent)}: {expr(v, indent)}" for k, v in e.pairs) + "}"
    if isinstance(e, A.Call):
        return f"{e.func}({_args(e.args, e.kwargs, indent)})"
    if isinstance(e, A.BinOp):  # parenthesized: the printed form parses to the same tree
        return f"({expr(e.left, indent)} {e.op} {expr(e.right, indent)})"
    if isinstance(e, A.Not):
        return f"(not {expr(e.operand, indent)})"
    raise TypeError(e)


def _args(args, kwargs, indent) -> str:
    return ", ".join([expr(a, indent) for a in args] + [f"{k.name}={expr(k.value, indent)}" for k in kwargs])


def _prompt(p: A.Text | None, indent: str) -> str:
    return "" if p is None else " " + _text(A.Text(p.value, True), indent)


def stmt(s, indent: str = "") -> list[str]:
    if isinstance(s, A.LLMAssign):
        return [f"{indent}{s.target} = llm({_args((), s.kwargs, indent)}){_prompt(s.prompt, indent)}"]
    if isinstance(s, A.Assign):
        return [f"{indent}{s.target} = {expr(s.value, indent)}"]
    if isinstance(s, A.For):
        names = f"{s.index}, {s.var}" if s.index else s.var
        return [f"{indent}for {names} in {expr(s.iterable, indent)}:"] + [
            l for b in s.body for l in stmt(b, indent + IND)
        ]
    if isinstance(s, A.Scan):
        names = f"{s.index}, {s.var}" if s.index else s.var
        return [f"{indent}scan {names} in {expr(s.iterable, indent)} up to {s.bound}:"] + [
            l for b in s.body for l in stmt(b, indent + IND)
        ]
    if isinstance(s, A.While):
        return [f"{indent}while {expr(s.cond, indent)} up to {s.bound}:"] + [
            l for b in s.body for l in stmt(b, indent + IND)]
    if isinstance(s, A.If):
        lines = [f"{indent}if {expr(s.cond, indent)}:"] + [l for b in s.body for l in stmt(b, indent + IND)]
        if s.orelse:
            lines += [f"{indent}else:"] + [l for b in s.orelse for l in stmt(b, indent + IND)]
        return lines
    if isinstance(s, A.Repeat):
        return [f"{indent}repeat {s.count}{' as ' + s.index if s.index else ''}:"] + [
            l for b in s.body for l in stmt(b, indent + IND)]
    if isinstance(s, A.InputDecl):
        return [indent + "input " + ", ".join(p.name + (f": {p.type}" if p.type != "text" else "") for p in s.params)]
    if isinstance(s, A.GoldDecl):
        return [indent + "gold " + ", ".join(n.id for n in s.names)]
    if isinstance(s, A.UseDecl):
        return [f"{indent}use {s.name}" + (f" from {_text(s.path, indent)}" if s.path else "")]
    if isinstance(s, A.Output):
        return [f"{indent}output {s.name}" + (f" = {expr(s.value, indent)}" if s.value else "")]
    if isinstance(s, A.Task):
        return [f"{indent}task {s.name}({_args((), s.kwargs, indent)}){_prompt(s.prompt, indent)}"]
    if isinstance(s, A.TaskFor):
        return [f"{indent}for {s.var} in {expr(s.iterable, indent)}:"] + [
            l for t in s.tasks for l in stmt(t, indent + IND)
        ]
    if isinstance(s, A.Keep):
        return [f"{indent}keep {expr(s.rule, indent)}"]
    if isinstance(s, A.Distill):
        head = f"{indent}distill{' ' + s.format if s.format else ''}:"
        return [head] + [l for i in s.items for l in stmt(i, indent + IND)]
    if isinstance(s, A.Metric):
        return [f"{indent}metric {expr(s.call, indent)}"]
    if isinstance(s, A.Parse):
        return [f"{indent}parse = {expr(s.value, indent)}"]
    if isinstance(s, A.Eval):
        return [f"{indent}eval:"] + [l for i in s.items for l in stmt(i, indent + IND)]
    raise TypeError(s)


def to_source(p: A.Program) -> str:
    lines = [f"program {p.header.name} {_text(A.Text(p.header.description.value), '')}"]
    for item in p.items:
        lines.append("")
        lines.extend(stmt(item))
    return "\n".join(lines) + "\n"
