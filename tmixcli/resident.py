"""One loaded KV file kept in memory between the requests of `tmix serve`, so a follow-up question skips the load.

An answer always rewinds the cache to its prefix (GrowingLayer keeps the prefix rows untouched), so the cache a
question leaves behind is the file's state again. The entry is keyed by the file's identity on disk (device, inode,
size, mtime): a file replaced, rewritten or removed by any process is loaded afresh. Only one file is held, and it
is dropped before anything else is loaded or prefilled, so a GPU never holds two documents' caches at once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ResidentKV:
    """At most one (KV file -> loaded cache, prefix ids, metadata), checked against the file before each use."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: tuple | None = None

    def get(self, path: Path) -> tuple | None:
        """The held (cache, prefix_ids, meta) of `path` if the file is unchanged, marking the file used; else None
        (and whatever was held is dropped)."""
        path = Path(path)
        ident = _identity(path)
        if self._value is None or ident is None or self._key != (str(path.resolve()), ident):
            self.clear()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, as a load records it (cache eviction is least recently used)
        self._key = (str(path.resolve()), _identity(path))
        return self._value

    def put(self, path: Path, cache: object, prefix_ids: list[int], meta: dict[str, str]) -> None:
        """Hold a cache just loaded from `path` (its prefix rows only)."""
        ident = _identity(Path(path))
        if ident is None:
            self.clear()
            return
        self._key, self._value = (str(Path(path).resolve()), ident), (cache, prefix_ids, meta)

    def take(self) -> tuple | None:
        """Hand over the held (path, cache, prefix ids, meta), whatever its file's state, and hold nothing: a prefill
        about to run either frees that memory or starts from the cache's first rows (opening._prefill)."""
        if self._value is None:
            return None
        held = (Path(self._key[0]), *self._value)
        self.clear()
        return held

    def clear(self) -> None:
        """Drop the held cache (its memory is freed once no answer uses it)."""
        self._key = self._value = None
