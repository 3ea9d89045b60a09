"""s2c report: the HTML file's content (run, compiled dataset, eval folders; fake engine), and the
page itself in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).
The browser test fails, never skips, when the browser is missing: scripts/setup.sh installs it."""
from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
from test_eval import fake_engine, write_rows  # noqa: F401  (the fixture is used by name)

from s2c.cli import main
from s2c.compiler.pipeline import load_program
from s2c.distill.build import DistillSettings, distill_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.run import Runner, validate_rows

HERE = Path(__file__).parent
TWO_STEP = HERE / "fixtures" / "programs" / "two_step.s2"
ROWS = [{"id": "a", "question": "2+2?", "answer": "4"},  # right: kept
        {"id": "b", "question": "3+3?", "answer": "6"},  # wrong: dropped by matches(final, answer)
        {"id": "c", "question": "5+5?", "answer": "10"},  # no "Final answer:": unparsed
        {"id": "d", "question": "crash", "answer": "0"}]  # the engine fails


def reply(req, i):
    q = req.messages[-1].content
    return {"2+2": "Final answer: 4", "3+3": "Final answer: 7"}.get(
        next((k for k in ("2+2", "3+3") if k in q), None), "I do not know")


def compiled(tmp_path) -> Path:
    cp = load_program(TWO_STEP)
    rows, problems = validate_rows(cp, ROWS)
    assert not problems
    distill_program(cp, rows, Runner(FakeEngine(reply, fail=["crash"]), CallCache(tmp_path / "c.sqlite"), progress=False), tmp_path / "ds", DistillSettings(data="fixture"))
    return tmp_path / "ds"


def page_data(html: str) -> tuple[list[dict], list[dict]]:
    """The report's example index, and every example's detail from the compressed chunks."""
    index = json.loads(re.search(r'<script type="application/json" id="index">(.*?)</script>', html, re.DOTALL).group(1))
    details = []
    for b64 in re.findall(r'<script type="text/plain" id="c\d+">(.*?)</script>', html, re.DOTALL):
        details += json.loads(gzip.decompress(base64.b64decode(b64)))
    return index, details


def test_compiled_dataset_report_holds_every_example_with_its_verdict(tmp_path, capsys):
    ds = compiled(tmp_path)
    assert main(["report", str(ds)]) == 0
    assert "wrote" in capsys.readouterr().err
    html = (ds / "report.html").read_text()
    index, details = page_data(html)
    by = {e["id"]: e for e in index}
    assert list(by) == ["a", "b", "c", "d"]
    assert (by["a"]["verdict"], by["a"]["correct"], by["a"]["output"], by["a"]["gold"]) == ("kept", True, "4", "4")
    assert (by["b"]["verdict"], by["b"]["group"], by["b"]["correct"]) == ("dropped", "matches: answer differs from the gold label", False)
    assert by["c"]["status"] == by["c"]["verdict"] == "unparsed"
    assert by["d"]["status"] == by["d"]["verdict"] == "failed" and "scripted failure" in by["d"]["reason"]
    # each example's System-2 trace, node by node, beside the System-1 row made from it
    assert list(details[0]["trace"]["nodes"]) == ["draft", "review", "final"]
    assert details[0]["system1"][0]["completion"] == [{"role": "assistant", "content": "4"}]
    assert details[1]["system1"] == []  # dropped: no row
    # the sections: graph (SVG), node table with failed and unparsed apart, curation, label chart
    assert html.count("<svg") == 2
    for text in ("Program graph", "Tokens and time per node", "Drop reasons", "dropped by matches"):
        assert text in html
    # kept-label accuracy: a and b are scored (c unparsed and d failed count as wrong), a alone is kept
    assert re.search(r'<tr id="kept-gold"><td>kept labels that match answer \(normalized_match\)</td><td>1/1 \(100%\)</td></tr>', html)
    assert "<tr><td>all System-2 answers that match answer</td><td>1/4 (25%)</td></tr>" in html
    # self-contained: nothing is fetched at view time
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html) and "@import" not in html


def test_run_and_eval_folders(tmp_path, fake_engine, capsys):  # noqa: F811
    cp = load_program(TWO_STEP)
    rows, _ = validate_rows(cp, ROWS[:2])
    Runner(FakeEngine(reply), CallCache(None), progress=False).execute(cp, rows, tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "run.html")]) == 0
    index, _ = page_data((tmp_path / "run.html").read_text())
    assert [(e["id"], e["verdict"], e["correct"]) for e in index] == [("a", None, True), ("b", None, False)]

    write_rows(tmp_path / "test.jsonl", n=4)
    assert main(["eval", "bsm.s2", "--data", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "ev"),
                 "--no-cache"]) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    results["systems"][0]["ci"] = {"agreement": [0.25, 0.75]}  # the CI schema the fidelity issue fills
    (tmp_path / "ev" / "results.json").write_text(json.dumps(results))
    assert main(["report", str(tmp_path / "ev")]) == 0
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "Evaluation" in html and "[25.0, 75.0]" in html and "System 2" in html
    index, details = page_data(html)
    assert len(index) == 4 and index[0]["correct"] is True  # System 2's trace, scored against gold
    assert details[0]["answers"]["System 1"] == {"answer": "A", "correct": False}
    assert details[0]["answers"]["System 2"] == {"answer": "B", "correct": True}


def test_without_its_program_file_the_report_still_shows_the_traces(tmp_path, capsys):
    prog = tmp_path / "two_step.s2"
    shutil.copy(TWO_STEP, prog)
    cp = load_program(prog)
    rows, _ = validate_rows(cp, ROWS[:2])
    Runner(FakeEngine(reply), CallCache(None), progress=False).execute(cp, rows, tmp_path / "run")
    prog.unlink()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "does not load" in capsys.readouterr().err
    html = (tmp_path / "run" / "report.html").read_text()
    index, details = page_data(html)
    assert [(e["id"], e["correct"]) for e in index] == [("a", None), ("b", None)]
    assert "Program graph" not in html and details[1]["trace"]["outputs"] == {"final": "7"}


def test_not_a_report_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "is not a run, compiled dataset or eval folder" in capsys.readouterr().err
    (tmp_path / "run.sqlite").write_text("not a database")
    assert main(["report", str(tmp_path)]) == 1
    assert "is not a readable run store" in capsys.readouterr().err


def test_a_compiled_dataset_named_by_its_run_folder_is_reported_as_the_dataset(tmp_path):
    ds = compiled(tmp_path)
    assert main(["report", str(ds / "run")]) == 0
    index, details = page_data((ds / "run" / "report.html").read_text())
    assert [e["verdict"] for e in index] == ["kept", "dropped", "unparsed", "failed"]
    assert details[0]["system1"]  # the dataset's rows, found from DIR/run


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("the report's browser test needs Debian's chromium and chromium-driver "
                    "(scripts/setup.sh installs them as root: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_report_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ds = compiled(tmp_path)
    assert main(["report", str(ds)]) == 0
    browser = chromium()
    try:
        browser.get((ds / "report.html").as_uri())
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
        listed = lambda: [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, ".example")]
        assert listed() == ["a", "b", "c", "d"]
        Select(browser.find_element(By.ID, "filter")).select_by_value("dropped")
        assert listed() == ["b"]
        Select(browser.find_element(By.ID, "filter")).select_by_value("failed")
        assert listed() == ["d"]
        Select(browser.find_element(By.ID, "filter")).select_by_value("kept")
        assert listed() == ["a"]
        browser.find_element(By.CSS_SELECTOR, ".example .head").click()  # inflates the chunk, builds the trace
        WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".trace"))
        trace = browser.find_element(By.CSS_SELECTOR, ".trace")
        assert [n.text for n in trace.find_elements(By.CSS_SELECTOR, ".system2 .node > b")] == \
               ["draft", "review", "final", "outputs"]
        assert "Final answer: 4" in trace.text and "(target)" in trace.text
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert browser.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
        # a run of a while: the rounds that did not run say so, and the value carried out is shown
        from test_control_flow import REFINE, refine_script

        from s2c.compiler.pipeline import load_text
        src = tmp_path / "w.s2"
        src.write_text(REFINE)
        run = tmp_path / "while-run"
        Runner(FakeEngine(refine_script), progress=False).execute(load_text(REFINE, str(src)), [("a", {"question": "q"})], run)
        assert main(["report", str(run)]) == 0
        browser.get((run / "report.html").as_uri())
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
        browser.find_element(By.CSS_SELECTOR, ".example .head").click()
        WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".trace"))
        skipped = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".trace .skipped")]
        assert "skipped: round 2 of the while at line 5: not run, the condition was false" in skipped
        assert any(t.startswith("skipped: the else branch at line 8: not run") for t in skipped)
        nodes = [n.text for n in browser.find_elements(By.CSS_SELECTOR, ".trace .system2 .node > b")]
        assert "answer@5" in nodes
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        browser.quit()
