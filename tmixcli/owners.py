"""Whose a temp file or folder is, and what it takes on disk: a writer holds a lock (flock) on what it writes (KV
temp files, model conversions' folders) and puts its pid in the name, so a leftover is told from work in progress."""

from __future__ import annotations

import fcntl
import os


def alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by someone else
        pass
    return True


def lock_held(fd: int) -> bool | None:
    """Whether a writer holds its lock on the open file `fd` (None: its file system has no locks); when it is free,
    a shared lock is taken here, held until `fd` closes, so no writer takes it meanwhile."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    return False


def on_disk(st: os.stat_result) -> int:
    """The bytes a file takes on disk, by its blocks (a sparse file takes less than its size); its size where the
    system keeps no block count."""
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else blocks * 512
