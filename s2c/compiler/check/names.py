"""Names: each value is defined once, under a stable id taken from the source (`draft#2` in a
repeat, `best/choose` in a used program, `x@7` for a second repeat refining `x`); a name that
means nothing here gets the error that says what it is instead (a gold field, a program, a typo,
a value defined further down).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from s2c.compiler import ir
from s2c.compiler.check.context import CheckContext, Scope
from s2c.dsl import ast as A
from s2c.errors import Span, did_you_mean


def node_id(ctx: CheckContext, name: str, scope: Scope, span: Span | None = None) -> str:
    nid = f"{scope.prefix}{name}{scope.suffix}"
    if scope.suffix and span and nid in ctx.nodes:  # a second repeat refining the same name
        nid = f"{nid}@{span.line}"
    return nid


def define(ctx: CheckContext, name: str, span, scope: Scope, node: ir.Node, defined_here: set[str]):
    """Add `node` to the graph as `name`, unless the name is taken here (reported)."""
    if name in defined_here:
        _taken(ctx, name, span, scope)
        return
    if name in ctx.gold_names:  # else `metric m(answer, answer)` would read two different things
        ctx.error(f"'{name}' is a gold field; a value of the program needs another name", span,
                  f"e.g. '{name}_pred' or 'final'")
        return
    if name in scope.names and not scope.suffix:  # a repeat iteration refines its earlier value
        _taken(ctx, name, span, scope)
        return
    defined_here.add(name)
    ctx.nodes[node.id] = node
    scope.names[name] = ir.NodeRef(node.id)


def _taken(ctx: CheckContext, name: str, span, scope: Scope):
    what = "an input" if name in ctx.input_names and not scope.prefix else "already defined"
    ctx.error(f"'{name}' is {what}", span, "each name is assigned once (use repeat to refine a value)")


def undefined(ctx: CheckContext, name: str, span, scope: Scope, extra=None):
    """Report a name that is not defined at this point, saying what it is if it is something."""
    known = set(scope.names) | set(extra or {})
    if name in ctx.gold_names:
        ctx.error(
            f"'{name}' is a gold field: only keep rules and metrics may read it",
            span,
            "a program (or System-1 prompt) that reads the gold label leaks the answer",
        )
    elif name in ctx.programs:
        ctx.error(f"'{name}' is a program; call it with its inputs: {name}(...)", span)
    elif name in ctx.scan_locals and ctx.local_block.get(name) == "if":
        at = ctx.scan_locals[name]
        ctx.error(f"'{name}' is assigned in only one branch of the if{f' (line {at.line})' if at else ''} and "
                  "not before it, so it has no value after the if when the other branch ran", span,
                  f"assign it in both branches, or before the if: {name} = ... above it")
        if at is not None:
            ctx.read_too_early.add(at)
    elif name in ctx.scan_locals:
        at = ctx.scan_locals[name]
        block = ctx.local_block.get(name, "scan")
        each = "round" if block == "while" else "iteration"
        ctx.error(f"'{name}' is assigned inside a {block}{f' (line {at.line})' if at else ''}, so it belongs to "
                  f"each {each} and has no value after the {block}", span,
                  f"define it before the {block} to carry its last value out ({name} = ... above it), or "
                  f"collect it in a list: {name}_all = [] above it, and {name}_all = {name}_all + [{name}] in its body")
        if at is not None:
            ctx.read_too_early.add(at)  # its "never used" would contradict this error
    elif not defined_later(ctx, name, span):
        ctx.error(f"undefined name '{name}'", span, did_you_mean(name, known))


def defined_later(ctx: CheckContext, name: str, span: Span | None, what: str | None = None) -> bool:
    """Report `name`, read at `span` where it has no value, if this program defines it further down
    or in the very statement that reads it (`what`: the prompt reading it); else False. Statements
    are lowered in order, so a forward reference is undefined where it is read; saying where the
    definition is (and not also that it is never used) is the useful error."""
    index = _definitions(ctx.program)
    at = _use_position(ctx, index, span)
    if at is None or name not in index.defs:
        return False
    reader = _reader(index, at)
    if reader is not None and reader.name == name:
        msg = f"{what} uses '{name}', the value it defines" if what else f"'{name}' is used in its own definition"
        if reader.refined_by is not None:
            hint = f"give '{name}' a first value before the {reader.refined_by}: each iteration then reads the one before"
        else:
            hint = "a value cannot read itself: read another value here (a repeat refines a value step by step)"
        ctx.error(msg, span, hint)
        ctx.read_too_early.add(reader.span)
        return True
    later = next((d for d in index.defs[name] if d.at > at), None)
    if later is None:
        return False
    where = f"line {later.span.line}" + (f" of {later.span.file}" if span.file != later.span.file else "")
    msg = (f"{what} uses '{name}' before it is defined (at {where})" if what
           else f"'{name}' is used before it is defined (at {where})")
    block = next((b for b in reversed(later.blocks) if b.start <= at < b.end), None)
    if block is not None:  # both in one repeat: its first iteration has no value yet
        hint = (f"the first iteration of the {block.kind} has no '{name}' yet: give it a first value before "
                f"the {block.kind}, or move this statement below {where}")
    else:
        hint = f"move this statement below {where}, or the definition of '{name}' above it"
    ctx.error(msg, span, hint)
    ctx.read_too_early.add(later.span)  # its "never used" would contradict this error
    return True


# ---------------------------------------------------------------- where each name is defined
Position = tuple[int, int]  # (line, column) in the program's file


@dataclass(frozen=True)
class _Block:
    kind: str  # "repeat" or "scan": blocks whose iterations read the values of the one before
    start: Position
    end: Position


@dataclass(frozen=True)
class _Def:
    name: str | None  # the name the statement defines, if it defines one
    at: Position
    span: Span
    blocks: tuple[_Block, ...]  # the enclosing repeat / scan blocks, outermost first
    refined_by: str | None  # "repeat" / "scan" if inside one, for the hint
    template: str | None  # the template= file of an llm call


@dataclass(frozen=True)
class _Index:
    statements: tuple[_Def, ...]  # every statement, in source order
    starts: tuple[Position, ...]  # where each one starts
    defs: dict[str, tuple[_Def, ...]]  # name -> the statements that define it, in source order


_INDEXES: dict[int, tuple[A.Program, _Index]] = {}


def _definitions(program: A.Program) -> _Index:
    """The program's statements, read from its AST (through for / repeat / scan bodies, however
    the checker lowers them); cached per program object."""
    hit = _INDEXES.get(id(program))
    if hit is not None and hit[0] is program:
        return hit[1]
    statements: list[_Def] = []

    def walk(items, blocks: tuple[_Block, ...]):
        for it in items:
            sp = getattr(it, "span", None)
            if sp is None:
                continue
            target = getattr(it, "target", None)
            if isinstance(it, A.Output):
                target = it.name if it.value is not None else None
            template = None
            if isinstance(it, A.LLMAssign):
                t = it.kwarg("template")
                template = t.value if isinstance(t, A.Text) else None
            statements.append(_Def(target if isinstance(target, str) else None, (sp.line, sp.col), sp, blocks,
                                   blocks[-1].kind if blocks else None, template))
            body = getattr(it, "body", None)
            if isinstance(body, tuple):
                kind = type(it).__name__.lower()
                inner = blocks
                if kind in ("repeat", "scan") and sp.end_line is not None:
                    inner = blocks + (_Block(kind, (sp.line, sp.col), (sp.end_line, sp.end_col or 1)),)
                walk(body, inner)

    walk(program.items, ())
    statements.sort(key=lambda d: d.at)
    defs: dict[str, list[_Def]] = {}
    for d in statements:
        if d.name is not None:
            defs.setdefault(d.name, []).append(d)
    index = _Index(tuple(statements), tuple(d.at for d in statements), {k: tuple(v) for k, v in defs.items()})
    if len(_INDEXES) > 64:
        _INDEXES.clear()
    _INDEXES[id(program)] = (program, index)
    return index


def _use_position(ctx: CheckContext, index: _Index, span: Span | None) -> Position | None:
    """Where in the program a name is read: its own place, or for a template= file the llm call's."""
    if span is None:
        return None
    if span.file == ctx.program.file:
        return (span.line, span.col)
    here = Path(ctx.program.file).parent
    return next((d.at for d in index.statements if d.template and str(here / d.template) == span.file), None)


def _reader(index: _Index, at: Position) -> _Def | None:
    """The statement a position is in: the last one that starts at or before it."""
    i = bisect_right(index.starts, at)
    return index.statements[i - 1] if i else None


def ref_deps(ctx: CheckContext, refs) -> tuple[str, ...]:
    """The node ids that reading `refs` depends on, in order, once each."""
    out: list[str] = []
    for r in refs:
        if isinstance(r, ir.NodeRef):
            out.append(r.node)
        else:  # a loop item depends on the loop's iterable (and its enclosing loops' iterables)
            loop = ctx.loops[r.loop]
            out.extend(ref_deps(ctx, [loop.iterable]))
    return tuple(dict.fromkeys(out))
