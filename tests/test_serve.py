"""`tmix serve`: a resident model answering `tmix ask` / `tmix prefill` runs of other processes."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tmixcli import serve, serve_client, serve_stream
from tmixcli.serverkey import gpu_here, server_key

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "sample_docs"
TINY = ("--device", "cpu", "--n-local", "16", "--last-n", "8", "--start-layer", "1", "--max-new-tokens", "6")


def tmix(*argv: str, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmixcli", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def _prepare(work: Path) -> dict:
    """Save a tiny random Llama and a document under `work`; the environment of a cache folder of its own there."""
    from tiny import tiny_model, tiny_tokenizer

    tiny_model("llama", max_position_embeddings=1024).save_pretrained(work / "model")
    tiny_tokenizer("llama").save_pretrained(work / "model")
    (work / "doc.txt").write_text((DOCS / "notes.txt").read_text()[:1000])
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)  # this checkout's tmix
    env = {**os.environ, "TMIX_CACHE_DIR": str(work / "cache"), "PYTHONPATH": path}
    env.pop("TMIX_SERVE", None)
    return env


def _serve(work: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tmixcli", "serve", "--model", "model", "--device", "cpu"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _socket_of(work: Path, env: dict) -> Path:
    """The socket path of the server of `work`'s tiny model."""
    key = server_key(str(work / "model"), "cpu", "auto", None, "off")
    os.environ["TMIX_CACHE_DIR"] = env["TMIX_CACHE_DIR"]
    try:
        return serve_client.socket_path(key)
    finally:
        del os.environ["TMIX_CACHE_DIR"]


def _start_server(work: Path) -> tuple[subprocess.Popen, dict]:
    """Save a tiny random Llama under `work` and start `tmix serve` of it there, in its own cache folder."""
    env = _prepare(work)
    proc = _serve(work, env)
    sock = work / "cache" / "serve"
    deadline = time.time() + 120
    while not list(sock.glob("*.sock")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list(sock.glob("*.sock")), proc.stderr.read() if proc.poll() is not None else "no socket"
    return proc, env


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
    assert "cache hit: kept in memory by tmix serve" in again.stderr, again.stderr
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


def test_sigterm_stops_the_server_and_removes_its_socket(tmp_path):
    env = _prepare(tmp_path)
    slow = ("import sys, time; from tmixcli import checkpoints, cli; "  # 50 ms a step: busy for 10 s and more
            "checkpoints.between_steps.append(lambda: time.sleep(0.05)); cli.main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", slow, "serve", "--model", "model", "--device", "cpu"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / "cache" / "serve").glob("*.sock")) and time.time() < deadline:
            time.sleep(0.2)
        busy = subprocess.Popen([sys.executable, "-m", "tmixcli", "ask", "doc.txt", "Who?", "--model", "model",
                                 *TINY[:-1], "80", "--no-stop-repeats"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [busy.stderr.readline()]
        while lines[-1] and not lines[-1].startswith("tmix: cache "):  # the answer is under way
            lines.append(busy.stderr.readline())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert busy.wait(timeout=60) == 130, "".join(lines)
        rest = busy.stderr.read()
        assert rest.strip().splitlines()[-1] == "tmix: interrupted (the tmix server was stopped)", rest
        assert rest.count("interrupted (") == 1, rest  # said once
        assert not list((tmp_path / "cache" / "serve").glob("*.sock")) and "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    local = tmix("ask", "doc.txt", "Who is the project manager?", "--model", "model", *TINY, env=env, cwd=tmp_path)
    assert local.returncode == 0 and "answered by tmix serve" not in local.stderr  # no server: runs itself


def test_inputs_only_this_process_can_open_are_process_bound(tmp_path):
    from tmixcli.paths import process_bound

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
    monkeypatch.setitem(serve.served, "key", "a request in hand")
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
    assert serve_client.forward(["ask", "x", "q"], key) is None  # our own folder deleted: run locally
    monkeypatch.chdir(tmp_path)
    result: list = []
    queued = threading.Thread(target=lambda: result.append(serve_client.forward(["ask", "x", "q"], key)))
    queued.start()
    time.sleep(0.5)
    listener.close()  # a server stopping with this request still queued: its connection is reset
    queued.join(timeout=30)
    assert result == [None] and capsys.readouterr().err == ""


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


def _slow_endless_answers(monkeypatch) -> threading.Event:
    """Decode steps of 50 ms and no stop token: an answer runs for seconds; the event is set at its first step."""
    from tmixcli import generate

    decoding, choose = threading.Event(), generate.choose

    def slow(*args, **kw) -> int:
        decoding.set()
        time.sleep(0.05)
        return choose(*args, **kw)

    monkeypatch.setattr(generate, "choose", slow)
    monkeypatch.setattr(generate, "stop_ids", lambda *_: set())
    return decoding


def _served_until_gone(argv: list[str], reached: threading.Event, lm, tiny_dir: str, tmp_path: Path, monkeypatch,
                       clients: list | None = None) -> tuple[subprocess.Popen, list[str], float]:
    """One request whose client hangs up once `reached` is set: (the client, the server's log, seconds from the
    hang-up until the server is free), with the client's exit 130 and the log's last words checked."""
    from tmixcli.resident import ResidentKV

    key, proc, conn = _client_of_a_test_server(argv, tiny_dir, tmp_path, monkeypatch)
    if clients is not None:
        clients.append(proc)
    interrupted: list[float] = []
    _interrupt_when(reached, proc, interrupted)
    logged: list[str] = []
    with conn:
        serve._handle(conn, key, lm, logged.append, ResidentKV())
    assert interrupted, (logged, proc.communicate(timeout=60))
    freed = time.monotonic() - interrupted[0]
    assert proc.wait(timeout=60) == 130
    assert logged[-2] == "the client hung up" and logged[-1].startswith("ask: exit 130 in "), logged
    return proc, logged, freed


def _interrupt_when(event: threading.Event, proc: subprocess.Popen, at: list[float]) -> threading.Thread:
    """A thread that sends SIGINT (Ctrl-C) to `proc` once `event` is set, noting when in `at`."""
    def run() -> None:
        if event.wait(60):
            at.append(time.monotonic())
            proc.send_signal(signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _client_of_a_test_server(argv: list[str], tiny_dir: str, tmp_path: Path, monkeypatch):
    """Start `tmix argv` in tmp_path against a socket this test listens on (the test plays the server): its key,
    the client process and the accepted connection."""
    key = server_key(tiny_dir, "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    monkeypatch.chdir(tmp_path)  # the request leaves this process in "/"
    with serve._listen(path) as listener:
        client = subprocess.Popen([sys.executable, "-m", "tmixcli", *argv], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as at a terminal
        listener.settimeout(60)
        return key, client, listener.accept()[0]


@pytest.mark.parametrize("mode", [["--json"], ["-q"], []], ids=["json", "quiet", "streaming"])
def test_a_client_interrupted_mid_answer_frees_the_server_at_once(mode, tiny_dir, tmp_path, monkeypatch):
    from tmixcli import generate
    from tmixcli.models import load_model
    from tmixcli.resident import ResidentKV

    decoding = _slow_endless_answers(monkeypatch)
    (tmp_path / "doc.txt").write_text((DOCS / "notes.txt").read_text()[:400])  # not cached: a fresh prefill
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY[:-1], "300", "--no-stop-repeats", *mode]
    key, client, conn = _client_of_a_test_server(argv, tiny_dir, tmp_path, monkeypatch)  # decode slowed down
    interrupted: list[float] = []
    _interrupt_when(decoding, client, interrupted)
    logged: list[str] = []
    with conn:
        serve._handle(conn, key, load_model(tiny_dir, "cpu", "auto", progress=False), logged.append, ResidentKV())
    freed = time.monotonic() - interrupted[0]
    assert client.wait(timeout=60) == 130
    err, out = client.stderr.read(), client.stdout.read()
    assert err.rstrip().endswith("tmix: interrupted") and err.count("tmix: interrupted") == 1, err
    assert "\n\n" not in err and out in ("", out.rstrip("\n") + "\n"), (out, err)  # a cut answer's line ended
    assert logged[-2] == "the client hung up" and logged[-1].startswith("ask: exit 130 in "), logged
    assert freed < 3, f"the server ran on for {freed:.1f} s after its client left"  # 300 steps: 15 s
    assert len(list((Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors"))) == 1  # the prefill kept
    assert serve.served == {} and generate.between_steps == []


def _slow_layers(lm, delay: float) -> tuple[threading.Event, list[int]]:
    """Each decoder layer of `lm` takes `delay` s longer; the event is set as the first runs, the list counts runs."""
    from tmixcli.models import decoder_layers

    started, runs = threading.Event(), [0]

    def slow(*_) -> None:
        started.set()
        runs[0] += 1
        time.sleep(delay)

    for layer in decoder_layers(lm.model):
        layer.register_forward_pre_hook(slow)
    return started, runs


@pytest.mark.parametrize("mode", [["--json"], ["-q"], []], ids=["json", "quiet", "streaming"])
def test_a_client_interrupted_mid_prefill_frees_the_server_at_once(mode, tiny_dir, tmp_path, monkeypatch):
    from tmixcli import generate, prompt
    from tmixcli.models import decoder_layers, load_model

    lm = load_model(tiny_dir, "cpu", "auto", progress=False)
    prefilling, runs = _slow_layers(lm, 0.05)
    text = (DOCS / "notes.txt").read_text()[:1000]
    (tmp_path / "doc.txt").write_text(text)  # not cached: a fresh prefill, in chunks of 16 tokens
    layer_runs = -(-len(prompt.prefix_ids(lm.tokenizer, text, None)) // 16) * len(decoder_layers(lm.model))
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY, "--chunk-size", "16", *mode]
    client, logged, freed = _served_until_gone(argv, prefilling, lm, tiny_dir, tmp_path, monkeypatch)  # slowed
    err = client.stderr.read()
    assert err.rstrip().endswith("tmix: interrupted") and err.count("tmix: interrupted") == 1, err
    assert layer_runs * 0.05 > 6, layer_runs  # what the whole prefill would take
    assert freed < 2, f"the server ran on for {freed:.1f} s after its client left"
    assert runs[0] < layer_runs / 3, (runs, layer_runs)
    kv = Path(os.environ["TMIX_CACHE_DIR"]) / "kv"
    assert not kv.exists() or not list(kv.iterdir())  # neither a KV file nor its temp file
    assert serve.served == {} and generate.between_steps == []


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


def _stalled(monkeypatch, owner, name: str, client: list) -> tuple[threading.Event, list[int]]:
    """owner.name, at its first call, sets the event and waits until the client (client[0]) has exited: a phase
    that lasts until the client has gone. The list counts the calls."""
    reached, calls, real = threading.Event(), [0], getattr(owner, name)

    def stalled(*args, **kw):
        calls[0] += 1
        if calls[0] == 1:
            reached.set()
            client[0].wait(60)
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, stalled)
    return reached, calls


def _counted(monkeypatch, owner, name: str) -> list[int]:
    """Count the calls of owner.name."""
    calls, real = [0], getattr(owner, name)

    def counted(*args, **kw):
        calls[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _pdf(path: Path, pages: int) -> None:
    FPDF = pytest.importorskip("fpdf", reason="fpdf2 (a dev dependency) makes the test PDF").FPDF

    pdf = FPDF()
    for i in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 5, f"Page {i}. " + (DOCS / "notes.txt").read_text()[:80].replace("\n", " "))
    pdf.output(str(path))


@pytest.mark.parametrize("phase", ["documents", "pdf pages", "docx paragraphs", "kv file read", "question"])
def test_a_client_gone_before_the_prefill_or_the_answer_frees_the_server_at_once(phase, capsys, tiny_dir, tmp_path,
                                                                                 monkeypatch):
    """A client gone while its documents (a.txt, then b.txt), a PDF's pages, a .docx's paragraphs or a cached KV
    file are read, or while its question runs through the layers: the request stops at the next document, page,
    paragraph, read or layer."""
    import bigdocs
    from runcli import run

    from tmixcli import documents, generate, kvread, office, pdftext
    from tmixcli.models import decoder_layers, load_model

    lm = load_model(tiny_dir, "cpu", "auto", progress=False)
    text = (DOCS / "notes.txt").read_text()
    (tmp_path / "a.txt").write_text(text[:500])
    (tmp_path / "b.txt").write_text(text[500:1000])
    docs = ["a.txt", "b.txt"]
    if phase == "pdf pages":
        _pdf(tmp_path / "c.pdf", 6)
        docs = ["c.pdf"]
    elif phase == "docx paragraphs":
        docs = [bigdocs.write(tmp_path / "c.docx", bigdocs.paragraphs(5)).name]
    elif phase == "kv file read":
        monkeypatch.chdir(tmp_path)
        assert run(capsys, "prefill", *docs, "--model", tiny_dir, *TINY[:-2], "-q")[0] == 0  # a cache hit
    owner, name = {"documents": (documents, "read_input"), "pdf pages": (pdftext, "_page_text"),
                   "docx paragraphs": (office, "_docx_paragraph"), "kv file read": (kvread, "_pread"),
                   "question": (generate, "extend")}[phase]
    client: list[subprocess.Popen] = []
    reached, calls = _stalled(monkeypatch, owner, name, client)
    prefills, extends = _counted(monkeypatch, generate, "prefill"), _counted(monkeypatch, generate, "extend")
    layer_runs = [0]
    for layer in decoder_layers(lm.model):
        layer.register_forward_hook(lambda *_: layer_runs.__setitem__(0, layer_runs[0] + 1))
    if phase == "question":
        docs = ["a.txt"]
    question = "Who? " * (20 if phase == "question" else 1)
    argv = ["ask", *docs, question, "--model", tiny_dir, *TINY, "-q"]  # no status line finds the client gone
    _, logged, freed = _served_until_gone(argv, reached, lm, tiny_dir, tmp_path, monkeypatch, client)
    assert freed < 3, f"the server ran on for {freed:.1f} s after its client left"
    if phase == "question":  # the document's prefill ran; of the question's layers, none after the client left
        assert prefills[0] == 1 and layer_runs[0] < 2 * len(decoder_layers(lm.model)), layer_runs
    else:  # nothing prefilled or run; no other document or page read (a KV file's pieces are read 8 at a time)
        assert prefills[0] == extends[0] == 0 and (calls[0] == 1 or phase == "kv file read"), (calls, prefills)
    kv = Path(os.environ["TMIX_CACHE_DIR"]) / "kv"
    files = list(kv.iterdir()) if kv.exists() else []  # a prefill's KV file is saved once its answer began
    assert [f.suffix for f in files] == [".safetensors"] * (phase in ("kv file read", "question")), files
    assert serve.served == {} and generate.between_steps == []
