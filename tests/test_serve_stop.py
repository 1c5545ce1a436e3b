"""`tmix serve --stop` ends the request in hand as SIGTERM does; a server that dies mid-answer is one line, exit 1."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from served import TINY, _prepare, _start_server, tmix, wait_for_socket

from tmixcli import serve_client
from tmixcli.errors import TmixError
from tmixcli.serverkey import gpu_here, server_key

SLOW = ("import sys, time; from tmixcli import checkpoints, cli; "  # 50 ms a step: an answer takes 10 s and more
        "checkpoints.between_steps.append(lambda: time.sleep(0.05)); cli.main(sys.argv[1:])")
ENDLESS = ("import sys; from tmixcli import cli, generate; generate.stop_ids = lambda *_: set(); "  # no end token
           "cli.main(sys.argv[1:])")
ASK = ("ask", "doc.txt", "Who?", "--model", "model", *TINY[:-1], "80", "--no-stop-repeats")


def _server(work: Path, env: dict, script: str = SLOW) -> subprocess.Popen:
    """`tmix serve` of `work`'s tiny model run by `script` (by default requests take 50 ms a step), once its socket
    is up."""
    proc = subprocess.Popen([sys.executable, "-c", script, "serve", "--model", "model", "--device", "cpu"], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return wait_for_socket(work, proc)


def _client(work: Path, env: dict, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tmixcli", *argv], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _answering(work: Path, env: dict, *argv: str) -> tuple[subprocess.Popen, list[str]]:
    """A served `ask` (ASK unless `argv`) whose answer is under way (its stderr read up to the cache line, returned)."""
    busy = _client(work, env, *(argv or ASK))
    lines = [busy.stderr.readline()]
    while lines[-1] and not lines[-1].startswith("tmix: cache "):
        lines.append(busy.stderr.readline())
    if "answered by tmix serve" not in "".join(lines):
        busy.kill()  # not left running by a failed test
        raise AssertionError("".join(lines))
    return busy, lines


def test_serve_stop_interrupts_the_running_request_and_returns_once_the_server_is_gone(tmp_path: Path) -> None:
    env = _prepare(tmp_path)
    proc = _server(tmp_path, env)
    clients: list[subprocess.Popen] = []
    try:
        busy, said = _answering(tmp_path, env)
        queued = _client(tmp_path, env, *ASK[:-2], "6")
        clients += [busy, queued]
        assert queued.stderr.readline() == "tmix: waiting for the tmix server: busy with another request\n"
        start = time.monotonic()
        stop = subprocess.run([sys.executable, "-m", "tmixcli", "serve", "--stop", "--model", "model", "--device",
                               "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
        assert stop.returncode == 0 and stop.stderr == f"tmix: stopped the tmix server (pid {proc.pid})\n", stop.stderr
        try:  # the client was told before the server ended; exiting may take it a while on a loaded machine
            busy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"--stop returned after {took:.1f} s, the request still runs") from None
        folder = tmp_path / "cache" / "serve"
        assert not list(folder.glob("*.sock")) and not list(folder.glob("*.stop"))  # both sockets gone
        assert proc.wait(timeout=30) == 0
        rest = busy.stderr.read()
        assert busy.wait() == 130 and rest.strip().splitlines()[-1] == "tmix: interrupted (the tmix server was stopped)"
        assert rest.count("interrupted (") == 1, "".join(said) + rest
        out, err = queued.communicate(timeout=300)  # never taken by the server: it ran here
        assert queued.returncode == 0 and out.strip() and "answered by tmix serve" not in err, err
        log = proc.stderr.read()
        assert "stop requested" in log and "ask: exit 130" in log, log
    finally:
        for p in (*clients, proc):
            if p.poll() is None:
                p.kill()


def _sending(pid: int) -> bool:
    """Whether process `pid` waits for room to send (its client reads nothing); where /proc does not name the kernel
    function it waits in, whether it spent no CPU time for 2 s."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        wchan = "0"
    if wchan not in ("", "0"):
        return "send" in wchan  # sock_alloc_send_pskb

    def cpu() -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]  # utime, stime

    used = cpu()
    time.sleep(2)
    return cpu() == used


def test_serve_stop_reaches_a_client_that_reads_nothing_for_now(tmp_path: Path) -> None:
    """The server is stuck sending the answer to a client stopped (Ctrl-Z) when `--stop` comes: it still ends at
    once, and the client finds 'interrupted (the tmix server was stopped)' and 130 when it reads on."""
    if int(Path("/proc/sys/net/core/wmem_default").read_text()) > 400_000:
        pytest.skip("a socket buffer this large takes more than the 800 tokens of the answer")  # ~770 bytes a token
    env = _prepare(tmp_path)
    (tmp_path / "short.txt").write_text((tmp_path / "doc.txt").read_text()[:100])  # room for 800 answer tokens
    proc = _server(tmp_path, env, ENDLESS)
    client = None
    try:
        client, _ = _answering(tmp_path, env, "ask", "short.txt", "Who?", "--model", "model", *TINY[:-1], "800",
                               "--no-stop-repeats")
        os.kill(client.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 120
        while not _sending(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sending(proc.pid), "the server never waited on its client"
        stop = subprocess.run([sys.executable, "-m", "tmixcli", "serve", "--stop", "--model", "model", "--device",
                               "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        assert proc.wait(timeout=30) == 0, proc.stderr.read()  # gone while its client still reads nothing
        os.kill(client.pid, signal.SIGCONT)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 130 and err.endswith("\ntmix: interrupted (the tmix server was stopped)\n"), err
        assert len(out) > 200 and "died" not in err, (out, err)  # the answer up to the stop, whole
    finally:
        for p in (client, proc):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()


def test_a_server_killed_mid_answer_is_named_in_one_line_with_exit_1(tmp_path: Path) -> None:
    env = _prepare(tmp_path)
    proc = _server(tmp_path, env)
    busy = None
    try:
        busy, _ = _answering(tmp_path, env)
        proc.kill()
        proc.wait(timeout=30)
        assert busy.wait(timeout=60) == 1
        err = busy.stderr.read()
        assert err.endswith(f"tmix: error: the tmix server (pid {proc.pid}) died during this run (killed or crashed); "
                            "run the command again\n"), err
        assert "Traceback" not in err
    finally:
        for p in (busy, proc):
            if p is not None and p.poll() is None:
                p.kill()
    again = subprocess.run([sys.executable, "-m", "tmixcli", *ASK[:-2], "6"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "answered by tmix serve" not in again.stderr, again.stderr  # runs here


def answer_once(path: Path, reply: bytes) -> threading.Thread:
    """A one-request fake server on `path`: reads the request line, writes `reply`, closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def once() -> None:
        with listener, listener.accept()[0] as conn:
            conn.makefile("rb").readline()
            conn.sendall(reply)

    thread = threading.Thread(target=once)
    thread.start()
    return thread


def test_serve_stop_waits_a_bounded_time_and_reaches_an_older_server(tmp_path: Path, monkeypatch) -> None:
    """A server that answers but does not end in time is named in one line, exit 1; a server of an older tmix (no
    stop socket) is asked on its main socket."""
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(serve_client, "_STOP_WAIT", 0.5)
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    older = answer_once(path, serve_client.FRAME.pack(b"X", 4242))
    assert serve_client.stop_server(key) == 4242  # no lock held: gone at once
    older.join()
    path.unlink()
    stuck = answer_once(serve_client.stop_path(path), serve_client.FRAME.pack(b"X", 4343))
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the server holds it until it ends: here, never
        with pytest.raises(TmixError) as err:
            serve_client.stop_server(key)
    stuck.join()
    assert err.value.code == 1 and str(err.value).startswith("the tmix server (pid 4343) has not stopped within 0.5 s")


def test_a_server_gone_mid_line_leaves_its_line_and_ours_apart(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    thread = answer_once(path, serve_client.FRAME.pack(b"S", 4242) + serve_client.FRAME.pack(b"O", 9) + b"The ferry")
    assert serve_client.forward(["ask", "x", "q"], key) == 1
    thread.join()
    out, err = capsys.readouterr()
    assert out == "The ferry" and err == ("\ntmix: error: the tmix server (pid 4242) died during this run (killed or "
                                          "crashed); run the command again\n")


def test_sigterm_stops_the_server_and_removes_its_socket(tmp_path):
    env = _prepare(tmp_path)
    proc = _server(tmp_path, env)  # SLOW: its answer is still under way when SIGTERM comes
    busy = None
    try:
        busy, lines = _answering(tmp_path, env)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert busy.wait(timeout=60) == 130, "".join(lines)
        rest = busy.stderr.read()
        assert rest.strip().splitlines()[-1] == "tmix: interrupted (the tmix server was stopped)", rest
        assert rest.count("interrupted (") == 1, rest  # said once
        assert not list((tmp_path / "cache" / "serve").glob("*.sock")) and "stopped" in proc.stderr.read()
    finally:
        for p in (busy, proc):
            if p is not None and p.poll() is None:
                p.kill()
    local = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, env=env, cwd=tmp_path)
    assert local.returncode == 0 and "answered by tmix serve" not in local.stderr  # no server: runs itself


def test_serve_stop_ends_the_server_with_these_options(tmp_path):
    proc, env = _start_server(tmp_path)
    try:
        opts = ("--model", "model", "--device", "cpu")
        other = tmix("serve", "--stop", *opts, "--dtype", "bf16", env=env, cwd=tmp_path)  # other settings: no server
        assert other.returncode == 2 and "no tmix server runs" in other.stderr and proc.poll() is None
        same = ("--model", str(tmp_path / "model"), "--dtype", "fp32", "--compile", "auto",  # = cpu's auto and off
                *(("--device", "cpu") if gpu_here() else ()))
        done = tmix("serve", "--stop", *same, env=env, cwd=tmp_path)
        assert done.returncode == 0 and f"stopped the tmix server (pid {proc.pid})" in done.stderr, done.stderr
        assert proc.wait(timeout=60) == 0 and not list((tmp_path / "cache" / "serve").glob("*.sock"))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_server_that_ends_before_or_after_taking_the_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path))
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True)
    refused = answer_once(path, b"")
    assert serve_client.forward(["ask", "x", "q"], key) is None  # closed without a word: run locally
    refused.join()
    path.unlink()
    taken = answer_once(path, serve_client.FRAME.pack(b"S", 4242))  # the pid of the server that took it
    assert serve_client.forward(["ask", "x", "q"], key) == 1  # it had begun: no second run here
    taken.join()
    said = "the tmix server (pid 4242) died during this run (killed or crashed); run the command again"
    assert capsys.readouterr().err == f"tmix: error: {said}\n"
