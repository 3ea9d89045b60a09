"""Load one split of a Hugging Face Hub dataset as records, or fail with a way out.

Every failure a user can fix (no network, unknown id, wrong split or config, a script dataset)
becomes an S2Error whose hint says how to pass a local file instead. Another dataset is never
substituted.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

from s2c.data import files
from s2c.data.rows import Reader, Record, SourceRequest
from s2c.errors import S2Error

# Exception classes that mean "no connection", by name: httpx, requests and huggingface_hub
# each define their own, and the installed datasets may vendor a renamed httpx.
_NETWORK_ERRORS = {
    "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
    "TransportError", "ProxyError", "OfflineModeIsEnabled",
}


class ScriptDatasetError(S2Error):
    """The Hub dataset is a loading script, which datasets>=4 refuses to run."""


def load(repo: str, config: str | None, split: str, *, hint: str, data_files=None):
    """`datasets.load_dataset(repo, config, split=split)`, with user errors translated."""
    import datasets

    try:
        if data_files is not None:
            return datasets.load_dataset(repo, config, data_files=data_files, split=split)
        return datasets.load_dataset(repo, config, split=split)
    except Exception as e:
        err = translate(e, repo, config, split, hint)
        if err is None:
            raise
        raise err from e


def records(ds, label: str) -> Iterator[Record]:
    """Rows of a loaded `datasets.Dataset`, located as `label: row N` (N counts from 1)."""
    for i, row in enumerate(ds):
        yield Record(f"{label}: row {i + 1}", i, row)


def read(repo: str, config: str | None, split: str, *, hint: str) -> Iterator[Record]:
    ds = load(repo, config, split, hint=hint)
    return records(ds, f"{repo}[{split}]")


def reader(repo: str, config: str | None = None, *, hint: str) -> Reader:
    """A source's reader: the local export in `NAME:PATH` if given, else the Hub split."""

    def read_(req: SourceRequest):
        if req.path:
            return files.read(req.path, req)
        return read(repo, config, req.split, hint=hint)

    return read_


def unreachable(exc: BaseException) -> bool:
    """True if the exception (or one it came from) is a failed or forbidden connection."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if type(exc).__name__ in _NETWORK_ERRORS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def offline() -> bool:
    flags = (os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f in ("1", "true", "yes", "on") for f in flags)


def translate(exc: Exception, repo: str, config: str | None, split: str, hint: str) -> S2Error | None:
    """The S2Error for a load failure a user can act on; None for anything else (a bug)."""
    text = str(exc)
    if unreachable(exc):
        why = " (HF_HUB_OFFLINE is set)" if offline() else ""
        return S2Error(f"could not reach the Hugging Face Hub to load '{repo}'{why}", hint=hint)
    if type(exc).__name__ in ("DatasetNotFoundError", "DataFilesNotFoundError", "EmptyDatasetError"):
        return S2Error(f"could not load '{repo}' from the Hugging Face Hub: {text}", hint=hint)
    if isinstance(exc, RuntimeError) and "scripts are no longer supported" in text:
        return ScriptDatasetError(
            f"'{repo}' is a loading-script dataset, which this version of datasets cannot load",
            hint=hint)
    if isinstance(exc, ValueError) and "split" in text.lower():
        return S2Error(f"'{repo}' has no split '{split}': {text}")
    if isinstance(exc, ValueError) and ("config" in text.lower() or "BuilderConfig" in text):
        return S2Error(f"'{repo}' config {config!r}: {' '.join(text.splitlines()[:2])}",
                       hint=f"name the config in the spec: {repo}:CONFIG:SPLIT")
    return None
