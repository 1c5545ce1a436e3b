"""A GGUF file's header walked without torch (its metadata and tensor table): the architecture it names and where its
tensor data ends, so a file of another model or one cut short is refused before a conversion is announced."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar metadata value types
STRING, ARRAY, UINT32 = 8, 9, 4
VERSIONS = (2, 3)  # those whose counts and lengths are 64-bit, as the gguf reader transformers uses takes
DEFAULT_ALIGNMENT = 32
CHUNK = 1 << 20


class EndsInHeader(Exception):
    """The file ends before its header does."""


@dataclass(frozen=True)
class GgufHeader:
    """What the header says: general.architecture (None if absent), the byte where the last tensor's data ends
    (None for a tensor type not known here or a version not walked) and how many numbers the tensors hold."""

    architecture: str | None
    data_end: int | None
    elements: int | None = None


class _Bytes:
    """The file's bytes from its start, read in chunks as far as the walk needs them."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size, self.data, self.at = f, size, bytearray(), 0

    def take(self, n: int) -> int:
        """Where the next `n` bytes start (read from the file if need be); EndsInHeader past the end of the file."""
        start, end = self.at, self.at + n
        if end > self.size:
            raise EndsInHeader
        while len(self.data) < end:
            more = self.f.read(max(end - len(self.data), CHUNK))
            if not more:
                raise EndsInHeader
            self.data += more
        self.at = end
        return start

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack_from(self.data, self.take(fmt.size))

    def string(self) -> bytes:
        n, = self.unpack(U64)
        start = self.take(n)
        return bytes(self.data[start:start + n])


U32, U64 = struct.Struct("<I"), struct.Struct("<Q")


def read_header(f: BinaryIO, size: int) -> GgufHeader:
    """Walk the header of the GGUF file `f` (`size` bytes, read from its start, past the magic); EndsInHeader where
    the file ends inside it."""
    at = _Bytes(f, size)
    at.take(4)
    version, = at.unpack(U32)
    if version not in VERSIONS:
        return GgufHeader(None, None)
    tensors, count = at.unpack(struct.Struct("<QQ"))
    if tensors * 24 + count * 12 > size:  # each takes at least that many bytes: a header that cannot fit the file
        raise EndsInHeader
    meta = {}
    for _ in range(count):
        key = at.string()
        kind, = at.unpack(U32)
        value = _value(at, kind)
        if value is _UNKNOWN:
            return GgufHeader(_text(meta.get(b"general.architecture")), None)
        if key in (b"general.architecture", b"general.alignment"):
            meta[key] = value
    arch = _text(meta.get(b"general.architecture"))
    sizes = _type_sizes()
    walked = [_tensor_end(at, sizes) for _ in range(tensors)]
    ends, elements = [end for end, _ in walked], sum(count for _, count in walked) or None
    if not ends or None in ends:
        return GgufHeader(arch, None, elements)
    align = meta.get(b"general.alignment")
    align = align if isinstance(align, int) and align > 0 else DEFAULT_ALIGNMENT
    return GgufHeader(arch, -(-at.at // align) * align + max(ends), elements)


_UNKNOWN = object()


def _value(at: _Bytes, kind: int) -> object:
    """One metadata value: a string or an integer as read, others skipped (None); _UNKNOWN for a type not known."""
    if kind == STRING:
        return at.string()
    if kind == UINT32:
        return at.unpack(U32)[0]
    if kind in VALUE_SIZES:
        at.take(VALUE_SIZES[kind])
        return None
    if kind != ARRAY:
        return _UNKNOWN
    item, n = at.unpack(struct.Struct("<IQ"))
    if item == STRING:
        for _ in range(n):
            length, = at.unpack(U64)
            at.take(length)
        return None
    if item not in VALUE_SIZES:
        return _UNKNOWN
    at.take(n * VALUE_SIZES[item])
    return None


def _type_sizes() -> dict[int, tuple[int, int]]:
    """Each ggml tensor type's (elements per block, bytes per block), from the gguf package transformers reads with;
    none without it (where the conversion itself will say gguf is missing), so no tensor's end is known."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:
        return {}

    return {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()}


def _tensor_end(at: _Bytes, sizes: dict[int, tuple[int, int]]) -> tuple[int | None, int]:
    """Where one tensor's data ends, counted from the start of the data (None for a type not known here), and how
    many numbers it holds."""
    at.string()
    dims, = at.unpack(U32)
    shape = at.unpack(struct.Struct(f"<{dims}Q"))
    kind, offset = at.unpack(struct.Struct("<IQ"))
    count = 1
    for n in shape:
        count *= n
    if kind not in sizes:
        return None, count
    block, nbytes = sizes[kind]
    return offset + count // block * nbytes, count


def _text(value: object) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None
