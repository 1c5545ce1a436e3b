"""SIGTERM and SIGHUP (`timeout`, `kill`, systemd, `docker stop`, a closed terminal) end a command as Ctrl-C does:
what it was writing goes (a KV file's temp file, a model conversion's folder), one line says so, and the exit code is
the conventional 128 + the signal (143, 129), where the default action killed tmix mid-write and left a KV-sized temp
file behind. A `tmix serve` keeps its own handlers: these signals stop it (tmixcli/serve.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_raised = [False]  # a Terminated is unwinding the command


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived. It unwinds the command as KeyboardInterrupt does (every cleanup of a Ctrl-C runs), but
    is no Ctrl-C: `chat` does not take it for "stop this answer", nor `ask` for "save the KV file all the same"."""

    def __init__(self, signum: int) -> None:
        self.name = signal.Signals(signum).name
        super().__init__(self.name)
        self.code = 128 + signum

    def line(self) -> str:
        """What tmix says as it ends."""
        return f"tmix: terminated ({self.name})"


def _raise(signum: int, frame: object) -> None:
    """The handler: Terminated in the main thread; a second signal while the first unwinds ends the process at once."""
    if _raised[0]:
        os._exit(128 + signum)
    _raised[0] = True
    raise Terminated(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Inside, SIGTERM and SIGHUP raise Terminated, where their handler is the default one: an ignored SIGHUP (nohup)
    stays ignored, and a server's handlers, or a test's, stay theirs. Outside, the earlier handlers are back."""
    _raised[0] = False
    installed = {}
    for sig in SIGNALS:
        try:
            if signal.getsignal(sig) is signal.SIG_DFL:
                installed[sig] = signal.signal(sig, _raise)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)
