"""A FIFO put in place of a --kv file or a prefill -o target after the checks (a race) never holds `tmix serve`: it is
opened without waiting and refused in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tmixcli import cli_ask, cli_open, kvread, serve, serve_client, serving

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 20  # far more than a refusal takes; a reader waiting on the FIFO for a writer never ends by itself


def _release(fifo: Path) -> None:
    """Open and close the write end once, so a reader stuck on `fifo` sees its end (the test's threads then end)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nobody is waiting on it
        pass


def _within(fifo: Path, work: Callable[[], object]) -> BaseException | None:
    """What `work` raised (None: it returned), failing the test if it still waits after WAIT_S seconds."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            raised.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            raised.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    if thread.is_alive():
        _release(fifo)
        thread.join(WAIT_S)
        pytest.fail(f"still waiting on the FIFO after {WAIT_S} s")
    return raised[0]


@pytest.mark.parametrize("reader", ["read_meta", "read_checked_meta", "read_prefix_ids", "inspect_kv", "load_kv"])
def test_every_kv_reader_refuses_a_fifo_at_once(tmp_path, reader):
    """In a process of its own: safetensors' safe_open (read_prefix_ids once used it) waits on a FIFO holding the
    GIL, which no thread of the test could time out."""
    fifo = tmp_path / "doc.kv"
    os.mkfifo(fifo)
    code = ("import sys; from tmixcli import kvheader, kvread; from tmixcli.errors import TmixError\n"
            "reader = getattr(kvread if sys.argv[1] == 'load_kv' else kvheader, sys.argv[1])\n"
            "try:\n    reader(sys.argv[2])\nexcept TmixError as err:\n    print(err)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-c", code, reader, str(fifo)], capture_output=True, text=True,
                              env=env, timeout=WAIT_S + 60)  # torch's import for load_kv: seconds
    except subprocess.TimeoutExpired:
        pytest.fail(f"{reader} still waited on the FIFO after {WAIT_S + 60} s")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"cannot read KV file {fifo}: a FIFO (named pipe), not a regular file\n", ""), done


def test_the_parallel_reader_refuses_a_fifo_at_once(tmp_path):
    """The file the header was read from was swapped for a FIFO before its tensors are read."""
    fifo = tmp_path / "doc.kv"
    os.mkfifo(fifo)
    dst = torch.empty(1, 2, 4, 8)  # dst: [1, Hkv, T, D]
    todo = kvread.pieces(0, {"shape": [1, 2, 4, 8], "data_offsets": [0, dst.numel() * 4]}, dst, 4)
    err = _within(fifo, lambda: kvread.read_pieces(str(fifo), todo))
    assert isinstance(err, OSError) and err.strerror == "a FIFO (named pipe), not a regular file", err


def _serve_one(argv: list[str], cwd: Path, fifo: Path) -> tuple[int | None, str]:
    """Run one request through the server's own handler (no model: both refusals come before any) over a socket
    pair, as a client would send it; returns (exit code, stderr) it sent back."""
    ours, theirs = socket.socketpair()
    request = {"argv": argv, "cwd": str(cwd), "env": {"TMIX_CACHE_DIR": str(cwd / "cache")}}
    ours.sendall(json.dumps(request).encode() + b"\n")
    logged: list[str] = []
    here = os.getcwd()
    try:
        assert _within(fifo, lambda: serve._handle(theirs, "key", None, logged.append)) is None, logged
    finally:
        os.chdir(here)  # a handler stuck in its request never left the client's folder
        theirs.close()
    code, err, data = None, "", b""
    ours.settimeout(5)
    while chunk := ours.recv(65536):
        data += chunk
    ours.close()
    while data:
        kind, n = serve_client.FRAME.unpack(data[:serve_client.FRAME.size])
        data = data[serve_client.FRAME.size:]
        if kind == b"X":
            code = n
        elif kind in (b"O", b"E"):
            err += data[:n].decode() if kind == b"E" else ""
            data = data[n:]
    return code, err


def test_a_fifo_swapped_in_for_the_kv_file_after_the_checks_is_refused_by_the_server(tmp_path, monkeypatch):
    """The request is taken and --kv checked while a KV file is there; a FIFO takes its place before it is opened."""
    monkeypatch.setattr(serve, "process_bound", lambda path: False)  # what these checks saw: a regular file
    monkeypatch.setattr(cli_open, "not_a_file", lambda path: None)
    fifo = tmp_path / "doc.kv"
    os.mkfifo(fifo)
    code, err = _serve_one(["ask", "--kv", "doc.kv", "Who?"], tmp_path, fifo)
    assert (code, err) == (2, "tmix: error: cannot read KV file doc.kv: a FIFO (named pipe), not a regular file\n")


def test_a_fifo_swapped_in_for_the_output_after_the_checks_is_refused_by_the_server(tmp_path, monkeypatch):
    """prefill -o reads an existing target to make sure it only ever replaces a KV file: a FIFO there is refused."""
    monkeypatch.setattr(cli_ask, "check_output", lambda path, option: None if path is None else Path(path))
    (tmp_path / "doc.txt").write_text("The ferry leaves at 07:45 from pier 3.\n")
    fifo = tmp_path / "out.kv"
    os.mkfifo(fifo)
    code, err = _serve_one(["prefill", "doc.txt", "-o", "out.kv"], tmp_path, fifo)
    assert (code, err) == (2, "tmix: error: -o out.kv exists and is a FIFO (named pipe), not a regular file; give "
                              "another name\n")
    assert fifo.is_fifo() and not list(tmp_path.glob(".out.kv.*"))  # left as it was, no temp file


def test_inputs_only_this_process_can_open_are_process_bound(tmp_path):
    from tmixcli.filekind import process_bound

    (tmp_path / "doc.txt").write_text("The ferry leaves at 07:45.")
    os.mkfifo(tmp_path / "doc.fifo")
    (tmp_path / "in").symlink_to("/dev/stdin")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    os.mkfifo(tmp_path / "docs" / "b.fifo")  # skipped unopened when the folder is read, wherever that is
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        bound = ["-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0", f"/proc/{os.getpid()}/fd/1", "/dev/null",
                 str(tmp_path / "doc.fifo"), str(tmp_path / "in"), str(tmp_path / "sock")]
        assert [p for p in bound if not process_bound(p)] == []
    free = [str(tmp_path / "doc.txt"), str(tmp_path / "docs"), str(tmp_path / "missing.txt"), ""]
    assert [p for p in free if process_bound(p)] == []
    (tmp_path / "docs" / "c.txt").symlink_to("/dev/stdin")
    assert process_bound(str(tmp_path / "docs"))


def test_a_server_never_opens_a_fifo(tmp_path, monkeypatch):
    """Refused when the request is taken (its client reads it), and when one takes a file's place after that check:
    opened without waiting for a writer, and refused."""
    from tmixcli.errors import TmixError
    from tmixcli.inputs import read_input

    fifo = tmp_path / "doc.fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/fd/0", "/dev/stdin", "-"):
        with pytest.raises(serve.Refused):
            serve.take_request(["doc.txt", path])
    monkeypatch.setitem(serving.served, "key", "a request in hand")  # what inputs reads
    said: list[str] = []

    def read() -> None:
        try:
            read_input(str(fifo), None, lambda head, size: 1 << 20)
        except TmixError as err:
            said.append(str(err))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert said == [f"cannot read {fifo}: a FIFO (named pipe), not a regular file"]
