"""`tmix serve`: a resident model answering `tmix ask` / `tmix prefill` runs of other processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from served import DOCS, TINY, _prepare, _start_server, tmix
from tmixcli import serve_client
from tmixcli.serverkey import gpu_here, server_key


def _socket_of(work: Path, env: dict) -> Path:
    """The socket path of the server of `work`'s tiny model (its cache folder is part of the key)."""
    os.environ["TMIX_CACHE_DIR"] = env["TMIX_CACHE_DIR"]
    try:
        return serve_client.socket_path(server_key(str(work / "model"), "cpu", "auto", None, "off"))
    finally:
        del os.environ["TMIX_CACHE_DIR"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `tmix serve` of a tiny random Llama in its own cache folder; yields (process, env, work folder)."""
    work = tmp_path_factory.mktemp("serve")
    proc, env = _start_server(work)
    yield proc, env, work
    if proc.poll() is None:
        proc.kill()


def test_ask_is_answered_by_the_server_as_it_would_be_locally(server):
    proc, env, work = server
    served = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, env=env, cwd=work)
    assert served.returncode == 0, served.stderr
    assert f"answered by tmix serve (pid {proc.pid})" in served.stderr and "TTFT" in served.stderr
    as_json = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, "--json",
                   env=env, cwd=work)
    assert as_json.returncode == 0 and as_json.stderr == ""  # --json: quiet, also when served
    local = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, "--json",
                 env={**env, "TMIX_SERVE": "off"}, cwd=work)
    assert local.returncode == 0, local.stderr
    a, b = json.loads(as_json.stdout), json.loads(local.stdout)
    assert a["answer"] == b["answer"] and a["kv_path"] == b["kv_path"] and a["cache_hit"] and b["cache_hit"]
    assert served.stdout.strip() == a["answer"]


def test_options_spelled_otherwise_with_the_same_meaning_find_the_server(server):
    proc, env, work = server
    auto = "cpu" if gpu_here() else "auto"  # the server runs on the CPU, which --device auto means without a GPU
    spelled = ("--model", "./model", "--device", auto, "--dtype", "fp32", "--compile", "auto", "--attention",
               "dense", "--n-local", "64")
    served = tmix("ask", "doc.txt", "Who?", *spelled, *TINY[2:], env=env, cwd=work)
    assert served.returncode == 0 and f"answered by tmix serve (pid {proc.pid})" in served.stderr, served.stderr


def test_errors_and_outputs_come_back(server):
    proc, env, work = server
    missing = tmix("ask", "missing.txt", "What?", "--model", "model", *TINY, env=env, cwd=work)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("tmix: error: missing.txt: no such file")
    (work / "out").mkdir(exist_ok=True)
    pre = tmix("prefill", "doc.txt", "-o", "out/doc.kv", "--model", "model", *TINY[:-2], env=env, cwd=work)
    assert pre.returncode == 0, pre.stderr
    assert (work / "out" / "doc.kv").is_file() and pre.stdout.strip().endswith("doc.kv")  # the client's folder
    again = subprocess.run([sys.executable, "-m", "tmixcli", "serve", "--model", "model", "--device", "cpu"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already runs" in again.stderr
    assert proc.poll() is None


def test_a_client_that_leaves_does_not_stop_the_server(server):
    proc, env, work = server
    path = _socket_of(work, env)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        argv = ["ask", "doc.txt", "Who?", "--model", "model", *TINY[:-1], "200", "--no-stop-repeats"]
        s.sendall(json.dumps({"argv": argv, "cwd": str(work)}).encode() + b"\n")
        s.recv(16)  # the first frame, then gone
    for junk in (b"not json\n", b'{"argv": ["cache", "clear", "--yes"], "cwd": "/"}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(junk)
            assert s.recv(16) == b""  # refused without an answer
    ok = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, env=env, cwd=work)
    assert ok.returncode == 0 and "answered by tmix serve" in ok.stderr


def test_follow_up_questions_use_the_cache_kept_in_memory(server):
    proc, env, work = server
    (work / "doc2.txt").write_text((DOCS / "notes.txt").read_text()[1000:1800])
    q = ("doc2.txt", "Who chairs the board?", "--model", "model", *TINY)
    first = tmix("ask", *q, env=env, cwd=work)
    assert first.returncode == 0 and "cache miss" in first.stderr, first.stderr
    second = tmix("ask", *q, "--json", "-q", env=env, cwd=work)
    again = tmix("ask", *q, env=env, cwd=work)
    assert ", kept in memory by tmix serve (documents unchanged since: not read again)" in again.stderr, again.stderr
    local = tmix("ask", *q, "--json", env={**env, "TMIX_SERVE": "off"}, cwd=work)  # the file, loaded from disk
    a, b = json.loads(second.stdout), json.loads(local.stdout)
    assert a["answer"] == b["answer"] and a["cache_hit"] and a["prompt_tokens"] == b["prompt_tokens"]
    kv = Path(a["kv_path"])
    os.utime(kv, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed on disk: loaded afresh
    touched = tmix("ask", *q, env=env, cwd=work)
    assert "cache hit: loaded" in touched.stderr, touched.stderr
    other = tmix("ask", "doc.txt", "Who?", "--model", "model", *TINY, env=env, cwd=work)
    back = tmix("ask", *q, env=env, cwd=work)  # one file held at a time: doc.txt's replaced doc2's
    assert "cache hit: loaded" in other.stderr and "cache hit: loaded" in back.stderr, other.stderr + back.stderr
    assert back.stdout == again.stdout == touched.stdout


def test_an_idle_client_does_not_hold_the_server(server):
    proc, env, work = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(_socket_of(work, env)))  # connected, never sends a request
        ok = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, env=env, cwd=work,
                  timeout=60)
    assert ok.returncode == 0 and "answered by tmix serve" in ok.stderr, ok.stderr


def test_a_dash_option_is_served_and_a_stdin_document_runs_locally(server, monkeypatch):
    proc, env, work = server
    dash = tmix("ask", "doc.txt", "Who?", "--system", "-", "--model", "model", *TINY, env=env, cwd=work)
    assert dash.returncode == 0 and "answered by tmix serve" in dash.stderr, dash.stderr
    monkeypatch.setenv("TMIX_CACHE_DIR", env["TMIX_CACHE_DIR"])
    key = server_key(str(work / "model"), "cpu", "auto", None, "off")
    assert serve_client.forward(["ask", "-", "Who?", "--model", str(work / "model"), "--device", "cpu"], key) is None


def test_the_clients_tmix_variables_apply_to_its_request(server):
    proc, env, work = server
    (work / "doc3.txt").write_text((DOCS / "notes.txt").read_text()[2000:2600])  # not cached yet: would be saved
    tiny = tmix("ask", "doc3.txt", "Who?", "--model", "model", *TINY, env={**env, "TMIX_CACHE_MAX": "1"}, cwd=work)
    assert tiny.returncode == 0 and "answered by tmix serve" in tiny.stderr, tiny.stderr
    assert "exceed the cache cap TMIX_CACHE_MAX (1 B)" in tiny.stderr, tiny.stderr
    bad = tmix("ask", "doc3.txt", "Who?", "--model", "model", *TINY, env={**env, "TMIX_CACHE_MAX": "lots"}, cwd=work)
    assert bad.returncode == 2 and bad.stderr == "tmix: error: TMIX_CACHE_MAX must be a size like 20G, 500M or off, " \
                                                 "not 'lots'\n"  # refused by the client: no server needed
    ok = tmix("ask", "doc.txt", "Who?", "--model", "model", *TINY, env=env, cwd=work)  # the server's own again
    assert ok.returncode == 0 and "answered by tmix serve" in ok.stderr, ok.stderr


def _open_writer(fifo: Path, timeout: float) -> int:
    """The write end of `fifo`, once a reader has opened it (the read end then blocks until it is closed)."""
    deadline = time.time() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads it yet
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def test_what_only_the_client_can_open_is_read_by_the_client(server):
    """A FIFO, /dev/fd/N (`<(cat doc)`) and /dev/stdin are opened by the client itself, never by the server (which
    would wait on a FIFO for good, or open its own descriptors)."""
    proc, env, work = server
    text, q = (work / "doc.txt").read_bytes(), ("Who?", "--model", "model", *TINY)
    served = tmix("ask", "doc.txt", *q, env=env, cwd=work)
    read, write = os.pipe()
    os.write(write, text)
    os.close(write)
    piped = subprocess.run([sys.executable, "-m", "tmixcli", "ask", f"/dev/fd/{read}", *q], pass_fds=(read,),
                           capture_output=True, text=True, env=env, cwd=work, timeout=300)
    os.close(read)
    with open(work / "doc.txt", "rb") as stdin:
        redirected = subprocess.run([sys.executable, "-m", "tmixcli", "ask", "/dev/stdin", *q], stdin=stdin,
                                    capture_output=True, text=True, env=env, cwd=work, timeout=300)
    os.mkfifo(work / "doc.fifo")
    client = subprocess.Popen([sys.executable, "-m", "tmixcli", "ask", "doc.fifo", *q], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = _open_writer(work / "doc.fifo", timeout=120)
    os.write(writer, text)
    os.close(writer)
    fifo = client.communicate(timeout=300)
    for code, out, err in ((piped.returncode, piped.stdout, piped.stderr),
                           (redirected.returncode, redirected.stdout, redirected.stderr), (client.returncode, *fifo)):
        assert code == 0 and out == served.stdout and "answered by tmix serve" not in err, err
    again = tmix("ask", "doc.txt", *q, env=env, cwd=work)
    assert again.returncode == 0 and "answered by tmix serve" in again.stderr, again.stderr  # never held up


def test_a_fifo_as_kv_or_output_never_holds_the_server(server):
    """A FIFO as --kv or as prefill -o is refused in one line at once: by the client, or, in a request sent straight
    to the socket, by the server, which answers the next request (a FIFO swapped in later: test_serve_fifo.py)."""
    proc, env, work = server
    os.mkfifo(work / "in.kv")
    os.mkfifo(work / "out.kv")
    kv = tmix("ask", "--kv", "in.kv", "Who?", "--model", "model", *TINY, env=env, cwd=work, timeout=60)
    assert (kv.returncode, kv.stderr) == (2, "tmix: error: --kv in.kv: a FIFO (named pipe), not a regular file\n")
    out = tmix("prefill", "doc.txt", "-o", "out.kv", "--model", "model", *TINY[:-2], env=env, cwd=work, timeout=60)
    said = "-o out.kv exists and is not a regular file; give another name"
    assert (out.returncode, out.stderr) == (2, f"tmix: error: {said}\n")
    replies = []
    for argv in (["ask", "--kv", "in.kv", "Who?"], ["prefill", "doc.txt", "-o", "out.kv"]):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(str(_socket_of(work, env)))
            argv += ["--model", "model", "--device", "cpu"]
            s.sendall(json.dumps({"argv": argv, "cwd": str(work), "env": env}).encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            replies.append(data)
    assert replies[0] == b""  # refused untouched: its client would read it itself
    assert f"tmix: error: {said}".encode() in replies[1] and replies[1].endswith(serve_client.FRAME.pack(b"X", 2))
    ok = tmix("ask", "doc.txt", "Who?", "--model", "model", *TINY, env=env, cwd=work)
    assert ok.returncode == 0 and "answered by tmix serve" in ok.stderr, ok.stderr
    assert (work / "in.kv").is_fifo() and (work / "out.kv").is_fifo()


def test_a_served_answer_survives_an_unwritable_stderr_and_a_full_stdout_is_one_line(server):
    """`2>&-` and `2>/dev/full` drop the status lines, not the answer; `>/dev/full` is one line; the server lives on."""
    proc, env, work = server
    argv = [sys.executable, "-m", "tmixcli", "ask", "doc.txt", "Who?", "--model", "model", *TINY]
    served = tmix(*argv[3:], env=env, cwd=work)
    for where in ("closed", "/dev/full"):
        with open(os.devnull if where == "closed" else where, "w") as err:
            r = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=300,
                               preexec_fn=(lambda: os.close(2)) if where == "closed" else None)
        assert (r.returncode, r.stdout) == (0, served.stdout), where
    with open("/dev/full", "w") as full:
        r = subprocess.run(argv, cwd=work, env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.endswith("tmix: error: cannot write to stdout: No space left on device\n")
    assert "Traceback" not in r.stderr, r.stderr
    again = tmix(*argv[3:], env=env, cwd=work)
    assert again.returncode == 0 and "answered by tmix serve" in again.stderr, again.stderr


def test_a_server_starting_with_these_options_is_seen_before_the_model_loads(tmp_path):
    import fcntl

    env = _prepare(tmp_path)
    lock = _socket_of(tmp_path, env).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a server holds from before its model load until it stops
        second = tmix("serve", "--model", "model", "--device", "cpu", env=env, cwd=tmp_path, timeout=60)
    assert second.returncode == 2 and second.stderr.count("\n") == 1 and "already runs" in second.stderr
    assert not lock.with_suffix(".sock").exists()

