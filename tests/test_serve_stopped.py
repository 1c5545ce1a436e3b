"""A stopped `tmix serve` (Ctrl-Z in its terminal, SIGSTOP): its clients say so and run here, or, mid-answer, end in
one line with exit 1; `tmix serve --stop` resumes it to stop it (clients once waited on it forever, told it was
busy)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from served import TINY, _prepare, _start_server, tmix
from test_serve_stop import ASK, _answering, _server

from tmixcli import procstat, serve_client, serve_wait
from tmixcli.serverkey import server_key


def _end(*procs: subprocess.Popen | None) -> None:
    """Never leave a process of the test running, stopped ones included (resumed first: a stopped one cannot end)."""
    for p in procs:
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait(timeout=60)


def _stopped(pid: int) -> None:
    """SIGSTOP `pid`, as Ctrl-Z in its terminal does, and wait until it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while procstat.state(pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procstat.state(pid) == "T"


def test_a_stopped_server_is_said_its_clients_run_here_and_serve_stop_resumes_it(tmp_path: Path) -> None:
    proc, env = _start_server(tmp_path)
    try:
        _stopped(proc.pid)
        ask = ("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY)
        start = time.monotonic()
        here = tmix(*ask, env=env, cwd=tmp_path, timeout=120)
        said = (f"tmix: the tmix server (pid {proc.pid}) is stopped (Ctrl-Z?), so this runs here; `kill -CONT "
                f"{proc.pid}` resumes it, `tmix serve --stop` ends it")
        assert here.returncode == 0 and here.stdout.strip(), here.stderr
        assert here.stderr.splitlines()[0] == said and "answered by tmix serve" not in here.stderr, here.stderr
        assert "busy with another request" not in here.stderr and time.monotonic() - start < 60
        quiet = tmix(*ask, "-q", env=env, cwd=tmp_path, timeout=120)
        assert quiet.returncode == 0 and quiet.stdout.strip() and quiet.stderr == "", quiet.stderr
        stop = tmix("serve", "--stop", "--model", "model", "--device", "cpu", env=env, cwd=tmp_path, timeout=60)
        assert stop.returncode == 0 and stop.stderr == (
            f"tmix: the tmix server (pid {proc.pid}) is stopped (Ctrl-Z?): resumed it, to stop it\n"
            f"tmix: stopped the tmix server (pid {proc.pid})\n"), stop.stderr
        assert proc.wait(timeout=60) == 0
        log = proc.stderr.read()
        assert "ask: exit" not in log, log  # the clients' requests, taken once it was resumed, were dropped unrun
    finally:
        _end(proc)


def test_a_server_stopped_mid_answer_ends_its_client_in_one_line(tmp_path: Path) -> None:
    """The client gives up with exit 1 (its answer may be out in part: it is not run again here); the server,
    resumed, finds it gone, as after its Ctrl-C, and answers the next request."""
    env = _prepare(tmp_path)
    proc = _server(tmp_path, env)  # 50 ms a step: the answer is still under way when it is stopped
    busy = None
    try:
        busy, _ = _answering(tmp_path, env)
        _stopped(proc.pid)
        assert busy.wait(timeout=60) == 1
        err = busy.stderr.read()
        assert err.endswith(f"tmix: error: the tmix server (pid {proc.pid}) was stopped (Ctrl-Z?) during this run; "
                            f"`kill -CONT {proc.pid}` resumes it, `tmix serve --stop` ends it; run the command "
                            "again\n"), err
        os.kill(proc.pid, signal.SIGCONT)
        again = tmix(*ASK[:-2], "2", env=env, cwd=tmp_path, timeout=120)
        assert again.returncode == 0 and "answered by tmix serve" in again.stderr, again.stderr
    finally:
        _end(busy, proc)
    assert "the client hung up" in proc.stderr.read()


def test_a_client_finds_a_stopped_server_whose_queue_is_full(tmp_path: Path, monkeypatch, capsys) -> None:
    """Clients that gave up on a stopped server stay in its queue: once it is full, a connect would wait for room
    for ever; the next client says the server is stopped and runs here all the same."""
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(serve_wait, "STOPPED_FOR", 0.3)
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued: list[socket.socket] = []
    try:
        _stopped(sleeper.pid)  # stands for the server: its pid is the one marked in the lock file
        path.with_suffix(".lock").write_text(f"{sleeper.pid} 0123456789abcdef\n")
        listener.bind(str(path))
        listener.listen(0)
        while True:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            queued.append(conn)
            conn.setblocking(False)
            try:
                conn.connect(str(path))
            except BlockingIOError:
                break
        assert serve_client.forward(["ask", "x", "q"], key) is None
        assert capsys.readouterr().err == (f"tmix: the tmix server (pid {sleeper.pid}) is stopped (Ctrl-Z?), so this "
                                           f"runs here; `kill -CONT {sleeper.pid}` resumes it, `tmix serve --stop` "
                                           "ends it\n")
    finally:
        for conn in [*queued, listener]:
            conn.close()
        _end(sleeper)
