"""What kind of file a path names, checked before it is read or written: regular files, stdin and the process's own
descriptors, FIFOs and devices refused in one line; names as people read them."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.paths import TEMP_NAME_EXTRA

_SURROGATE = re.compile("[\udc80-\udcff]")
_OWN_FILES = re.compile(r"/(dev/(fd|stdin|stdout|stderr)|proc/(self|thread-self|\d+))(/|$)")
_STDIN = re.compile(r"/(dev/stdin|dev/fd/0|proc/(self|thread-self|\d+)/fd/0)$")


def absolute(path: Path | str) -> str:
    """`path` made absolute against the current folder (links kept as named), for --json's kv_path."""
    return str(Path(path).absolute())


def not_a_file(path: Path) -> str | None:
    """Why `path` is not a regular file to read ("no such file", "a broken link to X", "a folder", "a FIFO (named
    pipe)", ...), or None when it is one (links followed)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"a broken link to {os.readlink(path)}" if path.is_symlink() else "no such file"
    except OSError as exc:
        return "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
    return None if stat.S_ISREG(mode) else _kind(mode)


def _kind(mode: int) -> str:
    """What a file of this mode is, when not a regular file."""
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    return f"{kind}, not a regular file"


def names_stdin(path: str) -> bool:
    """Whether `path` reads this process's stdin: -, /dev/stdin, /dev/fd/0, /proc/self/fd/0 or a link to one."""
    return path == "-" or _leads_to(path, _STDIN)


def process_bound(path: str) -> bool:
    """Whether `path` must be read by this very process: stdin (-), /dev/stdin, /dev/fd/N, /proc/self/... (or a link
    to one), or what is no regular file or folder (a FIFO, a device, a socket: opening one may wait for good)."""
    if path == "-":
        return True
    if names_own_file(path):
        return True
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):  # its FIFOs and devices are skipped unopened; links to /dev/stdin and the like are not
            return any(names_own_file(os.path.join(path, name)) for name in os.listdir(path)[:1000])
    except (OSError, ValueError):  # missing or unreadable: the run says so wherever it runs
        return False
    return not stat.S_ISREG(mode)


def names_own_file(path: str) -> bool:
    """Whether `path`, its folder resolved, or any link it leads through is in /dev/fd, /proc/self and the like."""
    return _leads_to(path, _OWN_FILES)


def _leads_to(path: str, pattern: re.Pattern) -> bool:
    """Whether `path`, its folder resolved, or any link it leads through matches `pattern`."""
    for _ in range(40):
        full = os.path.abspath(path)
        try:
            real = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
        except (OSError, ValueError):
            real = full
        if pattern.match(full) or pattern.match(real):
            return True
        try:
            path = os.path.join(os.path.dirname(full), os.readlink(full))
        except (OSError, ValueError):
            return False
    return False


def open_regular(path: str) -> int:
    """A read-only descriptor of `path`, a regular file (links followed); OSError for anything else, without waiting
    on it: a FIFO or device is opened non-blocking, seen, and closed unread."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, _kind(mode))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, _kind(mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path | str) -> bytes:
    """The bytes of `path`, a regular file; OSError for anything else (a FIFO put in its place is never waited on)."""
    with os.fdopen(open_regular(str(path)), "rb") as f:
        return f.read()


def check_output(path: Path | str | None, option: str) -> Path | None:
    """Refuse an output path whose folder is missing or not writable, or that names a folder or a device, before
    any long work starts; returns it with ~ expanded."""
    if path is None:
        return None
    if not str(path).strip():  # Path("") would read as the current folder
        raise TmixError(f"{option} is empty; give a file path")
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            raise TmixError(f"{option} {path} is a directory; give a file path")
        if path.exists() and not path.is_file():
            raise TmixError(f"{option} {path} exists and is not a regular file; give another name")
        if not path.parent.is_dir():
            raise TmixError(f"{option} {path}: folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise TmixError(f"{option} {path}: folder {path.parent} is not writable")
        room = os.pathconf(path.parent, "PC_NAME_MAX") - TEMP_NAME_EXTRA
    except OSError as exc:
        raise TmixError(f"{option} {path}: {exc.strerror or exc}") from None
    if len(os.fsencode(path.name)) > room:
        raise TmixError(f"{option}: the file name is too long ({len(os.fsencode(path.name))} bytes; at most {room} "
                        "here, its temp file needs the rest)")
    return path


def readable_name(name: str) -> str:
    """A file name as text the model and JSON can take: bytes the locale could not decode (lone surrogates) become
    U+FFFD, as `tmix text` shows them, and line breaks or other control characters a space each."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _SURROGATE.search(name) else name
    return "".join(c if c.isprintable() else " " for c in text) if not text.isprintable() else text


def document_name(path: str) -> str:
    """The name a document is given: its file name, or the whole path for a process's own file (`<(cmd)` gives
    /dev/fd/63, whose file name "63" says nothing)."""
    return path if names_own_file(path) else Path(path).name
