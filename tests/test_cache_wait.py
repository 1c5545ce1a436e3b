"""Two runs on the same new document at once: the second waits for the first one's KV file instead of prefilling
the document again, and prefills itself when that writer dies; Ctrl-C while it waits exits as elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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
