"""A model folder's safetensors weight files judged by their framing before torch loads them (an 8-byte header
length, a JSON header, tensor data that ends where the file does), so a cut or damaged download is named in one line."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from tmixcli.kvheader import MAX_HEADER_BYTES
from tmixcli.paths import open_regular, read_regular

WHOLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def weights_problem(folder: Path) -> str | None:
    """What is wrong with the safetensors weights transformers would load from `folder` (model.safetensors, else the
    shards its index names): "model.safetensors is truncated (...)"; None where they look whole or are not there."""
    if (folder / WHOLE).is_file():
        return file_problem(folder / WHOLE)
    if not (folder / INDEX).is_file():
        return None
    try:
        index = json.loads(read_regular(folder / INDEX))
        shards = sorted(set(index["weight_map"].values()))
    except (OSError, ValueError) as err:
        return f"{INDEX} cannot be read ({err})"
    except (KeyError, TypeError, AttributeError):
        return f"{INDEX} has no weight_map of tensor names to files"
    for name in shards:
        if not isinstance(name, str) or not (folder / name).is_file():
            return f"{name} is missing ({INDEX} names it)"
        why = file_problem(folder / name)
        if why is not None:
            return why
    return None


def file_problem(path: Path) -> str | None:
    """What is wrong with one safetensors file's framing ("... is truncated (its header says N bytes, the file has
    M)"), or None."""
    name = path.name
    try:
        with os.fdopen(open_regular(str(path)), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(9)
            n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
            if size == 0:
                return f"{name} is empty"
            if len(head) < 9 or head[8:9] != b"{" or n > MAX_HEADER_BYTES:
                return f"{name} is not a safetensors file (it does not start with a header length and a JSON header)"
            if 8 + n > size:
                return f"{name} is truncated (its header alone needs {8 + n} bytes, the file has {size})"
            raw = head[8:] + f.read(n - 1)
    except OSError as err:
        return f"cannot read {name}: {err.strerror or err}"
    try:
        header = json.loads(raw)
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"{name} is damaged (its header is not a safetensors JSON header)"
    if not all(isinstance(end, int) and end >= 0 for end in ends):
        return f"{name} is damaged (its header holds a bad data offset)"
    needed = 8 + n + max(ends, default=0)
    if needed > size:
        return f"{name} is truncated (its header says {needed} bytes, the file has {size})"
    if needed < size:
        return f"{name} is damaged ({size - needed} bytes follow its tensors' data)"
    return None


def weight_elements(folder: Path) -> int | None:
    """How many numbers the safetensors weights in `folder` hold (read from their headers), or None where there are
    none or a header cannot be read: what a load costs in memory, whatever dtype they are stored in."""
    if (folder / WHOLE).is_file():
        files = [folder / WHOLE]
    else:
        try:
            index = json.loads(read_regular(folder / INDEX))
            files = [folder / name for name in sorted(set(index["weight_map"].values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    total = 0
    for path in files:
        try:
            with os.fdopen(open_regular(str(path)), "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(n)) if n <= MAX_HEADER_BYTES else None
            for key, entry in header.items():
                if key != "__metadata__":
                    count = 1
                    for dim in entry["shape"]:
                        count *= int(dim)
                    total += count
        except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
            return None
    return total or None
