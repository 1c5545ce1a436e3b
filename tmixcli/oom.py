"""Running out of memory: an allocation that failed (Python's MemoryError, torch's "can't allocate memory", a mmap
or a shared library that did not fit) told from other errors and said in one line, exit 1: the step it cut short
(importing torch, loading or converting the model, prefilling the document), this process's address-space limit
(ulimit -v) where one is set, and advice that fits the step."""

from __future__ import annotations

import contextlib
import errno
import resource
from collections.abc import Iterator
from types import TracebackType

from tmixcli.errors import TmixError
from tmixcli.sizes import human_size

IMPORT_FLOOR = 640 << 20  # address space under which importing torch and transformers cannot succeed (~650 MiB
# on a CPU build) and crashes in native code (OpenBLAS, std::bad_alloc) where no error line can follow
_MARKS = ("cannot allocate memory", "can't allocate memory", "failed to map segment", "std::bad_alloc")
DOCUMENT_ADVICE = "a shorter document (--truncate) or a smaller model needs less"
MODEL_ADVICE = "a smaller model needs less"
BF16_ADVICE = "--dtype bf16 (half the memory) or a smaller model needs less"


def is_oom(err: BaseException) -> bool:
    """Whether `err`, or the error it was raised from, is an allocation that failed (a GPU's own out-of-memory error
    aside: the command line says that one itself)."""
    while err is not None:
        if isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno == errno.ENOMEM):
            return True
        if isinstance(err, (RuntimeError, OSError, ImportError)) and any(m in str(err).lower() for m in _MARKS):
            return True
        err = err.__cause__
    return False


def address_limit() -> int | None:
    """This process's address-space limit in bytes (ulimit -v), None where none is set."""
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def error(step: str, advice: str, detail: str = "") -> TmixError:
    """The line for an allocation that failed while `step` ("loading model 'x'") ran: `detail` ("its weights take
    ~513 MiB") and the address-space limit in brackets, then `advice`, and raising that limit where one is set."""
    limit = address_limit()
    facts = [detail] if detail else []
    if limit is not None:
        facts.append(f"this process's address space is limited to {human_size(limit)} by ulimit -v")
        advice = f"{advice}, or raise that limit" if advice else "raise that limit"
    said = f" ({'; '.join(facts)})" if facts else ""
    return TmixError(f"out of memory while {step}{said}: {advice or 'free memory'}", code=1)


def check(err: BaseException, step: str, advice: str, detail: str = "") -> None:
    """Raise error(step, ...) in place of `err` when it is an allocation that failed; else return."""
    if is_oom(err):
        raise error(step, advice, detail) from None


@contextlib.contextmanager
def step(what: str, advice: str, detail: str = "") -> Iterator[None]:
    """Inside, an allocation that fails is error(what, advice, detail)."""
    try:
        yield
    except TmixError:
        raise
    except Exception as err:  # MemoryError included
        check(err, what, advice, detail)
        raise


def check_import_room() -> None:
    """Refuse at once an address-space limit under which torch cannot be imported: there the import can crash in
    native code, with no error line after it."""
    limit = address_limit()
    if limit is not None and limit < IMPORT_FLOOR:
        raise TmixError(f"this process's address space is limited to {human_size(limit)} by ulimit -v, less than "
                        f"importing torch takes (over {human_size(IMPORT_FLOOR)}): raise that limit", code=1)


def failed_import(err: BaseException) -> bool:
    """Whether `err` is an import that failed under an address-space limit: one that ran out of memory there can
    leave a half-made module behind, and a later import fails on it without a word on memory."""
    return isinstance(err, ImportError) and address_limit() is not None


def unplaced(err: BaseException) -> str:
    """The line for an allocation that failed where no step said what it was doing (is_oom, failed_import): torch's
    import (an import in its traceback), or else an answer or other work on the document."""
    if not is_oom(err):
        first = (str(err).splitlines() or [""])[0][:200]
        return (f"importing torch and transformers failed under this process's address-space limit "
                f"({human_size(address_limit() or 0)}, ulimit -v), most likely for want of memory: raise that limit "
                f"({type(err).__name__}: {first})")
    if isinstance(err, ImportError) or _in_import(err.__traceback__):
        return str(error("importing torch and transformers", ""))
    return str(error("running the model", DOCUMENT_ADVICE))


def _in_import(tb: TracebackType | None) -> bool:
    """Whether a traceback passes through a module's own code (its import) or importlib's."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "<module>" or code.co_filename.startswith("<frozen importlib"):
            return True
        tb = tb.tb_next
    return False
