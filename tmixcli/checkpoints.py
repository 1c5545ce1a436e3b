"""Checks run at the points where long work can stop: before each decoder layer (the document's prefill and the
question's) and each decoded token, every 50 ms of a KV file read, each cached file looked at for reuse, and between
the documents, the chunks of an input, the pages of a PDF and the paragraphs, slides, chapters or chunks of other
formats (ziputil.Reach). There a request of `tmix serve` stops once its client has hung up (its Ctrl-C), the CPU
thread count is looked at again (tmixcli/threads.py), and a Ctrl-C (or SIGTERM) that Python dropped in a finalizer is
raised again (tmixcli/startup.py).
Imports nothing heavy (no torch)."""

from __future__ import annotations

from collections.abc import Callable

dropped: list = [None]  # a KeyboardInterrupt (or Terminated) that Python dropped in a finalizer (tmixcli.startup), owed
# to the next check
# what each check runs: `tmix serve`'s check of the client in hand (raises once it left), the CPU thread count's recount
between_steps: list[Callable[[], None]] = []


def check() -> None:
    """Raise a Ctrl-C that a finalizer dropped; run the between_steps checks: a request whose client has hung up
    stops here, and the thread count is looked at again."""
    if dropped[0] is not None:
        owed, dropped[0] = dropped[0], None
        raise owed
    for step in between_steps:
        step()
