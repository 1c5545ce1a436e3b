"""Folders given as documents: the files directly inside one in natural name order, the note on those skipped, and a
file given twice refused."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tmixcli.errors import TmixError

_DIGIT_SPLIT = re.compile(r"(\d+)")
MAX_FOLDER_FILES = 200
LISTED_SKIPS = 6  # skipped files named in a folder's error, the rest counted


def skipped_list(skipped: Sequence[str]) -> str:
    """ " (skipped a.pdf: why | b.xlsx: why | and 3 more)" for a folder's skip notes, or "" for none."""
    if not skipped:
        return ""
    shown = len(skipped) if len(skipped) <= LISTED_SKIPS + 1 else LISTED_SKIPS
    more = f" | and {len(skipped) - shown} more" if shown < len(skipped) else ""
    return " (skipped " + " | ".join(s.removeprefix("skipped ") for s in skipped[:shown]) + more + ")"


def refuse_twice(files: Sequence[tuple[Path, str, bool]]) -> None:
    """Refuse a file given twice, naming both arguments as they were typed (`files`: each file, the argument that
    gave it, whether that is a folder)."""
    seen: dict[Path, tuple[str, bool]] = {}
    for file, arg, folder in files:
        real = _resolved(file)
        if real not in seen:
            seen[real] = (arg, folder)
            continue
        if seen[real][0] == arg:
            raise TmixError(f"{arg} is given twice")
        first, then = (f"in folder {a}" if f else f"as {a}" for a, f in (seen[real], (arg, folder)))
        raise TmixError(f"{real.name} is given twice: {first} and {then}")


def _resolved(file: Path) -> Path:
    """The file's real path, to spot one given twice; as written when it cannot be resolved (a symlink loop)."""
    try:
        return file.resolve()
    except (OSError, RuntimeError):
        return file.absolute()


def is_folder(path: str) -> bool:
    """Whether `path` names a folder (stdin's "-" never does)."""
    return path != "-" and Path(path).is_dir()


def folder_files(folder: Path, unreadable: bool = False) -> list[Path]:
    """The files directly inside `folder` in natural name order (report2 before report10), hidden ones left out;
    `unreadable` adds what is neither a file nor a folder there (a FIFO, a device, a broken link), to be skipped."""
    try:
        files = [f for f in folder.iterdir()
                 if not f.name.startswith(".") and (f.is_file() or unreadable and not f.is_dir())]
    except OSError as exc:
        raise TmixError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
    if not files:
        raise TmixError(f"{folder} has no files (subfolders are not read)")
    if len(files) > MAX_FOLDER_FILES:
        raise TmixError(f"{folder} holds {len(files)} files, more than {MAX_FOLDER_FILES}; name the documents instead")
    return sorted(files, key=_natural)


def _natural(f: Path) -> list:
    """Sort key: digit runs compare as numbers (split() puts them at the odd places), the rest case-folded."""
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(_DIGIT_SPLIT.split(f.name))]
