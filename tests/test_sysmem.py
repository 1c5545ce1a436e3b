"""sysmem.available_bytes: MemAvailable, capped by a cgroup's limit less its usage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmixcli import sysmem


def _fake_files(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    real = Path.read_text

    def read_text(self: Path, *args, **kw) -> str:
        if str(self) in files:
            return files[str(self)]
        if str(self).startswith(("/proc/meminfo", "/sys/fs/cgroup")):
            raise FileNotFoundError(str(self))
        return real(self, *args, **kw)
    monkeypatch.setattr(Path, "read_text", read_text)


def test_memavailable_then_the_cgroup_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = "MemTotal:       25000000 kB\nMemFree:  100 kB\nMemAvailable:   2000000 kB\n"
    _fake_files(monkeypatch, {"/proc/meminfo": meminfo})
    assert sysmem.available_bytes() == 2000000 * 1024
    _fake_files(monkeypatch, {"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "1000000000\n",
                              "/sys/fs/cgroup/memory.current": "400000000\n"})
    assert sysmem.available_bytes() == 600000000
    _fake_files(monkeypatch, {"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "max\n",
                              "/sys/fs/cgroup/memory.current": "400000000\n"})
    assert sysmem.available_bytes() == 2000000 * 1024


def test_unknown_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_files(monkeypatch, {})
    assert sysmem.available_bytes() is None
    _fake_files(monkeypatch, {"/proc/meminfo": "MemTotal: 5 kB\n"})
    assert sysmem.available_bytes() is None


def test_this_machine_has_some() -> None:
    free = sysmem.available_bytes()
    assert free is None or free > 2**20
