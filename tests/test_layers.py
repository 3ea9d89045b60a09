"""Every module under s2c/ sits on a floor and imports only from its own floor or below; no import cycles.

Code lives on the floor its imports point down from. A new package fails here until it has a
floor in FLOORS, so the table stays a complete map of the layering.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PKG = Path(__file__).parent.parent / "s2c"

# Module prefix -> floor, lowest first. A module's floor is its longest matching prefix; the root
# package name matches only itself (else it would give every unlisted module a floor).
FLOORS = {
    # 0: leaves that import nothing of s2c but errors: error types with spans, the call records
    #    engines exchange, and s2c.programs, the built-in .s2 files (data installed from the
    #    repo's programs/, not code; the front end imports it to find them)
    "s2c.errors": 0,
    "s2c.calls": 0,
    "s2c.terminal": 0,  # where messages go while the engine's output goes to a log
    "s2c.folders": 0,  # output folders: checked writable, held by one s2c
    "s2c.programs": 0,
    # 1: the language (AST, parser, printer) and input rows (data: loaders, hub, mappings); each
    #    imports only errors, so data sits below runtime, which never imports it (only the CLI does)
    "s2c.dsl": 1,
    "s2c.data": 1,
    # 2: the front end: parse -> check -> IR -> graph, and the prompt renderer runs and datasets
    #    share
    "s2c.compiler": 2,
    # 3: running programs on engines: engines, cache, store, executor, run, shards
    "s2c.runtime": 3,
    # 4: what is made from runs: SFT datasets (distill) and models trained on them (train)
    "s2c.distill": 4,
    "s2c.train": 4,
    # 5: scoring runs and models against references
    "s2c.evaluate": 5,
    # 6: reports and trace views over runs, datasets and evaluations
    "s2c.report": 6,
    # 7: the public Python API, and the package that re-exports it
    "s2c.api": 7,
    "s2c": 7,
    # 8: the command line, on top; nothing imports it
    "s2c.cli": 8,
}

MIN_MODULES = 80  # the tree holds ~85; a broken walk that finds a handful must not pass


def modules(pkg: Path) -> dict[str, Path]:
    """Dotted name -> file for every .py under pkg, recursively (`a/__init__.py` is `a`)."""
    found = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(pkg.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def floor_of(name: str, floors: dict[str, int], root: str) -> int | None:
    """The floor of the longest prefix of `name` in floors; None when no prefix matches."""
    matches = [p for p in floors if name == p or (p != root and name.startswith(p + "."))]
    return floors[max(matches, key=len)] if matches else None


def _type_checking(node: ast.stmt) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(node: ast.AST):
    """Nodes run when the module is imported: not function bodies, not `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for run in child.orelse if _type_checking(child) else [child]:
            yield run
            yield from _import_time_nodes(run)


def imports(name: str, path: Path, known: dict[str, Path], root: str, *, import_time: bool):
    """(line, imported module) for each import of a `root` module in the file.

    `from a import x` names a.x when that is a module, else a; relative imports are resolved
    against the file's package. import_time=True keeps only what runs at import.
    """
    tree = ast.parse(path.read_text(), str(path))
    nodes = _import_time_nodes(tree) if import_time else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == root or target.startswith(root + "."):
                yield node.lineno, target


def floor_violations(pkg: Path, floors: dict[str, int]) -> list[str]:
    """A module with no floor, or an import (anywhere in the file) of a module on a higher floor."""
    root, known = pkg.name, modules(pkg)
    bad = []
    for name, path in known.items():
        floor = floor_of(name, floors, root)
        where = path.relative_to(pkg.parent)
        if floor is None:
            bad.append(f"{where}: {name} has no floor: add its package to FLOORS")
            continue
        for line, target in imports(name, path, known, root, import_time=False):
            up = floor_of(target, floors, root)
            if up is None or up > floor:
                bad.append(f"{where}:{line}: {name} (floor {floor}) -> {target} (floor {up})")
    return list(dict.fromkeys(bad))  # `from m import a, b` is one import of m


def import_graph(pkg: Path) -> nx.DiGraph:
    """Module -> module for the imports that run at import time; each edge keeps its file:line."""
    root, known = pkg.name, modules(pkg)
    g = nx.DiGraph()
    for name, path in known.items():
        for line, target in imports(name, path, known, root, import_time=True):
            if target != name and not g.has_edge(name, target):
                g.add_edge(name, target, at=f"{path.relative_to(pkg.parent)}:{line}")
    return g


def import_cycles(pkg: Path) -> list[str]:
    g = import_graph(pkg)
    return [" -> ".join(f"{a} ({g.edges[a, b]['at']})" for a, b in zip(c, c[1:] + c[:1]))
            for c in nx.simple_cycles(g)]


def test_every_module_has_a_floor_and_imports_only_from_its_floor_or_below():
    assert len(modules(PKG)) >= MIN_MODULES
    bad = floor_violations(PKG, FLOORS)
    assert bad == [], "\n" + "\n".join(bad)


def test_no_import_cycles_among_s2c_modules():
    cycles = import_cycles(PKG)
    assert cycles == [], "\n" + "\n".join(cycles)


def test_the_checker_reports_a_climbing_import_a_cycle_and_a_module_without_a_floor(tmp_path):
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from pkg.high import b\n",  # climbs, inside a function
        "low/c.py": "from . import d\n",  # relative, resolved to pkg.low.d
        "low/d.py": "from pkg.low import c\n",  # c <-> d: a cycle at import time
        "low/e.py": "def f():\n    from pkg.low import f\n",  # inside a function: no cycle
        "low/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.low import e\n",
        "high/__init__.py": "",
        "high/b.py": "from pkg.low import a\n",  # down: fine
        "stray/g.py": "",  # no floor
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    floors = {"pkg": 9, "pkg.low": 0, "pkg.high": 1}

    assert floor_violations(pkg, floors) == [
        "pkg/low/a.py:2: pkg.low.a (floor 0) -> pkg.high.b (floor 1)",
        "pkg/stray/g.py: pkg.stray.g has no floor: add its package to FLOORS",
    ]
    assert sorted(import_cycles(pkg)) in (
        ["pkg.low.c (pkg/low/c.py:1) -> pkg.low.d (pkg/low/d.py:1)"],
        ["pkg.low.d (pkg/low/d.py:1) -> pkg.low.c (pkg/low/c.py:1)"],
    )
