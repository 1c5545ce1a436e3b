"""The safetensors framing (an 8-byte little-endian header length, then a JSON header), read in one place for KV files
(kvheader) and model weights (weightfiles), which each say in their own words what is wrong; no torch."""

from __future__ import annotations

import json
import os
import struct
from typing import Any, BinaryIO

MAX_HEADER_BYTES = 100 * 1024 * 1024


class FramingError(ValueError):
    """Why a file is not safetensors framing: `kind` is "not_safetensors" (no length and "{"), "too_long" (a header
    length past MAX_HEADER_BYTES), "truncated" (the file ends inside its header), "not_json" or "not_object"; with the
    header length `n`, the file's `size` and its first bytes `head`."""

    def __init__(self, kind: str, n: int = 0, size: int = 0, head: bytes = b"") -> None:
        super().__init__(kind)
        self.kind, self.n, self.size, self.head = kind, n, size, head


def read_header(f: BinaryIO) -> tuple[dict[str, Any], int, int]:
    """The JSON header of the safetensors file open as `f` (read from its start), its length and the file's size;
    FramingError where the framing or the header is not safetensors', OSError where the file cannot be read."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(9)
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    if len(head) < 9 or head[8:9] != b"{":
        raise FramingError("not_safetensors", n, size, head)
    if n > MAX_HEADER_BYTES:
        raise FramingError("too_long", n, size, head)
    if n > size - 8:
        raise FramingError("truncated", n, size, head)
    f.seek(8)
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FramingError("not_json", n, size, head) from None
    if not isinstance(header, dict):
        raise FramingError("not_object", n, size, head)
    return header, n, size
