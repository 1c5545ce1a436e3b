"""stdout whose reader may leave (`tmix ask doc q | head -1`): a closed pipe ends the run quietly with exit 141;
and streams that cannot encode every character (PYTHONIOENCODING=ascii) write a stand-in for it instead of failing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def is_terminal(stream: object) -> bool:
    """Whether `stream` is a terminal (progress bars there, not in a file or pipe that would fill with carriage
    returns); False for a stream without isatty or a closed one."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class OutputClosed(Exception):
    """The reader of stdout is gone. Not an OSError, so click does not turn it into a bare exit 1."""


class _Guarded:
    """Wraps the real stdout: a broken pipe on write or flush becomes OutputClosed; all else is delegated."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except BrokenPipeError:
            _point_at_devnull(self._stream)
            raise OutputClosed from None


def _point_at_devnull(stream) -> None:
    """Send what is still buffered (and the interpreter's last flush) to /dev/null instead of the closed pipe."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a test's captured stream: nothing to redirect
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def tolerant_streams() -> None:
    """Characters stdout or stderr cannot encode come out as "?" (answers) or a backslash escape (status lines), not as
    a UnicodeEncodeError in the middle of an answer."""
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=errors)
            except (ValueError, OSError):  # a closed or odd stream: left as it is
                pass


@contextmanager
def guarded() -> Iterator[None]:
    """Run a command with sys.stdout guarded, restoring the real stream afterwards."""
    real = sys.stdout
    sys.stdout = _Guarded(real)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _Guarded):
            sys.stdout = real
