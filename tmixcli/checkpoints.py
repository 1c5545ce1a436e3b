"""Where a request of `tmix serve` stops once its client has hung up (Ctrl-C): before each decoder layer (the
document's prefill and the question's) and each decoded token, every 50 ms of a KV file read, and between the
documents, the chunks of an input, the pages of a PDF and the paragraphs, slides, chapters or chunks of other formats
(ziputil.Reach). The same places raise a Ctrl-C (or SIGTERM) again that Python dropped in a finalizer
(tmixcli/early.py).
Imports nothing heavy (no torch)."""

from __future__ import annotations

from collections.abc import Callable

dropped: list = [None]  # a KeyboardInterrupt (or Terminated) that Python dropped in a finalizer (tmixcli.early), owed
# to the next check
between_steps: list[Callable[[], None]] = []  # `tmix serve`'s check of the client in hand, which raises once it left


def check() -> None:
    """Raise a Ctrl-C that a finalizer dropped; run the between_steps checks: a request whose client has hung up
    stops here."""
    if dropped[0] is not None:
        owed, dropped[0] = dropped[0], None
        raise owed
    for step in between_steps:
        step()
