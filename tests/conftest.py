"""Shared test set-up: every test gets its own s2c cache dir, hubs are offline."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The embedded model is dequantized once per machine into the user's cache; tests that isolate
# S2C_HOME link that folder in rather than paying ~20 s again.
_REAL_HOME = Path(os.environ.get("S2C_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "s2c")


@pytest.fixture
def s2c_home(tmp_path, monkeypatch):
    home = tmp_path / "s2c-home"
    (home / "models").mkdir(parents=True)
    real_model = _REAL_HOME / "models" / "SmolLM2-135M-Instruct"
    if real_model.exists():
        os.symlink(real_model, home / "models" / "SmolLM2-135M-Instruct")
    monkeypatch.setenv("S2C_HOME", str(home))
    return home


@pytest.fixture
def repo():
    return REPO


def copy_program(name: str, dest: Path) -> Path:
    src = REPO / "programs" / name
    shutil.copy(src, dest / name)
    return dest / name
