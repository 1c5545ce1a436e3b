"""Waiting for another tmix that writes the KV file this run needs: while that writer gets on, not for one that is
stopped (Ctrl-Z, SIGSTOP) or has done nothing for STALLED_S (then this run prefills, as when the writer dies)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tmixcli.kvfolder import has_open, pid_of, temp_is_stale, temp_of
from tmixcli.procstat import STOPPED, process_stat

STALLED_S = 60.0  # a writer whose temp file and CPU time stay the same this long is not waited for


def writers(path: Path) -> list[Path]:
    """The temp files of `path` (kvfolder.temp_name) that other processes write now, none a save left behind. This
    process's own writers do not count: it would wait for itself."""
    try:
        temps = [p for p in path.parent.iterdir() if temp_of(path, p) and pid_of(p) != os.getpid()]
    except OSError:
        return []
    return [p for p in temps if not temp_is_stale(p)]


def wait_for_writer(path: Path, on_wait: Callable[[], None], poll_s: float = 0.1,
                    stalled_s: float = STALLED_S) -> str | None:
    """Wait while another process writes `path`, telling `on_wait` once first. None once no writer is left (a
    writer holds its temp file's lock through the rename, so the file is in place unless that writer gave up or
    died); else the line saying why this run stopped waiting: every writer is stopped or stalled."""
    seen: dict[Path, tuple[tuple, float]] = {}
    told = False
    while found := writers(path):
        why = [_stuck(p, seen, stalled_s) for p in found]
        if all(why):
            return why[0]
        if not told:
            on_wait()
            told = True
        time.sleep(poll_s)
    return None


def _stuck(temp: Path, seen: dict[Path, tuple[tuple, float]], stalled_s: float) -> str | None:
    """Why the writer of `temp` is not worth waiting for (its process stopped, or no progress for `stalled_s`: its
    file unchanged and its process using no CPU), else None; `seen` keeps each file's last progress and when."""
    pid = pid_of(temp)
    if pid is not None and has_open(pid, temp, None) is False:
        pid = None  # that pid is another process now (another pid namespace sharing the cache): not the writer
    state, cpu = process_stat(pid) if pid is not None else (None, None)
    who = "the tmix writing this document's KV file" + (f" (pid {pid})" if pid is not None else "")
    if state in STOPPED:
        return f"{who} is stopped; prefilling here"
    try:
        st = temp.stat()
    except OSError:  # renamed or removed meanwhile: its writer is done
        return None
    mark, now = (st.st_mtime_ns, st.st_blocks, cpu), time.monotonic()
    last = seen.get(temp)
    if last is None or last[0] != mark:
        seen[temp] = (mark, now)
        return None
    if now - last[1] < stalled_s:
        return None
    return f"{who} has made no progress for {stalled_s:.0f} s; prefilling here"
