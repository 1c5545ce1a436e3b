"""A tiny model for the `tmix serve` tests: saved in a work folder with a cache of its own, served, asked by `tmix`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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
