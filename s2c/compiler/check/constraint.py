"""Constrained decoding: `llm(choice=[...])`, `llm(regex="...")` and `llm(json={...})` become the
call's `Constraint`, checked now so that no engine meets a constraint it cannot compile:

- choice: a non-empty list of distinct texts;
- regex: compiles, and uses nothing the grammar engines (xgrammar, llguidance) cannot enforce:
  look-arounds, backreferences, \\b and \\B;
- json: a dictionary of field names to field types (tables.JSON_FIELD_TYPES), compiled to a JSON
  Schema object whose fields are all required and no others allowed.

`json_fields` gives the checker a json= call's fields, so that `get(x, "field")` is checked and
typed. `parse_suggestions` finds unconstrained calls whose only readers parse them (the warning
with the option to add).
"""
from __future__ import annotations

import json
import re
import re._parser as sre_parse  # Python's own regex parser: the tree tells which constructs a pattern uses

from s2c.calls import Constraint
from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext
from s2c.compiler.check.regex import regex_error
from s2c.compiler.tables import JSON_FIELD_TYPES
from s2c.compiler.types import NUMBER, TEXT, Type
from s2c.dsl import ast as A

KINDS = ("choice", "regex", "json")
ANY_TEXT = r"[\s\S]*"  # any text, newlines included, as every grammar engine reads it

# What a grammar engine cannot enforce while decoding, by the regex parser's opcode.
_UNENFORCEABLE = {
    sre_parse.ASSERT: "a look-ahead or look-behind",
    sre_parse.ASSERT_NOT: "a negative look-ahead or look-behind",
    sre_parse.GROUPREF: "a backreference",
    sre_parse.GROUPREF_EXISTS: "a conditional group",
}
_WORD_EDGES = {sre_parse.AT_BOUNDARY: "\\b", sre_parse.AT_NON_BOUNDARY: "\\B"}

_FIELD_TYPES = {"text": TEXT, "number": NUMBER, "bool": Type("bool"),
                "list[text]": TEXT.listed(), "list[number]": NUMBER.listed()}


def constraint(ctx: CheckContext, s: A.LLMAssign, opts: dict) -> Constraint | None:
    """The call's constraint from its options (at most one of choice=, regex=, json=), or None.
    A bad one is reported and left out."""
    given = [k for k in s.kwargs if k.name in KINDS]
    if not given:
        return None
    if len(given) > 1:
        ctx.error(f"llm(): give at most one of choice=, regex= and json=; this call has "
                  f"{' and '.join(k.name + '=' for k in given)}", given[1].span)
        return None
    kw = given[0]
    where = kw.value.span if hasattr(kw.value, "span") else kw.span
    if kw.name == "choice":
        options = opts.get("choice")
        if not (isinstance(options, tuple) and options):
            ctx.error("llm(): choice= takes a non-empty list of texts", where, 'e.g. choice=["yes", "no"]')
            return None
        if len(set(options)) < len(options):
            dup = next(o for i, o in enumerate(options) if o in options[:i])
            ctx.error(f"llm(): choice= lists {dup!r} twice", where)
            return None
        return Constraint("choice", options)
    if kw.name == "regex":
        pattern = opts.get("regex")
        if not isinstance(pattern, str) or not isinstance(kw.value, A.Text):
            ctx.error("llm(): regex= takes a regular expression in quotes", where,
                      'e.g. regex="[^\\n]{0,300}The answer is (yes|no)\\."')
            return None
        if not _enforceable(ctx, pattern, kw.value):
            return None
        return Constraint("regex", pattern)
    schema = _schema(ctx, kw.value, where)
    return None if schema is None else Constraint("json", json.dumps(schema, sort_keys=True))


def _enforceable(ctx: CheckContext, pattern: str, lit: A.Text) -> bool:
    """The pattern compiles and a grammar engine can enforce it; else report and say False."""
    try:
        re.compile(pattern)  # the errors regex() reports
        tree = sre_parse.parse(pattern)
    except re.error as e:
        regex_error(ctx, "llm() regex=", e, lit)
        return False
    except OverflowError as e:  # a{99999999999}
        ctx.error(f"llm() regex=: bad regular expression: {e}", lit.span)
        return False
    except RecursionError:  # only nesting makes the regex parser recurse this deep
        ctx.error("llm() regex=: bad regular expression: nested too deeply", lit.span)
        return False
    found = _unenforceable(tree)
    if found:
        ctx.error(f"llm(): regex= uses {found}, which constrained decoding cannot enforce", lit.span,
                  "the reply must match the whole pattern as it is written; use plain characters, "
                  "classes, groups, | and repeats")
        return False
    return True


def _unenforceable(tree) -> str | None:
    for op, arg in tree:
        if op in _UNENFORCEABLE:
            return _UNENFORCEABLE[op]
        if op == sre_parse.AT and arg in _WORD_EDGES:
            return f"the word boundary {_WORD_EDGES[arg]}"
        for sub in _subpatterns(op, arg):
            found = _unenforceable(sub)
            if found:
                return found
    return None


def _subpatterns(op, arg):
    if op == sre_parse.SUBPATTERN:
        yield arg[-1]
    elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT):
        yield arg[2]
    elif op == sre_parse.BRANCH:
        yield from arg[1]
    elif op == sre_parse.ATOMIC_GROUP:
        yield arg


def _schema(ctx: CheckContext, value: A.Expr, where) -> dict | None:
    """json={"field": "type", ...} -> a JSON Schema object, every field required, no others."""
    example = 'e.g. json={"answer": "text", "confidence": "number"}'
    if not isinstance(value, A.DictExpr) or not value.pairs:
        ctx.error("llm(): json= takes a dictionary of field names to types", where, example)
        return None
    props = {}
    for k, v in value.pairs:
        if not isinstance(k, A.Text) or not k.value.isidentifier():
            ctx.error("llm(): a json= field name is a name in quotes", getattr(k, "span", where), example)
            return None
        if k.value in props:
            ctx.error(f"llm(): json= names the field '{k.value}' twice", getattr(k, "span", where))
            return None
        if not isinstance(v, A.Text) or v.value not in JSON_FIELD_TYPES:
            ctx.error(f"llm(): json= field '{k.value}' has no type s2c knows",
                      getattr(v, "span", where), f"the types: {', '.join(JSON_FIELD_TYPES)}")
            return None
        props[k.value] = JSON_FIELD_TYPES[v.value]
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def json_fields(node: ir.Node | None) -> dict[str, Type] | None:
    """The fields of a json= llm call and their types, or None for any other node."""
    c = node.sampling.constraint if node is not None and node.sampling is not None else None
    if c is None or c.kind != "json":
        return None
    names = {json.dumps(t, sort_keys=True): name for name, t in JSON_FIELD_TYPES.items()}
    props = json.loads(c.spec)["properties"]
    return {f: _FIELD_TYPES[names[json.dumps(t, sort_keys=True)]] for f, t in props.items()}


def json_source(ctx: CheckContext, e: ir.IRExpr) -> ir.Node | None:
    """The json= llm call whose reply `e` is: the call itself, an item of its samples, or json() of either."""
    if isinstance(e, ir.FnCall) and e.fn == "json" and e.args:
        e = e.args[0]
    if not isinstance(e, ir.RefExpr):
        return None
    ref = e.ref
    if isinstance(ref, ir.ItemRef):
        ref = ctx.loops[ref.loop].iterable
    node = ctx.nodes.get(ref.node) if isinstance(ref, ir.NodeRef) else None
    return node if json_fields(node) is not None else None


def unconstrained_parses(ctx: CheckContext, tasks: list[ir.TaskIR]):
    """Warn about an unconstrained llm call whose every reader parses it with regex() or choice():
    a reply the parse cannot read is paid for and lost. The warning names the option to add (the
    program is never changed). Only for a program without errors: advice, once it runs."""
    if any(d.severity == "error" for d in ctx.diags):
        return
    for node in ctx.nodes.values():
        if node.kind != "llm" or node.sampling.constraint is not None or node.origin_program != ctx.program.file:
            continue
        if "#" in node.id and not node.id.endswith("#1"):  # once per statement, not per repeat copy
            continue
        parses = _parse_readers(ctx, node, tasks)
        if parses:
            ctx.warn(f"'{node.name}' is only read by {parses[0].fn}(), and its replies are not constrained: "
                     "a reply the parse cannot read ends unparsed", node.span, _suggestion(parses[0]))


def _parse_readers(ctx: CheckContext, node: ir.Node, tasks: list[ir.TaskIR]) -> list[ir.FnCall]:
    """The regex()/choice() calls that read `node`'s replies, or [] when anything else reads them."""
    def is_node(ref) -> bool:
        seen = set()
        while True:
            if isinstance(ref, ir.ItemRef):
                ref = ctx.loops[ref.loop].iterable
            if not isinstance(ref, ir.NodeRef) or ref.node in seen:
                return False
            if ref.node == node.id:
                return True
            seen.add(ref.node)
            alias = ctx.nodes.get(ref.node)  # a value that is another one (a loop's list, a binding)
            if alias is None or alias.kind != "transform" or not isinstance(alias.expr, ir.RefExpr):
                return False
            ref = alias.expr.ref

    parses: list[ir.FnCall] = []
    for m in ctx.nodes.values():
        if m.kind == "llm":
            if any(is_node(r) for r in m.vars.values()) or (m.continues == node.id):
                return []
        elif m.expr is not None and not isinstance(m.expr, ir.RefExpr):
            for ref, parent in _reads(m.expr, None):
                if not is_node(ref):
                    continue
                if isinstance(parent, ir.FnCall) and parent.fn in ("regex", "choice") and \
                        isinstance(parent.args[0], ir.RefExpr) and parent.args[0].ref == ref:
                    parses.append(parent)
                else:
                    return []
    read_whole = [*ctx.outputs.values(), *(r for t in tasks for e in (t.target, t.rationale)
                                           if e is not None for r in ir.refs_of(e))]
    return [] if any(is_node(r) for r in read_whole) else parses


def _reads(e: ir.IRExpr, parent):
    """(reference, the call it is an argument of) for every reference in `e`."""
    if isinstance(e, ir.RefExpr):
        yield e.ref, parent
    elif isinstance(e, ir.FnCall):
        for a in (*e.args, *(v for _, v in e.kwargs)):
            yield from _reads(a, e)
    else:
        for r in ir.refs_of(e):
            yield r, None


def _suggestion(parse: ir.FnCall) -> str:
    arg = parse.args[1] if len(parse.args) > 1 else None
    value = arg.value if isinstance(arg, ir.Const) else None
    if parse.fn == "choice" and isinstance(value, list) and value:
        return "add choice=[" + ", ".join(_s2_string(str(v)) for v in value) + "] to the call"
    extract = ("or keep the free reply and extract the answer with a constrained call that continues it: "
               "for r in replies: answer = llm(continue=r, choice=[...]) \"\"\"Therefore, the answer is\"\"\"")
    if parse.fn == "regex" and isinstance(value, str):
        flags = re.match(r"\(\?[aiLmsux]+\)", value)
        lead = flags.group(0) if flags else ""
        try:
            enforceable = _unenforceable(sre_parse.parse(value)) is None
        except re.error:
            enforceable = False
        if enforceable:
            option = _s2_string(lead + ANY_TEXT + value[len(lead):])
            return f"add regex={option} to the call, so that every reply ends with what the parse looks for; {extract}"

    return f"constrain the call with regex= or choice=, {extract}"


def _s2_string(text: str) -> str:
    """`text` as a .s2 string literal: raw (r"...", read verbatim) unless it holds a quote or a line break."""
    if '"' not in text and "\n" not in text:
        return f'r"{text}"' if "\\" in text else f'"{text}"'
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
