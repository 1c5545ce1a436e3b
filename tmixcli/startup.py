"""Ctrl-C while tmix starts (its imports: typer at start-up, torch later): exit 130 with one line at once, not a
traceback, nor a KeyboardInterrupt that numpy or transformers turn into a RecursionError or swallow (nothing to clean
up yet). The `tmix` script starts here (main), so the handler is in place before the rest of tmix is even read.
Also what a run checks before anything else: that its current folder still exists (working_folder)."""

from __future__ import annotations

import os
import sys
import _signal  # not signal, which imports enum first: 3-12 ms more before the handler is in place

TYPE_CHECKING = False  # typing itself takes ~10 ms to import: type checkers alone read the names below
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")


def _interrupted(signum: int, frame: object) -> None:
    os.write(2, (b"\n" if os.isatty(2) else b"") + b"tmix: interrupted\n")  # a terminal: off the echoed ^C
    os._exit(130)


def _install() -> bool:
    try:
        if _signal.getsignal(_signal.SIGINT) is not _signal.default_int_handler:
            return False
        _signal.signal(_signal.SIGINT, _interrupted)
    except ValueError:  # not the main thread
        return False
    return True


class quick_exit:  # a context manager named like contextlib's, which is not imported before the handler
    """Inside, Ctrl-C exits at once with 130 and "tmix: interrupted" (only where Python's own handler is in place,
    in the main thread: `tmix serve` and tests that set their own keep theirs)."""

    def __enter__(self) -> None:
        self.installed = _install()

    def __exit__(self, *_: object) -> None:
        if self.installed:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def _unraisable(info: object, _previous=sys.unraisablehook) -> None:
    """Ctrl-C (or SIGTERM, tmixcli/terminate.py) in a finalizer (a __del__, a weakref callback): Python prints a
    traceback and drops the KeyboardInterrupt, so the whole answer would run; keep quiet and let the next checkpoint
    raise it."""
    from tmixcli import checkpoints, terminate

    exc = getattr(info, "exc_value", None)
    if isinstance(exc, (KeyboardInterrupt, terminate.Terminated)):
        checkpoints.dropped[0] = exc
        return
    _previous(info)


sys.unraisablehook = _unraisable
_startup = quick_exit()
_startup.__enter__()  # importing the command line (the `tmix` script imports this module first, cli.py too)


_deferred = [False]  # the `tmix` script: keep the handler through typer's parsing, until a command's body begins


def done() -> None:
    """From here main() turns Ctrl-C (KeyboardInterrupt) into the same line, and commands may catch it (once)."""
    if _startup.installed:
        _startup.installed = False
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def imported() -> None:
    """The command line is imported: done, unless the `tmix` script runs, whose commands say when (`command`)."""
    if not _deferred[0]:
        done()


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """A command whose body is where Ctrl-C becomes KeyboardInterrupt: the parsing before it, which has no
    checkpoint to raise a dropped one again (_unraisable), still exits at once."""
    import functools

    @functools.wraps(fn)
    def body(*args: P.args, **kwargs: P.kwargs) -> R:
        done()
        return fn(*args, **kwargs)
    return body


def working_folder() -> bytes:
    """The current folder, as the file system names it; one error line (TmixError) when it was deleted under the
    shell: torch's MKL would die loading there ("Cannot load libtorch_cpu.so", exit 2), and no relative path names
    anything there."""
    try:
        return os.getcwdb()
    except FileNotFoundError:
        from tmixcli.errors import TmixError

        try:
            where = os.readlink("/proc/self/cwd").removesuffix(" (deleted)")
        except OSError:
            where = os.environ.get("PWD", "")
        raise TmixError(f"the current folder no longer exists{f' ({where})' if where else ''}: cd to another "
                        "one") from None


def main() -> None:
    """The `tmix` script: the command line, imported with Ctrl-C already covered, then run."""
    _deferred[0] = True
    from tmixcli.cli import main as run

    run()
