"""CPU thread count: `auto` probes whether torch's threads actually run in parallel on this machine."""

from __future__ import annotations

import os
import time

import torch

from tmixcli.errors import TmixError


def _gemm_s(threads: int, a: torch.Tensor, w: torch.Tensor) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for _ in range(2):
        torch.nn.functional.linear(a, w)
    return time.perf_counter() - start


def _probe(default: int) -> int:
    """Interleaved rounds, best of each: robust to other processes stealing the CPU for a moment."""
    a, w = torch.randn(48, 576), torch.randn(576, 576)
    many, one = float("inf"), float("inf")
    for _ in range(4):
        many = min(many, _gemm_s(default, a, w))
        one = min(one, _gemm_s(1, a, w))
    return 1 if one < 0.7 * many else default


def configure_threads(spec: str | None = None) -> int:
    """Set torch's CPU threads from `spec` (N, or "auto"; default $TMIX_THREADS, else auto); returns the count.

    On a small VM whose vCPUs are busy with other processes, OpenMP barriers made decode-sized GEMMs 13x slower
    than one thread (quiet, two threads won). `auto` times a decode-sized GEMM both ways (~0.1 s) and keeps
    the default unless one thread is clearly faster."""
    name = "--threads" if spec else "TMIX_THREADS"
    spec = spec or os.environ.get("TMIX_THREADS") or "auto"
    default = torch.get_num_threads()
    if spec != "auto":
        try:
            n = int(spec)
        except ValueError:
            raise TmixError(f"{name} must be a number or 'auto', not {spec!r}") from None
        if n < 1:
            raise TmixError(f"{name} must be at least 1")
        torch.set_num_threads(n)
        return n
    if default <= 1:
        return default
    n = _probe(default)
    torch.set_num_threads(n)
    return n
