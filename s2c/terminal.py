"""Where s2c's messages go: the user's terminal, also while the engine's own output (vLLM, torch)
is sent to a log file. Used by the API (s2c/api.py) and the CLI alike."""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

# Where s2c's own output goes while `engine_output` sends file descriptors 1 and 2 to a log:
# fd -> the stream that still reaches the user. Process-wide, as the descriptors themselves are.
_SCREEN: dict[int, io.TextIOBase] = {}


class _Screen(io.TextIOBase):
    """The user's stdout (fd 1) or stderr (fd 2), also while the engine's output goes to a log:
    the stream s2c's console, messages and products write to. Resolved at each write, so a
    console made before the redirect follows it."""

    def __init__(self, fd: int):
        self.fd = fd

    def target(self):
        return _SCREEN.get(self.fd) or (sys.stdout if self.fd == 1 else sys.stderr)

    def write(self, text: str) -> int:
        return self.target().write(text)

    def flush(self) -> None:
        self.target().flush()

    def isatty(self) -> bool:
        return self.target().isatty()

    def fileno(self) -> int:
        return self.target().fileno()

    def writable(self) -> bool:
        return True


def screen(stderr: bool = True) -> io.TextIOBase:
    """The user's stderr (or stdout) for plain `print(..., file=screen())`."""
    return _Screen(2 if stderr else 1)


def console(stderr: bool = True):
    """A console on the user's stderr (or stdout); wide enough for the tables when output is not
    a terminal (logs, CI). It keeps the terminal while `engine_output` is in force.

    Markup is off: a string prints exactly as it is, so user text (ids, model outputs, paths, a
    server's error) that holds `[/x]` or `[bold]` can neither crash a command nor turn into style.
    Style is given explicitly, as `rich.text.Text`: `Text.assemble(("ok", "green"), f" {path}")`."""
    from rich.console import Console

    stream = screen(stderr)
    # measured now: once fds 1 and 2 go to engine.log, rich could no longer ask the terminal
    width = (os.get_terminal_size(stream.fileno()).columns or 80) if stream.isatty() else 140
    return Console(file=stream, markup=False, highlight=False, emoji=False, width=width)  # no :x: -> emoji in paths


ENGINE_LOG = "engine.log"

# Lines of an engine log a user should read: vLLM logs a full KV cache, a fallback to another
# implementation and its errors in these words (s2c's vLLM engine adds a line for preemptions).
WORTH_READING = re.compile(r"(?i:preempt|kv[ _-]?cache|out of memory|fall(?:ing|s)?[ -]?back)"
                           r"|\bERROR\b|Traceback|\w+Error:")
# vLLM's prefix on a log line: "(EngineCore pid=7) WARNING 11-23 07:18:12 [core.py:534] "
LOG_PREFIX = re.compile(r"^(?:\([^)]*\)\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S+\s+\S+\s+\[[^\]]*\]\s+")


@contextlib.contextmanager
def engine_output(log_file: Path, verbose: bool, console, what: str = "engine"):
    """Send what the engine and the libraries under it print to `log_file` while the block runs:
    file descriptors 1 and 2 are pointed at the file (os.dup2), so vLLM's EngineCore and worker
    processes (which inherit them), native code, Python warnings and logging handlers bound to
    sys.stdout all land there, while s2c's console (`screen`, `console`) keeps a duplicate of the
    user's terminal. On leaving, one line on `console` names the lines worth reading, if any.
    verbose (-v): nothing is redirected and no log is written."""
    if verbose or _SCREEN:  # -v, or already redirected (one log per command)
        yield None
        return
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved: dict[int, int] = {}
    opened = []
    with open(log_file, "wb") as f:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            saved[fd] = os.dup(fd)
            _SCREEN[fd] = stream
            if _on_fd(stream, fd):  # it would follow the redirect: s2c writes to the duplicate instead
                _SCREEN[fd] = open(saved[fd], "w", buffering=1, closefd=False,  # noqa: SIM115 (closed below)
                                   errors="backslashreplace", encoding=getattr(stream, "encoding", None) or "utf-8")
                opened.append(_SCREEN[fd])
            os.dup2(f.fileno(), fd)
    try:
        yield log_file
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for stream in opened:
            stream.close()  # flushes; the descriptor stays (closefd=False) until restored below
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
            del _SCREEN[fd]
        with contextlib.suppress(OSError):
            if log_file.stat().st_size == 0:  # nothing was printed (a run served by the cache): no log
                log_file.unlink()
        note = log_note(log_file, what)
        if note:
            console.print(note)


def _on_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no descriptor, or closed
        return False


def log_note(log_file: Path, what: str = "engine") -> str | None:
    """One line naming the lines of `log_file` worth reading (see WORTH_READING), or None."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = list(dict.fromkeys(LOG_PREFIX.sub("", line).strip() for line in text.splitlines()
                               if WORTH_READING.search(line)))
    if not found:
        return None
    first = found[0] if len(found[0]) <= 80 else found[0][:77] + "..."
    n = len(found)
    return f"s2c: {what}: {n} warning{'s' * (n != 1)} worth reading ({first}); see {log_file}"
