"""Golden files: expected outputs checked into tests/golden/, compared as whole text.

    S2C_UPDATE_GOLDEN=1 python -m pytest tests/test_dsl_*.py tests/test_graph.py tests/test_request_snapshots.py
    git diff tests/golden                                                           # review

Outputs are made from the repository root with relative paths; `normalize` removes what would
still differ between checkouts (the repo's absolute path, where built-in programs are installed).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent
UPDATE = os.environ.get("S2C_UPDATE_GOLDEN") == "1"


def normalize(text: str) -> str:
    from s2c.compiler.pipeline import builtin_dir

    for root, short in ((builtin_dir().resolve(), "programs"), (REPO, "")):
        text = text.replace(f"{root}/", f"{short}/" if short else "")
    return text


def check_golden(path: Path, actual: str) -> None:
    """Compare `actual` with the golden file, or write it when S2C_UPDATE_GOLDEN=1."""
    actual = normalize(actual)
    if not actual.endswith("\n"):
        actual += "\n"
    rel = path.relative_to(REPO)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {rel}: run with S2C_UPDATE_GOLDEN=1 to write it, then review it"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{rel} differs: if the change is intended, rerun with S2C_UPDATE_GOLDEN=1"


def stale(folder: Path, expected_names: set[str], pattern: str = "*") -> list[str]:
    """Golden files in `folder` that no test produces any more (deleted when updating)."""
    out = []
    for f in sorted(folder.glob(pattern)):
        if f.is_file() and f.name not in expected_names:
            if UPDATE:
                f.unlink()
            else:
                out.append(str(f.relative_to(REPO)))
    return out
