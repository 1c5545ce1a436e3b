"""An internal error (a bug, not bad input) in a request `tmix serve` runs: its client gets one line naming it, and
the server keeps the traceback (on its own stderr, also under -q, and in a log file beside its socket)."""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import TextIO

_KEEP = 1 << 20  # bytes a log holds at most: one grown past this starts afresh
_SAID = 300  # characters of the error's own message the client's line holds at most


def log_path(sock: Path) -> Path:
    """The log of the server listening on `sock`: beside it, in its private folder."""
    return sock.with_suffix(".log")


def report(exc: BaseException, command: str, server_err: TextIO, log: Path | None) -> str:
    """Keep the traceback of `exc`, the error being handled, on the server's stderr and in `log`; the client's line."""
    trace = traceback.format_exc()
    kept = log is not None and _append(log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {command}: {trace}")
    with contextlib.suppress(OSError, ValueError):  # a closed stderr: the log still has it
        print(f"tmix serve: internal error in a request ({command})" + (f", kept in {log}" if kept else "") + f":\n"
              f"{trace}", end="", file=server_err, flush=True)
    said = " ".join(str(exc).split())
    said = said if len(said) <= _SAID else said[:_SAID] + "..."
    what = type(exc).__name__ + (f": {said}" if said else "")
    where = f"its log {log} has the traceback" if kept else "the traceback is on its stderr"
    return f"tmix: internal error in the tmix server: {what}; {where}"


def _append(path: Path, entry: str) -> bool:
    """Append `entry` to the log at `path` (mode 0600; started afresh past _KEEP bytes); whether it was written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        with open(fd, "a", encoding="utf-8", errors="backslashreplace") as log:
            if os.fstat(fd).st_size > _KEEP:
                os.ftruncate(fd, 0)
            log.write(entry)
    except OSError:
        return False
    return True
