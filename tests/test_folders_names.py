"""Several documents and folders: same-named files told apart in their headings, subfolders and copies said."""

from __future__ import annotations

import io
import os

from docfiles import write
from runcli import run

from tmixcli.documents import load_documents
from tmixcli.folders import distinct_names


def budgets(tmp_path):
    for year, amount in (("2023", 4), ("2024", 5)):
        (tmp_path / year).mkdir()
        write(tmp_path / year, "budget.txt", f"Budget {year}: {amount} million.\n".encode())
    return tmp_path / "2023", tmp_path / "2024"


def test_same_named_files_get_the_shortest_distinguishing_path(tmp_path, monkeypatch):
    """QA22 F10: 2023/budget.txt and 2024/budget.txt, as files or as folders, are not both "budget.txt"."""
    monkeypatch.chdir(tmp_path)
    budgets(tmp_path)
    write(tmp_path, "notes.txt", b"Notes.\n")
    for args in (["2023/budget.txt", "2024/budget.txt", "notes.txt"], ["2023", "2024", "notes.txt"]):
        doc = load_documents(args)
        assert doc.name == "2023/budget.txt + 2024/budget.txt + notes.txt"
        assert doc.text.startswith("Document 1: 2023/budget.txt\n\nBudget 2023: 4 million.\n\n"
                                   "Document 2: 2024/budget.txt\n\nBudget 2024")
    absolute = load_documents([str(tmp_path / "2023" / "budget.txt"), str(tmp_path / "2024" / "budget.txt")])
    assert [p.name for p in absolute.parts] == ["2023/budget.txt", "2024/budget.txt"]


def test_distinct_names_go_up_only_as_far_as_needed():
    assert distinct_names(["a/x/b.txt", "c/x/b.txt", "c/y.txt"], ["b.txt", "b.txt", "y.txt"]) == [
        "a/x/b.txt", "c/x/b.txt", "y.txt"]
    assert distinct_names(["b.txt", "q/b.txt"], ["b.txt", "b.txt"]) == ["b.txt", "q/b.txt"]
    assert distinct_names(["-", "d/stdin"], ["stdin", "stdin"]) == ["stdin", "d/stdin"]


def test_stdin_and_a_file_named_stdin(tmp_path):
    path = write(tmp_path, "stdin", b"From the file.\n")
    doc = load_documents(["-", path], stdin=io.BytesIO(b"From the pipe."))
    assert [p.name for p in doc.parts] == ["stdin", f"{tmp_path.name}/stdin"]


def test_subfolders_left_out_are_named(capsys, tmp_path):
    """QA22 F19: a folder with a README and its data in subfolders says what it left out."""
    years = tmp_path / "years"
    years.mkdir()
    budgets(years)
    (years / ".git").mkdir()  # hidden: left out without a word
    write(years, "README.md", b"index\n")
    code, out, err = run(capsys, "text", str(years))
    assert (code, out) == (0, "index\n")
    assert err == (f"tmix: left out 2 subfolders of {years} (only the files directly inside a folder are read): "
                   "2023, 2024\n")
    for n in range(3, 10):
        (years / f"sub{n}").mkdir()
    note = load_documents([str(years)]).notes[0]
    assert note.endswith(": 2023, 2024, sub3, sub4, sub5, sub6 and 3 more") and "left out 9 subfolders" in note


def test_copies_in_a_folder_are_said(tmp_path):
    fold = tmp_path / "fold"
    fold.mkdir()
    write(fold, "notes.md", b"Same text.\n")
    write(fold, "notes-copy.md", b"Same text.\n")
    write(fold, "other.md", b"Other text.\n")
    doc = load_documents([str(fold)])
    assert doc.notes == ("notes.md has the same content as notes-copy.md (both are read)",)
    assert doc.text.count("Same text.") == 2


def test_names_the_locale_cannot_decode_or_with_line_breaks_are_readable_text(tmp_path, monkeypatch, capsys,
                                                                               tiny_dir):
    """QA23 F1/F11: a Latin-1 file name (bytes UTF-8 cannot decode) crashed the tokenizer through its heading; a line
    break in a name broke the heading and the status lines."""
    import json

    from runcli import TINY

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    latin = os.fsdecode(b"bericht_\xfc.txt")
    (tmp_path / latin).write_text("The project manager is Zoe Muller.\n")
    (tmp_path / "a\nb.txt").write_text("The budget is 5 euros.\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / latin).write_text("The site is Bern.\n")
    doc = load_documents([latin, "a\nb.txt"])
    assert doc.text.startswith("Document 1: bericht_\ufffd.txt\n\nThe project manager")
    assert "Document 2: a b.txt\n" in doc.text and doc.name == "bericht_\ufffd.txt + a b.txt"
    assert load_documents(["in", "a\nb.txt"]).text.startswith("Document 1: bericht_\ufffd.txt\n")
    code, out, err = run(capsys, "ask", latin, "a\nb.txt", "Who is the project manager?", "--model", tiny_dir,
                         "--device", "cpu", "--max-new-tokens", "4", *TINY)
    assert code == 0 and "Traceback" not in err, err
    code, out, _ = run(capsys, "cache", "ls", "--json")
    assert code == 0 and json.loads(out)["entries"][0]["doc_name"] == "bericht_\ufffd.txt + a b.txt"


def test_a_process_substitution_is_named_by_its_path():
    """QA23 F11: `<(cmd)` is /dev/fd/63, whose file name "63" said nothing in the heading."""
    from tmixcli.filekind import document_name

    read, write_end = os.pipe()
    try:
        assert document_name(f"/dev/fd/{read}") == f"/dev/fd/{read}"
        assert document_name("/tmp/x/report.txt") == "report.txt"
    finally:
        os.close(read)
        os.close(write_end)
