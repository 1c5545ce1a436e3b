"""How much text a model could use: its context times its longest token in characters (no token covers more), so
a longer text needs more tokens than the context holds and is refused, or cut, without being tokenized; and how many
bytes of an input are read for it, by the input's kind (raw_limit)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tmixcli.charsets import BOMS, utf16_codec
from tmixcli.errors import TmixError
from tmixcli.htmltext import looks_html
from tmixcli.inputs import HEAD, Input, whole_lines
from tmixcli.modelinfo import config_limits, model_folder
from tmixcli.filekind import open_regular, read_regular
from tmixcli.pdftext import PDF_END, is_pdf
from tmixcli.sizes import human_size
from tmixcli.textfile import refuse_binary
from tmixcli.ziputil import ZIP_MAGIC

FALLBACK_TEXT_BYTES = 64 << 20  # bytes of text read when the model's cap is not known yet (its files not on disk)
MAX_CONTAINER_BYTES = 512 << 20  # bytes of a PDF, ZIP-based or HTML document (its markup is not text)
BYTES_PER_CHAR = 4  # no text encoding tmix reads spends more bytes on a character (UTF-8, UTF-16, UTF-32, cp1252)
MARGIN = 4096  # characters past the cap searched for a line break to cut at
TAIL = 256  # characters of a cut text's end kept, so the prompt around the text tokenizes as around the whole


@dataclass(frozen=True)
class TextCap:
    """The most characters of document text a model's context could hold: context x longest token."""

    context: int
    longest: int

    @property
    def chars(self) -> int:
        return self.context * self.longest

    @property
    def text_bytes(self) -> int:
        """Raw bytes of a text file past which it surely holds more than `chars` characters."""
        return self.chars * BYTES_PER_CHAR


@dataclass
class Budget:
    """What a run may read of its documents: the model's TextCap (looked up once, when an input is large enough to
    need it) and whether --truncate keeps the beginning of a longer text instead of refusing it."""

    truncate: bool = False
    find: Callable[[], TextCap | None] = field(default=lambda: None)

    @functools.cached_property
    def cap(self) -> TextCap | None:
        return self.find()


def cap_of(context: int, vocab: Iterable[str]) -> TextCap:
    """The cap for a context and a tokenizer's vocabulary (its token strings, byte-level or not)."""
    return TextCap(context, max(map(len, vocab), default=1) or 1)


def cut(text: str, cap: TextCap) -> str:
    """`text` without what lies past any token the model could keep (--truncate): its first `cap.chars` characters
    and up to the next line break, then its last TAIL characters; unchanged when it is not much longer than that."""
    if len(text) <= cap.chars + MARGIN + TAIL + 2:
        return text
    end = text.rfind("\n", cap.chars, cap.chars + MARGIN)
    if end < 0:
        end = cap.chars + MARGIN
    return text[:end] + "\n\n" + text[-TAIL:]


def too_much(subject: str, cap: TextCap | None, pdf: bool = False) -> str:
    """The error for a document beyond what the model could read, e.g. subject "big.txt is 48 MiB"."""
    hint = "use --pages to pick pages, or --truncate to keep its beginning" if pdf else \
        "use --truncate to keep its beginning"
    if cap is None:
        return f"{subject}, more than tmix reads of a text before it knows the model's context; {hint}"
    return (f"{subject}, more than the model's {cap.context}-token context can hold (at most {cap.chars} characters: "
            f"{cap.context} tokens of up to {cap.longest}); {hint}")


def files_cap(spec: str | None) -> TextCap | None:
    """The cap of a --model value from its config.json and tokenizer.json alone (no torch): None when they are not
    on disk yet (a model not converted or downloaded) or do not say."""
    folder = model_folder(spec)
    if folder is None:
        return None
    try:
        context = config_limits(json.loads(read_regular(folder / "config.json"))).context
        data = json.loads(read_regular(folder / "tokenizer.json"))
        vocab = data["model"]["vocab"]
        words = list(vocab) if isinstance(vocab, dict) else [str(piece[0]) for piece in vocab]
        words += [str(t.get("content", "")) for t in data.get("added_tokens") or []]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return cap_of(context, words) if context is not None and words else None


def raw_limit(label: str, budget: Budget, head: bytes, size: int | None) -> int:
    """Bytes read at most: a text's reach in the model's context, or a fixed cap for PDF, ZIP-based and HTML documents
    (their size says little about their text), of which an HTML file's head alone is held (html_page); a file known
    to be bigger is refused unread, unless --truncate."""
    end = input_end(label, size)
    container = _container(head, label, end)
    cap = None if container else budget.cap
    most = MAX_CONTAINER_BYTES if container else cap.text_bytes if cap else FALLBACK_TEXT_BYTES
    if size is not None and size > most and (container or not budget.truncate):
        _refuse_input(Input("", label, head, True, size), budget, container)
    return HEAD if size is not None and html_page(head, label, end) else most


def input_end(path: str, size: int | None) -> bytes:
    """The last bytes of a file of which only the first are held, where is_pdf looks for a PDF's end; b"" for stdin
    and other streams, whose end is not known yet."""
    if size is None or path == "-":
        return b""
    try:
        fd = open_regular(path)
    except OSError:
        return b""
    try:
        return os.pread(fd, PDF_END, max(0, size - PDF_END))
    except OSError:
        return b""
    finally:
        os.close(fd)


def html_page(head: bytes, label: str, end: bytes = b"") -> bool:
    """Whether an input that starts with `head` (and ends with `end`, where known) is an HTML page, not a PDF or
    ZIP-based document that names one. A file's is read again in chunks, to hash and to parse it, rather than held
    whole; a stream's is copied to a temp file (inputs.read_capped) to be read so too."""
    return not head.startswith(ZIP_MAGIC) and not is_pdf(head, end) and looks_html(head, label)


def _container(head: bytes, label: str, end: bytes) -> bool:
    """Whether an input that starts with `head` (and ends with `end`, where known) is a PDF, a ZIP-based document or
    an HTML page, read up to MAX_CONTAINER_BYTES whatever the model's cap."""
    return is_pdf(head, end) or head.startswith(ZIP_MAGIC) or looks_html(head, label)


def cut_input(got: Input, budget: Budget, end: bytes) -> bytes:
    """The bytes kept of an input that went on past its limit: the whole lines of a text with --truncate."""
    container = _container(got.raw[:HEAD], got.label, end)
    if container or not budget.truncate:
        _refuse_input(got, budget, container)
    return whole_lines(got.raw)


def _refuse_input(got: Input, budget: Budget, container: bool) -> None:
    """The one-line error for an input past its limit: binary data, a PDF, ZIP-based or HTML document (`container`)
    too big to read, or a text longer than the model's context could hold."""
    head = got.raw[:HEAD]
    if container:
        raise TmixError(f"{got.label} is {got.amount()}: tmix reads PDF, ZIP-based and HTML documents of up to "
                        f"{human_size(MAX_CONTAINER_BYTES)}")
    if not head.startswith(BOMS) and utf16_codec(head) is None:  # UTF-16/32 text has NUL bytes
        refuse_binary(got.raw, got.label)
    raise TmixError(too_much(f"{got.label} is {got.amount()}", budget.cap))
