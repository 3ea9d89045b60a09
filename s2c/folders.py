"""Output folders: made and proven writable before anything slow starts, and held by one s2c at
a time."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path

from s2c.errors import S2Error


def default_out(kind: str, program: str, data: str) -> Path:
    """runs/KIND-PROGRAM-DATA, the folder run, compile and eval write when given none."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).stem if Path(data).exists() else data).strip("_")
    return Path("runs") / f"{kind}-{Path(program).stem}-{slug}"


def check_out(out: Path, flag: str = "--out") -> None:
    """Make the output folder now, and prove a file can be written in it: a bad --out is an error
    before anything slow starts, not a traceback after it."""
    if out.exists() and not out.is_dir():
        raise S2Error(f"{flag} {out}: is a file, not a folder", hint=f"pass a folder path, e.g. {flag} {out}.d")
    blocker = next((a for a in out.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise S2Error(f"{flag} {out}: {blocker} is a file, so no folder can be made under it",
                      hint="pass a path whose parent folders are folders")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise S2Error(f"{flag} {out}: cannot write there ({e.strerror or e})",
                      hint="pass a folder you can write to") from None


LOCK = ".s2c.lock"


@contextlib.contextmanager
def own(folder: Path):
    """Hold `folder` for this process: a second s2c on the same --out stops at once and names the
    holder. The lock is an flock on FOLDER/.s2c.lock, which the kernel releases when its holder
    dies, so a lock left by a killed run is simply taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            raise S2Error(f"{folder} is in use by another s2c (pid {holder})",
                          hint="wait for it to finish, or pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the flock


