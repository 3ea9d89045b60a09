"""A missing optional package is one line naming the extra that installs it, with exit 1 (never
the internal error's 70), said before any model loads. `sys.modules[name] = None` makes
`import name` raise ModuleNotFoundError, as when the package is not installed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from s2c.cli import main
from s2c.errors import MissingExtra, require

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "train" / "tiny"
PROGRAM = str(REPO / "tests" / "fixtures" / "programs" / "mini_bsm.s2")
DATA = f"oasst2:{REPO / 'tests' / 'fixtures' / 'data' / 'oasst2_sample.jsonl'}"


def _error_line(capsys, argv) -> str:
    """Run the CLI; it must exit 1 with the error as its last line on stderr (and no traceback)."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "bug in s2c" not in err, err
    return err.splitlines()[-1]


def test_export_without_transformers(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    # the adapter folder does not exist either: the missing package is said first
    line = _error_line(capsys, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "model")])
    # peft, which a merge needs too, comes with s2c[train], not s2c[hf]
    assert line == "error: s2c export needs transformers, which is not installed: pip install 's2c[train]'"


def test_train_without_transformers(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    out = tmp_path / "run"
    line = _error_line(capsys, ["train", str(TINY), "--out", str(out), "--max-steps", "1"])
    assert line == "error: s2c train needs transformers, which is not installed: pip install 's2c[train]'"
    assert not (out / "train_config.json").exists()  # written once the base model is resolved: never reached


@pytest.mark.parametrize("flags", [[], ["--shards", "2"]], ids=["pool", "shards"])
def test_engine_ray_without_ray(monkeypatch, capsys, tmp_path, flags):
    monkeypatch.setitem(sys.modules, "ray", None)
    line = _error_line(capsys, ["run", PROGRAM, "--data", DATA, "--limit", "1", "--no-cache", "--engine", "ray",
                                *flags, "--out", str(tmp_path / "run")])
    assert line == ("error: engine: the ray engine (--engine ray, --shards) needs ray, which is not installed: "
                    "pip install 's2c[ray]' (ray[data]; never ray[llm], which pins a CUDA vLLM)")


def test_require_returns_the_module_or_names_the_extra(monkeypatch):
    assert require("json", "data", "reading JSON") is sys.modules["json"]
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtra, match=r"^the openai engine needs httpx, which is not installed: "
                                           r"pip install 's2c\[openai\]'$"):
        require("httpx", "openai", "the openai engine")


def test_require_lets_a_broken_install_through(monkeypatch, tmp_path):
    """An installed package whose own import misses a dependency is not a missing extra."""
    (tmp_path / "s2c_fake_pkg").mkdir()
    (tmp_path / "s2c_fake_pkg" / "__init__.py").write_text("import s2c_fake_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("s2c_fake_pkg", "hf", "a test")
    assert info.value.name == "s2c_fake_missing_dependency"
