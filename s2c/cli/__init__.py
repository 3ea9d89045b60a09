"""The `s2c` command line. `main(argv) -> exit code`: 0 ok, 1 bad input, 2 usage.

Products go to stdout or --out; diagnostics and progress go to stderr.
"""
from __future__ import annotations

import argparse
import os
import sys

from s2c.errors import CheckError, S2Error, render_all
from s2c.runtime.engines.base import EngineError
from s2c.terminal import console

EXIT_INTERNAL = 70  # a bug in s2c (EX_SOFTWARE): the traceback is in the log file it names


def cmd_check(args) -> int:
    from rich.text import Text

    from s2c.compiler.pipeline import check_file

    out = console(stderr=False)
    failed = 0
    for path in args.files:
        try:
            cp = check_file(path)
        except S2Error as e:
            print(e.render(_source_of(e)), file=sys.stderr)
            failed += 1
            continue
        if cp.diagnostics:
            print(render_all(cp.diagnostics, cp.sources), file=sys.stderr)
        if cp.errors:
            failed += 1
        elif not args.quiet:
            g = cp.graph.graph
            out.print(Text.assemble(("ok", "green"), f" {path}: {len(cp.llm_nodes())} LLM calls in the program, "
                                    f"{'≤ ' if g.get('conditional') else ''}{g['calls_per_input']} per input"
                                    f"{' (' + str(g['calls_per_input'] * g['compile_copies']) + ' compiled)' if g.get('compile_copies') else ''}"
                                    f", {g['stages']} stage{'s' * (g['stages'] != 1)}"))
    return 1 if failed else 0


def _source_of(e: S2Error) -> str | None:
    span = e.diagnostic.span
    if span is None:
        return None
    try:
        with open(span.file, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def cmd_graph(args) -> int:
    from s2c.compiler import render
    from s2c.compiler.pipeline import load_program

    cp = load_program(args.file)
    if args.format == "tree":
        console(stderr=False).print(render.to_tree(cp))
    else:
        text = {"json": render.to_json, "dot": render.to_dot, "mermaid": render.to_mermaid}[args.format](cp.graph)
        sys.stdout.write(text)
    return 0


EPILOG = {
    "check": "example:\n  s2c check programs/*.s2",
    "graph": "example:\n  s2c graph bsm.s2 --format mermaid",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2c",
        description="Compile System-2 LLM programs (.s2) into System-1 training data.",
        epilog="example:\n  s2c compile rar_2step.s2 --data coin_flip --limit 32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version="s2c 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_, func):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG.get(name),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=func)
        return sp

    c = add("check", "check .s2 programs: errors and warnings, before any model call", cmd_check)
    c.add_argument("files", nargs="+", metavar="FILE", help="a .s2 file, or the name of a built-in program")
    c.add_argument("-q", "--quiet", action="store_true", help="print only problems")

    g = add("graph", "show the execution graph of a program", cmd_graph)
    g.add_argument("file", metavar="FILE")
    g.add_argument("--format", choices=["tree", "dot", "mermaid", "json"], default="tree")

    from s2c.cli import distill, estimate, eval, export, report, run_trace, train

    for mod in (run_trace, distill, estimate, train, export, eval, report):
        mod.register(sub)
    return p


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (like KeyboardInterrupt) so that the `finally` blocks run:
    they close the engines, and vLLM's engine processes outlive an s2c that dies without that
    (measured: two orphaned after `pkill`, one still using a core 40 minutes later)."""


def _terminated(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    import signal
    import threading

    on_main = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    before = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        return args.func(args)
    except Terminated:
        print("s2c: terminated (SIGTERM); everything finished so far is saved", file=sys.stderr)
        return 128 + signal.SIGTERM
    except CheckError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except S2Error as e:
        print(e.render(_source_of(e)), file=sys.stderr)
        return 1
    except EngineError as e:
        print(f"error: engine: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("s2c: interrupted; everything finished so far is saved", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in s2c: one line for the user, the traceback in a file
        log = _write_traceback(getattr(args, "out", None))  # the folder --out names, if the command has one
        print(f"s2c: internal error ({type(e).__name__}: {str(e)[:200]}); this is a bug in s2c, not in your "
              f"input. Completed calls are cached. Traceback: {log}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, before)


def _write_traceback(folder) -> str:
    import time
    import traceback
    from pathlib import Path

    from s2c.runtime.model import cache_dir

    text = traceback.format_exc()
    for where in ([Path(folder)] if folder else []) + [cache_dir() / "logs"]:
        try:
            where.mkdir(parents=True, exist_ok=True)
            path = where / f"s2c-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            path.write_text(" ".join(sys.argv) + "\n\n" + text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    print(text, file=sys.stderr)  # nowhere to write: the traceback itself
    return "(printed above)"


def run() -> None:
    raise SystemExit(main())


if __name__ == "__main__":  # vLLM starts its engine in a subprocess: keep entry points guarded
    run()
