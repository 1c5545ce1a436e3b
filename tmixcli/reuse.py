"""Start a prefill from a cached KV file that shares the prompt's first tokens (a document that grew or was
edited near its end), so only the rest is prefilled.

Row p of a prefill depends on the tokens up to p and, in triangle layers, on whether p is one of the last_n rows
that see every key. So the first r rows of an old prefill of T_old tokens equal a fresh prefill of T_new tokens
when the two agree on tokens [0, r) and r <= T - last_n for both totals; dense attention needs agreement only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tmixcli import checkpoints, kvfolder, kvheader
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError

MIN_ROWS = 256  # fewer shared rows than this are prefilled again rather than loaded


def shared_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common start of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def usable_rows(shared: int, old_len: int, new_len: int, attn: AttentionConfig) -> int:
    """Rows of an old prefill that a fresh one would compute identically (at least one new row stays to run)."""
    rows = min(shared, new_len - 1)
    if attn.method == "trimix":
        rows = min(rows, old_len - attn.last_n, new_len - attn.last_n)
    return max(rows, 0)


def best_file(ids: Sequence[int], expected: dict[str, str], attn: AttentionConfig,
              folder: Path | None = None) -> tuple[Path, int] | None:
    """The cached KV file made under `expected` (model, dtype, attention, template) whose rows cover most of the
    start of `ids`, and how many rows to take from it; None when no file gives MIN_ROWS."""
    best: tuple[Path, int] | None = None
    try:
        entries = kvfolder.list_entries(folder)
    except TmixError:  # a cache folder that cannot be read offers nothing to reuse
        return None
    for entry in entries:
        checkpoints.check()
        if entry["error"] or not entry["n_tokens"] or entry["n_tokens"] < MIN_ROWS:
            continue
        path = Path(entry["path"])
        try:
            meta = kvheader.read_meta(path)
            if any(meta.get(k) != v for k, v in expected.items()):
                continue
            stored = kvheader.read_prefix_ids(path)
        except (TmixError, OSError):  # a damaged or unreadable file is only not reused
            continue
        rows = usable_rows(shared_len(stored, ids), len(stored), len(ids), attn)
        if rows >= MIN_ROWS and (best is None or rows > best[1]):
            best = (path, rows)
    return best
