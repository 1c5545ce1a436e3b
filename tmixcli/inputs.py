"""A document's bytes from a file, a device or stdin, read in chunks and never past a limit: an endless stream or a
huge file costs no more memory or time than the limit."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from tmixcli import checkpoints, serving
from tmixcli.charsets import BOM_CODECS, bare_utf16_codec, utf16_codec
from tmixcli.errors import TmixError
from tmixcli.filekind import document_name, names_stdin, not_a_file, open_regular
from tmixcli.sizes import human_size

CHUNK = 1 << 20
SMALL = 1 << 18  # bytes read before the limit is asked for (which may look up the model's files)
HEAD = 4096  # the first bytes, which tell the limit the input's kind
Chunks = Callable[[], Iterator[bytes]]  # an input's bytes from the start, a piece at a time, anew at each call


@dataclass(frozen=True)
class Input:
    """What was read of one input; `more` when it went on past `raw` (left unread, or in `spool`), `size` when known (a
    file, or a stream copied to a temp file)."""

    name: str
    label: str
    raw: bytes
    more: bool = False
    size: int | None = None
    spool: BinaryIO | None = None  # an unnamed temp file holding all `size` bytes of a stream, `raw` their head
    seen: int = 0  # bytes read of a stream that went on past them, when `raw` holds only its head

    def amount(self) -> str:
        """How big the input is, for messages: "48.0 MiB", or "over 2.5 MiB" for a stream read only so far."""
        if self.size is not None and self.size >= len(self.raw):
            return human_size(self.size)
        return f"over {human_size(max(self.seen, len(self.raw)))}"

    def close(self) -> None:
        """Drop the temp file of a spooled stream (its bytes were in no other place)."""
        if self.spool is not None:
            self.spool.close()


def read_input(path: str, stdin: BinaryIO | None, limit: Callable[[bytes, int | None], int],
               spool: Callable[[bytes], bool] | None = None) -> Input:
    """Read `path` (or stdin for "-") up to limit(its first HEAD bytes, its size if known) bytes; a stream (stdin, a
    FIFO, a device) whose first bytes `spool` says to is copied to a temp file instead of held (read_capped). Errors
    are one-line TmixErrors (`limit` may raise one too, refusing a file by its size before it is read)."""
    if stdin is None and sys.stdin is None and names_stdin(path):  # Python's stdin when fd 0 is closed (`<&-`)
        raise TmixError("stdin is closed" if path == "-" else f"{path}: stdin is closed")
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        try:
            got = read_capped(stream, lambda head: limit(head, None), spool)
        except (OSError, ValueError) as exc:
            raise TmixError(f"cannot read stdin: {exc}") from None
        return replace(got, name="stdin", label="stdin")
    if not path:
        raise TmixError("empty document path")
    try:
        with _open(path) as stream:
            st = os.fstat(stream.fileno())
            known = st.st_size if stat.S_ISREG(st.st_mode) else None
            got = read_capped(stream, lambda head: limit(head, known), spool if known is None else None)
    except FileNotFoundError:
        if "://" in path:
            raise TmixError(f"{path}: tmix reads local files, not URLs; download it first "
                            "(e.g. curl -L -o page.html URL)") from None
        raise TmixError(f"{path}: {not_a_file(Path(path)) or 'no such file'}") from None
    except IsADirectoryError:
        raise TmixError(f"{path} is a directory, not a document") from None
    except PermissionError:
        raise TmixError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise TmixError(f"cannot read {path}: {exc.strerror or exc}") from None
    return replace(got, name=document_name(path), label=path, size=got.size if known is None else known)


def _open(path: str) -> BinaryIO:
    """`path` opened for reading; inside `tmix serve` only a regular file, refused without waiting on a FIFO or device
    (its client reads those itself: cli_open.maybe_forward)."""
    return os.fdopen(open_regular(path), "rb") if serving.served else open(path, "rb")


def file_chunks(path: str, size: int) -> Chunks:
    """A file's first `size` bytes (its size when it was first read), read from the start in CHUNK pieces at each
    call; a file that no longer holds them or cannot be read is a one-line TmixError."""
    def chunks() -> Iterator[bytes]:
        left = size
        try:
            with _open(path) as stream:
                while left:
                    piece = stream.read(min(CHUNK, left))
                    if not piece:
                        raise TmixError(f"{path} changed while it was read: it is shorter now")
                    checkpoints.check()
                    left -= len(piece)
                    yield piece
        except OSError as exc:
            raise TmixError(f"cannot read {path}: {exc.strerror or exc}") from None
    return chunks


def held_chunks(raw: bytes) -> Chunks:
    """Bytes in memory as Chunks."""
    return lambda: (raw[at:at + CHUNK] for at in range(0, len(raw), CHUNK))


def sha256(chunks: Chunks) -> str:
    """The hex sha256 of all the bytes `chunks` gives, the same as of them whole."""
    digest = hashlib.sha256()
    for piece in chunks():
        digest.update(piece)
    return digest.hexdigest()


def read_capped(stream: BinaryIO, limit: Callable[[bytes], int], spool: Callable[[bytes], bool] | None = None) -> Input:
    """The stream's bytes, at most limit(first bytes) of them (asked once more than SMALL came), as an Input (`more`
    when more followed; no name yet). When spool(first bytes) says so, all of them go to an unnamed temp file instead
    (_spooled), `raw` holding only their head; held in memory when no temp file can be made or written."""
    buf = bytearray()
    most: int | None = None
    while True:
        piece = stream.read(CHUNK if most is None else min(CHUNK, most + 1 - len(buf)))
        if not piece:
            return Input("", "", bytes(buf))
        checkpoints.check()
        buf += piece
        if most is None and len(buf) > SMALL:
            most = max(0, limit(bytes(buf[:HEAD])))
            if spool is not None and spool(bytes(buf[:HEAD])):
                got = _spooled(stream, buf, most)
                if got is not None:
                    return got
        if most is not None and len(buf) > most:
            del buf[most:]
            return Input("", "", bytes(buf), True)


def _spooled(stream: BinaryIO, buf: bytearray, most: int) -> Input | None:
    """The stream's bytes, `buf` first, copied to an unnamed temp file (gone from the disk from the start): an Input
    of their head, their count and the file, or of their head alone (`more`) past `most` of them; None when no temp
    file can be made or written, `buf` then holding all the bytes read so far."""
    try:
        spool = tempfile.TemporaryFile(buffering=0)
    except OSError:
        return None
    total, piece = 0, bytes(buf)
    try:
        while piece and total <= most:
            try:
                while piece:
                    written = spool.write(piece)
                    if not written:
                        raise OSError("the temp file takes no more bytes")
                    total, piece = total + written, piece[written:]
            except OSError:  # the disk is full: hold the bytes, as before
                buf[:] = os.pread(spool.fileno(), total, 0) + piece
                spool.close()
                return None
            piece = stream.read(min(CHUNK, most + 1 - total))
            checkpoints.check()
    except BaseException:
        spool.close()
        raise
    if total > most:
        spool.close()
        return Input("", "", bytes(buf[:HEAD]), True, seen=most)
    return Input("", "", bytes(buf[:HEAD]), True, total, spool)


def spool_chunks(spool: BinaryIO, size: int) -> Chunks:
    """The `size` bytes of a spooled stream's temp file, read from the start in CHUNK pieces at each call."""
    def chunks() -> Iterator[bytes]:
        at = 0
        while at < size:
            piece = os.pread(spool.fileno(), min(CHUNK, size - at), at)
            if not piece:
                raise TmixError("the temp copy of a stream ended early")
            checkpoints.check()
            at += len(piece)
            yield piece
    return chunks


def whole_lines(raw: bytes) -> bytes:
    """The text bytes of an input read only so far, up to its last line break, so no character is cut in two."""
    utf16 = utf16_codec(raw) or bare_utf16_codec(raw)  # UTF-16 without a byte-order mark, as textfile reads it
    for bom, codec, unit in (*BOM_CODECS, (b"", utf16, 2)) if utf16 else BOM_CODECS:
        if raw.startswith(bom):
            newline = "\n".encode(codec)
            at = raw.rfind(newline)
            while at >= 0 and (at - len(bom)) % unit:
                at = raw.rfind(newline, 0, at + len(newline) - 1)
            if at >= 0:
                return raw[:at + len(newline)]
            return raw[:len(bom) + max(0, (len(raw) - len(bom)) // unit - 1) * unit]
    at = raw.rfind(b"\n")
    if at >= 0:
        return raw[:at + 1]
    end = len(raw)
    while end > 0 and len(raw) - end < 3 and 0x80 <= raw[end - 1] < 0xC0:  # a UTF-8 character's continuation bytes
        end -= 1
    return raw[:end - 1] if end > 0 and raw[end - 1] >= 0xC0 else raw[:end]
