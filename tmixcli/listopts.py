"""Comma-separated option values (--lengths, --methods, --tasks, --start-layers): their items, token lengths such as
6k, and integers; an empty item (`1k,,2k`, a dropped value) is refused in one line naming the option."""

from __future__ import annotations

import re

from tmixcli.errors import TmixError


def items(text: str, option: str) -> list[str]:
    """The stripped items of a comma-separated value; [] when it holds none; TmixError for an empty one among others."""
    parts = [p.strip() for p in text.split(",")]
    if any(parts) and not all(parts):
        raise TmixError(f"{option} has an empty item in {text!r}: remove the extra comma or give the missing value")
    return [p for p in parts if p]


def parse_lengths(text: str, option: str = "--lengths") -> list[int]:
    """"2k,6k,3000" -> [2048, 6144, 3000]; each at least 1 token."""
    out = [_length(part.lower(), f"in {option}", "numbers like 2k,6k or 3000") for part in items(text, option)]
    if not out:
        raise TmixError(f"{option} is empty")
    return out


def parse_length(text: str, option: str) -> int:
    """One length, "6k" -> 6144, for an option that takes a single value: a list is refused."""
    if "," in text:
        raise TmixError(f"{option} takes one length, not a list ({text!r}): use a number like 6k or 3000")
    if not text.strip():
        raise TmixError(f"{option} is empty: use a number like 6k or 3000")
    return _length(text.strip().lower(), f"for {option}", "a number like 6k or 3000")


def _length(part: str, where: str, examples: str) -> int:
    """Tokens of one length ("6k" = 6144), at least 1; TmixError saying `where` it was and `examples`."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", part)
    if not m:
        raise TmixError(f"bad length {part!r} {where}: use {examples}")
    n = int(float(m.group(1)) * (1024 if m.group(2) else 1))
    if n < 1:
        raise TmixError(f"bad length {part!r} {where}: must be at least 1 token")
    return n


def parse_ints(text: str, option: str) -> list[int]:
    """"9,15,9" -> [9, 15]: comma-separated integers, each once, in the order given."""
    try:
        return list(dict.fromkeys(int(p) for p in items(text, option)))
    except ValueError:
        raise TmixError(f"{option} takes comma-separated integers, not {text!r}") from None
