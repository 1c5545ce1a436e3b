"""Extract a long PDF's pages in worker processes: pypdf is pure Python, so one core reads ~50-100 pages a second.

Each worker opens the PDF once (bytes and password handed over at start) and extracts chunks of pages; the
parent keeps page order, pypdf's warnings and the first error. Short PDFs and one-core machines stay serial.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator

MIN_PAGES = 48  # below this, starting workers (~0.3 s) costs more than it saves
CHUNK = 12  # pages per task: small, so the work stays balanced
MAX_WORKERS = 8
START_METHOD = "spawn"  # not fork: `tmix serve` has torch's threads running

_state: dict = {}  # in a worker: the PDF's bytes, label, password and (once opened) reader


def workers_for(n_pages: int) -> int:
    """How many worker processes `n_pages` pages are worth on this machine (0: extract them here)."""
    if n_pages < MIN_PAGES:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    n = min(cpus, MAX_WORKERS, -(-n_pages // CHUNK))
    return n if n >= 2 else 0


def page_texts(raw: bytes, label: str, password: str | None, indexes: list[int],
               workers: int) -> tuple[list[str], list[str]]:
    """Cleaned texts of pages `indexes` (in order) and the warnings pypdf logged, from `workers` processes."""
    chunks = [indexes[i:i + CHUNK] for i in range(0, len(indexes), CHUNK)]
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(START_METHOD),
                                                  initializer=_start, initargs=(raw, label, password))
    texts: list[str] = []
    problems: list[str] = []
    try:
        with _sigint_blocked():  # the workers start here; a Ctrl-C meanwhile is raised when this block ends
            futures = [pool.submit(_extract, chunk) for chunk in chunks]
        for future in futures:
            got, warned = future.result()
            texts += got
            problems += warned
    except BaseException:  # an error or Ctrl-C: no worker may go on reading
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return texts, problems


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT while workers start: they inherit the mask, so a Ctrl-C cannot kill one halfway through reading
    its start-up data (a traceback on the terminal); each unblocks it once it ignores SIGINT."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start(raw: bytes, label: str, password: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _state.update(raw=raw, label=label, password=password)


def _extract(chunk: list[int]) -> tuple[list[str], list[str]]:
    from tmixcli import documents

    if "reader" not in _state:
        _state["reader"], _ = documents.open_pdf_quietly(_state["raw"], _state["label"], _state["password"])
    return documents.pdf_pages(_state["reader"], _state["label"], chunk)
