"""The front end as one chain: find -> parse -> check -> with_graph (graph.py: the program and its graph).

    >>> from s2c.compiler.pipeline import load_program
    >>> cp = load_program("bsm.s2")          # a built-in program, found by name
    >>> sorted(n for n in cp.graph if cp.graph.nodes[n]["kind"] == "llm")
    ['branch', 'merge', 'solve']
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from s2c.compiler.check import check
from s2c.compiler.graph import with_graph
from s2c.compiler.ir import CheckedProgram
from s2c.dsl.ast import Program
from s2c.dsl.parser import parse, parse_file
from s2c.errors import CheckError, S2Error, did_you_mean


def builtin_dir() -> Path:
    import s2c.programs  # installed from the repo's top-level programs/

    return Path(s2c.programs.__file__).parent


def find_program(name: str | os.PathLike) -> Path:
    """A path that exists, else a built-in program by file name (`bsm.s2` or `bsm`)."""
    p = Path(name)
    if p.exists():
        return p
    base = p.name if p.suffix == ".s2" else p.name + ".s2"
    if p.parent == Path("."):
        cand = builtin_dir() / base
        if cand.exists():
            return cand
    known = sorted(x.stem for x in builtin_dir().glob("*.s2"))
    near = _nearest_file(p if p.suffix == ".s2" else p.with_name(base))
    near = f"did you mean '{near}'?" if near else did_you_mean(p.stem, known)
    listed = f"built-in programs: {', '.join(known)}"
    raise S2Error(f"no program file '{name}'", hint=f"{near} ({listed})" if near else listed)


def _nearest_file(p: Path) -> str | None:
    """The existing file whose path is nearest `p`, each part corrected among the entries beside
    it (`exmaples/coin_flp_sc.s2` -> `examples/coin_flip_sc.s2`); None if a part has no near one."""
    import difflib

    cur = Path(p.anchor) if p.is_absolute() else Path(".")
    for part in p.parts[1:] if p.is_absolute() else p.parts:
        if not (cur / part).exists():
            try:
                names = [x.name for x in cur.iterdir()]
            except OSError:
                return None
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            if not close:
                return None
            part = close[0]
        cur = cur / part
    return str(cur) if cur.is_file() and cur != p else None


def resolver(name: str, path: str | None, importer: Program) -> tuple[Program, str]:
    """`use NAME [from "PATH"]`: next to the importing file first, then the built-ins."""
    here = Path(importer.file).parent
    candidates = [here / path] if path else [here / f"{name}.s2", builtin_dir() / f"{name}.s2"]
    for c in candidates:
        try:
            mode = c.stat().st_mode
        except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the path
            continue
        except OSError as e:  # a name too long, a loop of links, permission denied on a folder
            raise S2Error(f"cannot open {str(c)[:80]}: {e.strerror}") from None
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{c} is a directory, not a .s2 file")
        if not stat.S_ISREG(mode):  # /dev/zero would be read forever, /dev/stdin would wait for input
            raise S2Error(f"{c} is not a regular file", hint="name a .s2 file")
        return parse_file(c), str(c)
    raise FileNotFoundError("looked in: " + ", ".join(str(c) for c in candidates))


def check_file(path) -> CheckedProgram:
    """Parse and check; returns the program with diagnostics (errors included) and its graph."""
    return _checked(parse_file(find_program(path)))


def load_text(text: str, file: str = "<text>.s2") -> CheckedProgram:
    """`load_program` for `.s2` source text; messages point at `file`."""
    return _without_errors(_checked(parse(text, file)))


def _checked(program: Program) -> CheckedProgram:
    cp = check(program, resolver=resolver)
    return cp if cp.errors else with_graph(cp)


def load_program(path) -> CheckedProgram:
    """Like check_file, but raises CheckError when the program has errors."""
    return _without_errors(check_file(path))


def _without_errors(cp: CheckedProgram) -> CheckedProgram:
    if cp.errors:
        raise CheckError(cp.diagnostics, cp.sources)
    return cp
