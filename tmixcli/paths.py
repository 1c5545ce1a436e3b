"""Where tmix keeps its files: $TMIX_CACHE_DIR, default ~/.cache/tmix."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tmixcli.errors import TmixError


def cache_root() -> Path:
    """Where the cache root is ($TMIX_CACHE_DIR, ~ expanded); nothing is created."""
    return Path(os.environ.get("TMIX_CACHE_DIR") or Path.home() / ".cache" / "tmix").expanduser()


def cache_dir() -> Path:
    """The cache root (converted default model, KV files, calibration profiles); created on demand."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _search(root)
    except OSError as exc:
        raise _unusable(root, mkdir_error(exc)) from None
    return root


def cache_subdir(name: str, create: bool = True) -> Path:
    """cache_dir()/name (KV files, the document index), created on demand; create=False gives only its path, for
    reading (a folder that is missing or cannot be made holds nothing)."""
    if not create:
        return cache_root() / name
    d = cache_dir() / name
    try:
        d.mkdir(exist_ok=True)
        _search(d)
    except OSError as exc:
        raise _unusable(d, mkdir_error(exc)) from None
    return d


def checked_subdir(name: str) -> Path:
    """cache_root()/name for commands that only list or remove (nothing is created): a missing folder holds nothing,
    but the cache folder or this one existing as a file, or under one, is cache_subdir's error."""
    root = cache_root()
    for folder in (root, root / name):
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            break
        except OSError as exc:
            raise _unusable(folder, mkdir_error(exc)) from None
        if not stat.S_ISDIR(mode):
            raise _unusable(folder, "it exists and is not a folder")
        try:
            _search(folder)
        except OSError as exc:
            raise _unusable(folder, mkdir_error(exc)) from None
    return root / name


def _search(folder: Path) -> None:
    """OSError (Permission denied) when nothing in `folder` can be reached: another user's 0700 folder, whose own
    stat and mkdir (it exists) still work."""
    os.stat(os.path.join(folder, os.curdir))


def _unusable(folder: Path, why: str) -> TmixError:
    """The error for a cache folder that cannot be used; the cache root is named with TMIX_CACHE_DIR where that
    variable chose it, else with a word on moving it."""
    where = str(folder)
    if folder == cache_root():
        where += " (TMIX_CACHE_DIR)" if os.environ.get("TMIX_CACHE_DIR") else " (set TMIX_CACHE_DIR to use another)"
    return TmixError(f"cannot use the cache folder {where}: {why}")


def mkdir_error(exc: OSError) -> str:
    """Why a folder could not be made, in words that fit (mkdir's "File exists" names a file that is in the way)."""
    if exc.errno == errno.EEXIST:
        return "it exists and is not a folder"
    if exc.errno == errno.ENOTDIR:
        return "a part of its path is a file, not a folder"
    return exc.strerror or str(exc)


DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded default model's name and converted folder


def models_dir(create: bool = True) -> Path:
    """Converted models: $TMIX_MODELS_DIR, else <cache dir>/models (share one across cache dirs); create=False
    makes no cache folder, for commands that only look. TmixError when it exists but cannot be searched (another
    user's 0700 folder: nothing in it can be read or made)."""
    env = os.environ.get("TMIX_MODELS_DIR")
    folder = Path(env).expanduser() if env else (cache_dir() if create else cache_root()) / "models"
    try:
        _search(folder)
    except PermissionError as exc:
        raise models_unusable(folder, exc) from None
    except OSError:  # missing, or not a folder: the conversion that makes it says why it cannot
        pass
    return folder


def models_unusable(folder: Path, exc: OSError) -> TmixError:
    """The error for a models folder that cannot be used, named with TMIX_MODELS_DIR where that variable chose it."""
    named = " (TMIX_MODELS_DIR)" if os.environ.get("TMIX_MODELS_DIR") else ""
    return TmixError(f"cannot use the models folder {folder}{named}: {mkdir_error(exc)}")


def converted_gguf_name(gguf: Path) -> str:
    """The folder name under models_dir() of a .gguf file converted to safetensors."""
    return f"gguf-{gguf.stem}-{gguf.stat().st_size}"


TEMP_NAME_EXTRA = 32  # bytes kvfolder.temp_name adds to a file name: its temp file, renamed to it once written


