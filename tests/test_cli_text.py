"""`tmix text`: the documents' text exactly as the prompt gets it, with ask's errors, without the model."""

from __future__ import annotations

import io
import subprocess
import sys

from runcli import run

from tmixcli.documents import load_documents


def test_a_pdf_and_its_pages(capsys, tmp_path, three_pages):
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(three_pages)
    code, out, err = run(capsys, "text", str(pdf))
    assert (code, err) == (0, "")
    assert out == ("Alpha page one text.\n\n--- page 2 ---\n\nBravo page two text.\n\n"
                   "--- page 3 ---\n\nCharlie page three text.\n")
    code, out, err = run(capsys, "text", str(pdf), "--pages", "2")
    assert code == 0 and "Bravo" in out and "Alpha" not in out and "Charlie" not in out, out + err


def test_several_documents_under_their_headings_as_in_the_prompt(capsys, tmp_path):
    (tmp_path / "a.txt").write_text("first text\n")
    (tmp_path / "b.md").write_text("second text")
    paths = [str(tmp_path / "a.txt"), str(tmp_path / "b.md")]
    code, out, err = run(capsys, "text", *paths)
    assert (code, err) == (0, "")
    assert out == load_documents(paths).text + "\n"
    assert out == "Document 1: a.txt\n\nfirst text\n\nDocument 2: b.md\n\nsecond text\n"


def test_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"read from a pipe\n")))
    assert run(capsys, "text", "-") == (0, "read from a pipe\n", "")


def test_a_folder_says_what_it_skipped_unless_quiet(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    code, out, err = run(capsys, "text", str(tmp_path))
    assert code == 0 and out == "kept\n" and err.startswith("tmix: skipped broken.docx: "), err
    assert run(capsys, "text", str(tmp_path), "--quiet") == (0, "kept\n", "")


def test_bad_input_gives_the_same_line_as_ask(capsys, tmp_path):
    missing = str(tmp_path / "missing.pdf")
    code, out, err = run(capsys, "text", missing)
    assert (code, out, err) == (2, "", f"tmix: error: {missing}: no such file\n")
    assert run(capsys, "ask", missing, "Who?")[2] == err
    text = tmp_path / "a.txt"
    text.write_text("text")
    code, _, err = run(capsys, "text", str(text), "--pages", "1")
    assert (code, err) == (2, f"tmix: error: --pages only applies to PDF files, and {text} is not a PDF\n")


def test_torch_is_not_imported(tmp_path):
    """The text comes from the readers alone: neither torch nor transformers is imported, nor the model loaded."""
    doc = tmp_path / "a.txt"
    doc.write_text("plain text")
    code = ("import sys\nfrom tmixcli.cli import main\ntry:\n    main(['text', sys.argv[1]])\nexcept SystemExit:\n"
            "    pass\nprint('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(doc)], capture_output=True, text=True, timeout=120)
    assert r.stdout == "plain text\nHEAVY []\n", r.stdout + r.stderr


def test_a_reader_that_leaves_ends_it_quietly(tmp_path):
    """`tmix text big.txt | head -1`: exit 141 and nothing on stderr, as `ask` does, not exit 0 with the text cut."""
    big = tmp_path / "big.txt"
    big.write_text("".join(f"line {i} of a long text\n" for i in range(200_000)))
    proc = subprocess.Popen([sys.executable, "-m", "tmixcli", "text", str(big)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "line 0 of a long text\n"
    proc.stdout.close()
    err = proc.communicate(timeout=120)[1]
    assert (proc.returncode, err) == (141, "")
