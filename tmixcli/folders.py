"""Folders given as documents: the files directly inside one in natural name order, each read or skipped with a
note (as its subfolders are), a file given twice refused, and headings that tell same-named files apart."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import TypeVar

from tmixcli.errors import TmixError
from tmixcli.filekind import names_stdin, not_a_file

_DIGIT_SPLIT = re.compile(r"(\d+)")
MAX_FOLDER_FILES = 200
LISTED_SKIPS = 6  # skipped files named in a folder's error, the rest counted
T = TypeVar("T")


def read_folder(folder: str, files: Sequence[Path],
                read: Callable[[str], T]) -> tuple[list[tuple[str, T]], list[str], list[Path]]:
    """Each of `folder`'s `files` (folder_files) read by `read`: (its path, what `read` gave) for each read, the notes
    on those skipped (neither a file nor readable: a one-line TmixError) and on its subfolders, and the files skipped;
    a folder of which no file can be read is a one-line TmixError naming why."""
    got: list[tuple[str, T]] = []
    notes: list[str] = []
    skipped: list[Path] = []
    for f in files:
        try:
            why = not_a_file(f)  # a FIFO or a link to a device would block or never end: not read at all
            if why is not None:
                raise TmixError(f"{f}: {why}")
            got.append((str(f), read(str(f))))
        except TmixError as err:
            notes.append(f"skipped {f.name}: {str(err).removeprefix(str(f)).lstrip(' :')}")
            skipped.append(f)
    if not got:
        raise TmixError(f"no document tmix can read in {folder}{skipped_list(notes)}")
    note = subfolder_note(folder)
    if note is not None:
        notes.append(note)
    return got, notes, skipped


def skipped_list(skipped: Sequence[str]) -> str:
    """ " (skipped a.pdf: why | b.xlsx: why | and 3 more)" for a folder's skip notes, or "" for none."""
    if not skipped:
        return ""
    shown = len(skipped) if len(skipped) <= LISTED_SKIPS + 1 else LISTED_SKIPS
    more = f" | and {len(skipped) - shown} more" if shown < len(skipped) else ""
    return " (skipped " + " | ".join(s.removeprefix("skipped ") for s in skipped[:shown]) + more + ")"


def subfolder_note(folder: str) -> str | None:
    """The note on the subfolders of a folder given as documents, which are not read (hidden ones aside): "left out
    2 subfolders of years (...): 2023, 2024"; None without any."""
    try:
        found = sorted((f for f in Path(folder).iterdir() if not f.name.startswith(".") and f.is_dir()), key=_natural)
    except OSError:
        return None
    if not found:
        return None
    names = ", ".join(f.name for f in found[:LISTED_SKIPS]) + (
        f" and {len(found) - LISTED_SKIPS} more" if len(found) > LISTED_SKIPS else "")
    count = f"{len(found)} subfolders" if len(found) > 1 else "a subfolder"
    return f"left out {count} of {folder} (only the files directly inside a folder are read): {names}"


def distinct_names(paths: Sequence[str], names: Sequence[str]) -> list[str]:
    """Each document's name for its heading: its file name (`names`), or where several share one, the shortest end
    of their paths as given that tells them apart (q1/budget.txt, q2/budget.txt)."""
    out = list(names)
    shared: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        shared[name].append(i)
    for group in (g for g in shared.values() if len(g) > 1):
        stdin = [names_stdin(paths[i]) for i in group]  # stdin keeps its name "stdin"
        parts = [(names[i],) if read else PurePath(paths[i]).parts for i, read in zip(group, stdin)]
        for k in range(2, max(map(len, parts)) + 1):
            tried = [str(PurePath(*p[-k:])) for p in parts]
            if len(set(tried)) == len(tried):
                break
        else:  # as given, they still read alike
            tried = [names[i] if read else str(_resolved(Path(paths[i]))) for i, read in zip(group, stdin)]
        for i, name in zip(group, tried):
            out[i] = name
    return out


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
