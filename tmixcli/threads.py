"""CPU threads: `--threads N`, or `auto`: this process's share of the cores among the tmix processes computing now,
less a thread for each CPU other processes keep busy (cpushare). Decided as each work begins (a command, a served
request, a chat question) and looked at again every second while it runs (tmixcli/checkpoints.py)."""

from __future__ import annotations

import contextlib
import os
import time

import torch

from tmixcli import checkpoints, cpushare
from tmixcli.sizes import count

CORES = torch.get_num_threads()  # torch's own count, before tmix sets one: the CPUs this process may use, or
# OMP_NUM_THREADS
RECHECK_S = 1.0  # while working, how often the count is decided again

# own: this process's --threads (a server's, kept between its requests); spec: the command's (a served request may
# give its own); used: the counts the command ran with; last: the previous command's; why: auto chose fewer than CORES
_plan: dict = {"own": "auto", "spec": "auto", "next": 0.0, "used": [], "last": [], "why": ""}
cpushare.others_busy()  # the first look at the CPUs' load: auto's first decision measures from here


def configure_threads(spec: str | None = None) -> int:
    """Set torch's CPU threads from `spec` (N, or "auto"; default $TMIX_THREADS, else auto), a value the command
    checked before torch was imported (cli_options.check_threads); returns the count.

    libgomp's threads spin while they wait for one another: two of them on two CPUs, one CPU busy with another
    process, made a prefill 5x and decoding 15x slower than one thread (docs/usage.md, CPU threads)."""
    spec = _spec(spec) or "auto"
    n = _auto() if spec == "auto" else int(spec)
    torch.set_num_threads(n)
    return n


def _spec(spec: str | None) -> str | None:
    """`spec`, else $TMIX_THREADS (None where neither gives one), with auto written in any case as 'auto'."""
    spec = spec or os.environ.get("TMIX_THREADS") or None
    return "auto" if spec is not None and spec.lower() == "auto" else spec


def _auto() -> int:
    """auto's count now: the cores shared among the running tmix processes, and no more than the CPUs other
    processes leave free (one taken from half a CPU's load)."""
    running, others, cpus = cpushare.running(), cpushare.others_busy(), len(cpushare.cpus())
    share = max(1, CORES // running)
    n = min(share, max(1, int(cpus - others + 0.5)))
    _plan["why"] = "" if n >= CORES else (f"{running} tmix runs share the CPU" if n == share else
                                         f"other processes keep {others:.1f} of {cpus} CPUs busy")
    return n


def follow(spec: str | None, served: bool = False) -> None:
    """Keep torch's threads at `spec` (N, or auto's count) while this command computes on the CPU: decided as its work
    begins and every second after, at the checkpoints. A served request's own --threads / TMIX_THREADS wins over the
    server's (`served`)."""
    spec = _spec(spec)
    if not served:
        _plan["own"] = spec or "auto"
    _plan["spec"] = spec or _plan["own"]
    if _step not in checkpoints.between_steps:
        checkpoints.between_steps.append(_step)


def stop() -> None:
    """The command ended: its work ends (its marker goes) and so do its checks; a server keeps its own --threads."""
    with contextlib.suppress(ValueError):
        checkpoints.between_steps.remove(_step)
    cpushare.release()
    _plan.update(spec=_plan["own"], last=_plan["used"], used=[])


def _step() -> None:
    """A checkpoint: the count is decided where work begins, then again once RECHECK_S has passed."""
    now = time.monotonic()
    if cpushare.working() and now < _plan["next"]:
        return
    cpushare.hold()
    n = _auto() if _plan["spec"] == "auto" else int(_plan["spec"])
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    if _plan["used"][-1:] != [n]:
        _plan["used"].append(n)
    _plan["next"] = now + RECHECK_S


def used() -> int | None:
    """The thread count this command's work runs with now (None: no CPU work yet)."""
    return _plan["used"][-1] if _plan["used"] else None


def note() -> str:
    """A status line when auto gives this command fewer threads than the cores, and why; else ''. Decided now where
    its work has not begun (a KV file loaded at once: the answer is still to come)."""
    if _step in checkpoints.between_steps and not cpushare.working():
        _step()
    n = used()
    if n is None or n >= CORES or _plan["spec"] != "auto" or not _plan["why"]:
        return ""
    return f"{n} of {CORES} CPU threads: {_plan['why']}"


def said() -> str:
    """The thread counts the last command ran with, for the server's log line (said once): '1 thread', '1-2 threads',
    or '' where it did no CPU work."""
    counts, _plan["last"] = _plan["last"], []
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    return count(high, "thread") if low == high else f"{low}-{high} threads"


def described() -> str:
    """The server's own --threads, for its start line: 'auto: up to 2 CPU threads, decided per request', '2 CPU
    threads'."""
    own = _plan["own"]
    return f"auto: up to {CORES} CPU threads, decided per request" if own == "auto" else f"{own} CPU threads"
