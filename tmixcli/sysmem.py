"""Memory this process could still take on Linux: the kernel's MemAvailable, capped by a cgroup limit (containers),
so that a run too large for the machine is refused with one line instead of being killed without a word."""

from __future__ import annotations

from pathlib import Path

_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _number(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_bytes() -> int | None:
    """Bytes of memory free for a new allocation, or None where that cannot be told (not Linux)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    found = [int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")]
    if not found:
        return None
    free = found[0]
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _number(limit_file), _number(usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            free = min(free, max(limit - usage, 0))
    return free
