"""A client that leaves mid-request (Ctrl-C, hang-up) frees `tmix serve` at once, whatever its request was doing."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from served import DOCS, TINY
from served import client_of_a_test_server
from tmixcli import checkpoints, serve, serving

FREED_S = 10.0  # a server is free this soon after its client left: loose enough for a loaded 2-core CI, yet far
# below the 20+ s of work left mid-answer and mid-prefill (the other tests count what ran after the client left)



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

    key, proc, conn = client_of_a_test_server(argv, tiny_dir, tmp_path, monkeypatch)
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


@pytest.mark.parametrize("mode", [["--json"], ["-q"], []], ids=["json", "quiet", "streaming"])
def test_a_client_interrupted_mid_answer_frees_the_server_at_once(mode, tiny_dir, tmp_path, monkeypatch):
    from tmixcli.models import load_model
    from tmixcli.resident import ResidentKV

    decoding = _slow_endless_answers(monkeypatch)
    (tmp_path / "doc.txt").write_text((DOCS / "notes.txt").read_text()[:400])  # not cached: a fresh prefill
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY[:-1], "600", "--no-stop-repeats", *mode]
    key, client, conn = client_of_a_test_server(argv, tiny_dir, tmp_path, monkeypatch)  # decode slowed down
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
    assert freed < FREED_S, f"the server ran on for {freed:.1f} s after its client left"  # 600 steps: 30 s
    assert len(list((Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors"))) == 1  # the prefill kept
    assert serving.served == {} and checkpoints.between_steps == []


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
    from tmixcli import prompt
    from tmixcli.models import decoder_layers, load_model

    lm = load_model(tiny_dir, "cpu", "auto", progress=False)
    delay = 0.2
    prefilling, runs = _slow_layers(lm, delay)
    text = (DOCS / "notes.txt").read_text()[:1000]
    (tmp_path / "doc.txt").write_text(text)  # not cached: a fresh prefill, in chunks of 16 tokens
    layer_runs = -(-len(prompt.prefix_ids(lm.tokenizer, text, None)) // 16) * len(decoder_layers(lm.model))
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY, "--chunk-size", "16", *mode]
    client, logged, freed = _served_until_gone(argv, prefilling, lm, tiny_dir, tmp_path, monkeypatch)  # slowed
    err = client.stderr.read()
    assert err.rstrip().endswith("tmix: interrupted") and err.count("tmix: interrupted") == 1, err
    assert layer_runs * delay > 2 * FREED_S, layer_runs  # what the whole prefill would take
    assert freed < FREED_S, f"the server ran on for {freed:.1f} s after its client left"
    assert runs[0] < layer_runs / 3, (runs, layer_runs)
    kv = Path(os.environ["TMIX_CACHE_DIR"]) / "kv"
    assert not kv.exists() or not list(kv.iterdir())  # neither a KV file nor its temp file
    assert serving.served == {} and checkpoints.between_steps == []


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

    from tmixcli import docx, documents, generate, kvread, pdftext
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
                   "docx paragraphs": (docx._Reader, "paragraph"), "kv file read": (kvread, "_pread"),
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
    assert freed < FREED_S, f"the server ran on for {freed:.1f} s after its client left"
    if phase == "question":  # the document's prefill ran; of the question's layers, none after the client left
        assert prefills[0] == 1 and layer_runs[0] < 2 * len(decoder_layers(lm.model)), layer_runs
    else:  # nothing prefilled or run; no other document or page read (a KV file's pieces are read 8 at a time)
        assert prefills[0] == extends[0] == 0 and (calls[0] == 1 or phase == "kv file read"), (calls, prefills)
    kv = Path(os.environ["TMIX_CACHE_DIR"]) / "kv"
    files = list(kv.iterdir()) if kv.exists() else []  # a prefill's KV file is saved once its answer began
    assert [f.suffix for f in files] == [".safetensors"] * (phase in ("kv file read", "question")), files
    assert serving.served == {} and checkpoints.between_steps == []


DROPPED = "request dropped before it ran: its client (ask) hung up while waiting"


def test_a_client_killed_while_it_waited_is_logged_as_a_request_that_never_ran(tiny_dir, tmp_path, monkeypatch):
    from tmixcli.models import load_model
    from tmixcli.resident import ResidentKV

    (tmp_path / "doc.txt").write_text((DOCS / "notes.txt").read_text()[:400])
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY]
    key, client, conn = client_of_a_test_server(argv, tiny_dir, tmp_path, monkeypatch)  # taken, not answered
    assert client.stderr.readline() == "tmix: waiting for the tmix server: busy with another request\n"
    client.kill()  # kill -9 while queued
    assert client.wait(timeout=60) == -signal.SIGKILL
    logged: list[str] = []
    with conn:
        serve._handle(conn, key, load_model(tiny_dir, "cpu", "auto", progress=False), logged.append, ResidentKV())
    assert logged == [DROPPED]  # no "the client hung up", no "exit 141"
    assert not (Path(os.environ["TMIX_CACHE_DIR"]) / "kv").exists()  # nothing of it ran


def test_a_client_gone_just_before_its_request_is_taken_is_logged_so_too(tiny_dir, tmp_path, monkeypatch):
    import json
    import socket

    from tmixcli.models import load_model

    monkeypatch.chdir(tmp_path)  # the request leaves this process in "/"
    (tmp_path / "doc.txt").write_text((DOCS / "notes.txt").read_text()[:400])
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY]
    ours, theirs = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if k.startswith("TMIX_")}
    theirs.sendall(json.dumps({"argv": argv, "cwd": str(tmp_path), "env": env}).encode() + b"\n")
    theirs.close()
    monkeypatch.setattr(serve, "hung_up", lambda conn: False)  # it leaves after that check, before the request starts
    logged: list[str] = []
    with ours:
        serve._handle(ours, "key", load_model(tiny_dir, "cpu", "auto", progress=False), logged.append)
    assert logged == [DROPPED]
    assert serving.served == {}
