"""The KV file format on disk: the header a file is written with (planned here), its safetensors framing, header and
metadata validated by tmix itself (no torch), and the prefix ids read; the tensors are read by kvread.load_kv."""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tmixcli
from tmixcli import stheader
from tmixcli.errors import TmixError
from tmixcli.filekind import open_regular
from tmixcli.sizes import human_size
from tmixcli.stheader import FramingError

FORMAT_VERSION = "1"
# safetensors dtype -> (torch dtype name, item size); by name so that `tmix cache` never imports torch
ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
ST_NAMES = {f"torch.{name}": st for st, (name, _) in ST_DTYPES.items()}
DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16",
               "torch.float8_e4m3fn": "fp8_e4m3", "torch.float8_e5m2": "fp8_e5m2", "torch.float64": "fp64"}

if TYPE_CHECKING:
    import torch


def dtype_name(dtype: torch.dtype | str) -> str:
    """torch.bfloat16 -> "bf16"; strings pass through."""
    return dtype if isinstance(dtype, str) else DTYPE_NAMES.get(str(dtype), str(dtype).removeprefix("torch."))


def full_meta(meta: dict[str, str], n_tokens: int, n_layers: int, kv_heads: int, head_dim: int,
              dtype: torch.dtype) -> dict[str, str]:
    """`meta` plus the fields every KV file has (format, shape, dtype, version); all strings, or TmixError."""
    full = {**meta, "tmix_format": FORMAT_VERSION, "n_tokens": str(n_tokens), "num_layers": str(n_layers),
            "kv_heads": str(kv_heads), "head_dim": str(head_dim)}
    full.setdefault("dtype", dtype_name(dtype))
    full.setdefault("tmix_version", tmixcli.__version__)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in full.items()):
        raise TmixError("KV metadata must map strings to strings")
    return full


def plan_header(entries: list[tuple[str, torch.dtype, list[int]]], meta: dict[str, str],
                size: int | None = None) -> bytes:
    """The safetensors header (length prefix + JSON padded with spaces to 8 bytes, or to exactly `size` bytes in
    all) for tensors (name, dtype, shape) stored back to back in this order."""
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * ST_DTYPES[ST_NAMES[str(dtype)]][1]
        header[name] = {"dtype": ST_NAMES[str(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    pad = -len(raw) % 8 if size is None else size - 8 - len(raw)
    if pad < 0:
        raise TmixError(f"KV metadata too long for its header ({len(raw)} bytes, room for {size - 8})")
    return struct.pack("<Q", len(raw) + pad) + raw + b" " * pad


def read_header(path: Path, check_data: bool = True) -> tuple[dict[str, Any], int, int]:
    """Validate the safetensors framing ourselves (the tensors' data spans too unless not `check_data`); returns
    (header, header_len, file_size)."""
    path = Path(path)
    with os.fdopen(_open(path), "rb") as f:
        try:
            header, n, size = stheader.read_header(f)
        except FramingError as err:
            raise TmixError(_framing_error(path, err)) from None
        except OSError as err:
            raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from None
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise TmixError(f"{path}: corrupt KV file (metadata must map strings to strings)")
    if check_data:
        _check_tensors(path, header, size - 8 - n)
    return header, n, size


def _open(path: Path) -> int:
    """A read-only descriptor of the KV file `path`, opened without waiting on what is no regular file (a FIFO or a
    device swapped in after a check would hold a server for good): TmixError for that."""
    try:
        return open_regular(str(path))
    except FileNotFoundError:
        raise TmixError(f"KV file not found: {path}") from None
    except IsADirectoryError:
        raise TmixError(f"{path} is a directory, not a KV file") from None
    except PermissionError:
        raise TmixError(f"cannot read KV file {path}: permission denied") from None
    except OSError as err:
        raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from None


def _framing_error(path: Path, err: FramingError) -> str:
    """What is wrong with a KV file whose safetensors framing stheader refused."""
    if err.kind == "too_long":
        return f"{path}: safetensors header length {err.n} exceeds the 100 MB limit (corrupt or malicious file)"
    if err.kind == "truncated":
        return f"{path} is truncated: header needs {err.n} bytes, file has {err.size - 8}"
    if err.kind == "not_json":
        return f"{path} is not a safetensors KV file (header is not valid JSON)"
    if err.kind == "not_object":
        return f"{path} is not a safetensors KV file (header is not a JSON object)"
    pickle = err.head.startswith(b"PK\x03\x04") or err.head[:1] == b"\x80"
    return f"{path} is not a safetensors KV file" + (
        " (it looks like a PyTorch/pickle file; tmix never unpickles)" if pickle else "")


def _check_tensors(path: Path, header: dict[str, Any], data_len: int) -> None:
    """Every tensor: known dtype, sane shape, offsets inside the file, bytes == numel x itemsize."""
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise TmixError(f"{path}: corrupt KV file (entry {name!r} is not an object)")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in ST_DTYPES:
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} has unknown dtype {dtype!r})")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} has a bad shape)")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} has bad data offsets)")
        if offs[1] - offs[0] != math.prod(shape) * ST_DTYPES[dtype][1]:
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} size does not match its shape)")
        spans.append(tuple(offs))
    needed = max((stop for _, stop in spans), default=0)
    if needed > data_len:
        raise TmixError(f"{path} is truncated: it holds {data_len} of the {needed} bytes of tensor data its header "
                        f"lists ({human_size(needed - data_len)} missing)")
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise TmixError(f"{path}: corrupt KV file (tensor data overlaps or has gaps)")
        end = stop
    if end != data_len:
        raise TmixError(f"{path}: corrupt KV file ({data_len - end} trailing bytes after the tensors)")


def check_version(path: Path, meta: dict[str, str]) -> None:
    """TmixError unless `meta` is a tmix KV file's, of the format this tmix reads (saying whether a newer or an older
    tmix wrote it), so no file of another layout is read as KV."""
    version = meta.get("tmix_format")
    if version is None:
        raise TmixError(f"{path} is a safetensors file but not a tmix KV file (no tmix_format in metadata)")
    if version != FORMAT_VERSION:
        made_by = "a newer" if as_int(version) > int(FORMAT_VERSION) else "an older"
        raise TmixError(f"{path} has KV format version {version!r} (made by {made_by} tmix; this tmix "
                        f"reads version {FORMAT_VERSION}); re-run tmix prefill")


def as_int(s: str) -> int:
    """A metadata value as an int, -1 where it is not one: a damaged or foreign file's header lists, never fails."""
    try:
        return int(s)
    except ValueError:
        return -1


def read_meta(path: Path) -> dict[str, str]:
    """The validated metadata of a KV file; reads the header only."""
    header, _, _ = read_header(Path(path))
    meta = header.get("__metadata__", {})
    check_version(Path(path), meta)
    return meta


def read_checked_meta(path: Path) -> dict[str, str]:
    """read_meta, with its sizes (n_tokens, layers, heads) checked against the header's tensor shapes."""
    header, _, _ = read_header(Path(path))
    meta = header.get("__metadata__", {})
    check_version(Path(path), meta)
    expected_tensors(Path(path), header, meta)
    return meta


def inspect_kv(path: Path) -> dict[str, Any]:
    """Header facts for `tmix cache info`: metadata, tensor count, sizes, the size-formula check, and `damage`: why
    the tensors' data cannot be used (a truncated file, ...), or None."""
    path = Path(path)
    header, header_len, size = read_header(path, check_data=False)
    meta = header.get("__metadata__", {})
    check_version(path, meta)
    try:
        _check_tensors(path, header, size - 8 - header_len)
        damage = None
    except TmixError as err:
        damage = str(err)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    expected = None
    with contextlib.suppress(KeyError, ValueError, StopIteration):
        itemsize = next(ST_DTYPES[v["dtype"]][1] for k, v in tensors.items() if k.startswith("layers."))
        dims = [int(meta[k]) for k in ("num_layers", "kv_heads", "n_tokens", "head_dim")]
        expected = dims[0] * 2 * dims[1] * dims[2] * dims[3] * itemsize
    kv_bytes = None
    with contextlib.suppress(KeyError, TypeError, IndexError):
        kv_bytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in tensors.items() if k != "prefix_ids")
    return {"path": str(path), "metadata": meta, "tensor_count": len(tensors), "file_size": size,
            "header_bytes": header_len, "kv_bytes": kv_bytes, "expected_kv_bytes": expected,
            "size_matches": expected == kv_bytes and damage is None, "damage": damage}


def expected_tensors(path: Path, header: dict[str, Any], meta: dict[str, str]) -> tuple[int, int, int, int]:
    """Check the tensor set against the metadata; returns (layers, kv_heads, tokens, head_dim)."""
    try:
        dims = tuple(int(meta[k]) for k in ("num_layers", "kv_heads", "n_tokens", "head_dim"))
    except (KeyError, ValueError):
        raise TmixError(f"{path}: corrupt KV file (metadata lacks num_layers/kv_heads/n_tokens/head_dim)") \
            from None
    n_layers, heads, tokens, head_dim = dims
    names = {"prefix_ids"} | {f"layers.{i}.{kv}" for i in range(n_layers) for kv in ("keys", "values")}
    if set(header) - {"__metadata__"} != names:
        raise TmixError(f"{path}: KV file tensors do not match its num_layers={n_layers}")
    if header["prefix_ids"]["shape"] != [tokens] or header["prefix_ids"]["dtype"] != "I64":
        raise TmixError(f"{path}: KV file has {header['prefix_ids']['shape']} prefix ids "
                        f"but n_tokens={tokens}")
    for name in names - {"prefix_ids"}:
        if header[name]["shape"] != [1, heads, tokens, head_dim]:
            raise TmixError(f"{path}: tensor {name} has shape {header[name]['shape']}, metadata says "
                            f"[1, {heads}, {tokens}, {head_dim}]")
    return dims


def read_prefix_ids(path: Path) -> list[int]:
    """The prefix token ids a KV file holds (reads that tensor only)."""
    path = Path(path)
    header, head_len, _ = read_header(path)
    info = header.get("prefix_ids")
    if not isinstance(info, dict) or info["dtype"] != "I64" or len(info["shape"]) != 1:
        raise TmixError(f"{path}: corrupt KV file (no int64 prefix_ids)")
    start, stop = info["data_offsets"]
    fd = _open(path)
    try:
        data = os.pread(fd, stop - start, 8 + head_len + start)
    except OSError as err:
        raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) != stop - start:
        raise TmixError(f"{path} is truncated: its prefix ids end past the end of the file")
    return list(struct.unpack(f"<{len(data) // 8}q", data))

