"""Write a KV file in the background, layer by layer, while the prefill is still computing the later layers.

`KVWriter` plans the whole file (kvheader's safetensors layout) from the cache's shape before any row exists, so
each layer's rows go to disk as soon as the prefill has made them: GPU rows through a pinned buffer on a side
stream (the prefill's stream never waits), CPU rows straight from the cache. The header, whose metadata holds the
prefill's own time, is written last into room reserved for it; then fsync and rename, so the file appears whole
or not at all. On a GPU the write of a 128K-token file overlaps the prefill and the answer instead of following
them (docs/long-context.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

import torch

from tmixcli import diskerrors
from tmixcli.errors import TmixError
from tmixcli.kvfolder import remove_file, room_hint, temp_is_stale, temp_name, temp_of
from tmixcli.kvheader import full_meta, plan_header
from tmixcli.kvstore import SLIDING_MSG
from tmixcli.sizes import human_size

ROOM = 1024  # header bytes reserved for metadata known only after the prefill (prefill_s, prefill_device)
STAGE_BYTES = 256 << 20  # pinned buffer GPU rows are copied through (pageable copies ran at ~1 GB/s): a 128K
# layer's keys (Llama-3.1-8B) in one piece
_live: weakref.WeakSet = weakref.WeakSet()  # writers still running, aborted when the command ends (abort_all)


def _pwrite(fd: int, data: memoryview | bytes, offset: int) -> None:
    """The single writer of file content (tests patch it to simulate a full disk or a slow one)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _lock(fd: int) -> None:
    """Take the writer's lock on a new temp file, without waiting (tests patch it to race a reader)."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _locked_temp(path: Path) -> tuple[Path, int]:
    """A new temp file beside `path`, open for writing and locked (flock) for as long as it is open, the rename
    included: readers (`tmix cache`, the cap) tell a live writer's file from a leftover by that lock, whatever became
    of the pid in its name. A name a reader removed before it was locked (found unlocked) is given up for another."""
    for _ in range(8):
        tmp = temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _lock(fd)
            if os.fstat(fd).st_nlink:
                return tmp, fd
        except BlockingIOError:  # a reader holds it, found unlocked: it may be removing it
            tmp.unlink(missing_ok=True)
        except OSError:  # no locks on this file system: readers judge by the pid and the age
            return tmp, fd
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
    raise OSError(errno.EAGAIN, "every new temp file was removed at once")


def _drop_leftovers(path: Path) -> None:
    """Remove temp files of earlier writes of `path` that no writer holds locked (one killed by kill -9): beside a
    `prefill -o` target no cache trim would ever find them."""
    with contextlib.suppress(OSError):
        for p in path.parent.iterdir():
            if temp_of(path, p) and temp_is_stale(p):
                remove_file(p)


def planned_size(n_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, n_tokens: int) -> int:
    """Bytes of the K/V tensors of such a file (what the cache cap compares)."""
    return 2 * n_layers * kv_heads * n_tokens * head_dim * torch.empty(0, dtype=dtype).element_size()


def _layout(n_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, n_tokens: int,
            meta: dict[str, str]) -> tuple[dict[str, str], list, int]:
    """A file's full metadata, its tensor entries in file order and its header length (ROOM included)."""
    full = full_meta(meta, n_tokens, n_layers, kv_heads, head_dim, dtype)
    entries = [("prefix_ids", torch.int64, [n_tokens])]
    for i in range(n_layers):
        for kind in ("keys", "values"):
            entries.append((f"layers.{i}.{kind}", dtype, [1, kv_heads, n_tokens, head_dim]))
    return full, entries, len(plan_header(entries, full)) + ROOM


def file_size(n_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, n_tokens: int,
              meta: dict[str, str]) -> int:
    """Bytes of the whole KV file a KVWriter with these arguments writes: header, token ids, keys and values."""
    header_len = _layout(n_layers, kv_heads, head_dim, dtype, n_tokens, meta)[2]
    return header_len + 8 * n_tokens + planned_size(n_layers, kv_heads, head_dim, dtype, n_tokens)


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk of `folder` (of its nearest existing parent while it is not made yet)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def room_shortfall(path: Path, size: int) -> tuple[str, int] | None:
    """("X needed, Y free in FOLDER", the missing bytes) when a `size`-byte file cannot fit at `path`; None when it
    fits or the free space cannot be told."""
    try:
        free = free_bytes(Path(path).parent)
    except OSError:
        return None
    if free >= size:
        return None
    return f"{human_size(size)} needed, {human_size(free)} free in {Path(path).parent}", size - free


class KVWriter:
    """One KV file written from rows handed over as they are computed (`rows`), completed by `finish`.

    The main thread calls `rows`, `finish`, `wait` and `abort`; a daemon thread does all the copying and writing.
    A hand-over that does not fit the plan (another shape or dtype, rows out of order) makes the writer give up
    quietly (`usable` False, temp file gone): the caller then saves the finished cache with save_kv."""

    def __init__(self, path: Path, n_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 prefix_ids: list[int], meta: dict[str, str]) -> None:
        self.path, self.n_tokens, self.dtype = Path(path), len(prefix_ids), dtype
        self.meta, self._entries, self._header_len = _layout(n_layers, kv_heads, head_dim, dtype, self.n_tokens, meta)
        self._shape = (1, kv_heads, head_dim)
        self._row_bytes = head_dim * torch.empty(0, dtype=dtype).element_size()
        self._layer_bytes = kv_heads * self.n_tokens * self._row_bytes
        self._data0 = self._header_len + 8 * self.n_tokens  # where layer 0's keys start
        self.size = self._data0 + 2 * n_layers * self._layer_bytes
        self._next = [0] * n_layers  # rows handed over so far, per layer
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._done = threading.Event()
        self.error: BaseException | None = None
        self.usable = True
        self.finished = False
        self.written = 0  # bytes written so far (the writer thread's progress)
        self.tmp: Path | None = None  # the temp file, once made and locked
        self._fd: int | None = None
        try:  # any failure here is reported by wait(), after the prefill, like a failed write
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp, self._fd = _locked_temp(self.path)
            free = shutil.disk_usage(self.path.parent).free
            if free < self.size:
                raise OSError(errno.ENOSPC, f"{human_size(self.size)} needed, {human_size(free)} free")
            os.ftruncate(self._fd, self.size)
            self._queue.put(("ids", torch.tensor([int(i) for i in prefix_ids], dtype=torch.int64)))  # ids: [T]
        except OSError as err:
            self.error = err
        except BaseException:  # Ctrl-C: nothing may stay behind
            self._close(renamed=False)
            raise
        self._thread = threading.Thread(target=self._run, name="tmix-kv-writer", daemon=True)
        self._thread.start()
        _live.add(self)

    # ---------------------------------------------------------------- main thread

    def rows(self, layer: int, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Hand over rows [start, start + n) of one layer (keys/values: [1, Hkv, n, D], final, not to be changed)."""
        if not self.usable or self.error is not None:
            return
        n = keys.shape[-2] if keys is not None and keys.dim() == 4 else -1
        fits = (n >= 0 and tuple(keys.shape) == (1, self._shape[1], n, self._shape[2])
                and values is not None and values.shape == keys.shape and keys.dtype == values.dtype == self.dtype
                and 0 <= layer < len(self._next) and start == self._next[layer] and start + n <= self.n_tokens)
        if not fits:
            self._give_up()
            return
        self._next[layer] = start + n
        event = None
        if keys.is_cuda:  # the copy waits for the rows on the GPU, not for everything queued after them
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(keys.device))
        self._queue.put(("rows", layer, keys, values, start, event))

    def finish(self, extra_meta: dict[str, str] | None = None) -> None:
        """All rows are handed over: write the header (with `extra_meta`), fsync and rename, in the background."""
        if not self.usable or self.finished or self.error is not None:  # an error: wait() reports it
            return
        if any(n != self.n_tokens for n in self._next):
            self._give_up()
            return
        self.finished = True
        self.meta.update(extra_meta or {})
        self._queue.put(("finish",))

    def wait(self) -> int:
        """Block until the file is complete (Ctrl-C aborts it); the file's size, or TmixError."""
        try:
            while not self._done.wait(0.1):
                pass
        except BaseException:
            self.abort()
            raise
        if self.error is not None:
            raise write_error(self.path, self.error, self.size)
        if not self.usable:
            raise TmixError(f"KV file {self.path} was not written: the cache's rows did not fit its plan")
        return self.size

    def abort(self) -> None:
        """Stop writing and remove the temp file (a renamed, complete file stays)."""
        self._stop.set()
        self._queue.put(("stop",))
        self._thread.join()

    def _give_up(self) -> None:
        self.usable = False
        self.abort()

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        renamed = False
        try:
            stage: dict = {}
            while self.error is None and not self._stop.is_set():
                item = self._queue.get()
                if item[0] == "ids":
                    self._put_cpu(item[1], self._header_len)
                elif item[0] == "rows":
                    self._put_rows(*item[1:], stage)
                elif item[0] == "finish":
                    header = plan_header(self._entries, self.meta, size=self._header_len)
                    _pwrite(self._fd, header, 0)
                    os.fsync(self._fd)
                    if self._stop.is_set():  # aborted during the fsync: no file, as the caller was told
                        raise InterruptedError("aborted")
                    os.replace(self.tmp, self.path)
                    renamed = True
                    fsync_dir(self.path.parent)
                    _drop_leftovers(self.path)
                    break
                else:
                    break
        except BaseException as err:  # noqa: BLE001 - reported by wait() on the main thread
            self.error = err
        finally:
            self._close(renamed)
            if not renamed and self.error is None and self.usable:
                self.error = InterruptedError("the KV file was not finished")
            self._done.set()

    def _close(self, renamed: bool) -> None:
        """Remove the temp file unless it became the KV file; then close it, which lets its lock go."""
        if not renamed and self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _put_rows(self, layer: int, keys: torch.Tensor, values: torch.Tensor, start: int, event: Any,
                  stage: dict) -> None:
        segments = []  # (rows of one head [n, D], file offset)
        for kind, t in enumerate((keys, values)):  # t: [1, Hkv, n, D]
            base = self._data0 + (2 * layer + kind) * self._layer_bytes
            segments += [(t[0, h], base + (h * self.n_tokens + start) * self._row_bytes) for h in range(t.shape[1])]
        if keys.device.type == "cuda":
            self._put_gpu(segments, event, stage)
            return
        for piece, offset in segments:
            self._put_cpu(piece, offset)

    def _put_cpu(self, t: torch.Tensor, offset: int) -> None:
        """Write a CPU tensor's bytes at `offset`, straight from its memory."""
        if self._stop.is_set():
            raise InterruptedError("aborted")
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8)  # raw: [bytes]
        self._write(memoryview(raw.numpy()), offset)

    def _put_gpu(self, segments: list, event: Any, stage: dict) -> None:
        """Copy GPU segments into the pinned buffer on a side stream of their device, then write them out; segments
        adjacent in the file (a one-shot prefill's heads, keys then values) go out as one write."""
        dev = segments[0][0].device
        side = stage.setdefault(dev, torch.cuda.Stream(dev))
        if "buf" not in stage:  # sized once for the largest hand-over (a layer's keys and values), never regrown:
            # a host allocation while the decode captures its CUDA graph is best avoided
            stage["buf"] = torch.empty(min(STAGE_BYTES, 2 * self._layer_bytes), dtype=torch.uint8, pin_memory=True)
        buf = stage["buf"]
        pending: list[list[int]] = []  # [buffer offset, bytes, file offset], merged where both are adjacent

        def flush() -> None:
            side.synchronize()
            for at, n, offset in pending:
                if self._stop.is_set():
                    raise InterruptedError("aborted")
                self._write(memoryview(buf[at:at + n].numpy()), offset)
            pending.clear()

        with torch.cuda.device(dev), torch.cuda.stream(side):
            if event is not None:
                side.wait_event(event)
            used = 0
            for t, offset in segments:
                raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
                done = 0
                while done < raw.numel():
                    if used == buf.numel():
                        flush()
                        used = 0
                    n = min(raw.numel() - done, buf.numel() - used)
                    buf[used:used + n].copy_(raw[done:done + n], non_blocking=True)
                    last = pending[-1] if pending else None
                    if last and last[0] + last[1] == used and last[2] + last[1] == offset + done:
                        last[1] += n
                    else:
                        pending.append([used, n, offset + done])
                    used, done = used + n, done + n
            flush()

    def _write(self, data: memoryview, offset: int) -> None:
        _pwrite(self._fd, data, offset)
        self.written += data.nbytes


def cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer, each [1, Hkv, T, D]; refuses sliding or mismatched layers."""
    layers = getattr(cache, "layers", None)
    if not layers:
        raise TmixError("cannot save an empty KV cache")
    out = []
    for i, layer in enumerate(layers):
        if getattr(layer, "is_sliding", False) or "Sliding" in type(layer).__name__:
            raise TmixError(f"layer {i}: {SLIDING_MSG}")
        k, v = layer.keys, layer.values
        if k is None or v is None or k.dim() != 4 or k.shape != v.shape or k.dtype != v.dtype:
            raise TmixError(f"cannot save KV cache: layer {i} has no [B, Hkv, T, D] keys/values")
        if k.shape[0] != 1:
            raise TmixError(f"cannot save KV cache: batch size {k.shape[0]}, only 1 is supported")
        out.append((k, v))
    shape0, dtype0 = out[0][0].shape, out[0][0].dtype
    if any(k.shape != shape0 or k.dtype != dtype0 for k, _ in out):
        raise TmixError("cannot save KV cache: layers differ in shape or dtype")
    return out


def cache_bytes(cache: Any) -> int:
    """Bytes of a cache's K/V tensors: about the size of its KV file."""
    return sum(t.numel() * t.element_size() for pair in cache_tensors(cache) for t in pair)


def save_kv(path: Path | str, cache: Any, prefix_ids: list[int], meta: dict[str, str]) -> int:
    """Write a finished cache + prefix ids + meta atomically (temp file, fsync, rename); returns bytes written."""
    layers = cache_tensors(cache)
    k0 = layers[0][0]  # keys: [1, Hkv, T, D]
    if k0.shape[2] != len(prefix_ids):
        raise TmixError(f"cannot save KV cache: {k0.shape[2]} cached tokens but {len(prefix_ids)} prefix ids")
    writer = KVWriter(Path(path), len(layers), k0.shape[1], k0.shape[3], k0.dtype, prefix_ids, meta)
    for i, (k, v) in enumerate(layers):
        writer.rows(i, k, v, 0)
    writer.finish()
    return writer.wait()


def abort_all() -> None:
    """Abort writers nobody waited for (a command that failed after its prefill): no temp file is left."""
    for writer in list(_live):
        if not writer._done.is_set():
            writer.abort()


def write_error(path: Path, err: BaseException, size: int | None = None) -> BaseException:
    """The error a failed KV file write is reported as: one line for disk problems, else the error itself. `size`:
    the whole file's bytes, so that a full disk's hint can weigh what is missing now against what clearing frees."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        detail = f" ({err.strerror})" if err.strerror and "needed" in err.strerror else ""
        short = room_shortfall(path, size) if size is not None else None
        return TmixError(f"disk full while writing KV file {path}{detail}; "
                         f"{room_hint(Path(path), short[1] if short else None)}", code=1)
    if isinstance(err, OSError):
        return TmixError(f"could not write KV file {path}: {diskerrors.reason(err)}", code=diskerrors.exit_code(err))
    return err


def fsync_dir(d: Path) -> None:
    """Make a rename in `d` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

