"""--plot files: the type (the name's extension, one matplotlib writes) checked before any work, and the figure
written whole or not at all, as other output files of the measuring tools are (write_whole)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tmixcli.errors import TmixError
from tmixcli.filekind import check_output

SHOWN = ("png", "svg", "pdf")  # named first in the refusal


def check_plot(path: Path | str | None, option: str = "--plot") -> Path | None:
    """Refuse, before any work, a plot path matplotlib cannot write (no matplotlib, an unknown or no extension)."""
    path = check_output(path, option)
    if path is None:
        return None
    try:
        import matplotlib
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise TmixError(f"{option} needs matplotlib: pip install 'tmix[plot]'") from None
    kinds = set(FigureCanvasBase.get_supported_filetypes())
    if not shutil.which(matplotlib.rcParams["pgf.texsystem"]):  # .pgf is written by running LaTeX
        kinds.discard("pgf")
    ext = path.suffix[1:].lower()
    if ext not in kinds:
        named = [k for k in SHOWN if k in kinds] + sorted(k for k in kinds if k not in SHOWN)
        what = f"'.{ext}' is not a plot type matplotlib can write here" if ext else "the name has no file type"
        raise TmixError(f"{option} {path}: {what}; end it in one of .{', .'.join(named)}")
    return path


def save_figure(fig: Any, path: Path, option: str = "--plot") -> None:
    """Write a matplotlib Figure in the type of `path`'s extension, whole or not at all (write_whole)."""
    write_whole(path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=120), option)


def write_whole(path: Path, write: Callable[[Path], None], option: str) -> None:
    """Write `path` by `write`-ing a temp file beside it, then renaming it: whole or not at all; TmixError naming
    `option` when it cannot be written."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # made with the umask's mode
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        msg = err.strerror if isinstance(err, OSError) and err.strerror else (str(err).splitlines() or [""])[0]
        raise TmixError(f"{option}: could not write {path}: {msg}") from None
    finally:
        tmp.unlink(missing_ok=True)
