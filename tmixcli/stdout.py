"""stdout whose reader may leave (`tmix ask doc q | head -1`): a closed pipe ends the run quietly with exit 141, a
closed or full stdout with one line; stderr whose status lines cannot be written drops them; and streams that cannot
encode every character (PYTHONIOENCODING=ascii) write a stand-in for it instead of failing."""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def is_terminal(stream: object) -> bool:
    """Whether `stream` is a terminal (progress bars there, not in a file or pipe that would fill with carriage
    returns); False for a stream without isatty or a closed one."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class OutputClosed(Exception):
    """The reader of stdout is gone (`why` None), or stdout cannot be written (`why`: "stdout is closed", "No space
    left on device"). Not an OSError, so click does not turn it into a bare exit 1."""

    def __init__(self, why: str | None = None) -> None:
        super().__init__(why or "the reader of stdout is gone")
        self.why = why


class _Line:
    """Where the command's last line on stdout stands: the line break a Ctrl-C owes it (end_line, interrupt_lead)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new command (or request of `tmix serve`): nothing written yet."""
        self.open = False  # the last text written left its line open (an answer being streamed)
        self.cut: str | None = None  # since a Ctrl-C: "ended" (by end_line), "clean" or "said"; None: written since


_line = _Line()


class _Guarded:
    """Wraps the real stdout (None when closed at start): a failed write or flush becomes OutputClosed; all else is
    delegated."""

    def __init__(self, stream) -> None:
        self._stream, self._failed = stream, None if stream is not None else "stdout is closed"

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probing for a binary stream: the real stream's own TypeError
            return self._stream.write(text)
        n = self._guard("write", text)
        if text:
            _line.open, _line.cut = not text.endswith("\n"), None
        return n

    def flush(self) -> None:
        if self._stream is not None:
            self._guard("flush")

    def isatty(self) -> bool:
        return is_terminal(self._stream)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _guard(self, method: str, *args):
        if self._failed is not None:  # said again: a caller may have swallowed the first OutputClosed (click does)
            raise OutputClosed(self._failed or None)
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            self._failed = ""
            _point_at_devnull(self._stream)
            raise OutputClosed from None
        except OSError as exc:  # a full disk, an I/O error, a descriptor closed meanwhile
            self._failed = "stdout is closed" if exc.errno == errno.EBADF else exc.strerror or str(exc)
            _point_at_devnull(self._stream)
            raise OutputClosed(self._failed) from None


class _Dropping:
    """Wraps the real stderr (None when closed at start): status lines that cannot be written are dropped, so that
    they never cost the answer on stdout."""

    def __init__(self, stream) -> None:
        self._stream, self.mid_line = stream, False

    def write(self, text: str) -> int:
        if text:  # print() writes a line's text and its break apart: a stop may come in between
            self.mid_line = not text.endswith("\n")
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        return is_terminal(self._stream)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


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


STAND_IN = "tmix-stdout"  # the error handler answers are written with (also by `tmix serve` to its clients)
_ESCAPE = "tmix-stderr"  # status lines' error handler
_TOLERANT = {"replace", "backslashreplace", "xmlcharrefreplace", "namereplace", "ignore", STAND_IN, _ESCAPE}
# error handlers that never raise on a character the stream's encoding lacks


def _stand_in(mark: Callable[[str], str]) -> Callable[[UnicodeEncodeError], tuple[str | bytes, int]]:
    """An encoding error handler: the bytes a file name was read from (surrogateescape's lone surrogates) go out as
    they were; any other character its encoding lacks becomes `mark(char)`."""
    def handler(err: UnicodeEncodeError) -> tuple[str | bytes, int]:
        text, end = err.object, err.start
        if "\udc80" <= text[end] <= "\udcff":
            while end < err.end and "\udc80" <= text[end] <= "\udcff":
                end += 1
            return bytes(ord(c) - 0xDC00 for c in text[err.start:end]), end
        while end < err.end and not "\udc80" <= text[end] <= "\udcff":
            end += 1
        return "".join(mark(c) for c in text[err.start:end]), end
    return handler


codecs.register_error(STAND_IN, _stand_in(lambda c: "?"))
codecs.register_error(_ESCAPE, _stand_in(lambda c: c.encode("ascii", "backslashreplace").decode("ascii")))


def tolerant_streams() -> None:
    """Characters stdout or stderr cannot encode come out as "?" (answers) or a backslash escape (status lines), not as
    a UnicodeEncodeError in the middle of an answer, whatever error handler the stream had: "strict"
    (PYTHONIOENCODING=ascii), "surrogateescape" (the C locale without UTF-8 mode), ..."""
    for stream, errors in ((sys.stdout, STAND_IN), (sys.stderr, _ESCAPE)):
        if getattr(stream, "errors", None) not in _TOLERANT and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=errors)
            except (ValueError, OSError, LookupError):  # a closed or odd stream: left as it is
                pass


@contextmanager
def dropping_stderr() -> Iterator[None]:
    """Inside, sys.stderr drops what it cannot write (closed, a full disk); the real stream comes back after."""
    real = sys.stderr
    if not isinstance(real, _Dropping):
        sys.stderr = _Dropping(real)
    try:
        yield
    finally:
        if isinstance(sys.stderr, _Dropping) and not isinstance(real, _Dropping):
            sys.stderr = real


def end_line() -> None:
    """After a Ctrl-C: end the answer's line on stdout where it was cut mid-way, so that stdout ends with a line break
    and stderr keeps to its message lines (a stdout that cannot take it is left as it is)."""
    if _line.cut is not None:
        return
    ended = _line.open
    if ended:
        with contextlib.suppress(OutputClosed, OSError, ValueError, AttributeError):
            sys.stdout.write("\n")
            sys.stdout.flush()
    _line.cut = "ended" if ended else "clean"


def last_line_lead() -> str:
    """A line break where stderr's last status line was left without one (a stop between print's two writes), so
    that the last line tmix says stands on its own."""
    return "\n" if getattr(sys.stderr, "mid_line", False) else ""


def interrupt_lead() -> str:
    """What the first status line after a Ctrl-C starts with, once end_line has run: a line break only at a terminal,
    off the line where the ^C was echoed (not needed where the answer's line was just ended there); nothing for a
    further line about the same Ctrl-C, nor in a log (stderr not a terminal)."""
    end_line()
    cut, _line.cut = _line.cut, "said"
    if cut == "said" or not is_terminal(sys.stderr):
        return ""
    return "" if cut == "ended" and is_terminal(sys.stdout) else "\n"


@contextmanager
def guarded() -> Iterator[None]:
    """Run a command with sys.stdout guarded (what it left buffered is flushed here, where a full disk is one line,
    not at the interpreter's exit), restoring the real stream afterwards."""
    real = sys.stdout
    _line.reset()
    sys.stdout = _Guarded(real)
    try:
        yield
        sys.stdout.flush()
    except BaseException:
        with contextlib.suppress(OutputClosed):
            sys.stdout.flush()  # a failed flush sends the rest to /dev/null: no "Exception ignored" at exit
        raise
    finally:
        if isinstance(sys.stdout, _Guarded):
            sys.stdout = real
