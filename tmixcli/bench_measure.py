"""One benchmark measurement: a cold or warm TTFT, peak memory during it, and the machine it ran on."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmixcli.errors import TmixError
from tmixcli.sizes import count

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------- environment


def package_version(dist: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """The short commit of this checkout, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with its core and torch thread counts."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = torch.get_num_threads()
    return f"{name} ({os.cpu_count()} cores, {count(n, 'torch thread')})"


# ---------------------------------------------------------------- timing and memory


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a timer reads finished work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_kind(device: torch.device) -> str:
    """How peak memory is measured on this device (goes into the report header)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during the prefill (extra = above the weights)"
    if _rss_bytes() is not None:
        return "process RSS sampled every 5 ms from /proc/self/statm during the prefill (extra = above start)"
    return "peak RSS of the process so far (ru_maxrss, monotonic)"


class MemoryProbe:
    """Peak memory during a block: CUDA peak allocated, else RSS sampled by a thread (ru_maxrss fallback)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryProbe:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = self.peak = torch.cuda.memory_allocated(self.device)
        elif _rss_bytes() is not None:
            self.base = self.peak = _rss_bytes() or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


# ---------------------------------------------------------------- measurements


def measure_ttft(model: torch.nn.Module, ids: list[int], chunk_size: int | None = None,
                 kv_path: Path | None = None, meta: dict[str, str] | None = None) -> dict[str, Any]:
    """One cold TTFT (prefill + first token), synchronised; with `kv_path` the KV file is written during the
    prefill, as `tmix ask` does, and kv_save is the wait after the first token until it is on disk.

    Returns ttft (s), peak and extra memory (bytes), first token, kv_bytes, kv_save (s), kv_error (a failed save)."""
    from tmixcli import kvstore, kvwrite
    from tmixcli.generate import choose, prefill

    device = model.device
    writer = None
    if kv_path is not None:
        n_layers, kv_heads, head_dim = kvstore.model_kv_dims(model.config)
        writer = kvwrite.KVWriter(kv_path, n_layers, kv_heads, head_dim, model.dtype, ids, meta or {})
    sync(device)
    try:
        with MemoryProbe(device) as mem:
            start = time.perf_counter()
            cache, logits = prefill(model, ids, chunk_size=chunk_size,
                                    on_rows=writer.rows if writer is not None else None)
            token = choose(logits)
            sync(device)
            ttft = time.perf_counter() - start
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    res = {"ttft": ttft, "peak": mem.peak, "extra": max(0, mem.peak - mem.base), "token": token,
           "kv_bytes": None, "kv_error": None, "kv_save": None}
    if writer is not None:
        try:
            start = time.perf_counter()
            writer.finish()
            if writer.usable:  # else (a sliding-window layer, another dtype) the finished cache is saved whole
                res["kv_bytes"] = writer.wait()
            else:
                res["kv_bytes"] = kvwrite.save_kv(kv_path, cache, ids, meta or {})
            res["kv_save"] = time.perf_counter() - start
        except TmixError as err:
            res["kv_error"] = str(err)
    del cache, logits
    return res


def measure_warm(model: torch.nn.Module, kv_path: Path, question: list[int]) -> tuple[float, float]:
    """(load_kv + extend(question) + first token, load_kv alone) in seconds, synchronised."""
    from tmixcli import kvread
    from tmixcli.generate import choose, extend

    device = model.device
    sync(device)
    start = time.perf_counter()
    cache, _, _ = kvread.load_kv(kv_path, device)
    sync(device)
    loaded = time.perf_counter()
    choose(extend(model, cache, question))
    sync(device)
    end = time.perf_counter()
    del cache
    return end - start, loaded - start


def random_ids(n: int, vocab: int, seed: int) -> list[int]:
    """n token ids drawn uniformly from the vocabulary, reproducibly from `seed`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=gen).tolist()


def guarded(model: torch.nn.Module, fn: Callable[[], Any]) -> Any:
    """fn(), or "out of memory" after freeing caches; memory is always released afterwards."""
    try:
        result = fn()
    except (RuntimeError, MemoryError) as err:
        if not (_is_oom(err) or isinstance(err, MemoryError)):
            raise
        result = "out of memory"
    _free(model.device)
    return result
