"""Inputs beyond what a model could use (endless streams, huge files and PDFs): refused or read only so far, with
memory and time bounded by the model's context, never by the input."""

from __future__ import annotations

import codecs
import errno
import hashlib
import io
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from fpdf import FPDF

import bigdocs
from tmixcli import documents, htmlcodec, htmltext, inputs, textcap
from tmixcli.documents import load_document, load_documents
from tmixcli.errors import TmixError
from tmixcli.inputs import CHUNK, file_chunks, whole_lines
from tmixcli.sizes import human_size
from tmixcli.textcap import Budget, TextCap, files_cap

CAP = TextCap(context=8192, longest=81)  # the default model's: 663552 characters, read as at most 2.5 MiB of text
LINE = b"The code is 5.\n"
READ_PEAK = 3 * CAP.text_bytes + 2 * 1024 * 1024  # memory of reading up to the cap (its bytes, copied once)
PARSE_PEAK = 10 * CAP.text_bytes  # ... and of decoding and tidying what was kept: lines, joins
TEMP_FILE = tempfile.TemporaryFile  # the real one, which the tests of spooled stdin replace


class Endless(io.RawIOBase):
    """A stream that never ends, like `yes LINE` or /dev/zero (after `head`); counts the bytes it hands out."""

    def __init__(self, line: bytes, head: bytes = b"") -> None:
        self.line, self.head, self.given = line, head, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        assert n is not None and n > 0, "an endless stream read whole"
        data = (self.head + self.line * (n // len(self.line) + 1))[:n]
        self.head = b""
        self.given += len(data)
        return data


def budget(truncate: bool = False, cap: TextCap | None = CAP) -> Budget:
    return Budget(truncate, lambda: cap)


def measured(fn):
    """(fn's result or the TmixError it raised, peak Python memory in bytes, seconds)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
    except TmixError as err:
        result = err
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak, seconds


def test_endless_text_on_stdin_is_refused_after_what_the_context_could_use():
    stream = Endless(LINE)
    err, peak, seconds = measured(lambda: load_document("-", stdin=stream, budget=budget()))
    assert isinstance(err, TmixError), err
    assert str(err).startswith("stdin is over 2.5 MiB, more than the model's 8192-token context can hold "
                               "(at most 663552 characters"), err
    assert "--truncate" in str(err) and "\n" not in str(err)
    assert stream.given <= CAP.text_bytes + CHUNK
    assert peak < READ_PEAK and seconds < 10


@pytest.mark.parametrize("line", [b"\x00" * 64, bytes(range(256))])
def test_endless_binary_stream_is_refused_as_binary(line):
    """/dev/zero and /dev/urandom: the usual binary-data error, after a bounded read."""
    stream = Endless(line)
    err, peak, _ = measured(lambda: load_document("-", stdin=stream, budget=budget()))
    assert isinstance(err, TmixError) and "binary data (it contains NUL bytes)" in str(err), err
    assert stream.given <= CAP.text_bytes + CHUNK and peak < READ_PEAK


def test_dev_zero_is_refused_as_binary():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    err, peak, seconds = measured(lambda: load_document("/dev/zero", budget=budget()))
    assert isinstance(err, TmixError) and "/dev/zero is not a document" in str(err), err
    assert peak < READ_PEAK and seconds < 10


def test_endless_stream_with_truncate_keeps_whole_lines_up_to_the_cap():
    stream = Endless("Tromsø has 5 test sites.\n".encode())
    doc, peak, _ = measured(lambda: load_document("-", stdin=stream, budget=budget(truncate=True)))
    assert doc.partial and doc.text.startswith("Tromsø has 5 test sites.\nTromsø")
    assert CAP.chars < len(doc.text) <= CAP.chars + textcap.MARGIN + textcap.TAIL + 2
    head, _, tail = doc.text.rpartition("\n\n")  # the text up to a line break past the cap, then its end
    assert set(head.split("\n")) == {"Tromsø has 5 test sites."} and len(tail) == textcap.TAIL
    assert doc.notes == ("read only the first 2.5 MiB of stdin (it went on) for --truncate",)
    assert stream.given <= CAP.text_bytes + CHUNK and peak < PARSE_PEAK


def test_endless_utf16_stream_with_truncate_decodes_whole_characters():
    stream = Endless("Tromsø 🎉 line\n".encode("utf-16-le"), head=codecs.BOM_UTF16_LE)
    doc = load_document("-", stdin=stream, budget=budget(truncate=True, cap=TextCap(1024, 20)))
    assert doc.partial and set(doc.text.split("\n")) == {"Tromsø 🎉 line"}


@pytest.mark.parametrize("line", ["Tromsø line\n", "Совет директоров\n", "董事会于周二开会。\n"])
def test_endless_utf16_stream_without_a_bom_with_truncate(line):
    stream = Endless(line.encode("utf-16-be"))
    doc = load_document("-", stdin=stream, budget=budget(truncate=True, cap=TextCap(1024, 20)))
    assert doc.partial and set(doc.text.split("\n")) == {line.strip()}


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_endless_utf16_stream_without_a_bom_or_any_ascii_with_truncate(codec):
    """Chinese without a space or newline: cut at a whole character, read as UTF-16 all the same."""
    line = "董事会于周二开会批准了年度预算"
    doc = load_document("-", stdin=Endless(line.encode(codec)), budget=budget(truncate=True, cap=TextCap(1024, 20)))
    assert doc.partial and doc.text.startswith(line * 8) and (line * 4000).startswith(doc.text.rstrip(line[-1]))
    assert doc.notes[0] == f"stdin has no byte-order mark; read it as UTF-16 {codec[-2:].upper()}"


@pytest.mark.parametrize("raw", [b"abc\ndef\nghi", "abcé".encode(), "ab\u20ac".encode(), b"abc"])
def test_whole_lines_never_cuts_a_character(raw):
    kept = whole_lines(raw)
    assert raw.startswith(kept) and kept.decode("utf-8")  # decodes: no character cut in two
    assert kept == (b"abc\ndef\n" if b"\n" in raw else kept)


def test_big_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.txt"
    with path.open("wb") as f:
        for _ in range(50):
            f.write(LINE * ((1 << 20) // len(LINE)))  # ~50 MB of text
    err, peak, seconds = measured(lambda: load_document(str(path), budget=budget()))
    assert isinstance(err, TmixError), err
    assert str(err).startswith(f"{path} is {human_size(path.stat().st_size)}, more than the model's 8192-token "
                               "context can hold"), err
    assert peak < 3 * CHUNK and seconds < 5  # only its first bytes were read


def test_big_file_with_truncate_reads_only_what_the_context_could_use(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(LINE * ((8 << 20) // len(LINE)))
    doc, peak, _ = measured(lambda: load_document(str(path), budget=budget(truncate=True)))
    assert doc.partial and len(doc.text) <= CAP.chars + textcap.MARGIN + textcap.TAIL + 2
    assert doc.notes == (f"read only the first 2.5 MiB of {path} (8.0 MiB in all) for --truncate",)
    assert peak < PARSE_PEAK


def test_text_within_the_cap_is_read_as_before(tmp_path):
    """A text longer than the context but within the cap: the same Document as without a budget."""
    path = tmp_path / "long.txt"
    path.write_text("A line of the report, numbered %d.\n" * 15000 % tuple(range(15000)))
    assert load_document(str(path), budget=budget(truncate=True)) == load_document(str(path))
    assert load_document(str(path), budget=budget()) == load_document(str(path))


def test_text_past_the_cap_without_truncate_is_refused_by_its_length(tmp_path):
    """Few enough bytes to be read, but more characters than the context could hold (the cap looked up from 256 KiB
    on): refused without tokenizing; with --truncate cut past the last token that could be kept."""
    path = tmp_path / "wide.txt"
    path.write_text("word " * 80000)  # 400000 characters: over a 1024 x 100 cap, within its 409600 bytes
    small = TextCap(1024, 100)
    with pytest.raises(TmixError, match=r"wide.txt has 399999 characters of text, more than the model's 1024-token"):
        load_document(str(path), budget=budget(cap=small))
    doc = load_document(str(path), budget=budget(truncate=True, cap=small))
    assert doc.partial and len(doc.text) <= small.chars + textcap.MARGIN + textcap.TAIL + 2
    assert doc.text.startswith("word word") and doc.text.endswith("word word")


def test_documents_together_past_the_cap_are_refused(tmp_path):
    parts = []
    for name in ("a.txt", "b.txt"):
        parts.append(tmp_path / name)
        parts[-1].write_text("Some words of the part.\n" * 16000)  # 384000 characters each, under the cap alone
    with pytest.raises(TmixError, match=r"a.txt \+ b.txt have \d+ characters of text together, more than"):
        load_documents([str(p) for p in parts], budget=budget())
    doc = load_documents([str(p) for p in parts], budget=budget(truncate=True))
    assert not doc.partial and len(doc.text) > CAP.chars  # each part is cut (or not) on its own later


def test_endless_stream_without_a_known_cap_stops_at_a_fixed_one(monkeypatch):
    """Before the model's files are on disk (its first run converts it) a fixed cap bounds the read."""
    monkeypatch.setattr(textcap, "FALLBACK_TEXT_BYTES", 3 << 20)
    stream = Endless(LINE)
    with pytest.raises(TmixError, match="stdin is over 3.0 MiB, more than tmix reads of a text before it knows"):
        load_document("-", stdin=stream, budget=budget(cap=None))
    assert stream.given <= (3 << 20) + CHUNK


def test_long_pdf_is_read_only_until_its_text_is_past_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "SMALL", 0)  # a few pages stand for hundreds
    pdf = FPDF()
    for i in range(1, 13):
        pdf.add_page()
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 5, f"Page {i} text. " + "Lorem ipsum dolor sit amet, consectetur. " * 40)
    path = tmp_path / "long.pdf"
    path.write_bytes(bytes(pdf.output()))
    small = TextCap(10, 10)  # 100 characters; stops once past 100 + MARGIN + TAIL + 2
    with pytest.raises(TmixError, match=r"long.pdf has at least \d+ characters of text by page \d, .*; use --pages to "
                                        r"pick pages, or --truncate to keep its beginning"):
        load_document(str(path), budget=budget(cap=small))
    doc = load_document(str(path), budget=budget(truncate=True, cap=small))
    assert doc.partial and doc.pages < 12 and doc.text.startswith("Page 1 text.")
    assert doc.notes[0] == (f"read {path} only up to page {doc.pages}, "
                           "already more than the model's context could hold")
    whole = load_document(str(path))
    assert whole.pages == 12 and not whole.partial


def test_files_cap_reads_config_and_tokenizer_files(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    tokenizer = {"model": {"type": "BPE", "vocab": {"a": 0, "Ġthe": 1, "=" * 40: 2}},
                 "added_tokens": [{"content": "<|a_long_special_token|>"}]}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert files_cap(str(folder)) == TextCap(4096, 40)
    unigram = {"model": {"type": "Unigram", "vocab": [["▁a", 0.0], ["▁abcdefgh", -1.0]]}}
    (folder / "tokenizer.json").write_text(json.dumps(unigram))
    assert files_cap(str(folder)) == TextCap(4096, 9)
    hub = tmp_path / "hub" / "models--org--name"
    (hub / "refs").mkdir(parents=True)
    (hub / "refs" / "main").write_text("abc123")
    (hub / "snapshots").mkdir()
    folder.rename(hub / "snapshots" / "abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert files_cap("org/name") == TextCap(4096, 9)
    assert files_cap("org/missing") is None and files_cap(str(tmp_path / "nothing")) is None


@pytest.mark.model
def test_files_cap_of_the_default_model():
    assert files_cap(None) == TextCap(8192, 81)


@pytest.mark.parametrize("kind", bigdocs.KINDS)
def test_long_office_epub_and_html_documents_are_read_only_until_their_text_is_past_the_cap(kind, tmp_path,
                                                                                          monkeypatch):
    """Read paragraph by paragraph (slide, chapter, chunk of HTML) until the text is surely past the cap: refused
    by what was read, or with --truncate cut exactly where the whole text would have been."""
    monkeypatch.setattr(documents, "SMALL", 0)  # 2000 paragraphs stand for a book
    monkeypatch.setattr(inputs, "SMALL", 0)  # an HTML file past its first chunk is read again in chunks
    monkeypatch.setattr(htmltext, "HTML_CHUNK", 4096)
    path = bigdocs.write(tmp_path / f"long.{kind}", bigdocs.paragraphs(2000))
    small = TextCap(10, 10)  # 100 characters; stops once past 100 + MARGIN + TAIL + 2
    whole = load_document(str(path))
    with pytest.raises(TmixError, match=rf"long.{kind} has at least \d+ characters of text, more than the model's "
                                        "10-token context") as info:
        load_document(str(path), budget=budget(cap=small))
    read = int(str(info.value).split(" has at least ")[1].split()[0])
    assert read < len(whole.text) / 4, (read, len(whole.text))
    doc = load_document(str(path), budget=budget(truncate=True, cap=small))
    assert doc.partial and doc.notes == (
        f"read only the beginning of {path}, already more than the model's context could hold",)
    assert doc.text[:-textcap.TAIL] == textcap.cut(whole.text, small)[:-textcap.TAIL]


def test_a_docx_of_32_mb_of_text_costs_what_the_context_could_use_not_its_size(tmp_path):
    path = bigdocs.write(tmp_path / "big.docx", bigdocs.paragraphs(320_000))
    err, refused_peak, refused_s = measured(lambda: load_document(str(path), budget=budget()))
    assert isinstance(err, TmixError) and "big.docx has at least" in str(err), err
    doc, peak, seconds = measured(lambda: load_document(str(path), budget=budget(truncate=True)))
    assert doc.partial and len(doc.text) <= CAP.chars + textcap.MARGIN + textcap.TAIL + 2
    assert max(peak, refused_peak) < PARSE_PEAK and max(seconds, refused_s) < 10, (peak, refused_peak, seconds)


def test_an_html_page_of_32_mb_is_hashed_and_parsed_in_chunks_never_held_whole(tmp_path):
    """Its sha256 (the KV cache's key) is the whole file's and its kept text what the page held in memory gives,
    while no more than a few chunks of it are held at a time."""
    path = bigdocs.write(tmp_path / "big.html", bigdocs.paragraphs(320_000))
    raw = path.read_bytes()
    err, refused_peak, refused_s = measured(lambda: load_document(str(path), budget=budget()))
    assert isinstance(err, TmixError) and "big.html has at least" in str(err), err
    doc, peak, seconds = measured(lambda: load_document(str(path), budget=budget(truncate=True)))
    assert doc.partial and doc.sha256 == hashlib.sha256(raw).hexdigest()
    held = load_document("-", stdin=io.BytesIO(raw), budget=budget(truncate=True))
    assert (doc.text, doc.sha256) == (held.text, held.sha256)
    assert max(peak, refused_peak) < PARSE_PEAK < len(raw) and max(seconds, refused_s) < 10, (peak, refused_peak)


class Spool:
    """A temp file that takes `room` bytes at most, then fails as a full disk does; records each one made."""

    made: list[Spool] = []

    def __init__(self, room: int) -> None:
        self.file, self.room, self.closed = TEMP_FILE(buffering=0), room, False
        Spool.made.append(self)

    def write(self, data: bytes) -> int:
        if not self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.file.write(data[:self.room])
        self.room -= written
        return written

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.closed = True
        self.file.close()


@pytest.mark.parametrize("room", [1 << 40, 3 << 20, 0, None])  # disk room; None: no temp file can be made
def test_html_on_stdin_is_copied_to_a_temp_file_and_read_in_chunks(tmp_path, monkeypatch, room):
    """An HTML page on stdin cannot be read twice: it goes to an unnamed temp file, read again in chunks to hash,
    decode and parse it, as a file is, never held whole; the same Document as from its file. Without a temp file, or
    once the disk is full, it is held, as it was."""
    def spool(buffering: int = -1) -> Spool:
        if room is None:
            raise OSError(errno.EROFS, "Read-only file system")
        return Spool(room)

    Spool.made = []
    monkeypatch.setattr(inputs.tempfile, "TemporaryFile", spool)
    path = bigdocs.write(tmp_path / "big.html", bigdocs.paragraphs(80_000))
    raw = path.read_bytes()
    doc = load_document("-", stdin=io.BytesIO(raw), budget=budget(truncate=True))
    assert (doc.text, doc.sha256) == (load_document(str(path), budget=budget(truncate=True)).text,
                                      hashlib.sha256(raw).hexdigest())
    assert all(made.closed for made in Spool.made) and len(Spool.made) == (room is not None)


def test_an_html_page_of_32_mb_on_stdin_is_never_held_whole(tmp_path):
    stdin = io.BytesIO(bigdocs.write(tmp_path / "big.html", bigdocs.paragraphs(320_000)).read_bytes())
    doc, peak, seconds = measured(lambda: load_document("-", stdin=stdin, budget=budget(truncate=True)))
    assert doc.partial and peak < PARSE_PEAK < len(stdin.getbuffer()) and seconds < 10, (peak, seconds)


def test_html_on_stdin_past_the_container_cap_is_refused(monkeypatch):
    monkeypatch.setattr(textcap, "MAX_CONTAINER_BYTES", 2 << 20)
    page = b"<!doctype html><html><body>" + b"<p>The board met.</p>\n" * 200_000
    with pytest.raises(TmixError, match=r"^stdin is over 2.0 MiB: tmix reads PDF, ZIP-based and HTML documents of up "
                                        r"to 2.0 MiB$"):
        load_document("-", stdin=io.BytesIO(page), budget=budget(truncate=True))


def test_an_html_file_read_in_chunks_is_decoded_by_all_its_bytes(tmp_path, monkeypatch):
    """A byte that is not UTF-8 at the end of a page read in chunks makes all of it Windows-1252, as when held."""
    monkeypatch.setattr(inputs, "SMALL", 0)
    monkeypatch.setattr(htmltext, "HTML_CHUNK", 4096)
    path = bigdocs.write(tmp_path / "page.html", bigdocs.paragraphs(3000))
    path.write_bytes(path.read_bytes().replace(b"</body>", b"<p>Caf\xe9 \x93menu\x94</p></body>"))
    doc = load_document(str(path))
    assert doc.text.endswith("Café “menu”") and doc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_shrinks_while_it_is_read_in_chunks_is_one_line(tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(b"<p>short</p>")
    with pytest.raises(TmixError, match=r"page.html changed while it was read: it is shorter now"):
        list(file_chunks(str(path), 100)())
    assert b"".join(file_chunks(str(path), 5)()) == b"<p>sh"


@pytest.mark.parametrize("page, where", [("a<main>b", 1), ("a<MAIN id=x>b<main>", 13), ("<mainly>", -1),
                                         ("x<main", 1), ("<main-x>", 0), ("<mai", -1)])
def test_the_last_main_tag_is_found_in_any_pieces(page, where):
    """Where a page's last <main> tag starts, found piece by piece as the page is decoded: wherever it is cut."""
    for cut in range(len(page) + 1):
        assert htmlcodec.last_main([page[:cut], "", page[cut:]]) == where, cut


def test_html_read_in_part_waits_for_a_main_element_further_on(tmp_path, monkeypatch):
    """The text before a page's <main> is left out of its text, so reading does not stop on it."""
    monkeypatch.setattr(documents, "SMALL", 0)
    monkeypatch.setattr(inputs, "SMALL", 0)
    monkeypatch.setattr(htmltext, "HTML_CHUNK", 4096)
    menu = "".join(f"<p>Menu {p}</p>" for p in bigdocs.paragraphs(500))
    body = "".join(f"<p>{p}</p>" for p in bigdocs.paragraphs(500))
    path = tmp_path / "page.html"
    path.write_text(f"<html><body><!-- not a <main> -->{menu}<main>{body}</main></body></html>")
    small = TextCap(10, 10)
    whole = load_document(str(path))
    assert whole.text.startswith("Paragraph 0:") and "Menu" not in whole.text
    doc = load_document(str(path), budget=budget(truncate=True, cap=small))
    assert doc.partial and doc.text[:-textcap.TAIL] == textcap.cut(whole.text, small)[:-textcap.TAIL]
