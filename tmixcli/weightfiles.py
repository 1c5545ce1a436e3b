"""A model folder's safetensors weight files judged by their framing before torch loads them (an 8-byte header
length, a JSON header, tensor data that ends where the file does), so a cut or damaged download is named in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tmixcli import stheader
from tmixcli.filekind import open_regular, read_regular
from tmixcli.stheader import FramingError

WHOLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def weights_problem(folder: Path) -> str | None:
    """What is wrong with the safetensors weights transformers would load from `folder` (model.safetensors, else the
    shards its index names): "model.safetensors is truncated (...)"; None where they look whole or are not there."""
    try:
        names = _weight_files(folder)
    except ValueError as err:
        return str(err)
    for name in names:
        if not isinstance(name, str) or not (folder / name).is_file():
            return f"{name} is missing ({INDEX} names it)"
        why = file_problem(folder / name)
        if why is not None:
            return why
    return None


def _weight_files(folder: Path) -> list:
    """The names of the safetensors files transformers would load from `folder`: model.safetensors, else the shards
    its index names (sorted; not checked to be names of files), else none; ValueError saying what is wrong with an
    index that cannot tell."""
    if (folder / WHOLE).is_file():
        return [WHOLE]
    if not (folder / INDEX).is_file():
        return []
    try:
        index = json.loads(read_regular(folder / INDEX))
        return sorted(set(index["weight_map"].values()))
    except (OSError, ValueError) as err:
        raise ValueError(f"{INDEX} cannot be read ({err})") from None
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{INDEX} has no weight_map of tensor names to files") from None


def _header(path: Path) -> tuple[dict, int, int]:
    """The safetensors header of the file at `path` (stheader.read_header), opened without waiting on what is no
    regular file."""
    with os.fdopen(open_regular(str(path)), "rb") as f:
        return stheader.read_header(f)


def file_problem(path: Path) -> str | None:
    """What is wrong with one safetensors file's framing ("... is truncated (its header says N bytes, the file has
    M)"), or None."""
    name = path.name
    try:
        header, n, size = _header(path)
    except FramingError as err:
        if err.size == 0:
            return f"{name} is empty"
        if err.kind in ("not_safetensors", "too_long"):
            return f"{name} is not a safetensors file (it does not start with a header length and a JSON header)"
        if err.kind == "truncated":
            return f"{name} is truncated (its header alone needs {8 + err.n} bytes, the file has {err.size})"
        return f"{name} is damaged (its header is not a safetensors JSON header)"
    except OSError as err:
        return f"cannot read {name}: {err.strerror or err}"
    try:
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (KeyError, TypeError, IndexError):
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
    try:
        names = _weight_files(folder)
    except ValueError:
        return None
    total = 0
    for name in names:
        try:
            header = _header(folder / name)[0]
            for key, entry in header.items():
                if key != "__metadata__":
                    count = 1
                    for dim in entry["shape"]:
                        count *= int(dim)
                    total += count
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    return total or None
