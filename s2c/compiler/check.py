"""Check a parsed program and lower it into the flat IR (s2c.compiler.ir).

Every problem is collected as a Diagnostic with a span; nothing stops at the first error except
syntax errors (which the parser raises). Checks: undefined names (did-you-mean), template
variables, list-vs-scalar and number-vs-text mismatches, unknown functions and options, option and
argument ranges, regex literals, duplicate names, cycles in program composition, the unrolling
budget, System-1 prompts that read intermediates or gold fields, unused values.
"""
from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2c.compiler import functions as F
from s2c.compiler import ir
from s2c.compiler.functions import ANY, NUMBER, TEXT, Type
from s2c.compiler.templates import analyze
from s2c.dsl import ast as A
from s2c.errors import Diagnostic, S2Error, Span, did_you_mean, source_lines
from s2c.calls import Sampling
from s2c.compiler.perturb import from_rule

PARAM_TYPES = {"text": TEXT, "number": NUMBER, "list": TEXT.listed()}

# What a program may unroll into (docs/language.md#limits). `repeat` copies its body, and nested
# repeats multiply: three levels of `repeat 64` are 262,144 calls and minutes of checking. The
# budget is checked before a repeat unrolls, from the statements it would copy.
MAX_REPEAT = 64  # iterations of one repeat
MAX_LLM_NODES = 1_000  # LLM calls in the unrolled program (a call in a for loop counts once)
MAX_NODES = 10_000  # values of any kind in the unrolled program


@dataclass
class _Scope:
    """What names mean at one point: name -> Ref, plus the enclosing loops."""

    names: dict[str, ir.Ref]
    loops: tuple[str, ...]
    prefix: str  # node id prefix of an inlined program ("best/")
    suffix: str  # node id suffix of a repeat iteration ("#2")
    once: bool = False  # inside a repeat over budget: each repeat's body is checked once, not unrolled


class Checker:
    def __init__(self, program: A.Program, *, resolver=None, stack: tuple[str, ...] = ()):
        self.p = program
        self.resolver = resolver  # name, from-path, program -> A.Program (for `use`)
        self.stack = stack + (program.file,)
        self.diags: list[Diagnostic] = []
        self.nodes: dict[str, ir.Node] = {}
        self.loops: dict[str, ir.Loop] = {}
        self.used: set[str] = set()
        self.sources: dict[str, str] = {program.file: program.source}
        self.programs: dict[str, A.Program] = {}  # used programs by name
        self.input_names: set[str] = set()
        self.gold_names: set[str] = set()
        self.broken_programs: set[str] = set()  # used programs already reported as unusable
        self.unreadable_prompt = False  # a prompt could not be read: "never used" would be a guess

    # ------------------------------------------------------------ diagnostics
    def error(self, msg: str, span: Span | None, hint: str | None = None):
        self.diags.append(Diagnostic("error", msg, span, hint))

    def warn(self, msg: str, span: Span | None, hint: str | None = None):
        self.diags.append(Diagnostic("warning", msg, span, hint))

    # ------------------------------------------------------------ types of references
    def type_of(self, ref: ir.Ref, loops: tuple[str, ...]) -> Type:
        if isinstance(ref, ir.ItemRef):
            loop = self.loops[ref.loop]
            return self.type_of(loop.iterable, loop.loops).elem()
        node = self.nodes.get(ref.node)
        if node is None:  # `completion` in eval's parse, a gold field in a keep rule
            return TEXT
        common = ir.common_prefix(node.loops, loops)
        return node.type.listed(len(node.loops) - common)

    def expr_type(self, e: ir.IRExpr, loops) -> Type:
        if isinstance(e, ir.Const):
            v = e.value
            if isinstance(v, bool):
                return Type("bool")
            if isinstance(v, (int, float)):
                return NUMBER
            if isinstance(v, list):
                return TEXT.listed()
            if isinstance(v, dict):
                return F.JSON
            return TEXT if isinstance(v, str) else ANY
        if isinstance(e, ir.RefExpr):
            return self.type_of(e.ref, loops)
        if isinstance(e, ir.ListE):
            return (self.expr_type(e.items[0], loops) if e.items else TEXT).listed()
        if isinstance(e, ir.FnCall):
            fn = F.FUNCTIONS[e.fn]
            ts = [self.expr_type(a, loops) for a in e.args]
            ts += [self.expr_type(v, loops) for _, v in e.kwargs]
            try:
                return fn.result(ts)
            except IndexError:
                return ANY
        return ANY

    # ------------------------------------------------------------ expressions
    def lower_expr(self, e: A.Expr, scope: _Scope, *, extra: dict[str, ir.Ref] | None = None) -> ir.IRExpr:
        if isinstance(e, A.Literal):
            return ir.Const(e.value)
        if isinstance(e, A.Text):
            return ir.Const(e.value)
        if isinstance(e, A.ListExpr):
            items = tuple(self.lower_expr(i, scope, extra=extra) for i in e.items)
            if all(isinstance(i, ir.Const) for i in items):
                return ir.Const([i.value for i in items])
            return ir.ListE(items)
        if isinstance(e, A.DictExpr):
            out = {}
            for k, v in e.pairs:
                kv, vv = self.lower_expr(k, scope), self.lower_expr(v, scope)
                if not (isinstance(kv, ir.Const) and isinstance(vv, ir.Const)):
                    self.error("dictionary keys and values must be literals", k.span)
                    continue
                if isinstance(kv.value, (list, dict)):  # a key is looked up by its value: one value
                    self.error("a dictionary key must be a single value: text, a number, true, false or none",
                               k.span, 'e.g. map={"A": "B", "B": "A"}')
                    continue
                out[kv.value] = vv.value
            return ir.Const(out)
        if isinstance(e, A.Name):
            ref = (extra or {}).get(e.id) or scope.names.get(e.id)
            if ref is None:
                self.undefined(e.id, e.span, scope, extra)
                return ir.Const(None)
            self.mark_used(ref)
            return ir.RefExpr(ref)
        if isinstance(e, A.Call):
            return self.lower_call(e, scope, extra)
        raise TypeError(f"unknown expression {e!r}")  # a bug in s2c, not user input

    def undefined(self, name: str, span, scope: _Scope, extra=None):
        known = set(scope.names) | set(extra or {})
        if name in self.gold_names:
            self.error(
                f"'{name}' is a gold field: only keep rules and metrics may read it",
                span,
                "a program (or System-1 prompt) that reads the gold label leaks the answer",
            )
        elif name in self.programs:
            self.error(f"'{name}' is a program; call it with its inputs: {name}(...)", span)
        else:
            self.error(f"undefined name '{name}'", span, did_you_mean(name, known))

    def mark_used(self, ref: ir.Ref):
        if isinstance(ref, ir.NodeRef):
            self.used.add(ref.node)

    def lower_call(self, call: A.Call, scope: _Scope, extra=None) -> ir.IRExpr:
        fn = F.FUNCTIONS.get(call.func)
        if fn is None:
            if call.func in self.programs:
                self.error(
                    f"program '{call.func}' can only be called as a whole statement: x = {call.func}(...)",
                    call.func_span,
                )
            else:
                candidates = list(F.FUNCTIONS) + list(self.programs)
                hint = did_you_mean(call.func, candidates)
                if call.func == "llm":
                    hint = 'llm(...) is a statement of its own: x = llm(...) """prompt"""'
                self.error(f"unknown function '{call.func}'", call.func_span, hint or "see docs/language.md#functions")
            for a in (*call.args, *(k.value for k in call.kwargs)):
                self.lower_expr(a, scope, extra=extra)
            return ir.Const(None)
        args, kwargs = self.bind_args(call, fn.params, f"{call.func}()")
        lowered = {p: self.lower_expr(v, scope, extra=extra) for p, v in {**args, **kwargs}.items()}
        for prm in fn.params:
            if prm.name in lowered:
                self.check_kind(prm, lowered[prm.name], scope.loops, call.func, (args | kwargs)[prm.name])
        if fn.name in ("regex", "regex_all") and "pattern" in lowered:
            self.check_regex(call.func, lowered, args | kwargs)
        pos = tuple(lowered[p.name] for p in fn.params if p.name in args)
        kws = tuple((p.name, lowered[p.name]) for p in fn.params if p.name in kwargs)
        return ir.FnCall(fn.name, pos, kws)

    def bind_args(self, call: A.Call, params: tuple[F.Param, ...], what: str):
        """Positional and keyword arguments -> {param: expr}; report unknown/missing/extra."""
        names = [p.name for p in params]
        args: dict[str, A.Expr] = {}
        kwargs: dict[str, A.Expr] = {}
        if len(call.args) > len(params):
            self.error(f"{what} takes at most {len(params)} argument(s), got {len(call.args)}",
                       getattr(call.args[len(params)], "span", call.span))
        for p, a in zip(params, call.args):
            args[p.name] = a
        unknown = False
        for kw in call.kwargs:
            if kw.name not in names:
                self.error(f"{what} has no parameter '{kw.name}'", kw.span,
                           did_you_mean(kw.name, names) or f"its parameters: {', '.join(names)}")
                unknown = True
            elif kw.name in args or kw.name in kwargs:
                self.error(f"{what}: '{kw.name}' given twice", kw.span)
            else:
                kwargs[kw.name] = kw.value
        for p in params:
            if p.required and p.name not in args and p.name not in kwargs and not unknown:
                self.error(f"{what} needs its '{p.name}' argument", call.span)
        return args, kwargs

    def check_kind(self, prm: F.Param, value: ir.IRExpr, loops, func: str, src: A.Expr):
        if prm.kind == "literal":
            if not isinstance(value, ir.Const):
                self.error(f"{func}(): '{prm.name}' must be a literal, written in the program", src.span)
            return
        t = self.expr_type(value, loops)
        span = getattr(src, "span", None)
        if prm.kind == "list" and not t.is_list:
            self.error(f"{func}(): '{prm.name}' needs a list, but this is a single {t}", span,
                       "a list comes from llm(n=...), lines(), a for loop, or a list input")
        elif prm.kind in ("text", "number", "scalar") and t.depth > 0:
            self.error(f"{func}(): '{prm.name}' needs a single value, but this is a {t}", span,
                       "to apply it to each element, use: for x in LIST: y = " + func + "(x, ...)")
        elif prm.kind == "number" and t.base in ("text", "bool"):
            self.error(f"{func}(): '{prm.name}' needs a number, but this is {_a(t)}", span,
                       "write the number without quotes" if isinstance(src, A.Text)
                       else "read a number from a text with number(...)")
        elif prm.kind == "text" and t.base in ("number", "bool"):
            self.error(f"{func}(): '{prm.name}' needs a text, but this is {_a(t)}", span,
                       'write it in quotes: "..."' if isinstance(src, A.Literal) else "make it a text with wrap(...)")
        elif prm.at_least is not None and isinstance(value, ir.Const) and t.base == "number" \
                and (value.value != int(value.value) or value.value < prm.at_least):
            self.error(f"{func}(): '{prm.name}' must be a whole number >= {prm.at_least}", span)

    def check_regex(self, func: str, lowered: dict[str, ir.IRExpr], src: dict[str, A.Expr]):
        """Compile a regex literal now, so that a bad one fails the check and not every example."""
        pattern = lowered["pattern"]
        if not (isinstance(pattern, ir.Const) and isinstance(pattern.value, str)):
            if isinstance(pattern, ir.Const):  # not a literal: check_kind reported it
                self.error(f"{func}(): 'pattern' must be a string (a regular expression in quotes)",
                           src["pattern"].span)
            return
        try:
            rx = re.compile(pattern.value)
        except re.error as e:
            self.error(f"{func}(): bad regular expression: {e.msg}" + (f" (at {e.pos + 1})" if e.pos else ""),
                       _regex_span(src["pattern"], e.pos, self.sources),
                       "Python's re syntax; to match a special character itself, put \\ before it")
            return
        except OverflowError as e:  # a{99999999999}
            self.error(f"{func}(): bad regular expression: {e}", src["pattern"].span)
            return
        except RecursionError:  # only nesting makes the regex parser recurse this deep
            self.error(f"{func}(): regular expression nested too deeply", src["pattern"].span)
            return
        group = lowered.get("group")
        if "group" in src and isinstance(group, ir.Const) and isinstance(group.value, int) \
                and not isinstance(group.value, bool) and group.value > rx.groups:
            has = f"only {rx.groups}" if rx.groups else "no"
            self.error(f"{func}(): group={group.value}, but the pattern has {has} group{'s' * (rx.groups != 1)}",
                       src["group"].span, "group=0 is the whole match; each (...) in the pattern is a group")

    # ------------------------------------------------------------ templates
    def template_refs(self, text: A.Text, scope: _Scope, what: str, *, allowed: set[str] | None = None,
                      system1: bool = False, tasks: tuple[dict, tuple[str, ...]] = ({}, ())) -> dict[str, ir.Ref]:
        info = analyze(text)
        if info.syntax_error:
            msg, line = info.syntax_error
            fl, fc = text.locate(line, _jinja_error_col(msg, text.value, line))
            src_line = self._source_line(text, fl)
            fc += len(src_line) - len(src_line.lstrip()) if src_line and fc == 1 else 0
            self.error(f"{what}: template syntax error: {msg}", Span(self._file_of(text), fl, fc))
            self.unreadable_prompt = True
            return {}
        for p in info.problems:
            fl, fc = text.locate(p.line, p.col)
            self.error(f"{what}: {p.message}", Span(self._file_of(text), fl, fc, fl, fc + p.width), p.hint)
        if not info.complete:  # its variables are unknown: "never used" would be a guess
            self.unreadable_prompt = True
        refs = {}
        for var, (tl, tc) in info.variables.items():
            fl, fc = text.locate(tl, tc)
            span = Span(self._file_of(text), fl, fc, fl, fc + len(var))
            if system1:
                earlier, after = tasks
                if var in after:  # the output of an earlier task, written by System 1 itself
                    continue
                if var in self.input_names and var in scope.names:
                    refs[var] = scope.names[var]
                    self.mark_used(refs[var])
                elif var in self.gold_names:
                    self.error(f"{what} reads gold field '{var}'", span,
                               "a System-1 prompt that reads the gold label leaks the answer")
                elif var in earlier:
                    self.error(f"{what} reads the output of task '{var}' without after=\"{var}\"", span,
                               f'System 1 writes it first at inference: add after="{var}" to the task')
                elif var in scope.names or var in (allowed or set()):
                    self.error(f"{what} reads intermediate '{var}'; a System-1 prompt may read program inputs only",
                               span, "otherwise System 1 would need System 2 to run first; "
                               f"inputs: {', '.join(sorted(self.input_names))}")
                else:
                    self.error(f"{what} uses undefined variable '{var}'", span,
                               did_you_mean(var, self.input_names))
                continue
            ref = scope.names.get(var)
            if ref is None:
                if var in self.gold_names:
                    self.error(f"{what} reads gold field '{var}'", span,
                               "only keep rules and metrics may read gold fields")
                else:
                    self.error(f"{what} uses undefined variable '{var}'", span, did_you_mean(var, scope.names))
                continue
            self.mark_used(ref)
            refs[var] = ref
        return refs

    def _file_of(self, text: A.Text) -> str:
        return text.span.file if text.span else self.p.file

    def _source_line(self, text: A.Text, line: int) -> str:
        src = self.sources.get(self._file_of(text), "")
        lines = source_lines(src)
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def load_template_file(self, value: A.Expr, what: str) -> A.Text | None:
        if not (isinstance(value, A.Text)):
            self.error(f"{what}: template= takes a file name in quotes", getattr(value, "span", None))
            self.unreadable_prompt = True
            return None
        path = Path(self.p.file).parent / value.value
        try:
            body = _read_regular_file(path)
        except (FileNotFoundError, NotADirectoryError):
            self.error(f"{what}: template file '{value.value[:80]}' not found next to the program", value.span,
                       f"looked for {str(path)[:200]}")
            self.unreadable_prompt = True
            return None
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.error(f"{what}: cannot read template file '{value.value[:80]}': {reason}", value.span)
            self.unreadable_prompt = True
            return None
        self.sources[str(path)] = body
        lines = body.rstrip("\n").split("\n")
        return A.Text("\n".join(lines), True, tuple((i + 1, 1) for i in range(len(lines))),
                      Span(str(path), 1, 1))

    # ------------------------------------------------------------ statements
    def define(self, name: str, span, scope: _Scope, node: ir.Node, defined_here: set[str]):
        if name in defined_here:
            what = "an input" if name in self.input_names and not scope.prefix else "already defined"
            self.error(f"'{name}' is {what}", span, "each name is assigned once (use repeat to refine a value)")
            return
        if name in self.gold_names:  # else `metric m(answer, answer)` would read two different things
            self.error(f"'{name}' is a gold field; a value of the program needs another name", span,
                       f"e.g. '{name}_pred' or 'final'")
            return
        if name in scope.names and not scope.suffix:
            what = "an input" if name in self.input_names and not scope.prefix else "already defined"
            self.error(f"'{name}' is {what}", span, "each name is assigned once (use repeat to refine a value)")
            return
        defined_here.add(name)
        self.nodes[node.id] = node
        scope.names[name] = ir.NodeRef(node.id)

    def node_id(self, name: str, scope: _Scope, span: Span | None = None) -> str:
        nid = f"{scope.prefix}{name}{scope.suffix}"
        if scope.suffix and span and nid in self.nodes:  # a second repeat refining the same name
            nid = f"{nid}@{span.line}"
        return nid

    def lower_stmts(self, stmts, scope: _Scope, defined_here: set[str]):
        for s in stmts:
            if isinstance(s, A.LLMAssign):
                self.lower_llm(s, scope, defined_here)
            elif isinstance(s, A.Assign):
                self.lower_assign(s, scope, defined_here)
            elif isinstance(s, A.For):
                self.lower_for(s, scope, defined_here)
            elif isinstance(s, A.Repeat):
                self.lower_repeat(s, scope, defined_here)

    def lower_llm(self, s: A.LLMAssign, scope: _Scope, defined_here):
        what = f"prompt of '{s.target}'"
        opts: dict[str, Any] = {}
        for kw in s.kwargs:
            spec = F.LLM_OPTIONS.get(kw.name)
            if spec is None:
                self.error(f"llm() has no option '{kw.name}'", kw.span,
                           did_you_mean(kw.name, F.LLM_OPTIONS) or f"options: {', '.join(F.LLM_OPTIONS)}")
                continue
            if kw.name in opts:
                self.error(f"llm(): '{kw.name}' given twice", kw.span)
            if kw.name == "system":
                if isinstance(kw.value, A.Text):
                    opts["system"] = kw.value
                else:
                    self.error("llm(): system= takes a string (a jinja template)", kw.span)
                continue
            if kw.name == "template" and not isinstance(kw.value, A.Text):
                self.load_template_file(kw.value, what)  # reports: template= takes a file name in quotes
                opts["template"] = None
                continue
            v = kw.value
            if isinstance(v, A.ListExpr) and all(isinstance(i, A.Text) for i in v.items):
                opts[kw.name] = tuple(i.value for i in v.items)
            elif isinstance(v, (A.Literal, A.Text)):
                opts[kw.name] = v.value
            else:
                self.error(f"llm(): option '{kw.name}' must be a literal value", kw.span)
        self._check_llm_opts(opts, s)
        prompt = s.prompt
        if "template" in opts:
            if prompt is not None:
                self.error("give either an inline prompt or template=, not both", s.span)
            tkw = next(k for k in s.kwargs if k.name == "template")
            prompt = self.load_template_file(tkw.value, what) if opts["template"] is not None else None
        elif prompt is None:
            self.unreadable_prompt = True
            self.error(f"llm call '{s.target}' has no prompt", s.span,
                       f'write: {s.target} = llm(...) """your prompt""" or llm(template="file.j2")')
        refs = self.template_refs(prompt, scope, what) if prompt else {}
        system = opts.get("system")
        if system is not None:
            refs.update(self.template_refs(system, scope, f"system message of '{s.target}'"))
        n = int(opts.get("n", 1))
        sampling = Sampling(
            temperature=float(opts.get("temperature", 0.0)),
            top_p=float(opts.get("top_p", 1.0)),
            max_tokens=int(opts.get("max_tokens", 256)),
            stop=tuple(opts.get("stop", ())),
            seed=None if opts.get("seed") is None else int(opts["seed"]),
            n=n,
        )
        node = ir.Node(
            id=self.node_id(s.target, scope, s.span), kind="llm", name=s.target, span=s.span,
            type=TEXT.listed() if n > 1 else TEXT, loops=scope.loops,
            deps=_ref_deps(refs.values(), self.loops), prompt=prompt, system=system, vars=refs,
            sampling=sampling, mode=str(opts.get("mode", "chat")), role=str(opts.get("role", "default")),
            origin_program=self.p.file,
        )
        self.define(s.target, s.span, scope, node, defined_here)

    def _check_llm_opts(self, opts, s: A.LLMAssign):
        def bad(name, msg):
            kw = next(k for k in s.kwargs if k.name == name)
            self.error(f"llm(): {msg}", kw.value.span if hasattr(kw.value, "span") else kw.span)

        for name in ("temperature", "top_p", "max_tokens", "n", "seed"):
            if name not in opts or (name == "seed" and opts[name] is None):  # seed=none: unseeded
                continue
            v = opts[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)):  # also `none`: it has no default to mean
                bad(name, f"'{name}' must be a number")
                opts.pop(name)
        if "n" in opts and (opts["n"] < 1 or opts["n"] != int(opts["n"])):
            bad("n", "n must be a whole number >= 1")
            opts.pop("n")
        if "max_tokens" in opts and opts["max_tokens"] < 1:
            bad("max_tokens", "max_tokens must be >= 1")
            opts.pop("max_tokens")
        if "temperature" in opts and opts["temperature"] < 0:
            bad("temperature", "temperature must be >= 0")
            opts.pop("temperature")
        for name, (low, high, whole) in F.LLM_RANGES.items():
            v = opts.get(name)
            if v is None:
                continue
            if whole and v != int(v):
                bad(name, f"{name} must be a whole number")
                opts.pop(name)
            elif v < low or v > high or (name == "top_p" and v == 0):
                least = "more than" if name == "top_p" else "at least"
                bad(name, f"{name} must be {least} {low} and at most {high}")
                opts.pop(name)
        if "stop" in opts and not (isinstance(opts["stop"], (str, tuple))):
            bad("stop", 'stop must be a string or a list of strings: stop=["\\n\\n"]')
            opts.pop("stop")
        if "role" in opts and not isinstance(opts["role"], str):
            bad("role", 'role must be a name in quotes: role="teacher"')
            opts.pop("role")
        if opts.get("mode", "chat") not in ("chat", "completion"):
            bad("mode", f"mode must be \"chat\" or \"completion\", not {opts['mode']!r}")
            opts.pop("mode")
        if "stop" in opts and isinstance(opts["stop"], str):
            opts["stop"] = (opts["stop"],)

    def lower_assign(self, s: A.Assign, scope: _Scope, defined_here):
        if isinstance(s.value, A.Call) and s.value.func in self.programs:
            self.lower_use(s, scope, defined_here)
            return
        if isinstance(s.value, A.Call) and s.value.func in self.broken_programs:
            self.define_opaque(s, scope, defined_here)
            return
        expr = self.lower_expr(s.value, scope)
        t = self.expr_type(expr, scope.loops)
        deps = _ref_deps(ir.refs_of(expr), self.loops)
        node = ir.Node(id=self.node_id(s.target, scope, s.span), kind="transform", name=s.target, span=s.span,
                       type=t, loops=scope.loops, deps=deps, expr=expr, origin_program=self.p.file)
        self.define(s.target, s.span, scope, node, defined_here)

    def lower_for(self, s: A.For, scope: _Scope, defined_here):
        it = self.lower_expr(s.iterable, scope)
        t = self.expr_type(it, scope.loops)
        if not t.is_list:
            self.error(f"'for {s.var} in ...' needs a list, but this is a single {t}", s.iterable.span,
                       "a list comes from llm(n=...), lines(), regex_all(), or a list input")
        loop_id = self.node_id(s.var, scope) if not scope.loops else f"{scope.loops[-1]}.{s.var}"
        if loop_id in self.loops:  # a second loop with the same variable: its id names its line
            loop_id = f"{loop_id}@{s.span.line if s.span else len(self.loops)}"
        if isinstance(it, ir.RefExpr):
            iterable = it.ref
        else:  # an expression: give it a node of its own so the runtime can index it
            nid = f"{loop_id}.items"
            self.nodes[nid] = ir.Node(nid, "transform", f"{s.var} items", s.iterable.span, t, scope.loops,
                                      _ref_deps(ir.refs_of(it), self.loops), expr=it, internal=True,
                                      origin_program=self.p.file)
            self.used.add(nid)
            iterable = ir.NodeRef(nid)
        if s.var in scope.names:
            self.error(f"loop variable '{s.var}' shadows an existing name", s.span)
        loop = ir.Loop(loop_id, s.var, iterable, scope.loops, s.span)
        self.loops[loop_id] = loop
        inner = _Scope(dict(scope.names), scope.loops + (loop_id,), scope.prefix, scope.suffix, scope.once)
        inner.names[s.var] = ir.ItemRef(loop_id)
        body_defined: set[str] = set()
        self.lower_stmts(s.body, inner, body_defined)
        for name in body_defined:  # values defined in the body are visible after it, collected
            if name in defined_here:
                self.error(f"'{name}' is already defined", s.span)
            defined_here.add(name)
            scope.names[name] = inner.names[name]

    def lower_repeat(self, s: A.Repeat, scope: _Scope, defined_here):
        if s.count < 1:
            self.error("repeat needs a count >= 1", s.span)
            return
        if s.count > MAX_REPEAT:
            self.error(f"repeat {s.count}: at most {MAX_REPEAT} iterations are unrolled", s.span)
            return
        # An outer repeat budgeted this one. Over budget, the body is still checked, once.
        once = scope.once or (not scope.suffix and not self.within_budget(s))
        for i in range(1, (1 if once else s.count) + 1):
            inner = _Scope(scope.names, scope.loops, scope.prefix, f"{scope.suffix}#{i}", once)
            iteration_defined: set[str] = set()
            n_diags = len(self.diags)
            self.lower_stmts(s.body, inner, iteration_defined)
            if i > 1:  # report each mistake in the body once, not once per iteration
                seen = {(d.message, d.span) for d in self.diags[:n_diags]}
                self.diags[n_diags:] = [d for d in self.diags[n_diags:] if (d.message, d.span) not in seen]
            defined_here |= iteration_defined

    def within_budget(self, s: A.Repeat) -> bool:
        """Report a repeat that would unroll past MAX_LLM_NODES or MAX_NODES, before it unrolls."""
        sizes: dict[Path, tuple[int, int]] = {}
        calls, values = _unrolled([s], lambda name: self.program_size(self.programs.get(name), sizes, 1))
        have_calls = sum(n.kind == "llm" for n in self.nodes.values())
        for what, planned, have, limit in (("LLM calls", calls, have_calls, MAX_LLM_NODES),
                                           ("values", values, len(self.nodes), MAX_NODES)):
            if have + planned > limit:
                before = f" after the {have:,} before it" if have else ""
                self.error(f"repeat {s.count} unrolls into {planned:,} {what}{before}; "
                           f"a program may have at most {limit:,}", s.span,
                           "lower the repeat counts (nested repeats multiply), or sample once with llm(n=...)")
                return False
        return True

    def program_size(self, sub: A.Program | None, sizes: dict, depth: int) -> tuple[int, int] | None:
        """(LLM calls, values) a used program inlines into, its own `use`s included (read here, as
        checking them waits until it is inlined); None for a name that is not a usable program."""
        if sub is None:
            return None
        key = Path(sub.file).resolve()
        if key not in sizes:
            sizes[key] = (0, 1)  # while counting it: a cycle, which its own check reports
            used: dict[str, A.Program] = {}
            for u in (i for i in sub.items if isinstance(i, A.UseDecl)):
                if depth < A.MAX_USE_DEPTH and self.resolver is not None:
                    try:
                        used[u.name] = self.resolver(u.name, u.path.value if u.path else None, sub)[0]
                    except (OSError, S2Error):  # reported when that program is checked
                        pass
            calls, values = _unrolled(_statements(sub), lambda n: self.program_size(used.get(n), sizes, depth + 1))
            sizes[key] = (calls, values + len(sub.inputs))
        return sizes[key]

    def define_opaque(self, s: A.Assign, scope: _Scope, defined_here):
        """The result of a call that could not be checked: defined, of unknown type, so that one
        mistake gives one error."""
        node = ir.Node(self.node_id(s.target, scope, s.span), "transform", s.target, s.span, ANY, scope.loops,
                       expr=ir.Const(None), origin_program=self.p.file)
        self.define(s.target, s.span, scope, node, defined_here)
        self.used.add(node.id)

    def lower_use(self, s: A.Assign, scope: _Scope, defined_here):
        call: A.Call = s.value  # type: ignore[assignment]
        sub = self.programs[call.func]
        n_errors = len(self.diags)
        if call.args:
            self.error(f"program '{call.func}' takes its inputs by name: {call.func}(name=value, ...)",
                       call.args[0].span)
            for a in (*call.args, *(k.value for k in call.kwargs)):
                self.lower_expr(a, scope)
            self.define_opaque(s, scope, defined_here)
            return
        sub_inputs = {p.name: p for p in sub.inputs}
        prefix = f"{self.node_id(s.target, scope, s.span)}/"
        bound: dict[str, ir.Ref] = {}
        for kw in call.kwargs:
            if kw.name not in sub_inputs:
                self.error(f"program '{call.func}' has no input '{kw.name}'", kw.span,
                           did_you_mean(kw.name, sub_inputs) or f"its inputs: {', '.join(sub_inputs)}")
                self.lower_expr(kw.value, scope)
                continue
            expr = self.lower_expr(kw.value, scope)
            t = self.expr_type(expr, scope.loops)
            want = PARAM_TYPES[sub_inputs[kw.name].type]
            if want.is_list != t.is_list and t.base not in ("any", "json"):
                self.error(f"input '{kw.name}' of '{call.func}' is a {sub_inputs[kw.name].type}, "
                           f"but this is a {'list' if t.is_list else 'single value'}", kw.value.span)
            if isinstance(expr, ir.RefExpr):
                bound[kw.name] = expr.ref
            else:
                nid = f"{prefix}{kw.name}"
                self.nodes[nid] = ir.Node(nid, "transform", kw.name, kw.span, t, scope.loops,
                                          _ref_deps(ir.refs_of(expr), self.loops), expr=expr, internal=True,
                                          origin_program=self.p.file)
                self.used.add(nid)
                bound[kw.name] = ir.NodeRef(nid)
        misspelled = any(k.name not in sub_inputs for k in call.kwargs)
        for name in sub_inputs:
            if name not in bound and name not in {k.name for k in call.kwargs} and not misspelled:
                self.error(f"program '{call.func}' needs its input '{name}'", call.span)
        outs = sub.outputs
        if len(outs) != 1:
            self.error(f"program '{call.func}' has {len(outs)} outputs; a used program must have exactly one",
                       call.func_span)
        if len(self.diags) > n_errors:
            self.define_opaque(s, scope, defined_here)
            return
        child = Checker(sub, resolver=self.resolver, stack=self.stack)
        child.nodes, child.loops = self.nodes, self.loops  # inline into the same graph
        sub_scope = _Scope(dict(bound), scope.loops, prefix, "")
        child.input_names = set(sub_inputs)
        child.gold_names = {g.id for g in sub.golds}
        child.lower_body(sub_scope)
        self.sources.update(child.sources)
        self.used |= child.used
        for d in child.diags:
            if d.severity == "error":
                self.diags.append(d)
        out_ref = child.outputs.get(outs[0].name)
        if out_ref is None:
            self.define_opaque(s, scope, defined_here)
            return
        self.mark_used(out_ref)
        if isinstance(out_ref, ir.NodeRef):
            node = ir.Node(self.node_id(s.target, scope, s.span), "transform", s.target, s.span,
                           self.type_of(out_ref, scope.loops), scope.loops, (out_ref.node,),
                           expr=ir.RefExpr(out_ref), origin_program=self.p.file)
            self.define(s.target, s.span, scope, node, defined_here)

    # ------------------------------------------------------------ whole program
    def declare(self):
        seen: dict[str, Span | None] = {}
        for item in self.p.items:
            if isinstance(item, A.InputDecl):
                for prm in item.params:
                    if prm.name in seen:
                        self.error(f"input '{prm.name}' is declared twice", prm.span)
                    seen[prm.name] = prm.span
                    self.input_names.add(prm.name)
            elif isinstance(item, A.GoldDecl):
                for g in item.names:
                    if g.id in seen:
                        self.error(f"'{g.id}' is declared twice", g.span)
                    seen[g.id] = g.span
                    self.gold_names.add(g.id)
            elif isinstance(item, A.UseDecl):
                self.use(item)

    def use(self, item: A.UseDecl):
        if item.name in self.programs:
            self.error(f"program '{item.name}' is already used", item.span)
            return
        if self.resolver is None:
            self.error(f"cannot resolve 'use {item.name}' here", item.span)
            return
        try:
            sub, path = self.resolver(item.name, item.path.value if item.path else None, self.p)
        except FileNotFoundError as e:
            self.error(f"program '{item.name}' not found", item.path.span if item.path else item.span, str(e))
            self.broken_programs.add(item.name)
            return
        except IsADirectoryError as e:
            self.error(f"use {item.name}: {e}", item.path.span if item.path else item.span,
                       f'name the program file: use {item.name} from "lib/{item.name}.s2"')
            self.broken_programs.add(item.name)
            return
        except S2Error as e:  # the used program does not parse, or cannot be read
            d = e.diagnostic
            if d.span is None:  # nothing to point at in that file: point at the `use` line
                d = Diagnostic(d.severity, f"use {item.name}: {d.message}", item.path.span if item.path else item.span,
                               d.hint)
            self.diags.append(d)
            self.broken_programs.add(item.name)
            return
        if Path(path).resolve() in {Path(p).resolve() for p in self.stack}:  # "d/../a.s2" is a.s2
            chain = " -> ".join(Path(p).name for p in (*self.stack, path))
            self.error(f"program composition has a cycle: {chain}", item.span)
            self.broken_programs.add(item.name)
            return
        if len(self.stack) >= A.MAX_USE_DEPTH:
            chain = " -> ".join(Path(p).name for p in (*self.stack, path))
            self.error(f"programs compose at most {A.MAX_USE_DEPTH} deep: {chain}", item.span,
                       "use the innermost programs directly from an outer one")
            self.broken_programs.add(item.name)
            return
        self.sources[path] = sub.source
        self.programs[item.name] = sub

    def lower_body(self, scope: _Scope):
        self.declare()
        if not scope.names:  # top level: inputs are nodes
            for prm in self.p.inputs:
                nid = prm.name
                self.nodes.setdefault(nid, ir.Node(nid, "input", prm.name, prm.span, PARAM_TYPES[prm.type],
                                                   origin_program=self.p.file))
                scope.names[prm.name] = ir.NodeRef(nid)
        self.outputs: dict[str, ir.Ref] = {}
        defined: set[str] = set(scope.names)
        stmts = [i for i in self.p.items if isinstance(i, (A.LLMAssign, A.Assign, A.For, A.Repeat, A.Output))]
        for item in stmts:
            if isinstance(item, A.Output):
                self.lower_output(item, scope, defined)
            else:
                self.lower_stmts([item], scope, defined)
        self.scope = scope
        if not self.p.outputs:
            self.error(f"program '{self.p.name}' has no output", self.p.header.span,
                       "declare the System-2 answer with: output NAME")

    def lower_output(self, o: A.Output, scope: _Scope, defined):
        if o.name in self.outputs:
            self.error(f"output '{o.name}' is declared twice", o.span)
            return
        if o.value is not None:
            self.lower_assign(A.Assign(o.name, o.value, o.span), scope, defined)
        ref = scope.names.get(o.name)
        if ref is None:
            self.undefined(o.name, o.span, scope)
            return
        if isinstance(ref, ir.NodeRef) and self.nodes[ref.node].loops:
            pass  # a collected list: fine
        self.mark_used(ref)
        self.outputs[o.name] = ref

    # ------------------------------------------------------------ distill and eval
    def lower_distill(self) -> tuple[list[ir.TaskIR], list[ir.KeepIR], str]:
        d = self.p.distill
        tasks: list[ir.TaskIR] = []
        keeps: list[ir.KeepIR] = []
        if d is None:
            return tasks, keeps, "system1"
        fmt = d.format or "system1"
        if fmt not in F.DISTILL_FORMATS:
            self.error(f"unknown distill format '{fmt}'", d.span,
                       did_you_mean(fmt, F.DISTILL_FORMATS) or f"formats: {', '.join(F.DISTILL_FORMATS)}")
        names: dict[str, ir.Loop | None] = {}  # task -> the loop it runs in (for after=)
        for item in d.items:
            if isinstance(item, A.Task):
                tasks.append(self.lower_task(item, self.scope, None, names))
            elif isinstance(item, A.TaskFor):
                it = self.lower_expr(item.iterable, self.scope)
                t = self.expr_type(it, ())
                if not t.is_list:
                    self.error(f"'for {item.var} in ...' needs a list, but this is a single {t}", item.iterable.span)
                if not isinstance(it, ir.RefExpr):
                    self.error("a distill loop runs over a named value", item.iterable.span,
                               "name it first: xs = ...; then: for x in xs:")
                    continue
                loop = self.distill_loop(item, it.ref)
                inner = _Scope(dict(self.scope.names), (loop.id,), "", "")
                inner.names[item.var] = ir.ItemRef(loop.id)
                for task in item.tasks:
                    tasks.append(self.lower_task(task, inner, loop, names))
            elif isinstance(item, A.Keep):
                k = self.lower_keep(item)
                if k:
                    keeps.append(k)
        if not any(isinstance(i, (A.Task, A.TaskFor)) for i in d.items):
            self.error("distill section has no task", d.span, 'add: task NAME(target=VALUE) """System-1 prompt"""')
        return [t for t in tasks if t], keeps, fmt

    def distill_loop(self, item: A.TaskFor, iterable: ir.Ref) -> ir.Loop:
        """A distill loop over the list a top-level program loop runs over is that same loop, so
        values computed per item in the program (`for cot in cots: verdict = ...`) are single
        values inside it. Any other list gets a loop of its own."""
        same = [l for l in self.loops.values() if not l.loops and l.iterable == iterable
                and not l.id.startswith("distill.")]
        if same:
            return next((l for l in same if l.var == item.var), same[0])
        loop = ir.Loop(f"distill.{item.var}", item.var, iterable, (), item.span)
        self.loops[loop.id] = loop
        return loop

    def task_after(self, t: A.Task, loop, earlier: dict) -> tuple[str, ...]:
        """`after="explain"`: this task's prompt may read {{ explain }}, the output of an earlier
        task, which System 1 writes itself at inference (a cascade: question -> rationale ->
        answer). In a training row it is that task's target for the same input and item."""
        kw = next((k for k in t.kwargs if k.name == "after"), None)
        if kw is None:
            return ()
        v = kw.value
        items = v.items if isinstance(v, A.ListExpr) else (v,)
        if not all(isinstance(i, A.Text) for i in items):
            self.error('task(): after= takes the name of an earlier task in quotes: after="rationale"',
                       getattr(v, "span", kw.span))
            return ()
        out = []
        for i in items:
            name = i.value
            if name == t.name:
                self.error(f"task '{t.name}' cannot come after itself", i.span)
            elif name not in earlier:
                self.error(f"after=: no earlier task '{name}'", i.span,
                           did_you_mean(name, earlier) or "after= names a task defined above this one")
            elif earlier[name] is not None and earlier[name] is not loop:
                self.error(f"after=: task '{name}' runs once per item of '{earlier[name].var}'; "
                           f"task '{t.name}' must be in the same for loop", i.span)
            else:
                out.append(name)
        return tuple(out)

    def lower_task(self, t: A.Task, scope: _Scope, loop, names: dict):
        what = f"System-1 prompt of task '{t.name}'"
        if t.name in names:
            self.error(f"task '{t.name}' is defined twice", t.span)
        after = self.task_after(t, loop, names)
        opts = {kw.name: kw for kw in t.kwargs}
        for kw in t.kwargs:
            if kw.name not in F.TASK_OPTIONS:
                self.error(f"task has no option '{kw.name}'", kw.span,
                           did_you_mean(kw.name, F.TASK_OPTIONS) or f"options: {', '.join(F.TASK_OPTIONS)}")
        prompt = t.prompt
        if "template" in opts:
            prompt = self.load_template_file(opts["template"].value, what)
        if prompt is None:
            self.error(f"task '{t.name}' has no System-1 prompt", t.span)
            prompt = A.Text("")
        self.template_refs(prompt, scope, what, system1=True, tasks=(names, after))
        system = None
        if "system" in opts:
            if isinstance(opts["system"].value, A.Text):
                system = opts["system"].value
                self.template_refs(system, scope, f"system message of task '{t.name}'", system1=True,
                                   tasks=(names, after))
            else:
                self.error("task(): system= takes a string", opts["system"].span)
        target: ir.IRExpr = ir.Const(None)
        ttype = TEXT
        if "target" not in opts:
            self.error(f"task '{t.name}' needs target=VALUE (what System 1 learns to output)", t.span)
        else:
            target = self.lower_expr(opts["target"].value, scope)
            ttype = self.expr_type(target, scope.loops)
            if ttype.depth > 0:
                self.error(f"target of task '{t.name}' is a {ttype}: a training row needs one value",
                           opts["target"].value.span, "to emit one row per element, wrap the task in: for x in LIST:")
        weight = 1.0
        if "weight" in opts:
            v = opts["weight"].value
            if isinstance(v, A.Literal) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool) \
                    and v.value >= 0:
                weight = float(v.value)
            else:
                self.error("task(): weight must be a number >= 0", getattr(v, "span", opts["weight"].span))
        rationale = None
        if "rationale" in opts:
            rationale = self.lower_expr(opts["rationale"].value, scope)
            if self.expr_type(rationale, scope.loops).depth > 0:
                self.error(f"rationale of task '{t.name}' is a list: a training row needs one value",
                           opts["rationale"].value.span)
        names.setdefault(t.name, loop)
        return ir.TaskIR(t.name, t.span, prompt, system, target, ttype, weight, loop, rationale, after=after)

    def lower_keep(self, k: A.Keep) -> ir.KeepIR | None:
        rule = k.rule
        params = F.KEEP_RULES.get(rule.func)
        if params is None:
            self.error(f"unknown keep rule '{rule.func}'", rule.func_span,
                       did_you_mean(rule.func, F.KEEP_RULES) or f"rules: {', '.join(F.KEEP_RULES)}")
            return None
        args, kwargs = self.bind_args(rule, params, f"keep {rule.func}()")
        got = {**args, **kwargs}
        golds = {g: ir.NodeRef(f"gold:{g}") for g in self.gold_names}
        out: dict[str, Any] = {}
        for name, e in got.items():
            if name in ("answer", "samples"):
                out[name] = self.lower_expr(e, self.scope)
                if name == "samples" and not self.expr_type(out[name], ()).is_list:
                    self.error("keep majority(): samples must be a list (e.g. an llm with n > 1)", e.span)
            elif name == "gold":
                if not (isinstance(e, A.Name) and e.id in self.gold_names):
                    self.error("keep matches(): gold must name a gold field", getattr(e, "span", rule.span),
                               f"gold fields: {', '.join(sorted(self.gold_names)) or '(none; declare: gold NAME)'}")
                else:
                    out["gold"] = e.id
            else:
                val = self.lower_expr(e, self.scope, extra=golds)
                if not isinstance(val, ir.Const):
                    self.error(f"keep {rule.func}(): '{name}' must be a literal", getattr(e, "span", rule.span))
                    continue
                out[name] = val.value
        if rule.func == "majority" and "min_share" in out:
            v = out["min_share"]
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                self.error("keep majority(): min_share must be between 0 and 1", rule.span)
        pert = None
        if rule.func == "consistent" and self.check_perturbation(out, rule):
            pert = from_rule(out)
        return ir.KeepIR(rule.func, k.span, out, pert)

    def check_perturbation(self, out: dict, rule: A.Call) -> bool:
        """True when `out` describes a valid perturbation (errors are reported)."""
        swap, shuffle = out.get("swap"), out.get("shuffle")
        if (swap is None) == (shuffle is None):
            self.error("consistent() needs exactly one perturbation: swap=[\"a\", \"b\"] or shuffle=\"field\"",
                       rule.span)
            return False
        before = len(self.diags)
        if swap is not None:
            if not (isinstance(swap, list) and len(swap) == 2 and all(isinstance(x, str) for x in swap)):
                self.error('swap= takes two input names in quotes: swap=["response_a", "response_b"]', rule.span)
            else:
                for f in swap:
                    if f not in self.input_names:
                        self.error(f"swap=: '{f}' is not an input", rule.span, did_you_mean(f, self.input_names))
        if shuffle is not None and not isinstance(shuffle, str):
            self.error('shuffle= takes one input name in quotes: shuffle="choices"', rule.span)
        elif shuffle is not None and shuffle not in self.input_names:
            self.error(f"shuffle=: '{shuffle}' is not an input", rule.span, did_you_mean(str(shuffle), self.input_names))
        m = out.get("map")
        if m is not None and not (isinstance(m, dict) and all(isinstance(v, str) for v in m.values())):
            self.error('map= takes a dictionary of labels: {"A": "B", "B": "A", "C": "C"}', rule.span)
        return len(self.diags) == before

    def lower_eval(self) -> tuple[list[ir.MetricIR], ir.IRExpr | None]:
        e = self.p.eval
        if e is None:
            return [], None
        metrics, parse = [], None
        for item in e.items:
            if isinstance(item, A.Parse):
                if parse is not None:
                    self.error("eval has two parse = ... lines", item.span)
                parse = self.lower_expr(item.value, _Scope({}, (), "", ""), extra={"completion": ir.NodeRef("completion")})
                continue
            call = item.call
            params = F.METRICS.get(call.func)
            if params is None:
                self.error(f"unknown metric '{call.func}'", call.func_span,
                           did_you_mean(call.func, F.METRICS) or f"metrics: {', '.join(F.METRICS)}")
                continue
            args, kwargs = self.bind_args(call, params, f"metric {call.func}()")
            got = {**args, **kwargs}
            answer = self.lower_expr(got["answer"], self.scope) if "answer" in got else None
            gold = None
            if "gold" in got:
                g = got["gold"]
                if isinstance(g, A.Name) and g.id in self.gold_names:
                    gold = g.id
                else:
                    self.error(f"metric {call.func}(): the second argument must name a gold field",
                               getattr(g, "span", call.span),
                               f"gold fields: {', '.join(sorted(self.gold_names)) or '(none; declare: gold NAME)'}")
            options = {}
            for name, v in got.items():
                if name in ("answer", "gold"):
                    continue
                val = self.lower_expr(v, self.scope)
                if not isinstance(val, ir.Const):
                    self.error(f"metric {call.func}(): '{name}' must be a literal", getattr(v, "span", call.span))
                    continue
                options[name] = val.value
            pert = None
            if call.func == "swap_inconsistency" and "swap" in options:
                swap = {"swap": options["swap"], "map": options.get("map")}
                if self.check_perturbation(swap, call):
                    pert = from_rule(swap)
            metrics.append(ir.MetricIR(call.func, item.span, answer, gold, options, pert))
        return metrics, parse

    def unused(self):
        if self.unreadable_prompt:
            return
        warned: set[Span | None] = set()  # nested repeats copy a statement many times: warn once
        for node in self.nodes.values():
            if node.internal or node.origin_program != self.p.file or node.id in self.used:
                continue
            if node.kind == "input":
                self.warn(f"input '{node.name}' is never used", node.span)
            elif ("#" not in node.id or node.id.endswith(f"#{1}")) and node.span not in warned:
                warned.add(node.span)
                self.warn(f"value '{node.name}' is never used", node.span,
                          "use it, make it an output, or remove it")


def _read_regular_file(path: Path) -> str:
    """A UTF-8 text file's content. Else FileNotFoundError (also for a name with a NUL in it),
    IsADirectoryError, OSError for a device or pipe (/dev/zero would be read forever, /dev/stdin
    would wait for input), or UnicodeDecodeError."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # a NUL in the name: no such file can exist
        raise FileNotFoundError(2, "No such file", str(path)) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(0, "not a regular file", str(path))
    return path.read_text(encoding="utf-8")


def _a(t: Type) -> str:
    return "text" if t.base == "text" else f"a {t.base}"


def _regex_span(lit: A.Expr, pos: int | None, sources: dict[str, str]) -> Span | None:
    """The character of a regex literal an error is at, when the literal is written as its value
    (one line, no escapes); else the whole literal."""
    span = lit.span
    if not (isinstance(lit, A.Text) and span and not lit.long and pos is not None and span.end_line == span.line):
        return span
    line = source_lines(sources.get(span.file, ""))[span.line - 1:span.line] or [""]
    written = line[0][span.col - 1 : (span.end_col or 1) - 1]
    quote = written.find('"') + 1
    if written[quote:-1] != lit.value:
        return span
    col = span.col + quote + pos
    return Span(span.file, span.line, col, span.line, col + 1)


# jinja names some tokens in words; what they look like in a template
_JINJA_TOKENS = {"end of print statement": "}}", "end of statement block": "%}"}


def _jinja_error_col(msg: str, template: str, line: int) -> int:
    """jinja reports a line only: find the offending token of "unexpected 'X'" / "got 'X'" in it."""
    lines = template.split("\n")
    code = lines[line - 1] if 0 < line <= len(lines) else ""
    for m in re.finditer(r"(?:unexpected|got) '([^']+)'", msg):
        tok = _JINJA_TOKENS.get(m.group(1), m.group(1))
        i = code.find(tok)
        if i >= 0:
            return i + 1
    return 1



def _statements(p: A.Program) -> list:
    return [i for i in p.items if isinstance(i, (A.LLMAssign, A.Assign, A.For, A.Repeat))]


def _unrolled(stmts, size_of) -> tuple[int, int]:
    """(LLM calls, values) that statements become once every repeat is unrolled; `size_of(name)`
    is that of a used program, or None when `name` is not one."""
    calls = values = 0
    for s in stmts:
        c, v = 0, 1
        if isinstance(s, A.LLMAssign):
            c = 1
        elif isinstance(s, A.For):
            c, v = _unrolled(s.body, size_of)
            v += 1  # the items of the loop
        elif isinstance(s, A.Repeat):
            c, v = _unrolled(s.body, size_of)
            k = s.count if 1 <= s.count <= MAX_REPEAT else 0
            # a repeat with a bad count is reported, not unrolled; the visit still counts, so that
            # 64 x 64 x 64 x 64 repeats around a `repeat 0` are over budget, not 16.7M visits
            c, v = (k * c, k * v) if k else (0, 1)
        elif isinstance(s, A.Assign) and isinstance(s.value, A.Call):
            c, v = size_of(s.value.func) or (0, 0)
            v += 1
        calls, values = calls + c, values + v
    return calls, values


def _ref_deps(refs, loops: dict[str, ir.Loop]) -> tuple[str, ...]:
    out: list[str] = []
    for r in refs:
        if isinstance(r, ir.NodeRef):
            out.append(r.node)
        else:  # a loop item depends on the loop's iterable (and its enclosing loops' iterables)
            loop = loops[r.loop]
            out.extend(_ref_deps([loop.iterable], loops))
    return tuple(dict.fromkeys(out))


def check(program: A.Program, *, resolver=None) -> ir.CheckedProgram:
    c = Checker(program, resolver=resolver)
    scope = _Scope({}, (), "", "")
    c.lower_body(scope)
    tasks, keeps, fmt = c.lower_distill()
    metrics, parse = c.lower_eval()
    # loops' iterables are used by the loop itself
    for loop in c.loops.values():
        c.mark_used(loop.iterable)
    c.unused()
    return ir.CheckedProgram(
        program=program, nodes=c.nodes, loops=c.loops, outputs=c.outputs, inputs=program.inputs,
        golds=tuple(g.id for g in program.golds), tasks=tasks, keeps=keeps, format=fmt,
        metrics=metrics, parse=parse, diagnostics=sorted(c.diags, key=Diagnostic.sort_key), sources=c.sources,
    )
