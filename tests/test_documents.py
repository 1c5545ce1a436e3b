"""tmixcli.documents: real text files, stdin, several documents and folders built in tmp_path (PDFs: test_pdf.py),
every failure a one-line TmixError."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import runpy
import sys
import zipfile
from pathlib import Path

import pytest

from docfiles import encrypt, expect_error, make_pdf, write
from tmixcli.documents import Document, load_document, load_documents
from tmixcli.errors import TmixError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_docs"
PNG_BYTES = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                          "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")


@pytest.mark.parametrize("name, data, fragment", [
    ("image.png", PNG_BYTES, "PNG image"),
    ("report.pdf", PNG_BYTES, "PNG image"),
    ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG image"),
    ("letter.docx", b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 20, "damaged ZIP"),
    ("data.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 10, "gzip"),
    ("blob.bin", b"abc\x00def", "binary data"),
    ("sjis.txt", "\u4f1a\u8b70\u306e\u8b70\u4e8b\u9332\u3067\u3059".encode("shift_jis"), "is not UTF-8; convert"),
])
def test_binary_files_rejected(tmp_path, name, data, fragment):
    expect_error(write(tmp_path, name, data), name, fragment)


def test_windows_1252_text_read_with_a_note(tmp_path):
    text = ("The caf\u00e9 menu \u2013 every dessert costs \u20ac4.50, the \u201cfresh\u201d "
            "cr\u00e8me br\u00fbl\u00e9e too.\n")
    doc = load_document(write(tmp_path, "menu.txt", text.encode("cp1252")))
    assert doc.text == text.strip() and doc.notes == (f"{tmp_path / 'menu.txt'} is not UTF-8; read it as "
                                                      "Windows-1252 (Western European)",)
    assert load_document(write(tmp_path, "utf8.txt", text.encode())).notes == ()
    both = load_documents([str(tmp_path / "menu.txt"), str(tmp_path / "utf8.txt")])
    assert len(both.notes) == 1 and "menu.txt is not UTF-8" in both.notes[0]


def test_western_text_with_a_symbol_inside_a_word_now_and_then_is_still_read(tmp_path):
    text = "The tolerance is x\u00b1y, caf\u00e9 prices \u00a9Acme. " + "The quick brown fox jumps over a dog. " * 20
    assert load_document(write(tmp_path, "menu.txt", text.encode("cp1252"))).text == text.strip()


def test_utf8_with_stray_windows_1252_bytes_keeps_both(tmp_path):
    """A UTF-8 file edited in a Windows-1252 editor: the UTF-8 stays UTF-8, only the stray bytes read as cp1252."""
    raw = "Caf\u00e9 au lait, \u20ac4. ".encode() + "na\u00efve \u2013 cr\u00e8me".encode("cp1252")
    doc = load_document(write(tmp_path, "mixed.txt", raw))
    assert doc.text == "Caf\u00e9 au lait, \u20ac4. na\u00efve \u2013 cr\u00e8me"
    assert doc.notes == (f"{tmp_path / 'mixed.txt'} is UTF-8 with some other bytes (the first at offset 23); read "
                         "those as Windows-1252",)
    cyrillic = "\u041f\u0440\u0438\u0432\u0435\u0442, \u0442\u0435\u043a\u0441\u0442. " * 5
    expect_error(write(tmp_path, "ru.txt", cyrillic.encode("cp1251") + "\u00e9".encode()), "ru.txt",
                 "is not UTF-8; convert")  # mostly stray bytes: not UTF-8 at heart


def test_missing_file(tmp_path):
    expect_error(str(tmp_path / "nope.pdf"), "nope.pdf", "no such file")
    (tmp_path / "link.pdf").symlink_to(tmp_path / "gone.pdf")
    expect_error(str(tmp_path / "link.pdf"), f"link.pdf: a broken link to {tmp_path / 'gone.pdf'}")


def test_directory(tmp_path):
    expect_error(str(tmp_path), str(tmp_path), "is a directory")
    expect_error("", "empty document path")


def test_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path, "secret.txt", b"hidden")
    if os.geteuid() == 0:
        def deny(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))
        monkeypatch.setattr("tmixcli.inputs.open", deny, raising=False)  # root may read anything
    else:
        os.chmod(path, 0)
    expect_error(path, "secret.txt", "permission denied")


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  ", b"\xef\xbb\xbf\n"])
def test_empty_text(tmp_path, data):
    expect_error(write(tmp_path, "empty.txt", data), "empty.txt", "is empty")


def test_text_file_bom_crlf_and_trailing_spaces(tmp_path):
    raw = "\ufeff# Title   \r\n\r\n\r\n\r\nBody  line with  two spaces.\r\n".encode()
    doc = load_document(write(tmp_path, "notes.md", raw))
    assert doc.name == "notes.md"
    assert doc.pages is None
    assert doc.text == "# Title\n\nBody  line with  two spaces."
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()


def test_tsv_rows_keep_their_empty_last_fields(tmp_path):
    """QA22 F19: trailing tabs are empty fields, not white space to strip; spaces ending a line still go."""
    raw = b"\tQ1\tQ2\tQ3\nBob\t5\t\t\nAnn\t\t7\t9  \n\t\t\n\n\n\nEnd \t \n"
    assert load_document(write(tmp_path, "t.tsv", raw)).text == "\tQ1\tQ2\tQ3\nBob\t5\t\t\nAnn\t\t7\t9\n\nEnd \t"


def test_invisible_characters_are_removed_in_every_format(tmp_path):
    """QA22 F17: soft hyphens, zero-width spaces and joiners, word joiners and BOMs inside text, in a text file and a
    Word document as in HTML: each would split a word into byte tokens."""
    word = "Haft\u00adpflicht\u200bver\u200csiche\u200drung\u2060\ufeff"
    assert load_document(write(tmp_path, "w.md", f"Die {word} kostet.".encode())).text == \
        "Die Haftpflichtversicherung kostet."
    body = (f'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
            f"<w:p><w:r><w:t>Die {word} kostet.</w:t></w:r></w:p></w:body></w:document>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", body)
    assert load_document(write(tmp_path, "w.docx", buf.getvalue())).text == "Die Haftpflichtversicherung kostet."


def test_stdin_text_and_pdf(three_pages):
    doc = load_document("-", stdin=io.BytesIO(b"from a pipe\n"))
    assert doc == Document(name="stdin", text="from a pipe", sha256=hashlib.sha256(b"from a pipe\n").hexdigest(),
                           pages=None)
    pdf_doc = load_document("-", pages="3", stdin=io.BytesIO(three_pages))
    assert pdf_doc.name == "stdin" and pdf_doc.pages == 1
    assert pdf_doc.text == "--- page 3 ---\n\nCharlie page three text."
    with pytest.raises(TmixError, match="stdin is empty") as info:
        load_document("-", stdin=io.BytesIO(b""))
    assert info.value.code == 2


def _facts() -> list[dict]:
    return json.loads((SAMPLES / "facts.json").read_text(encoding="utf-8"))


def test_facts_file_shape():
    facts = _facts()
    assert sorted(f["where"] for f in facts if f["doc"] == "report.pdf") == ["end", "middle", "start"]
    assert len([f for f in facts if f["doc"] == "notes.txt"]) == 2
    for fact in facts:
        assert set(fact) == {"doc", "question", "answer", "where"}


@pytest.mark.parametrize("doc_name", ["report.pdf", "notes.txt"])
def test_sample_docs_contain_each_fact_once(doc_name):
    doc = load_document(str(SAMPLES / doc_name))
    if doc_name == "report.pdf":
        assert 5 <= doc.pages <= 7
        assert 2500 <= len(doc.text.split()) <= 3200
    bounds = {"start": (0.0, 0.2), "middle": (0.3, 0.7), "end": (0.8, 1.0)}
    for fact in (f for f in _facts() if f["doc"] == doc_name):
        assert doc.text.count(fact["answer"]) == 1, fact
        low, high = bounds[fact["where"]] if doc_name == "report.pdf" else (0.0, 1.0)
        assert low <= doc.text.index(fact["answer"]) / len(doc.text) <= high, fact


def test_sample_report_fact_sentences_intact():
    text = load_document(str(SAMPLES / "report.pdf")).text
    flat = " ".join(text.split())
    for sentence in ("The company's total revenue in 2023 was 48.7 million euros.",
                     "The new headquarters opened in the city of Stavanger in March 2022.",
                     "The chief executive officer is Ingrid Vassdal."):
        assert sentence in flat
    for word in ("revenue", "headquarters", "chief executive"):
        assert flat.count(word) == 1, word


def test_sample_pdf_matches_generator():
    generator = runpy.run_path(str(SAMPLES / "make_samples.py"))
    source = (SAMPLES / "report.md").read_text(encoding="utf-8")
    assert generator["build_pdf"](source) == (SAMPLES / "report.pdf").read_bytes()
    assert generator["build_notes"](generator["NOTES"]) == (SAMPLES / "notes.txt").read_text(encoding="utf-8")
    assert json.loads((SAMPLES / "facts.json").read_text(encoding="utf-8")) == generator["FACTS"]

def test_several_documents_read_as_one(tmp_path, three_pages):
    """Texts in the order given under numbered headings; the hash covers every part and its order."""
    pdf = write(tmp_path, "locked.pdf", encrypt(three_pages, "s"))
    txt = write(tmp_path, "notes.txt", b"Budget: 12 kroner.\n")
    doc = load_documents([txt, pdf, "-"], password="s", stdin=io.BytesIO(b"From stdin."))
    parts = [load_document(txt), load_document(pdf, password="s")]
    assert doc.name == "notes.txt + locked.pdf + stdin" and doc.pages == 3 and len(doc.parts) == 3
    assert doc.text.startswith("Document 1: notes.txt\n\nBudget: 12 kroner.\n\nDocument 2: locked.pdf")
    assert doc.text.index("Bravo page two") < doc.text.index("Document 3: stdin\n\nFrom stdin.")
    assert [p.sha256 for p in doc.parts[:2]] == [p.sha256 for p in parts]
    swapped = load_documents([pdf, txt], password="s")
    assert swapped.sha256 not in (doc.sha256, *(p.sha256 for p in parts))
    assert load_documents([txt]) == parts[0]  # one document is read exactly as before
    two = load_documents([txt, pdf], password="s")  # the headings do not name the count: one more only appends
    assert doc.text.startswith(two.text + "\n\nDocument 3: stdin\n\n")


@pytest.mark.parametrize("paths,kwargs,needle", [
    (["a.txt", "b.txt"], {"pages": "1"}, "--pages applies to a single PDF"),
    (["-", "a.txt", "-"], {}, "stdin (-) can be read only once"),
    (["a.txt", "./a.txt"], {}, "a.txt is given twice"),
    (["a.txt", "missing.txt"], {}, "missing.txt: no such file"),
    ([""], {}, "empty document path"),
    (["a.txt", ""], {}, "empty document path"),
])
def test_several_documents_refused(tmp_path, monkeypatch, paths, kwargs, needle):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "a.txt", b"alpha")
    write(tmp_path, "b.txt", b"bravo")
    with pytest.raises(TmixError, match=re.escape(needle)):
        load_documents(paths, stdin=io.BytesIO(b"x"), **kwargs)



def test_folder_reads_its_files_in_name_order(tmp_path, three_pages):
    """A folder is the files directly inside it (natural order); unreadable ones are skipped with a note."""
    folder = tmp_path / "minutes"
    folder.mkdir()
    write(folder, "meeting10.txt", b"Tenth meeting: budget approved.\n")
    write(folder, "meeting2.txt", b"Second meeting: architect chosen.\n")
    write(folder, "agenda.pdf", three_pages)
    write(folder, "logo.png", PNG_BYTES)
    write(folder, ".hidden.txt", b"never read")
    (folder / "old").mkdir()
    write(folder / "old", "draft.txt", b"never read either")
    doc = load_documents([str(folder)])
    assert [p.name for p in doc.parts] == ["agenda.pdf", "meeting2.txt", "meeting10.txt"]
    assert doc.text.index("Second meeting") < doc.text.index("Tenth meeting") and "never" not in doc.text
    assert len(doc.notes) == 2 and doc.notes[0].startswith("skipped logo.png: ") and "PNG image" in doc.notes[0]
    assert doc.notes[1] == f"left out a subfolder of {folder} (only the files directly inside a folder are read): old"
    extra = write(tmp_path, "extra.txt", b"Extra.\n")
    mixed = load_documents([extra, str(folder)])
    assert [p.name for p in mixed.parts] == ["extra.txt", "agenda.pdf", "meeting2.txt", "meeting10.txt"]
    one = tmp_path / "one"
    one.mkdir()
    write(one, "only.txt", b"Only one.\n")
    assert load_documents([str(one)]) == load_document(str(one / "only.txt"))


def test_folder_skips_a_file_a_reader_fails_on(tmp_path, monkeypatch):
    """An unforeseen reader failure is a one-line error naming the file; in a folder that file is skipped."""
    from tmixcli import documents

    def broken(*_) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(documents, "page_text", broken)
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.txt", b"Alpha.\n")
    bad = write(folder, "b.html", b"<p>Bravo</p>")
    expect_error(bad, "b.html could not be read (RecursionError: maximum recursion depth exceeded)")
    doc = load_documents([str(folder)])
    assert doc.text == "Alpha." and doc.notes == ("skipped b.html: could not be read (RecursionError: "
                                                  "maximum recursion depth exceeded)",)


def test_folder_skips_fifos_links_to_devices_loops_and_broken_links_with_a_note(tmp_path):
    """What is neither a file nor a folder is never read (a FIFO would block, /dev/zero never ends): skipped, said."""
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.txt", b"Alpha.\n")
    os.mkfifo(folder / "b.txt")
    (folder / "c.txt").symlink_to(folder / "d.txt")
    (folder / "d.txt").symlink_to(folder / "c.txt")
    (folder / "e.txt").symlink_to("/dev/zero")
    (folder / "f.txt").symlink_to(folder / "gone.txt")
    (folder / "g.txt").symlink_to(folder / "gone.txt")
    doc = load_documents([str(folder)])
    assert doc.text == "Alpha." and doc.notes == (
        "skipped b.txt: a FIFO (named pipe), not a regular file", "skipped c.txt: a symlink loop",
        "skipped d.txt: a symlink loop", "skipped e.txt: a device, not a regular file",
        *(f"skipped {n}.txt: a broken link to {folder / 'gone.txt'}" for n in "fg"))
    (folder / "a.txt").unlink()
    with pytest.raises(TmixError) as info:
        load_documents([str(folder)])
    assert str(info.value) == f"no document tmix can read in {folder} (skipped " + " | ".join(
        n.removeprefix("skipped ") for n in doc.notes) + ")"


def test_folder_with_nothing_readable_names_each_skipped_file(tmp_path, three_pages):
    """The error names every skipped file with its reason, up to LISTED_SKIPS of them, then counts the rest."""
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.pdf", encrypt(three_pages, "pw"))
    write(folder, "b.txt", b"")
    write(folder, "c.png", PNG_BYTES)
    with pytest.raises(TmixError) as info:
        load_documents([str(folder)])
    assert str(info.value) == (f"no document tmix can read in {folder} (skipped a.pdf: is encrypted; give its "
                               "password with --password | b.txt: is empty: it contains no text | c.png: is not a "
                               "document tmix reads (PDF, .docx, .odt, .pptx, .epub, HTML or UTF-8 text): it looks "
                               "like a PNG image)")
    for i in range(3, 10):
        write(folder, f"d{i}.txt", b"")
    with pytest.raises(TmixError) as info:
        load_documents([str(folder)])
    message = str(info.value)
    assert "\n" not in message and message.count(": is empty") == 4 and message.endswith("| and 4 more)"), message


def test_a_file_given_twice_names_both_arguments_as_typed(tmp_path, monkeypatch):
    """A link to a document, or a folder and a file in it: both arguments named as typed, not just the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d1").mkdir()
    write(tmp_path / "d1", "notes.txt", b"alpha")
    os.symlink("d1/notes.txt", "link.txt")
    cases = [(["d1/notes.txt", "link.txt"], "notes.txt is given twice: as d1/notes.txt and as link.txt"),
             (["d1", "d1/notes.txt"], "notes.txt is given twice: in folder d1 and as d1/notes.txt"),
             (["link.txt", "d1"], "notes.txt is given twice: as link.txt and in folder d1"),
             (["d1", "./d1"], "notes.txt is given twice: in folder d1 and in folder ./d1"),
             (["d1/notes.txt", "d1/notes.txt"], "d1/notes.txt is given twice"),
             (["d1", "d1"], "d1 is given twice")]
    for paths, says in cases:
        with pytest.raises(TmixError, match=f"^{re.escape(says)}$"):
            load_documents(paths)


def test_symlink_loop_among_several_documents(tmp_path):
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    with pytest.raises(TmixError, match="cannot read .*loop.txt: Too many levels of symbolic links"):
        load_documents([str(tmp_path / "loop.txt"), write(tmp_path, "a.txt", b"alpha")])


@pytest.mark.parametrize("setup,args,needle", [
    (lambda d: None, lambda d: [str(d)], "has no files (subfolders are not read)"),
    (lambda d: write(d, "x.png", PNG_BYTES), lambda d: [str(d)], "no document tmix can read in"),
    (lambda d: write(d, "a.txt", b"alpha"), lambda d: [str(d), str(d / "a.txt")], "a.txt is given twice"),
    (lambda d: write(d, "a.pdf", make_pdf(["x"])), lambda d: [str(d)], "--pages applies to a single PDF"),
])
def test_folder_refused(tmp_path, setup, args, needle):
    folder = tmp_path / "docs"
    folder.mkdir()
    setup(folder)
    with pytest.raises(TmixError, match=re.escape(needle)):
        load_documents(args(folder), pages="1" if "pages" in needle else None)


_WRITES: list[tuple] = []
_RECORDING: list[bool] = [False]
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.truncate", "os.chmod",
                 "shutil.copyfile", "shutil.move", "shutil.rmtree", "os.symlink", "os.link"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    """Record file writes while _RECORDING is on (audit hooks cannot be removed, so this stays cheap)."""
    if not _RECORDING[0]:
        return
    if event == "open":
        mode, flags = args[1], args[2]
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        if writes:
            _WRITES.append((event, args))
    elif event in _WRITE_EVENTS:
        _WRITES.append((event, args))


sys.addaudithook(_audit)


def test_load_document_writes_nothing(tmp_path, three_pages):
    paths = [write(tmp_path, "doc.pdf", three_pages), write(tmp_path, "locked.pdf", encrypt(three_pages, "s")),
             write(tmp_path, "notes.txt", b"text"), str(SAMPLES / "report.pdf")]
    for path in paths:
        load_document(path, password="s", among=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    _WRITES.clear()
    _RECORDING[0] = True
    try:
        for path in paths:
            load_document(path, password="s", among=True)
        load_document("-", stdin=io.BytesIO(three_pages))
        with pytest.raises(TmixError):
            load_document(write_free_path := str(tmp_path / "missing.pdf"))
    finally:
        _RECORDING[0] = False
    assert _WRITES == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path(write_free_path).exists()
