"""User text prints as written: an id `[/x]`, a field `[bold]hi[/bold]`, a server's error body, a
program's description, a path, a curation reason. s2c's consoles have rich markup off
(`cliutil.console`) and s2c styles with `rich.text.Text`, so such text can neither crash a command
(MarkupError) nor turn into style; the styles s2c means still render (the green `ok`)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers.llm_server import MARKUP, Fault, serve

from s2c.cli import main
from s2c.compiler.pipeline import load_program
from s2c.distill.build import DistillSettings, distill_program, read_verdicts
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.run import Runner

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
for plain in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # the subprocesses' output is a pipe, without colour
    ENV.pop(plain, None)

COLOUR = {**{k: v for k, v in ENV.items() if k != "NO_COLOR"}, "FORCE_COLOR": "1", "TERM": "xterm-256color"}

BOLD = "[bold]hi[/bold]"
PROGRAM = """program mk "[/x] judges [bold]this[/bold]"
input question
answer = llm(max_tokens=16) \"\"\"{{ question }} [/x]\"\"\"
output answer
"""


def s2c(*argv, env=None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "s2c.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env or ENV, timeout=120, cwd=REPO, check=False)
    assert "Traceback" not in done.stderr + done.stdout and "MarkupError" not in done.stderr + done.stdout, done.stderr
    return done


def flat(text: str) -> str:
    """The words of `text`, one space apart and without a tree's guides: off a terminal the console
    wraps long lines at 140 columns, and a tree repeats its guide on each wrapped line."""
    return " ".join(text.replace("│", " ").split())


def markup_dir(tmp_path: Path) -> Path:
    """A folder whose path holds `[/x]`: the folder `[` and, in it, `x]`."""
    folder = tmp_path / "[" / "x]"
    folder.mkdir(parents=True)
    assert "[/x]" in str(folder)
    return folder


# ------------------------------------------------------------------------------ s2c run and s2c trace

def test_run_and_trace_print_ids_fields_paths_and_server_errors_as_written(tmp_path):
    where = markup_dir(tmp_path)
    data = where / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "[/x]", "question": BOLD, "response_a": "[/a] one", "response_b": "two"},
        {"id": "boom[/x]", "question": "FAILME", "response_a": "a", "response_b": "b"},  # a 400 with MARKUP
        {"id": "skip[/x]", "question": "q", "response_a": "a"},  # no response_b: skipped
    ]))
    out = where / "run"
    with serve(tmp_path, faults=[Fault("http400", match="FAILME")]) as url:
        done = s2c("run", "bsm.s2", "--data", data, "--engine", "openai", "--base-url", url, "--model", "echo-model",
                   "--no-cache", "--no-progress", "--out", out)
    assert done.returncode == 0, done.stderr
    err = flat(done.stderr)
    assert str(data) in err and "row 3 (id skip[/x]): field 'response_b' is missing" in err  # the skipped row
    assert "2 examples: 1 ok, 1 failed" in err
    assert f"-> {out}/summary.json" in err  # the --out path
    assert "branch failed: 1 × engine: POST /chat/completions: HTTP 400:" in err and MARKUP in err  # its reason

    shown = s2c("trace", out)
    assert shown.returncode == 0
    assert shown.stderr.startswith("showing example [/x] (the first ok example of 2;")
    assert shown.stdout.startswith("example [/x] ok · ")
    assert f"question: {BOLD}" in shown.stdout and "response_a: [/a] one" in shown.stdout
    prompt = s2c("trace", out, "--example", "[/x]", "--node", "branch", "--full").stdout
    assert f"│   │   User Question: {BOLD}\n" in prompt  # the prompt the model saw

    failed = s2c("trace", out, "--failed")
    assert failed.returncode == 0
    assert failed.stdout.startswith("example boom[/x] failed")
    assert "error: engine: POST /chat/completions: HTTP 400:" in flat(failed.stdout) and MARKUP in flat(failed.stdout)


def test_compile_prints_its_curation_in_colour_and_its_folder_as_written(tmp_path):
    where = markup_dir(tmp_path)
    data = where / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": f"[/x]{i}", "question": BOLD, "answer": "[/x]"}) + "\n" for i in range(2)))
    out = where / "data"
    with serve(tmp_path) as url:  # its replies hold no "Final answer:": both examples are unparsed
        done = s2c("compile", "tests/fixtures/programs/two_step.s2", "--data", data, "--engine", "openai",
                   "--base-url", url, "--model", "echo-model", "--no-cache", "--no-progress", "--out", out, env=COLOUR)
    assert done.returncode == 0, done.stderr
    assert "\x1b[1mcuration\x1b[0m: 2 inputs, \x1b[32m0 kept\x1b[0m, 0 failed, 2 unparsed" in done.stderr
    assert re.search(r"\x1b\[1mtotal *\x1b\[0m", done.stderr)  # the token table's last row
    assert f"s2c: wrote {out} (" in done.stderr


# ------------------------------------------------------------------------------ s2c graph and s2c check

def test_graph_and_check_print_a_description_and_a_path_as_written(tmp_path, capsys):
    program = markup_dir(tmp_path) / "p.s2"
    program.write_text(PROGRAM)
    assert main(["graph", str(program)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "mk — [/x] judges [bold]this[/bold]"
    assert "llm answer  line 3 · max_tokens 16 · reads question" in out
    assert main(["check", str(program)]) == 0
    assert flat(capsys.readouterr().out) == f"ok {program}: 1 LLM calls in the program, 1 per input, 1 stage"


def test_an_error_quotes_a_source_line_that_holds_markup(tmp_path, capsys):
    program = markup_dir(tmp_path) / "p.s2"
    program.write_text(PROGRAM.replace("{{ question }} [/x]", "{{ questoin }} [/x]"))
    assert main(["check", str(program)]) == 1
    err = capsys.readouterr().err
    assert f"{program}:3:" in err and "undefined variable 'questoin'" in err
    assert '3 | answer = llm(max_tokens=16) """{{ questoin }} [/x]"""' in err


def test_the_styles_s2c_means_still_render(tmp_path):
    """On a colour terminal `ok` is green and the graph's stage is bold cyan, while the `[bold]` of
    the program's description stays text."""
    program = markup_dir(tmp_path) / "p.s2"
    program.write_text(PROGRAM)
    check = s2c("check", program, env=COLOUR)
    assert check.returncode == 0
    assert check.stdout.startswith("\x1b[32mok\x1b[0m ")
    assert f" {program}: " in check.stdout
    graph = s2c("graph", program, env=COLOUR)
    assert "\x1b[1;36mstage 1\x1b[0m" in graph.stdout
    assert "[/x] judges [bold]this[/bold]" in graph.stdout


# ------------------------------------------------------------------------------ s2c trace --dropped

SWAP = """program swapped "answers that follow the order of a and b"
input question
input a
input b
answer = llm(max_tokens=16) \"\"\"{{ question }} first: {{ a }} second: {{ b }}\"\"\"
output answer
distill:
    task t(target=answer) \"\"\"{{ question }}\"\"\"
    keep consistent(answer, swap=["a", "b"])
"""


def first_option(request, i) -> str:
    """Names whichever of a and b comes first: the answer changes when they swap."""
    return "[bold]" + request_text(request).split("first: ")[1].split(" second:")[0] + "[/x]"


def test_dropped_shows_a_curation_reason_that_holds_markup(tmp_path, capsys):
    program = tmp_path / "swapped.s2"
    program.write_text(SWAP)
    cp = load_program(program)
    ds = markup_dir(tmp_path) / "ds"
    distill_program(cp, [("[/x]", {"question": "which?", "a": "one", "b": "two"})], Runner(FakeEngine(first_option), CallCache(None), progress=False), ds, DistillSettings(data="fixture"))
    reason = read_verdicts(ds)["[/x]"]["reason"]
    assert reason == "consistent: answer changes under swap ([bold]one[/x] vs [bold]two[/x])"
    capsys.readouterr()
    assert main(["trace", str(ds), "--dropped"]) == 0
    got = capsys.readouterr()
    assert got.err.strip() == "1 of 1 examples were dropped by curation (rule consistent: 1); showing all 1"
    assert got.out.startswith("example [/x] ok")
    assert "completion: [bold]one[/x]" in got.out
    assert f"curation: dropped by rule consistent: {reason}" in flat(got.out)
    assert main(["trace", str(ds / "run"), "--example", "[/x]~swap"]) == 0
    assert "curation (with its original [/x]): dropped by rule consistent" in flat(capsys.readouterr().out)
    coloured = s2c("trace", ds, "--dropped", env=COLOUR).stdout  # the verdict in colour, the reason as text
    assert f"\x1b[33mdropped\x1b[0m by rule consistent: {reason}" in coloured
