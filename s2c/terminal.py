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
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # a colour or style escape
LOG_PREFIX = re.compile(r"^(?:\([^)]*\)\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S+\s+\S+\s+\[[^\]]*\]\s+")


@contextlib.contextmanager
def engine_output(log_file: Path, verbose: bool, console, what: str = "engine", append: bool = False):
    """Send what the engine and the libraries under it print to `log_file` while the block runs:
    file descriptors 1 and 2 are pointed at the file (os.dup2), so vLLM's EngineCore and worker
    processes (which inherit them), native code, Python warnings and logging handlers bound to
    sys.stdout all land there, while s2c's console (`screen`, `console`) keeps a duplicate of the
    user's terminal. On leaving, one line on `console` names the lines worth reading, if any.
    verbose (-v): nothing is redirected and no log is written. append: add to the log, not replace it.

    Where sys.stdout and sys.stderr are not those descriptors (a Jupyter kernel's streams, which
    send text to the cells), they and the logging handlers bound to them are pointed at the log
    too while the block runs (`_python_streams`): vLLM's own logger writes through them."""
    if verbose or _SCREEN:  # -v, or already redirected (one log per command)
        yield None
        return
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved: dict[int, int] = {}
    opened = []
    python_streams = contextlib.ExitStack()
    with open(log_file, "ab" if append else "wb") as f:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            saved[fd] = os.dup(fd)
            _SCREEN[fd] = stream
            if _on_fd(stream, fd):  # it would follow the redirect: s2c writes to the duplicate instead
                _SCREEN[fd] = open(saved[fd], "w", buffering=1, closefd=False,  # noqa: SIM115 (closed below)
                                   errors="backslashreplace", encoding=getattr(stream, "encoding", None) or "utf-8")
                opened.append(_SCREEN[fd])
            os.dup2(f.fileno(), fd)
    if not (_on_fd(sys.stdout, 1) and _on_fd(sys.stderr, 2)):
        python_streams.enter_context(_python_streams())
    try:
        yield log_file
    finally:
        python_streams.close()
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


class _Descriptor(io.TextIOBase):
    """Text written straight to a file descriptor (1 or 2), unbuffered, never closed: what
    sys.stdout and sys.stderr are while `_python_streams` is in force. Libraries keep references
    to sys.stderr's methods (transformers binds its log handler's `flush` to `sys.stderr.flush`),
    so it must stay usable after the block; then it writes wherever the descriptor goes."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, text: str) -> int:
        os.write(self.fd, text.encode(self.encoding, self.errors))
        return len(text)

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def close(self) -> None:  # stays open: see the class docstring
        pass


_DESCRIPTORS = {1: _Descriptor(1), 2: _Descriptor(2)}


@contextlib.contextmanager
def _python_streams():
    """sys.stdout and sys.stderr, and every logging.StreamHandler bound to one of them, write to
    descriptors 1 and 2 (the log) while the block runs; afterwards they are the user's again,
    handlers made inside the block (vLLM configures its logger on import) included."""
    import logging

    users = {1: sys.stdout, 2: sys.stderr}

    def handlers():
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        return [h for lg in loggers for h in getattr(lg, "handlers", ()) if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]

    def point(from_: dict, to: dict) -> None:
        for h in handlers():
            for fd, stream in from_.items():
                if h.stream is stream:
                    with contextlib.suppress(AttributeError):  # logging.lastResort: its stream is sys.stderr, read
                        h.setStream(to[fd])

    point(users, _DESCRIPTORS)
    sys.stdout, sys.stderr = _DESCRIPTORS[1], _DESCRIPTORS[2]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = users[1], users[2]
        point(_DESCRIPTORS, users)


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
    text = ANSI.sub("", text)  # vLLM colours its lines where it thinks a terminal reads them (a Jupyter kernel)
    found = list(dict.fromkeys(LOG_PREFIX.sub("", line).strip() for line in text.splitlines()
                               if WORTH_READING.search(line)))
    if not found:
        return None
    first = found[0] if len(found[0]) <= 80 else found[0][:77] + "..."
    n = len(found)
    return f"s2c: {what}: {n} warning{'s' * (n != 1)} worth reading ({first}); see {log_file}"


@contextlib.contextmanager
def no_transformers_bars(verbose: bool = False):
    """transformers' own bars ("Loading weights") off while s2c loads or trains a model (s2c shows
    its own steps; in a Jupyter kernel tqdm draws them as widgets, which no log redirect reaches).
    Its warnings still show. verbose (-v): left on."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the command that needs it says which extra is missing
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    if not verbose:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on and not verbose:
            hf_logging.enable_progress_bar()
