"""An internal error (a bug) in a request `tmix serve` runs: one line and exit 1 for its client, the traceback kept by
the server (its stderr, also under -q, and the log beside its socket), and the server goes on serving."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from served import TINY, _prepare, client_of_a_test_server, tmix

from tmixcli import checkpoints, serve, serving

BUGGY = ("import os, sys\nfrom tmixcli import cli, generate\nreal = generate.choose\n"
         "def choose(*args, **kw):\n"
         "    if os.environ.get('TMIX_TEST_BUG'):  # a variable of the request, as its client had it\n"
         "        raise TypeError('a bug in the answer loop')\n"
         "    return real(*args, **kw)\n"
         "generate.choose = choose\ncli.main(sys.argv[1:])\n")
LINE = "tmix: internal error in the tmix server: TypeError: a bug in the answer loop; its log {} has the traceback\n"


def test_a_bug_in_a_request_is_one_line_for_its_client_and_a_traceback_for_the_server(tmp_path: Path) -> None:
    env = _prepare(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", BUGGY, "serve", "--model", "model", "--device", "cpu", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        folder, deadline = tmp_path / "cache" / "serve", time.time() + 120
        while not list(folder.glob("*.sock")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        log = next(folder.glob("*.sock")).with_suffix(".log")
        ask = ("ask", "doc.txt", "Who?", "--model", "model", *TINY)
        for quiet in (False, True):
            failed = tmix(*ask, *(["-q"] if quiet else []), env={**env, "TMIX_TEST_BUG": "1"}, cwd=tmp_path)
            assert failed.returncode == 1 and failed.stdout == "", failed.stderr
            assert failed.stderr == LINE.format(log) if quiet else failed.stderr.endswith(LINE.format(log))
            assert "Traceback" not in failed.stderr, failed.stderr
        kept = log.read_text()
        assert kept.count("Traceback (most recent call last):") == 2 and " ask: Traceback" in kept, kept
        assert kept.rstrip().endswith("TypeError: a bug in the answer loop") and log.stat().st_mode & 0o077 == 0
        answered = tmix(*ask, env=env, cwd=tmp_path)
        assert answered.returncode == 0 and f"answered by tmix serve (pid {proc.pid})" in answered.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert err.count(f"tmix serve: internal error in a request (ask), kept in {log}:\n"
                     "Traceback (most recent call last):\n") == 2, err  # on the server's stderr, -q or not
    assert err.count("TypeError: a bug in the answer loop\n") == 2, err


def test_an_answer_cut_by_a_bug_ends_its_line_and_the_next_request_is_served(tiny_dir, tmp_path, monkeypatch, capsys):
    from tmixcli import generate
    from tmixcli.models import load_model
    from tmixcli.resident import ResidentKV

    real, steps = generate.choose, [0]

    def choose(*args, **kw) -> int:
        steps[0] += 1
        if steps[0] == 3:
            raise KeyError("a bug three tokens in")
        return real(*args, **kw)

    monkeypatch.setattr(generate, "choose", choose)
    monkeypatch.setattr(generate, "stop_ids", lambda *_: set())  # the answer runs on past three tokens
    (tmp_path / "doc.txt").write_text("The project manager is Alice. " * 20)
    lm, resident, log = load_model(tiny_dir, "cpu", "auto", progress=False), ResidentKV(), tmp_path / "server.log"
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY, "--no-stop-repeats"]
    for attempt in ("bug", "fixed"):
        key, client, conn = client_of_a_test_server(argv, tiny_dir, tmp_path, monkeypatch)
        logged: list[str] = []
        with conn:
            serve._handle(conn, key, lm, logged.append, resident, log)
        out, err = client.communicate(timeout=120)
        if attempt == "bug":
            assert client.returncode == 1 and out.endswith("\n") and len(out.strip()) > 0, (out, err)
            assert err.endswith("tmix: internal error in the tmix server: KeyError: 'a bug three tokens in'; its "
                                f"log {log} has the traceback\n"), err
            assert "KeyError: 'a bug three tokens in'" in log.read_text() and "Traceback" in capsys.readouterr().err
            assert logged[-1].startswith("ask: exit 1 in ")
        else:
            assert client.returncode == 0 and "answered by tmix serve" in err, err
            assert logged[-1].startswith("ask: exit 0 in ")
    assert serving.served == {} and checkpoints.between_steps == []
