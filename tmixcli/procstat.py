"""Another process as /proc/PID/stat tells it: its state letter (T: stopped by a signal such as Ctrl-Z or SIGSTOP, t:
by a debugger) and the CPU time it has used; for the waits on a tmix server or on another tmix's KV file."""

from __future__ import annotations

STOPPED = ("T", "t")  # state letters of a stopped process


def process_stat(pid: int) -> tuple[str | None, int | None]:
    """The process's state letter and CPU time (clock ticks, user + system); (None, None) where it cannot be read
    (gone, no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the command name before it may hold spaces and ")"
        return fields[0].decode("ascii", "replace"), int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None, None


def state(pid: int) -> str | None:
    """The process's state letter, None where not told."""
    return process_stat(pid)[0]
