"""Two runs on the same new document at once: the second waits for the first one's KV file instead of prefilling
the document again, and prefills itself when that writer dies; Ctrl-C while it waits exits as elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runcli import DOCS, TINY
from tmixcli.opening import WAITING

ROOT = Path(__file__).resolve().parents[1]
_WRITER = """
import os, sys, time
from tmixcli import kvwrite
from tmixcli.cli import main

go, pwrite = sys.argv[1], kvwrite._pwrite
def held(fd, data, offset):  # its first write stops until `go` exists: a long save, its temp file locked
    if not os.path.exists(go):
        print("writing", flush=True)
        while not os.path.exists(go):
            time.sleep(0.05)
    pwrite(fd, data, offset)
kvwrite._pwrite = held
sys.argv = ["tmix", *sys.argv[2:]]
main()
"""


@pytest.fixture()
def doc(tmp_path) -> str:
    path = tmp_path / "doc.txt"
    path.write_text((DOCS / "notes.txt").read_text()[:1000])
    return str(path)


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "TMIX_CACHE_DIR": str(tmp_path / "cache"), "TMIX_SERVE": "off",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def _writer(tmp_path: Path, tiny_dir: str, doc: str) -> subprocess.Popen:
    """`tmix prefill` of `doc`, held in its first KV write (until tmp_path/go exists); its stderr in writer.err."""
    with open(tmp_path / "writer.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "go"), "prefill", doc, "--model",
                                 tiny_dir, *TINY], env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    assert proc.stdout.readline().strip() == "writing", (tmp_path / "writer.err").read_text()
    return proc


class Waiter:
    """`tmix ask` of the same document; its stderr lines as they come, and an event set once it says it waits."""

    def __init__(self, tmp_path: Path, tiny_dir: str, doc: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tmixcli", "ask", doc, "Who?", "--model", tiny_dir,
                                      "--max-new-tokens", "2", *TINY], env=_env(tmp_path), cwd=tmp_path,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: list[str] = []
        self.waiting = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.strip() == f"tmix: {WAITING}":
                self.waiting.set()
        self.waiting.set()  # ended without waiting: the test's assertions say so

    def wait_waiting(self) -> None:
        assert self.waiting.wait(300) and self.proc.poll() is None, self.err()

    def end(self) -> int:
        """Its exit code, once its stderr is read to the end."""
        code = self.proc.wait(300)
        self._reader.join(30)
        return code

    def err(self) -> str:
        return "".join(self.lines)


def _kv_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "kv").glob("*.safetensors"))


def _temp_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "kv").glob(".*.tmp"))


def test_the_second_run_waits_for_the_first_ones_kv_file_and_loads_it(tmp_path, tiny_dir, doc):
    writer = _writer(tmp_path, tiny_dir, doc)
    waiter = Waiter(tmp_path, tiny_dir, doc)
    waiter.wait_waiting()
    (tmp_path / "go").touch()
    assert writer.wait(300) == 0, (tmp_path / "writer.err").read_text()
    assert waiter.end() == 0, waiter.err()
    err = waiter.err()
    assert err.count(WAITING) == 1 and "tmix: cache hit: loaded " in err and "cache miss" not in err, err
    assert len(_kv_files(tmp_path)) == 1 and _temp_files(tmp_path) == []


def test_a_writer_that_dies_leaves_the_waiter_to_prefill(tmp_path, tiny_dir, doc):
    writer = _writer(tmp_path, tiny_dir, doc)
    waiter = Waiter(tmp_path, tiny_dir, doc)
    waiter.wait_waiting()
    writer.kill()  # kill -9: its temp file stays, unlocked (the waiter's cache trim removes it)
    writer.wait(60)
    assert waiter.end() == 0, waiter.err()
    err = waiter.err()
    assert err.count(WAITING) == 1 and "tmix: cache miss: prefilled in " in err, err
    assert len(_kv_files(tmp_path)) == 1 and _temp_files(tmp_path) == []


def test_ctrl_c_while_waiting_exits_130_in_one_line(tmp_path, tiny_dir, doc):
    writer = _writer(tmp_path, tiny_dir, doc)
    try:
        waiter = Waiter(tmp_path, tiny_dir, doc)
        waiter.wait_waiting()
        waiter.proc.send_signal(signal.SIGINT)
        assert waiter.end() == 130, waiter.err()
        assert waiter.lines[-1] == "tmix: interrupted\n" and "Traceback" not in waiter.err(), waiter.err()
        (tmp_path / "go").touch()
        assert writer.wait(300) == 0, (tmp_path / "writer.err").read_text()
    finally:
        writer.kill()
    assert len(_kv_files(tmp_path)) == 1 and _temp_files(tmp_path) == []


def test_a_stopped_writer_is_not_waited_for(tmp_path, tiny_dir, doc):
    """The writer suspended (Ctrl-Z, SIGSTOP) while the second run waits: that run said it waited, for good; now it
    names the writer's pid, prefills and saves the KV file itself."""
    writer = _writer(tmp_path, tiny_dir, doc)
    try:
        waiter = Waiter(tmp_path, tiny_dir, doc)
        waiter.wait_waiting()
        os.kill(writer.pid, signal.SIGSTOP)
        assert waiter.end() == 0, waiter.err()
    finally:
        writer.send_signal(signal.SIGCONT)
        writer.kill()
        writer.wait(60)
    err = waiter.err()
    stopped = f"tmix: the tmix writing this document's KV file (pid {writer.pid}) is stopped; prefilling here\n"
    assert err.count(WAITING) == 1 and stopped in err and "tmix: cache miss: prefilled in " in err, err
    assert err.index(WAITING) < err.index(stopped) < err.index("cache miss") and "KV file saved" in err, err
    assert len(_kv_files(tmp_path)) == 1


_HOLDER = """
import fcntl, sys, time
from pathlib import Path
from tmixcli import kvfolder

temp = kvfolder.temp_name(Path(sys.argv[1]))  # a writer's temp file, locked as kvwrite locks it
f = open(temp, "wb")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
for _ in range(int(sys.argv[2])):  # a writer getting on: a write every 0.1 s
    f.write(b"x" * 4096)
    f.flush()
    time.sleep(0.1)
time.sleep(float(sys.argv[3]))  # then one that does nothing, asleep
"""


def _holder(target: Path, writes: int, then_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target), str(writes), str(then_s)],
                            env=_env(target.parent), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_writer_without_progress_is_waited_for_only_so_long(tmp_path):
    """kvwait: a writer that writes is waited for however long (here past stalled_s) until its lock goes; one whose
    file and CPU time stay the same for stalled_s, or that is stopped, is not: the line says which, naming its pid."""
    from tmixcli.kvwait import wait_for_writer

    target = tmp_path / "kv" / "key.safetensors"
    target.parent.mkdir()
    told: list[int] = []
    busy = _holder(target, 20, 0)  # writes for ~2 s, then exits: its lock goes with it
    try:
        assert wait_for_writer(target, lambda: told.append(1), poll_s=0.05, stalled_s=0.5) is None
        assert told == [1] and busy.wait(30) == 0
    finally:
        busy.kill()
    idle = _holder(target, 0, 600)
    try:
        why = wait_for_writer(target, lambda: told.append(2), poll_s=0.05, stalled_s=1)
        assert why == f"the tmix writing this document's KV file (pid {idle.pid}) has made no progress for 1 s; " \
                      "prefilling here" and told == [1, 2]
        os.kill(idle.pid, signal.SIGSTOP)
        while Path(f"/proc/{idle.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.01)  # the signal is delivered a moment later
        why = wait_for_writer(target, lambda: told.append(3), poll_s=0.05)
        assert why == f"the tmix writing this document's KV file (pid {idle.pid}) is stopped; prefilling here"
        assert told == [1, 2], "a writer stopped at the first look: no line saying this run waits"
    finally:
        idle.send_signal(signal.SIGCONT)
        idle.kill()
        idle.wait(30)
