"""examples/quickstart.ipynb runs top to bottom in one Jupyter kernel (nbclient), on the real
embedded model through vLLM-for-CPU: DataFrame -> run -> distill -> train (2 steps) -> evaluate with
the adapter -> the table. One engine serves it all and starts once; what vLLM prints goes to the
run folders' engine.log, never into a cell. Slow: one engine start-up, a 2-step training."""
from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
# a log line of vLLM ("(EngineCore pid=7) WARNING 11-23 07:18:12 [core.py:534] ...") or of what runs under it
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # vLLM colours its log lines on a stream that is not a file
NOISE = re.compile(r"\b(?:DEBUG|INFO|WARNING|ERROR)\s+\d\d-\d\d \d\d:\d\d:\d\d|Triton|Loading safetensors|"
                   r"FutureWarning|UserWarning|NUMA|oneDNN")


def kernel(tmp_path: Path) -> str:
    """A kernelspec for this Python (the one running the tests), found through JUPYTER_PATH."""
    from ipykernel.kernelspec import install

    install(prefix=str(tmp_path / "jupyter"), kernel_name="s2c-test")
    return "s2c-test"


def texts(cell) -> list[str]:
    """What a cell showed: its streams, its plain-text results and error tracebacks."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif o["output_type"] in ("execute_result", "display_data"):
            out.append(o["data"].get("text/plain", ""))
        elif o["output_type"] == "error":
            out.append("\n".join(o["traceback"]))
    return out


def test_quickstart_notebook_runs_in_one_kernel_with_one_engine(tmp_path, s2c_home, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("vllm")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "examples" / "majority_steps.s2", work)  # beside the notebook, as in examples/
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout's s2c
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    t0 = time.time()
    nbclient.NotebookClient(nb, timeout=900, kernel_name=kernel(tmp_path),
                            resources={"metadata": {"path": str(work)}}).execute()
    seconds = time.time() - t0
    nbformat.write(nb, tmp_path / "executed.ipynb")  # to look at when an assertion below fails
    print(f"quickstart.ipynb: {seconds:.0f} s", file=sys.stderr)

    code = [c for c in nb.cells if c.cell_type == "code"]
    shown = [ANSI.sub("", "\n".join(texts(c))) for c in code]
    assert f"from {REPO / 's2c' / '__init__.py'}" in shown[0]
    assert "engine.starts = 1" in shown[-1]
    # the eval table, as EvalResult._repr_html_ draws it
    html = "".join(o["data"].get("text/html", "") for c in code for o in c.outputs if "data" in o)
    assert all(name in html for name in ("System 1", "System 2", "Distilled System 1", "normalized_match"))
    [shown_once] = [c for c in code if c.source.startswith("result = s2c.evaluate(")]
    assert sum("McNemar" in o.get("data", {}).get("text/html", "") for o in shown_once.outputs) == 1  # not twice
    # nothing of vLLM's in the cells; it is in the run folders' engine.log
    leaked = [line for text in shown for line in text.splitlines()
              if NOISE.search(line) and not line.startswith("s2c:")]  # s2c's own lines may name what the log holds
    assert not leaked, leaked
    widgets = {c.source.splitlines()[0].split(" = ")[0] for c in code for o in c.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})}
    # s2c's progress bars are rich's, drawn as widgets in a notebook; no library's tqdm bar (transformers'
    # "Loading weights") is: training shows none
    assert "run" in widgets and "trained" not in widgets, widgets
    logs = list(work.glob("runs/**/engine.log"))
    assert logs and any(NOISE.search(p.read_text(errors="replace")) for p in logs)
    # the run, the dataset, the adapter and the eval each wrote their folder
    assert (work / "runs" / "run-majority_steps-DataFrame" / "summary.json").exists()
    assert (work / "runs" / "data-majority_steps-DataFrame" / "train.jsonl").exists()
    assert (work / "runs" / "train-data-majority_steps-DataFrame" / "adapter" / "adapter_config.json").exists()
    assert (work / "runs" / "eval-majority_steps-majority_vote" / "results.json").exists()
