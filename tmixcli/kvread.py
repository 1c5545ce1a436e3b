"""Read a KV file's layers straight into cache buffers: several threads, large reads, pinned staging for GPUs.

safetensors' `get_tensor` reads one tensor at a time into fresh pageable memory, which a GPU target then copies
again: on the lent H100 a cold 16 GiB file took 15.2 s where the disk reads it in ~10 s. Here each tensor's
per-head runs of rows are cut into pieces that worker threads `pread` into the destination buffer (CPU) or into
their own pinned buffers and copy to the GPU on their own streams, so disk reads, page-cache copies and
host-to-device copies overlap. load_kv validates a file's header (kvheader) and reads it into a DynamicCache.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tmixcli import checkpoints, kvheader
from tmixcli.errors import TmixError
from tmixcli.filekind import open_regular

if TYPE_CHECKING:
    from transformers import DynamicCache

PIECE_BYTES = 32 << 20  # the largest read, and the size of each worker's two pinned buffers
WORKERS = 8


class Abandoned(Exception):
    """Reading stopped because the caller's `give_up` said so (recomputing the state is expected to be faster)."""


@dataclass
class Piece:
    offset: int  # byte offset in the file
    dst: torch.Tensor  # uint8 view of the destination rows (CPU buffer or GPU buffer)


def pieces(data_start: int, info: dict, dst: torch.Tensor, rows: int) -> list[Piece]:
    """Pieces that copy the first `rows` positions of a file tensor [1, Hkv, T, D] into dst [1, Hkv, >=rows, D]."""
    _, heads, total, dim = info["shape"]
    item = dst.element_size()
    start = data_start + info["data_offsets"][0]
    out = []
    for h in range(heads):
        run = dst[0, h, :rows].reshape(-1).view(torch.uint8)  # run: [rows * D * item], contiguous
        base = start + h * total * dim * item
        for lo in range(0, run.numel(), PIECE_BYTES):
            out.append(Piece(base + lo, run[lo:lo + PIECE_BYTES]))
    return out


def read_pieces(path: str, todo: list[Piece], workers: int | None = None,
                give_up: Callable[[int, int, float], bool] | None = None) -> None:
    """Fill every piece's destination from the file; raises OSError on a short read. `give_up(bytes done, bytes in
    all, seconds)` is asked every 50 ms: True stops the workers and raises Abandoned; so are the checkpoints."""
    if not todo:
        return
    fd = open_regular(path)  # a FIFO swapped in for the file is refused, not waited on
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for p in todo:
        jobs.put(p)
    total = sum(p.dst.numel() for p in todo)
    state = {"done": 0, "lock": threading.Lock(), "stop": threading.Event(), "errors": [],
             "slot": max(p.dst.numel() for p in todo)}  # pinned bytes per buffer: a small file pins little
    n = max(1, min(workers or WORKERS, len(todo)))
    start = time.perf_counter()
    threads = [threading.Thread(target=_worker, args=(fd, jobs, state), name="tmix-kvread", daemon=True)
               for _ in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.05)
                checkpoints.check()
                if give_up is not None and not state["stop"].is_set() \
                        and give_up(state["done"], total, time.perf_counter() - start):
                    state["stop"].set()
    except BaseException:  # Ctrl-C: the workers finish their piece before the file is closed under them
        state["stop"].set()
        for t in threads:
            if t.ident is not None:
                t.join()
        raise
    finally:
        os.close(fd)
    if state["errors"]:
        raise state["errors"][0]
    if state["done"] < total:
        raise Abandoned(f"stopped after {state['done']} of {total} bytes")


def _worker(fd: int, jobs: queue.SimpleQueue, state: dict) -> None:
    slots: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []  # pinned buffers with their last copy's event
    streams: dict[torch.device, torch.cuda.Stream] = {}  # one per GPU the pieces go to
    turn = 0
    try:
        while not state["errors"] and not state["stop"].is_set():
            try:
                p = jobs.get_nowait()
            except queue.Empty:
                break
            if p.dst.device.type == "cpu":
                _pread(fd, p.dst.numpy(), p.offset)
                _count(state, p)
                continue
            if not slots:
                slots = [(torch.empty(state["slot"], dtype=torch.uint8, pin_memory=True), None) for _ in range(2)]
            if p.dst.device not in streams:
                streams[p.dst.device] = torch.cuda.Stream(p.dst.device)
            stream = streams[p.dst.device]
            buf, done = slots[turn]
            if done is not None:
                done.synchronize()  # the copy out of this buffer has finished: it can be refilled
            staged = buf[:p.dst.numel()]
            _pread(fd, staged.numpy(), p.offset)
            with torch.cuda.stream(stream):
                p.dst.copy_(staged, non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            slots[turn] = (buf, event)
            turn = 1 - turn
            _count(state, p)
    except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
        state["errors"].append(err)
    finally:
        for stream in streams.values():
            stream.synchronize()  # the pinned buffers outlive every copy out of them


def _count(state: dict, p: Piece) -> None:
    with state["lock"]:
        state["done"] += p.dst.numel()


def _pread(fd: int, out, offset: int) -> None:
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise OSError(f"unexpected end of file at byte {offset + got}")
        got += n


def load_kv(path: Path, device: torch.device | str | Sequence[torch.device] = "cpu", rows: int | None = None,
            headroom: int | None = None, give_up: Callable[[int, int, float], bool] | None = None,
            ) -> tuple[DynamicCache, list[int], dict[str, str]]:
    """Validate and read a KV file into a DynamicCache on `device` (or one device per layer, as a
    device map places them); records last use. `rows`: only the first rows (positions) of every layer;
    `headroom`: spare rows to allocate after them (default kvcache.HEADROOM); `give_up`: see read_pieces (Abandoned
    is raised through)."""
    from transformers import DynamicCache

    from tmixcli.kvcache import GrowingLayer

    path = Path(path)
    header, head_len, _ = kvheader.read_header(path)
    meta = header.get("__metadata__", {})
    kvheader.check_version(path, meta)
    n_layers, heads, tokens, head_dim = kvheader.expected_tensors(path, header, meta)
    if isinstance(device, (str, torch.device)):
        devices = [torch.device(device)] * n_layers
    elif len(device) != n_layers:
        raise TmixError(f"{path}: the KV file has {n_layers} layers, the model {len(device)}")
    else:
        devices = [torch.device(d) for d in device]
    keep = tokens if rows is None else max(0, min(rows, tokens))
    cache, todo = DynamicCache(), []
    for i in range(n_layers):
        k_info, v_info = header[f"layers.{i}.keys"], header[f"layers.{i}.values"]
        if k_info["dtype"] != v_info["dtype"]:
            raise TmixError(f"{path}: corrupt KV file (layer {i} keys and values differ in dtype)")
        dtype = getattr(torch, kvheader.ST_DTYPES[k_info["dtype"]][0])
        layer = GrowingLayer.empty((1, heads, keep, head_dim), dtype, devices[i], headroom)  # keys: [1, Hkv, T, D]
        todo += pieces(8 + head_len, k_info, layer.keys, keep)
        todo += pieces(8 + head_len, v_info, layer.values, keep)
        cache.layers.append(layer)
    for d in {d for d in devices if d.type == "cuda"}:
        torch.cuda.synchronize(d)  # the new buffers may reuse memory that queued kernels still read
    try:
        read_pieces(str(path), todo, give_up=give_up)
    except OSError as err:
        raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from err
    prefix_ids = kvheader.read_prefix_ids(path)[:keep]  # prefix_ids: [T]
    with contextlib.suppress(OSError):
        os.utime(path)
    return cache, prefix_ids, meta

