"""A `tmix serve` client: it runs locally where no server takes its request, waits saying so once, sends its state."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tmixcli import serve, serve_client, serve_stream
from tmixcli.errors import TmixError
from tmixcli.serverkey import server_key


def test_no_server_or_a_dead_one_means_run_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    key = server_key("some-model", "cpu", "auto", None, "off")
    assert serve_client.forward(["ask", "x", "q"], key) is None
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound but never listening: what a killed server leaves
    dead.close()
    assert serve_client.forward(["ask", "x", "q"], key) is None
    assert key != server_key("some-model", "cpu", "bf16", None, "off")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert json.loads(server_key("m", "cpu", "auto", None, "off"))["model"] == ["path", str(tmp_path / "m")]


def test_a_client_the_server_did_not_take_runs_locally(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(TmixError, match="the current folder no longer exists"):  # not a local run: torch dies there
        serve_client.forward(["ask", "x", "q"], key)
    monkeypatch.chdir(tmp_path)
    result: list = []
    queued = threading.Thread(target=lambda: result.append(serve_client.forward(["ask", "x", "q"], key)))
    queued.start()
    time.sleep(0.5)
    listener.close()  # a server stopping with this request still queued: its connection is reset
    queued.join(timeout=30)
    assert result == [None] and capsys.readouterr().err == ""


def _answer_after(path: Path, delay: float) -> threading.Thread:
    """A fake server on `path` that takes one request after `delay` seconds (as one busy with another would), then
    runs it at once: the request taken, exit 0."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def later() -> None:
        time.sleep(delay)
        with listener, listener.accept()[0] as conn:
            conn.makefile("rb").readline()
            conn.sendall(serve_client.FRAME.pack(b"S", 0) + serve_client.FRAME.pack(b"X", 0))

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def test_a_client_waiting_on_a_busy_server_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(serve_client, "_BUSY_AFTER", 0.5)
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    for delay, quiet, said in ((1.2, False, "tmix: waiting for the tmix server: busy with another request\n"),
                               (1.2, True, ""), (0.0, False, "")):
        busy = _answer_after(path, delay)
        assert serve_client.forward(["ask", "x", "q"], key, quiet=quiet) == 0
        busy.join()
        path.unlink()
        assert capsys.readouterr().err == said


def test_requests_do_not_need_the_servers_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TMIX_CACHE_MAX", raising=False)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with serve._request_scope(str(tmp_path), {"TMIX_CACHE_MAX": "1G"}):
        assert os.getcwd() == str(tmp_path) and os.environ["TMIX_CACHE_MAX"] == "1G"
    assert "TMIX_CACHE_MAX" not in os.environ


def test_a_request_carries_whether_the_clients_streams_are_terminals(monkeypatch):
    """Progress bars reach a client on a terminal through the server, and never one writing to a file."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", Terminal())
    req = json.loads(serve_client._request(["ask", "doc.txt", "q"]))
    assert req["tty"] == {"stdout": False, "stderr": True}
    assert serve_stream.Stream(None, b"E", True).isatty() and not serve_stream.Stream(None, b"O").isatty()
