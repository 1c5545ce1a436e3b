"""stdin closed (`<&-`), or named where the question goes (a document too, with --kv): one line and exit 2, never a
traceback or an answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runcli import run
from tmixcli import cli_open, cli_question
from tmixcli.errors import TmixError

ROOT = Path(__file__).resolve().parents[1]
NOTES = str(ROOT / "sample_docs" / "notes.txt")


def closed_stdin(*argv: str) -> subprocess.CompletedProcess:
    """`tmix argv <&-`: Python then sets sys.stdin to None."""
    return subprocess.run([sys.executable, "-m", "tmixcli", *argv], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ.copy(), preexec_fn=lambda: os.close(0), timeout=120)


@pytest.mark.parametrize("argv,line", [
    (["ask", "-", "Who?"], "stdin is closed"),
    (["prefill", "-"], "stdin is closed"),
    (["ask", "/dev/stdin", "Who?"], "/dev/stdin: stdin is closed"),
    (["ask", NOTES, "/dev/fd/0", "Who?"], "/dev/fd/0: stdin is closed"),
    (["ask", "--kv", "/dev/stdin", "Who?"], "--kv /dev/stdin: stdin is closed"),
    (["chat", NOTES], "chat reads its questions from stdin, which is closed"),
])
def test_closed_stdin_is_one_line_before_the_model(argv, line):
    done = closed_stdin(*argv)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"tmix: error: {line}\n")


def test_cache_clear_with_closed_stdin_needs_yes(capsys, tiny_dir):
    assert run(capsys, "prefill", NOTES, "--model", tiny_dir, "--truncate", "-q")[0] == 0  # a file to clear
    done = closed_stdin("cache", "clear")
    assert (done.returncode, done.stderr) == (2, "tmix: error: `tmix cache clear` needs --yes when stdin is not a "
                                                 "terminal\n")
    assert closed_stdin("cache", "clear", "--yes").returncode == 0


@pytest.fixture()
def no_model(monkeypatch) -> None:
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))


def test_stdin_as_the_question_is_refused(capsys, no_model, monkeypatch):
    """`echo doc | tmix ask notes.txt -`: a forgotten question, not the question "-"."""
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"other doc\n")))
    code, out, err = run(capsys, "ask", NOTES, "-")
    assert (code, out, err) == (2, "", "tmix: error: the question '-' is stdin; put the question last, after the "
                                       "documents\n")


@pytest.mark.parametrize("question", ["/dev/stdin", "/dev/fd/0", "/dev/fd/7", "/proc/self/fd/0", "/dev/null",
                                      "fifo", "link"])
def test_an_input_as_the_question_is_refused(capsys, no_model, tmp_path, monkeypatch, question):
    """`tmix ask notes.txt /dev/stdin < notes.txt`, a FIFO, a device, a link to stdin: file names, not questions."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo("fifo")
    os.symlink("/dev/stdin", "link")
    code, out, err = run(capsys, "ask", NOTES, question)
    assert (code, out, err) == (2, "", f"tmix: error: the question {question!r} is a file name; put the question "
                                       "last, after the documents\n")


def test_questions_that_only_look_like_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README").write_text("x")
    for text in ("Who?", "/dev/stdin?", "What is in /dev/stdin", "README", "a\x00b", "x" * 5000, "/no/such/dir/q"):
        assert not cli_question._names_an_input(text), text


@pytest.fixture()
def kv_file(capsys, tiny_dir, tmp_path, monkeypatch) -> str:
    """A KV file of notes.txt made by the tiny model; loading a model after it is made fails the test."""
    path = tmp_path / "notes.kv.safetensors"
    assert run(capsys, "prefill", NOTES, "--model", tiny_dir, "--truncate", "-q", "-o", str(path))[0] == 0
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    return str(path)


@pytest.mark.parametrize("question,what", [
    ("-", "is stdin"), ("/dev/stdin", "is a file name"), ("/dev/fd/0", "is a file name"), (NOTES, "is a file name"),
    (str(ROOT / "sample_docs"), "is a folder"), ("minutes.docx", "reads as a document's name"),
])
def test_a_document_where_the_kv_question_goes_is_refused(capsys, kv_file, tiny_dir, monkeypatch, question, what):
    """`echo doc | tmix ask --kv FILE -` once answered the question "-" and left stdin unread (so did a file or
    folder name): --kv takes no document, so it is one line before the model loads."""
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"other doc\n")))
    code, out, err = run(capsys, "ask", "--kv", kv_file, question, "--model", tiny_dir)
    assert (code, out, err) == (2, "", f"tmix: error: the question {question!r} {what}: --kv takes no document (a KV "
                                       "file holds exactly the text it was made from); give only the question: tmix "
                                       "ask --kv PATH QUESTION\n")
    assert sys.stdin.read() == "other doc\n"  # left unread


def test_chat_refuses_a_document_beside_kv(capsys, kv_file, tiny_dir):
    for doc in ("-", NOTES):
        code, out, err = run(capsys, "chat", "--kv", kv_file, doc, "--model", tiny_dir)
        assert (code, out, err) == (2, "", "tmix: error: usage: tmix chat FILE..., or tmix chat --kv PATH\n")


@pytest.mark.parametrize("doc", ["-", "/dev/stdin", "/dev/fd/0"])
def test_chat_refuses_a_document_from_stdin(capsys, no_model, doc):
    code, out, err = run(capsys, "chat", doc)
    assert (code, err) == (2, "tmix: error: chat reads its questions from stdin, so the document cannot come from "
                              "stdin\n")


def test_stdin_read_once_under_any_of_its_names():
    from tmixcli.documents import load_documents

    with pytest.raises(TmixError, match=r"^stdin \(-\) can be read only once$"):
        load_documents(["-", NOTES, "/dev/stdin"])


def test_read_input_says_stdin_is_closed(monkeypatch):
    from tmixcli.inputs import read_input

    monkeypatch.setattr(sys, "stdin", None)
    for path, says in (("-", "stdin is closed"), ("/dev/stdin", "/dev/stdin: stdin is closed")):
        with pytest.raises(TmixError, match=f"^{says}$"):
            read_input(path, None, lambda head, size: 1 << 20)
