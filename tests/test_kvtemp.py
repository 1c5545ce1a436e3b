"""Temp files of KV saves: a live writer's file is told from a leftover by its lock, never by its pid alone."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from runcli import run
from tmixcli import kvfolder, kvheader, kvread, kvwrite, owners, paths
from tmixcli.sizes import human_size

REPO = Path(__file__).resolve().parents[1]
SAVER = textwrap.dedent("""
    import os, sys, time, torch
    from transformers import DynamicCache
    from tmixcli import kvheader, kvwrite
    def slow(fd, data, offset):
        os.pwrite(fd, data, offset)
        print("writing", flush=True)
        time.sleep(60)
    kvwrite._pwrite = slow
    cache = DynamicCache()
    for i in range(2):
        cache.update(torch.zeros(1, 2, 64, 16), torch.zeros(1, 2, 64, 16), i)
    meta = {"tmix_format": kvheader.FORMAT_VERSION, "doc_name": "d", "model_id": "m", "dtype": "fp32"}
    kvwrite.save_kv(sys.argv[1], cache, list(range(64)), meta)
""")


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))


def _writing(key: str) -> subprocess.Popen:
    """A process saving a KV file, stopped in its first write (its temp file exists, locked)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(kvfolder.kv_path_for(key))], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def _cache(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The output of `tmix cache argv`, run in-process (exit 0)."""
    code, out, err = run(capsys, "cache", *argv)
    assert code == 0, err
    return out


def _small_cache() -> DynamicCache:
    cache = DynamicCache()
    for i in range(2):
        cache.update(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16), i)
    return cache


META = {"tmix_format": kvheader.FORMAT_VERSION, "doc_name": "d", "model_id": "m", "dtype": "fp32"}


def test_a_leftover_whose_pid_is_reused_goes_and_a_live_writers_file_stays(capsys) -> None:
    """The QA case: a leftover renamed to pid 1 (alive) is still a leftover; a file a live process holds locked is
    being written, even with a dead pid in its name; prune and clear --yes take the one, never the other."""
    writer = _writing("live")
    killed = _writing("killed")
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        live, leftover = (next(kvfolder.kv_dir().glob(f".{k}.safetensors.{p.pid}.*.lk.tmp"))
                          for k, p in (("live", writer), ("killed", killed)))
        reused = kvfolder.kv_dir() / f".{'1' * 24}.safetensors.1.01d5a615.lk.tmp"  # pid 1 is alive
        shutil.copy(leftover, reused)
        held = kvfolder.kv_dir() / f".other.safetensors.{_dead_pid()}.0123abcd.lk.tmp"
        held.write_bytes(b"0" * 100)
        with open(held, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # a live writer, whatever the pid in its name says
            out = _cache(capsys, "ls")
            assert "2 leftover temp files of interrupted saves" in out and "2 KV files being written now" in out, out
            assert "removed 2 leftover temp files" in _cache(capsys, "prune", "--max-size", "10G")
            assert not leftover.exists() and not reused.exists() and live.exists() and held.exists()
            assert "removed" not in _cache(capsys, "clear", "--yes") and live.exists() and held.exists()
            out = _cache(capsys, "ls")
            assert "leftover temp" not in out and "2 KV files being written now" in out, out
        assert kvfolder.temp_is_stale(held) and not kvfolder.temp_is_stale(live)  # its lock let go: a leftover
        out, taken = _cache(capsys, "ls"), human_size(held.stat().st_blocks * 512)  # what removing it frees
        assert f"1 leftover temp file of an interrupted save, {taken} on disk: `tmix cache prune` removes it" in out
        assert "1 KV file being written now, " in out, out
        assert f"removed 1 leftover temp file ({taken} freed)" in _cache(capsys, "clear", "--yes") and live.exists()
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert kvfolder.temp_is_stale(live)


def test_an_older_tmix_temp_file_is_judged_by_its_pid_and_its_age() -> None:
    """A temp file without the writer's lock (named as older tmix versions name them): a save in progress while the
    process of its pid has it open and wrote to it within the hour; else a leftover (pid 1, alive, never has it)."""
    folder = kvfolder.kv_dir()
    names = {"open": os.getpid(), "old": os.getpid(), "closed": os.getpid(), "dead": _dead_pid(), "init": 1}
    paths = {k: folder / f".{k}.safetensors.{pid}.0123abcd.tmp" for k, pid in names.items()}
    for p in paths.values():
        p.write_bytes(b"0" * 10)
    hours_ago = time.time() - 2 * 3600
    os.utime(paths["old"], (hours_ago, hours_ago))
    with open(paths["open"], "rb"), open(paths["old"], "rb"):
        assert {k: kvfolder.temp_is_stale(p) for k, p in paths.items()} == {
            "open": False, "old": True, "closed": True, "dead": True, "init": True}
        removed, failed = kvfolder.remove_leftovers()
    assert sorted(p.name for p, _ in removed) == sorted(paths[k].name for k in ("old", "closed", "dead", "init"))
    assert failed == [] and paths["open"].exists()


def test_the_cap_removes_leftovers_but_never_a_live_writers_file() -> None:
    folder = kvfolder.kv_dir()
    kvwrite.save_kv(kvfolder.kv_path_for("kept"), _small_cache(), list(range(8)), META)
    leftover = folder / f".x.safetensors.{os.getpid()}.0123abcd.lk.tmp"  # our own pid, but no lock: a leftover
    held = folder / f".y.safetensors.{os.getpid()}.4567abcd.lk.tmp"
    leftover.write_bytes(b"0" * 10)
    held.write_bytes(b"0" * 10)
    with open(held, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert kvfolder.trim_cache(1 << 30) == ([], [])
        assert not leftover.exists() and held.exists() and kvfolder.kv_path_for("kept").exists()


def test_the_writer_holds_its_lock_until_the_file_has_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locked from before the first byte until after the rename: no reader ever finds a save in progress unlocked."""
    seen: list[bool] = []
    replace = os.replace

    def checked(src: Path, dst: Path) -> None:
        with open(src, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                seen.append(False)
            except BlockingIOError:
                seen.append(True)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", checked)  # kvwrite calls os.replace
    path = kvfolder.kv_path_for("k")
    kvwrite.save_kv(path, _small_cache(), list(range(8)), META)
    assert seen == [True] and kvfolder.temp_files() == [] and kvread.load_kv(path)[1] == list(range(8))


def test_a_reader_that_removes_a_new_file_before_it_is_locked_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the temp file's creation and its lock, `tmix cache prune` finds it unlocked and removes it: the
    writer sees its file gone and writes another."""
    lock, raced = kvwrite._lock, []

    def late(fd: int) -> None:
        if not raced:
            raced.append(kvfolder.remove_leftovers()[0])
        lock(fd)

    monkeypatch.setattr(kvwrite, "_lock", late)
    path = kvfolder.kv_path_for("k")
    kvwrite.save_kv(path, _small_cache(), list(range(8)), META)
    assert len(raced[0]) == 1 and kvfolder.temp_files() == [] and kvread.load_kv(path)[1] == list(range(8))


def test_the_temp_name_is_made_read_and_given_room_in_one_place(monkeypatch):
    """kvfolder.temp_name's name is what kvwrite's clean-up matches, what the pid is read from, and fits the room
    check_output leaves for it (the largest pid Linux gives)."""
    monkeypatch.setattr(os, "getpid", lambda: 4194304)
    target = Path("/cache/kv/report.kv.safetensors")
    temp = kvfolder.temp_name(target)
    assert temp.parent == target.parent and temp.name.startswith(".report.kv.safetensors.4194304.")
    assert kvfolder.temp_of(target, temp) and not kvfolder.temp_of(Path("/cache/kv/report.kv"), temp)
    assert kvfolder.pid_of(temp) == 4194304 and kvfolder.pid_of(Path(".a.safetensors.17.0123abcd.tmp")) == 17
    assert len(temp.name) - len(target.name) <= paths.TEMP_NAME_EXTRA


def test_a_temp_file_with_no_blocks_takes_no_disk_space(tmp_path):
    """A writer sizes its temp file first: killed before its first row, it is all holes, and freeing it frees 0."""
    sparse = tmp_path / "holes.bin"
    with open(sparse, "wb") as f:
        f.truncate(300 << 20)
    if os.stat(sparse).st_blocks:
        pytest.skip("this file system gives no sparse files")
    assert owners.on_disk(os.stat(sparse)) == 0
