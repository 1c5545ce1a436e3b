"""ZIP-based documents (.docx, .odt, .pptx, .epub): members read with size and damage checks, XML parsed."""

from __future__ import annotations

import io
import zipfile
from xml.etree import ElementTree

from tmixcli.errors import TmixError

MAX_MEMBER = 256 * 1024 * 1024  # bytes of one uncompressed ZIP member (guards against zip bombs)


def open_zip(raw: bytes, label: str) -> zipfile.ZipFile:
    """The ZIP archive in `raw`; a damaged one is a one-line TmixError."""
    try:
        return zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TmixError(f"{label} is a damaged ZIP-based document ({exc})") from None


def member(zf: zipfile.ZipFile, name: str, label: str) -> bytes:
    """One member's bytes, refusing missing, encrypted, damaged or oversized members."""
    try:
        info = zf.getinfo(name)
        if info.file_size > MAX_MEMBER:
            raise TmixError(f"{label}: {name} is too large ({info.file_size >> 20} MiB uncompressed)")
        return zf.read(info)
    except KeyError:
        raise TmixError(f"{label} is damaged: it has no {name}") from None
    except RuntimeError as exc:  # encrypted member
        raise TmixError(f"{label} cannot be read: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise TmixError(f"{label} is damaged ({name}: {exc})") from None


def parse_xml(data: bytes, label: str) -> ElementTree.Element:
    """Parsed XML; invalid XML is a one-line TmixError naming the file."""
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise TmixError(f"{label} is damaged: invalid XML ({exc})") from None


def join_blocks(blocks: list[str]) -> str:
    """Non-empty text blocks, one per line."""
    return "\n".join(b for b in blocks if b.strip())
