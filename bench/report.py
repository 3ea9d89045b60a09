"""The HTML report at scale: size of `s2c report` on a compiled BSM dataset of N examples, and how
fast the page becomes interactive in headless Chromium (Debian's chromium + chromium-driver).

    python bench/report.py --inputs 10000

The compiled dataset is real (s2c compile's path: run store, curation, rows) over a scripted engine
whose replies have MT-bench-like lengths: a 60-word question, 200-word responses, a 5-line plan,
60-word criterion evaluations, a 100-word merge. Text is drawn at random from the English words of
the shipped programs, so it compresses about as natural text does, not as repeated filler does.

Reports: compile seconds, report build seconds, HTML MB, and in the browser: ready (navigation
start to the first page of examples listed, the page's own performance.now()), the time to open
one example's trace (inflating its chunk), and to switch the filter.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).parent


def vocabulary() -> list[str]:
    words = set()
    for p in (HERE.parent / "programs").glob("*.s2"):
        words.update(w.lower() for w in re.findall(r"[A-Za-z]{3,}", p.read_text()))
    return sorted(words)


def compile_bsm(n: int, out: Path) -> float:
    from s2c.compiler.pipeline import load_program
    from s2c.distill.build import DistillSettings, distill_program
    from s2c.runtime.cache import CallCache
    from s2c.runtime.engines.fake import FakeEngine
    from s2c.runtime.run import Runner, validate_rows

    words = vocabulary()

    def text(rng, k):
        return " ".join(rng.choice(words) for _ in range(k))

    def reply(req, i):
        t = req.messages[-1].content
        rng = random.Random(zlib.crc32(t.encode()) ^ i)
        if t.rstrip().endswith("Evaluation Plan:"):
            return "\n".join(f"{j}. {text(rng, 12)}" for j in range(1, 6))
        if "Evaluation of" in t and "[Evaluation of" not in t:
            return f"{rng.randint(1, 10)}\n{rng.randint(1, 10)}\n{text(rng, 60)}"
        return f"{text(rng, 100)} [[{rng.choice('AB')}]]"

    cp = load_program("bsm.s2")
    rng = random.Random(0)
    raw = [{"id": f"q{i}", "question": text(rng, 60), "response_a": text(rng, 200), "response_b": text(rng, 200),
            "label": rng.choice("AB")} for i in range(n)]
    rows, problems = validate_rows(cp, raw)
    assert not problems
    t0 = time.perf_counter()
    distill_program(cp, rows, Runner(FakeEngine(reply), CallCache(None), progress=False), out, DistillSettings(data="bench"))
    return time.perf_counter() - t0


def browse(html: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(a)
    b = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        t0 = time.perf_counter()
        b.get(html.as_uri())
        WebDriverWait(b, 120).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
        wall = time.perf_counter() - t0
        ready_ms = b.execute_script("return window.s2cReadyMs")
        listed = len(b.find_elements(By.CSS_SELECTOR, ".example"))
        t1 = time.perf_counter()
        b.find_elements(By.CSS_SELECTOR, ".example .head")[-1].click()
        WebDriverWait(b, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".trace .node"))
        open_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        Select(b.find_element(By.ID, "filter")).select_by_value("dropped")
        filter_s = time.perf_counter() - t2
        return {"ready_ms": round(ready_ms), "load_wall_s": round(wall, 2), "listed": listed,
                "open_trace_s": round(open_s, 2), "filter_s": round(filter_s, 2)}
    finally:
        b.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, nargs="+", default=[10000])
    args = ap.parse_args()
    from s2c.report.build import write_report

    for n in args.inputs:
        tmp = Path(tempfile.mkdtemp())
        compile_s = compile_bsm(n, tmp / "ds")
        t0 = time.perf_counter()
        dest, report = write_report(tmp / "ds")
        build_s = time.perf_counter() - t0
        store_mb = (tmp / "ds" / "run" / "run.sqlite").stat().st_size / 1e6
        print(json.dumps({"inputs": n, "compile_s": round(compile_s, 1), "report_build_s": round(build_s, 1),
                          "html_mb": round(dest.stat().st_size / 1e6, 1), "run_store_mb": round(store_mb, 1),
                          "chunks": len(report.chunks), **browse(dest)}), flush=True)


if __name__ == "__main__":
    main()
