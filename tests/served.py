"""A tiny model for the `tmix serve` tests: saved in a work folder with a cache of its own, served, asked by `tmix`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tmixcli import serve, serve_client
from tmixcli.serverkey import server_key

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


def _serve(work: Path, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tmixcli", "serve", "--model", "model", "--device", "cpu"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _start_server(work: Path, server_env: dict | None = None, **kw) -> tuple[subprocess.Popen, dict]:
    """Save a tiny random Llama under `work` and start `tmix serve` of it there, in its own cache folder; the
    environment its clients use. `server_env`: variables for the server alone (a locale); `kw`: for Popen."""
    env = _prepare(work)
    return wait_for_socket(work, _serve(work, {**env, **(server_env or {})}, **kw)), env


def wait_for_socket(work: Path, proc: subprocess.Popen) -> subprocess.Popen:
    """`proc`, a `tmix serve` in `work`, once its socket is up; a server that ended first, or never made it within
    120 s, is killed (never left running) and fails the test with its stderr."""
    sock = work / "cache" / "serve"
    deadline = time.time() + 120
    while not list(sock.glob("*.sock")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if not list(sock.glob("*.sock")):
        proc.kill()
        raise AssertionError(f"no socket from tmix serve: {proc.communicate(timeout=60)[1]}")
    return proc


def client_of_a_test_server(argv: list[str], tiny_dir: str, tmp_path: Path, monkeypatch):
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
