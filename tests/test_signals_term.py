"""SIGTERM and SIGHUP (`timeout`, `kill`, systemd, `docker stop`, a closed terminal) end `ask`, `prefill` and `chat`
as Ctrl-C does: no temp file left, one line, exit 143 or 129 (they killed tmix mid-write, leaving a KV-sized temp
file). The run sends itself the signal at a set point (its first KV rows handed to the writer, or the first piece of
an answer), so no timing is assumed. `tmix serve` stops on SIGHUP as on SIGTERM."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runcli import DOCS, TINY, run
from served import _start_server

ROOT = Path(__file__).resolve().parents[1]
_DRIVER = """
import os, signal, sys
from tmixcli import generate, kvwrite
from tmixcli.cli import main

sig, where = getattr(signal, sys.argv[1]), sys.argv[2]
if where == "prefill":
    rows = kvwrite.KVWriter.rows
    def hooked(self, *args):
        rows(self, *args)
        os.kill(os.getpid(), sig)
    kvwrite.KVWriter.rows = hooked
else:
    stream = generate.stream_text
    def hooked(tokenizer, ids):
        for piece in stream(tokenizer, ids):
            yield piece
            os.kill(os.getpid(), sig)
    generate.stream_text = hooked
sys.argv = ["tmix", *sys.argv[3:]]
main()
"""


def _signalled(tmp_path: Path, sig: str, where: str, *argv: str, stdin: str = "",
               nohup: bool = False) -> subprocess.CompletedProcess:
    """`tmix argv` that sends itself `sig` at `where` ("prefill": its first KV rows; "answer": its first answer
    piece), in a cache folder of its own; `nohup`: started with SIGHUP ignored."""
    env = {**os.environ, "TMIX_CACHE_DIR": str(tmp_path / "cache"), "TMIX_SERVE": "off",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}

    def start() -> None:  # as from a shell, whatever this test run inherited
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN if nohup else signal.SIG_DFL)

    return subprocess.run([sys.executable, "-c", _DRIVER, sig, where, *argv], input=stdin, capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600, preexec_fn=start)


@pytest.fixture()
def doc(tmp_path) -> str:
    path = tmp_path / "doc.txt"
    path.write_text((DOCS / "notes.txt").read_text()[:1000])
    return str(path)


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.glob(".*.tmp")] if folder.is_dir() else []


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_during_the_prefill_leaves_no_temp_file(tmp_path, tiny_dir, doc, sig, code):
    done = _signalled(tmp_path, sig, "prefill", "ask", doc, "Who is the project manager?", "--model", tiny_dir,
                      "--max-new-tokens", "8", *TINY)
    assert done.returncode == code and done.stdout == "", done.stderr
    assert done.stderr.splitlines()[-1] == f"tmix: terminated ({sig})", done.stderr
    assert "Traceback" not in done.stderr
    kv = tmp_path / "cache" / "kv"
    assert _temp_files(kv) == [] and not list(kv.glob("*.safetensors"))


def test_prefill_o_signalled_leaves_nothing_in_the_users_folder(tmp_path, tiny_dir, doc):
    out = tmp_path / "out"
    out.mkdir()
    done = _signalled(tmp_path, "SIGTERM", "prefill", "prefill", doc, "-o", str(out / "doc.kv"), "--model", tiny_dir,
                      *TINY)
    assert done.returncode == 143 and done.stderr.splitlines()[-1] == "tmix: terminated (SIGTERM)", done.stderr
    assert list(out.iterdir()) == []


def test_a_signal_while_answering_ends_at_once(tmp_path, tiny_dir, doc):
    """Unlike Ctrl-C, SIGTERM does not stay to save the KV file: it asks the process to end. The answer's line is
    ended on stdout."""
    done = _signalled(tmp_path, "SIGTERM", "answer", "ask", doc, "Who is the project manager?", "--model", tiny_dir,
                      "--max-new-tokens", "8", *TINY)
    assert done.returncode == 143 and done.stdout.endswith("\n"), done.stderr
    assert done.stderr.splitlines()[-1] == "tmix: terminated (SIGTERM)" and "answer interrupted" not in done.stderr
    assert _temp_files(tmp_path / "cache" / "kv") == []


def test_chat_ends_on_sigterm_instead_of_taking_the_next_question(tmp_path, tiny_dir, doc):
    done = _signalled(tmp_path, "SIGTERM", "answer", "chat", doc, "--model", tiny_dir, "--max-new-tokens", "8", *TINY,
                      stdin="Who is the project manager?\nWhat is the budget?\n")
    assert done.returncode == 143, done.stderr
    assert "answer interrupted" not in done.stderr and "TTFT" not in done.stderr
    assert done.stderr.splitlines()[-1] == "tmix: terminated (SIGTERM)"
    assert _temp_files(tmp_path / "cache" / "kv") == []


def test_an_ignored_sighup_stays_ignored(tmp_path, tiny_dir, doc):
    """`nohup tmix prefill ...`: SIGHUP was ignored before tmix started, and tmix leaves it so."""
    done = _signalled(tmp_path, "SIGHUP", "prefill", "prefill", doc, "--model", tiny_dir, *TINY, nohup=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "cache" / "kv").glob("*.safetensors"))) == 1


def test_prefill_o_removes_leftovers_of_earlier_writes_of_its_target(capsys, tmp_path, tiny_dir, doc):
    """Temp files of a `prefill -o` killed by kill -9 sit in the user's folder, where no cache trim looks: the next
    write of the same target removes those nobody holds locked, and nothing else."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".doc.kv.4242.0123abcd.lk.tmp"
    held = out / ".doc.kv.4343.89abcdef.lk.tmp"
    other = [out / ".doc.kv.4444.0123abcd.tmp", out / ".other.kv.4242.0123abcd.lk.tmp", out / ".doc.kv.notes.tmp"]
    for path in (stale, held, *other):
        path.write_bytes(b"half a KV file")
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer at work
        code, _, err = run(capsys, "prefill", doc, "-o", str(out / "doc.kv"), "--model", tiny_dir, *TINY)
    finally:
        os.close(fd)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(["doc.kv", held.name, *(p.name for p in other)])


def test_sighup_stops_a_server_as_sigterm_does(tmp_path):
    """A `tmix serve` in a terminal that closes: it was killed by SIGHUP, leaving its sockets."""
    proc, _ = _start_server(tmp_path, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    sockets = tmp_path / "cache" / "serve"
    try:
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=60) == 0
        assert not list(sockets.glob("*.sock")) and proc.stderr.read().rstrip().endswith("tmix serve: stopped")
    finally:
        if proc.poll() is None:
            proc.kill()


_IN_FINALIZER = """
import os, signal, sys
from tmixcli import cli, models
load = models.load_model
class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # raised here, where Python drops it
def loading(*args, **kwargs):
    Finalized()
    return load(*args, **kwargs)
models.load_model = loading
cli.main(sys.argv[1:])
"""


def test_a_sigterm_that_lands_in_a_finalizer_still_ends_the_run(tmp_path, tiny_dir, doc):
    """As a Ctrl-C there (tmixcli/startup.py): Python drops the exception a finalizer raises; the next checkpoint
    raises it again, without the "Exception ignored" traceback."""
    env = {**os.environ, "TMIX_SERVE": "off",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", _IN_FINALIZER, "ask", doc, "Who?", "--model", tiny_dir, "--no-cache",
                           "--max-new-tokens", "50", *TINY], capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert done.returncode == 143 and done.stdout.strip() == "", done.stderr
    assert done.stderr.rstrip().endswith("tmix: terminated (SIGTERM)") and "Exception ignored" not in done.stderr


@pytest.mark.parametrize("stop,line", [("int", "tmix: interrupted"), ("term", "tmix: terminated (SIGTERM)")])
def test_the_last_line_stands_on_its_own_after_a_status_line_cut_in_two(capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        stop: str, line: str) -> None:
    """print() writes a status line's text and its line break apart; a stop between the two (a served request whose
    server is stopped) used to glue the last line onto it."""
    from tmixcli import cli, terminate

    def cut(*args, **kw):
        sys.stderr.write("tmix: 1 of 2 CPU threads: busy")
        raise KeyboardInterrupt if stop == "int" else terminate.Terminated(signal.SIGTERM)
    monkeypatch.setattr("tmixcli.documents.load_documents", cut)
    with pytest.raises(SystemExit):
        cli.main(["text", "x.txt"])
    assert capsys.readouterr().err == f"tmix: 1 of 2 CPU threads: busy\n{line}\n"
