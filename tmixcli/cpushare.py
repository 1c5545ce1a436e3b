"""Who else uses this process's CPUs: tmix processes computing now (each holds an flock'ed marker file while it
works; one that dies drops its lock) and other processes' load (/proc/stat), so that `--threads auto` gives each tmix
run its share. Imports nothing heavy (no torch)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time

_state: dict = {"working": False, "fd": None, "path": None}  # this process's work: its marker while held
_look: dict = {"at": None, "busy": 0, "mine": 0.0, "others": 0.0}  # the last look at the CPUs' load
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SHORTEST_S = 0.05  # a look sooner after the last keeps its answer: /proc/stat counts in ticks of 10 ms


def folder() -> str:
    """The markers' folder, one per user and machine as the cores are: tmix-UID/running in the temp folder (never the
    cache folder, which --no-cache and -o leave alone)."""
    return os.path.join(tempfile.gettempdir(), f"tmix-{os.getuid()}", "running")


def _usable(where: str, create: bool) -> bool:
    """Whether `where` and its parent are this user's own folders, writable by no one else (made if `create`)."""
    for path in (os.path.dirname(where), where):
        if create:
            with contextlib.suppress(OSError):
                os.mkdir(path, 0o700)
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return False
    return True


def working() -> bool:
    """Whether this process's work began (hold) and has not ended since (release)."""
    return _state["working"]


def hold() -> None:
    """Work begins: hold this process's marker (where the folder cannot be used, this process goes uncounted; the
    work goes on)."""
    _state["working"] = True
    if _state["fd"] is not None or not _usable(folder(), create=True):
        return
    for _ in range(5):  # a counter may remove the new file before it is locked: then another
        path = os.path.join(folder(), f"{os.getpid()}-{os.urandom(4).hex()}.lock")  # unique across pid namespaces
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                _state.update(fd=fd, path=path)
                return
        except OSError:  # locked by a counter that found it unlocked, or removed by one
            pass
        os.close(fd)


def release() -> None:
    """Work ends (the command, a served request, or a chat waiting for its next question): the marker goes."""
    _state["working"] = False
    fd, path = _state["fd"], _state["path"]
    if fd is None:
        return
    _state.update(fd=None, path=None)
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            os.unlink(path)
    os.close(fd)


def running() -> int:
    """How many tmix processes compute now, this one included. A marker nobody holds (its process died) does not
    count and is removed."""
    where = folder()
    try:
        names = os.listdir(where) if _usable(where, create=False) else []
    except OSError:
        names = []
    others = 0
    for name in names:
        path = os.path.join(where, name)
        if name.endswith(".lock") and path != _state["path"]:
            others += _held_by_another(path)
    return others + 1


def _held_by_another(path: str) -> bool:
    """Whether a live process holds the marker at `path`; a leftover is removed under our lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.unlink(path)
        return False
    finally:
        os.close(fd)


def cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def others_busy() -> float:
    """How many of this process's CPUs other processes kept busy since the last look, in CPUs' worth: their busy time
    (/proc/stat) less this process's own CPU time, over the time between. 0.0 at the first look or where /proc/stat
    cannot tell."""
    now, busy, mine = time.monotonic(), _busy_ticks(cpus()), time.process_time()
    last = _look["at"]
    if busy is None or (last is not None and now - last < SHORTEST_S):
        return _look["others"]
    others = 0.0
    if last is not None:
        others = max(0.0, ((busy - _look["busy"]) / _HZ - (mine - _look["mine"])) / (now - last))
    _look.update(at=now, busy=busy, mine=mine, others=others)
    return others


def _busy_ticks(which: set[int]) -> int | None:
    """The ticks the CPUs `which` spent busy so far (all but idle and iowait); None where /proc/stat cannot tell."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total, seen = 0, 0
    for line in lines:
        name, _, values = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in which:
            ticks = [int(v) for v in values.split()[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks) - ticks[3] - ticks[4]
            seen += 1
    return total if seen else None
