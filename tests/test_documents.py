"""tmixcli.documents: real PDF/text files built in tmp_path, every failure a one-line TmixError."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import runpy
import sys
from pathlib import Path

import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from tmixcli.documents import Document, load_document, load_documents
from tmixcli.pdfpages import clean_page_text, parse_pages
from tmixcli.errors import TmixError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_docs"
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
PNG_BYTES = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                          "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")


def make_pdf(pages: list[str], font: Path | None = None) -> bytes:
    """A PDF with one page per string ("" gives a page with only a drawn rectangle, no text)."""
    pdf = FPDF()
    if font is not None:
        pdf.add_font("Uni", fname=str(font))
    for text in pages:
        pdf.add_page()
        if text:
            pdf.set_font("Uni" if font else "Helvetica", size=12)
            pdf.multi_cell(0, 6, text)
        else:
            pdf.set_fill_color(40, 40, 40)
            pdf.rect(20, 20, 150, 200, style="F")
    return bytes(pdf.output())


def encrypt(data: bytes, user_password: str, algorithm: str | None = None) -> bytes:
    """Re-save a PDF encrypted with the given user password (RC4 by default, which needs no extra package)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-pw", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> str:
    """Write bytes to tmp_path/name and return the path as a string."""
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def expect_error(path: str, *fragments: str, **kwargs) -> TmixError:
    """load_document must raise a code-2, one-line TmixError naming the file and containing fragments."""
    with pytest.raises(TmixError) as info:
        load_document(path, **kwargs)
    message = str(info.value)
    assert info.value.code == 2
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


@pytest.fixture(scope="module")
def three_pages() -> bytes:
    """A valid three-page PDF with distinct text on each page."""
    return make_pdf(["Alpha page one text.", "Bravo page two text.", "Charlie page three text."])


def test_pdf_all_pages(tmp_path, three_pages):
    path = write(tmp_path, "doc.pdf", three_pages)
    doc = load_document(path)
    assert isinstance(doc, Document)
    assert doc.name == "doc.pdf"
    assert doc.pages == 3
    assert doc.sha256 == hashlib.sha256(three_pages).hexdigest()
    assert doc.text == ("Alpha page one text.\n\n--- page 2 ---\n\nBravo page two text.\n\n"
                        "--- page 3 ---\n\nCharlie page three text.")


def test_pdf_detected_by_magic_not_suffix(tmp_path, three_pages):
    doc = load_document(write(tmp_path, "download.bin", three_pages))
    assert doc.pages == 3 and "Bravo" in doc.text


@pytest.mark.parametrize("spec, expected, pages", [
    ("2", ["Bravo"], 1),
    ("1,3", ["Alpha", "--- page 3 ---", "Charlie"], 2),
    ("2-3", ["Bravo", "Charlie"], 2),
    ("2-", ["Bravo", "Charlie"], 2),
    ("-2", ["Alpha", "Bravo"], 2),
    (" 3 , 1-1 ", ["Alpha", "Charlie"], 2),
])
def test_pdf_page_selection(tmp_path, three_pages, spec, expected, pages):
    doc = load_document(write(tmp_path, "doc.pdf", three_pages), pages=spec)
    assert doc.pages == pages
    for fragment in expected:
        assert fragment in doc.text
    missing = {"Alpha", "Bravo", "Charlie"} - {w for w in expected if "-" not in w}
    assert not any(word in doc.text for word in missing)


@pytest.mark.parametrize("spec, text", [
    ("2-3", "--- page 2 ---\n\nBravo page two text.\n\n--- page 3 ---\n\nCharlie page three text."),
    ("1,3", "Alpha page one text.\n\n--- page 3 ---\n\nCharlie page three text."),
])
def test_pdf_selected_pages_are_marked(tmp_path, three_pages, spec, text):
    assert load_document(write(tmp_path, "doc.pdf", three_pages), pages=spec).text == text


@pytest.mark.parametrize("spec, fragment", [
    ("", "bad page spec"),
    ("abc", "bad page spec"),
    ("1,,2", "bad page spec"),
    ("0", "pages start at 1"),
    ("3-1", "not a valid range"),
    ("2-5", "out of range"),
    ("4", "has 3 page(s)"),
])
def test_pdf_bad_page_specs(tmp_path, three_pages, spec, fragment):
    path = write(tmp_path, "doc.pdf", three_pages)
    expect_error(path, "doc.pdf", fragment, pages=spec)


def test_parse_pages():
    assert parse_pages("3-10", 12) == list(range(2, 10))
    assert parse_pages("1,4,7-9", 9) == [0, 3, 6, 7, 8]
    assert parse_pages("2,2,1-2", 3) == [0, 1]
    assert parse_pages("5-", 6) == [4, 5]
    assert parse_pages("-2", 6) == [0, 1] and parse_pages("- 2,5-", 6) == [0, 1, 4, 5]  # -N: pages 1 to N
    with pytest.raises(TmixError, match="page 7 in '-7' is out of range"):
        parse_pages("-7", 6)
    for bad in ("-", "--2", "2--", "-2-"):
        with pytest.raises(TmixError, match="bad page spec"):
            parse_pages(bad, 6)
    with pytest.raises(TmixError, match="page 7 in '7-' is out of range"):
        parse_pages("7-", 6)
    with pytest.raises(TmixError, match="out of range"):
        parse_pages("1-13", 12)
    with pytest.raises(TmixError, match="bad page spec"):
        parse_pages("1;2", 12)
    assert parse_pages("0000000000002", 3) == [1]
    with pytest.raises(TmixError, match=r"page 999999999999\.\.\. in the page spec is out of range"):
        parse_pages("2-" + "9" * 5000, 12)


def test_pages_on_text_file_is_an_error(tmp_path):
    expect_error(write(tmp_path, "notes.txt", b"hello"), "notes.txt", "--pages only applies to PDF",
                 pages="1")


def test_password_only_for_pdfs(tmp_path, three_pages):
    """--password on a document that is not a PDF is refused as --pages is; among several, one PDF is enough."""
    txt = write(tmp_path, "notes.txt", b"hello")
    expect_error(txt, "--password only applies to PDF files, and", "notes.txt is not a PDF", password="s")
    with pytest.raises(TmixError, match="--password only applies to PDF files, and .*notes.txt is not a PDF"):
        load_documents([txt], password="s")
    other = write(tmp_path, "other.txt", b"bye")
    with pytest.raises(TmixError, match="--password only applies to PDF files, and none of the documents is a PDF"):
        load_documents([txt, other], password="s")
    locked = write(tmp_path, "locked.pdf", encrypt(three_pages, "s"))
    assert "Alpha page one text." in load_documents([txt, locked], password="s").text
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.txt", b"alpha")
    write(folder, "b.pdf", encrypt(three_pages, "s"))
    assert load_documents([str(folder)], password="wrong").text == "alpha"  # tried on b.pdf, which is skipped
    (folder / "b.pdf").unlink()
    with pytest.raises(TmixError, match="none of the documents is a PDF"):
        load_documents([str(folder)], password="s")


def test_encrypted_pdf_needs_password(tmp_path, three_pages):
    path = write(tmp_path, "locked.pdf", encrypt(three_pages, "secret"))
    expect_error(path, "locked.pdf", "encrypted", "--password")
    expect_error(path, "locked.pdf", "wrong password", "--password", password="nope")
    doc = load_document(path, password="secret")
    assert doc.pages == 3 and "Charlie page three text." in doc.text


def test_encrypted_pdf_with_empty_user_password_loads(tmp_path, three_pages):
    doc = load_document(write(tmp_path, "owner-only.pdf", encrypt(three_pages, "")))
    assert "Alpha page one text." in doc.text


def _without_cryptography(monkeypatch) -> None:
    """Make pypdf act as without the cryptography package: its AES functions raise DependencyError."""
    from pypdf import _encryption
    from pypdf._crypt_providers import _fallback

    for name in ("CryptAES", "aes_cbc_decrypt", "aes_cbc_encrypt", "aes_ecb_decrypt", "aes_ecb_encrypt"):
        monkeypatch.setattr(_encryption, name, getattr(_fallback, name))


@pytest.mark.parametrize("algorithm, user_password", [("AES-256", "s3cret"), ("AES-128", "")])
def test_aes_encrypted_pdf(tmp_path, monkeypatch, three_pages, algorithm, user_password):
    """AES needs cryptography: with it an AES PDF is read; without it the error says so, never 'corrupt'."""
    pytest.importorskip("cryptography", reason="making an AES-encrypted PDF needs the cryptography package")
    path = write(tmp_path, "aes.pdf", encrypt(three_pages, user_password, algorithm))
    assert "Charlie page three text." in load_document(path, password=user_password or None).text
    if user_password:
        expect_error(path, "aes.pdf is encrypted; give its password with --password")
    _without_cryptography(monkeypatch)
    for password in {None, user_password or None}:
        expect_error(path, "aes.pdf is encrypted with AES, which needs the cryptography package: "
                     "pip install cryptography", password=password)


def test_missing_crypto_package_is_not_corrupt(tmp_path, monkeypatch, three_pages):
    """A DependencyError from any pypdf step (here a page of an encrypted PDF) names what to install."""
    from pypdf import PageObject
    from pypdf.errors import DependencyError

    def needs_aes(*_, **__) -> str:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PageObject, "extract_text", needs_aes)
    path = write(tmp_path, "locked.pdf", encrypt(three_pages, ""))
    err = expect_error(path, "locked.pdf is encrypted with AES", "pip install cryptography")
    assert "corrupt" not in str(err)


def test_scanned_pdf_needs_ocr(tmp_path):
    path = write(tmp_path, "scan.pdf", make_pdf(["", ""]))
    expect_error(path, "scan.pdf has no text layer", "looks scanned", "OCR", "ocrmypdf")


def test_selected_pages_without_text(tmp_path):
    path = write(tmp_path, "mixed.pdf", make_pdf(["Some text.", ""]))
    assert load_document(path).text == "Some text.\n\n--- page 2 ---"
    expect_error(path, "mixed.pdf", "no text layer", pages="2")


def test_truncated_pdf(tmp_path, three_pages):
    path = write(tmp_path, "cut.pdf", three_pages[: len(three_pages) // 2])
    expect_error(path, "cut.pdf", "corrupt")


@pytest.mark.parametrize("data", [
    b"%PDF-1.7\n" + b"this is not a pdf body " * 50,
    b"%PDF-1.4\ngarbage garbage\n%%EOF\n",
    b"%PDF-",
])
def test_garbage_after_magic(tmp_path, data):
    expect_error(write(tmp_path, "bad.pdf", data), "bad.pdf", "corrupt")


def test_damaged_pdf_body_is_corrupt_and_quiet(tmp_path, three_pages, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    damaged = three_pages[:300] + three_pages[700:]
    expect_error(write(tmp_path, "damaged.pdf", damaged), "damaged.pdf", "corrupt")
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_recoverable_pdf_loads_without_log_noise(tmp_path, three_pages, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bent = re.sub(rb"startxref\n\d+", b"startxref\n12", three_pages)
    doc = load_document(write(tmp_path, "bent.pdf", bent))
    assert "Bravo page two text." in doc.text
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_pdf_after_junk(tmp_path, three_pages):
    """Up to a few KB before %PDF- are skipped, as PDF readers do; a text quoting the header stays text."""
    doc = load_document(write(tmp_path, "mail.pdf", b"\xef\xbb\xbf" + b"JUNK" * 300 + b"\n" + three_pages))
    assert doc.pages == 3 and "Bravo page two text." in doc.text
    text = b"A PDF file starts with %PDF-1.7 and ends with a trailer.\n"
    assert load_document(write(tmp_path, "about.txt", text)).text == text.decode().strip()


def test_pdf_suffix_without_magic(tmp_path):
    expect_error(write(tmp_path, "fake.pdf", b"just some words\n"), "fake.pdf", "not a valid PDF")


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


@pytest.mark.parametrize("codec", ["iso8859_2", "cp1250"])
def test_central_european_text_is_refused_not_read_as_western(tmp_path, codec):
    """Polish in ISO-8859-2 or Windows-1250 decodes as Windows-1252 with symbols inside words ("Bud\u00bfet"): refused
    with a hint to convert it, not answered from mojibake."""
    text = ("Kierownikiem projektu jest Alicja \u017b\u00f3\u0142\u0107. Bud\u017cet wynosi czterdzie\u015bci dwa "
            "miliony euro. \u0179r\u00f3d\u0142o: \u0142\u00f3d\u017a.\n") * 3
    expect_error(write(tmp_path, "pl.txt", text.encode(codec)), "pl.txt",
                 "is not UTF-8; convert it to UTF-8, e.g. iconv")


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


def test_pdf_hyphenation_and_spaces(tmp_path):
    text = "This is an exam-\nple of a state-of-the-art   layout.\nKeep Halvorsen-\nMarine and 2023-\n2024."
    doc = load_document(write(tmp_path, "hy.pdf", make_pdf([text])))
    assert "an example of a state-of-the-art layout." in doc.text
    assert "Halvorsen-\nMarine" in doc.text and "2023-\n2024" in doc.text
    assert not any(line != line.rstrip() for line in doc.text.splitlines())


@pytest.mark.skipif(not UNICODE_FONT.is_file(), reason="needs the DejaVuSans font")
def test_pdf_ligatures(tmp_path):
    pdf = make_pdf(["The \ufb01rst \ufb02oor has an o\ufb03ce and a wa\ufb04e sta\ufb00 room."], font=UNICODE_FONT)
    doc = load_document(write(tmp_path, "lig.pdf", pdf))
    assert "The first floor has an office and a waffle staff room." in doc.text


def test_clean_page_text_rules():
    raw = ("The \ufb01nal exam-\n  ple of bl\u00e5-\n\u00f8yd  of\r\nsoft\u00adhyph\u00ad\nenation   \r\n"
           "well-known  \n\n\n\nEnd")
    assert clean_page_text(raw) == "The final example of bl\u00e5\u00f8yd of\nsofthyphenation\nwell-known\n\nEnd"


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
    assert doc.text.startswith("Document 1 of 3: notes.txt\n\nBudget: 12 kroner.\n\nDocument 2 of 3: locked.pdf")
    assert doc.text.index("Bravo page two") < doc.text.index("Document 3 of 3: stdin\n\nFrom stdin.")
    assert [p.sha256 for p in doc.parts[:2]] == [p.sha256 for p in parts]
    swapped = load_documents([pdf, txt], password="s")
    assert swapped.sha256 not in (doc.sha256, *(p.sha256 for p in parts))
    assert load_documents([txt]) == parts[0]  # one document is read exactly as before


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
    assert len(doc.notes) == 1 and doc.notes[0].startswith("skipped logo.png: ") and "PNG image" in doc.notes[0]
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


class _ReportPDF(FPDF):
    def header(self):
        self.set_font("Helvetica", size=9)
        self.cell(0, 6, "Acme Shipping ASA - Annual Report 2023", new_x="LMARGIN", new_y="NEXT")

    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", size=9)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}")


def test_pdf_running_header_and_footer_kept_once(tmp_path):
    pdf = _ReportPDF()
    bodies = [f"Section {i}. The fleet grew to {10 + i} vessels.\nAcme Shipping ASA - Annual Report 2023 is "
              f"quoted here in the body of page {i}.\nPage {i} of 5\nThe end of section {i}." for i in range(1, 6)]
    for body in bodies:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 6, body)
    text = load_document(write(tmp_path, "annual.pdf", bytes(pdf.output()))).text
    assert text.count("Acme Shipping ASA - Annual Report 2023\n") == 1  # the header once, body quotes stay
    assert text.count("is quoted here in the body") == 5
    assert text.count("Page 1 of 5") == 2 and text.count("Page 3 of 5") == 1  # the footer once, mid-page copies stay
    for i in range(1, 6):
        assert f"The fleet grew to {10 + i} vessels." in text and f"The end of section {i}." in text
        assert i == 1 or f"--- page {i} ---" in text


def test_pdf_short_repeated_lines_kept_below_threshold(tmp_path):
    two = make_pdf(["Draft\nAlpha page one text.", "Draft\nBravo page two text."])
    assert load_document(write(tmp_path, "two.pdf", two)).text.count("Draft") == 2  # two pages: nothing dropped


def test_pdf_differing_figures_are_not_running_lines(tmp_path):
    """Short edge lines alike but for their figures are content; digits that count the pages mark running lines."""
    budgets = [("Harbor", 120), ("Forest", 340), ("Mountain", 75), ("River", 910)]
    pages = [f"- {i + 10} -\nProject {name} is led by team {i}.\nQ{i} revenue: {budget}\nBudget: {budget} million"
             for i, (name, budget) in enumerate(budgets, 1)]
    text = load_document(write(tmp_path, "projects.pdf", make_pdf(pages))).text
    assert text == ("- 11 -\nProject Harbor is led by team 1.\nQ1 revenue: 120\nBudget: 120 million\n\n"
                    "--- page 2 ---\n\nProject Forest is led by team 2.\nQ2 revenue: 340\nBudget: 340 million\n\n"
                    "--- page 3 ---\n\nProject Mountain is led by team 3.\nQ3 revenue: 75\nBudget: 75 million\n\n"
                    "--- page 4 ---\n\nProject River is led by team 4.\nQ4 revenue: 910\nBudget: 910 million")


_PLACES = ["Oslo", "Bergen", "Flam", "Alesund", "Trondheim"]


@pytest.mark.parametrize("line,furniture", [
    ("Page {n}", True), ("{n} of 5", True), ("- {n} -", True), ("p. {n}", True), ("{n}", True), ("{n}/5", True),
    ("Page {n} of 5", True), ("Harbour Guide 2024 | Page {n} of 5", True), ("Harbour Guide 2024 Page {n}", True),
    ("Harbour Guide - {n}", True), ("{n} | Harbour Guide", True),
    ("Day {n}", False), ("Step {n}", False), ("Question {n} (10 points)", False), ("Day {n} of 5", False),
    ("Chapter {n}", False), ("Part {n}: the trip", False), ("{n}. Introduction", False), ("Harbour Guide {n}", False),
])
def test_pdf_page_numbers_dropped_headings_kept(tmp_path, line, furniture):
    """A line that only numbers the page (beside a title at most) is kept once; a heading numbered like the pages
    ("Day 3" on page 3) is content on every page."""
    pages = [f"{line.format(n=n)}\nVisit {n} goes to {place}.\nThe group sleeps in {place}."
             for n, place in enumerate(_PLACES, 1)]
    text = load_document(write(tmp_path, "trip.pdf", make_pdf(pages))).text
    for n, place in enumerate(_PLACES, 1):
        assert f"Visit {n} goes to {place}." in text
        assert (line.format(n=n) in text.split("\n")) == (n == 1 or not furniture), text


def test_pdf_only_the_page_number_itself_is_dropped(tmp_path):
    """Bare page numbers are kept once; a bare figure at a page's edge that is not that page's number stays."""
    pages = [f"{n}\nRow {n} of the table.\n{42 if n == 4 else n}" for n in range(1, 6)]
    text = load_document(write(tmp_path, "table.pdf", make_pdf(pages))).text
    lines = text.split("\n")
    assert lines.count("42") == 1 and lines.count("1") == 1 and not {"2", "3", "5"} & set(lines)
