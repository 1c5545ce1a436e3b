"""Ctrl-C while tmix imports (typer at start-up, torch later): exit 130 with one line at once, not a traceback, nor a
KeyboardInterrupt that numpy or transformers turn into a RecursionError or swallow (nothing to clean up yet)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager


def _interrupted(signum: int, frame: object) -> None:
    os.write(2, b"\ntmix: interrupted\n")
    os._exit(130)


@contextmanager
def quick_exit() -> Iterator[None]:
    """Inside, Ctrl-C exits at once with 130 and "tmix: interrupted" (only where Python's own handler is in place,
    in the main thread: `tmix serve` and tests that set their own keep theirs)."""
    installed = _install()
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _install() -> bool:
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return False
        signal.signal(signal.SIGINT, _interrupted)
    except ValueError:  # not the main thread
        return False
    return True


_startup = quick_exit()
_startup.__enter__()  # importing the command line (cli.py imports this module first)


def done() -> None:
    """The command line is imported: from here main() turns Ctrl-C (KeyboardInterrupt) into the same line."""
    _startup.__exit__(None, None, None)
