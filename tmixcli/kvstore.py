"""KV cache files: one safetensors file per prefilled prefix, validated before safetensors sees it."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tmixcli
from tmixcli.config import AttentionConfig, Settings
from tmixcli.errors import TmixError
from tmixcli.paths import cache_subdir, open_regular

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache

FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 * 1024 * 1024
SUFFIX = ".safetensors"
TMP_SUFFIX = ".tmp"
ATTN_FIELDS = ("method", "n_init", "n_local", "last_n", "start_layer", "dense_backend")
# Fields check_kv compares against the current run, in the order they are reported.
CHECKED_FIELDS = ("tmix_format", "dtype", "model_fingerprint",
                  *(f"attn_{f}" for f in ATTN_FIELDS), "template_hash", "doc_sha256")
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "tmix_attention", "dtype", "torch_dtype",
                        "_commit_hash", "attn_implementation", "use_cache", "output_attentions",
                        "output_hidden_states", "return_dict"}
# safetensors dtype -> (torch dtype name, item size); by name so that `tmix cache` never imports torch
ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
ST_NAMES = {f"torch.{name}": st for st, (name, _) in ST_DTYPES.items()}
DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16",
               "torch.float8_e4m3fn": "fp8_e4m3", "torch.float8_e5m2": "fp8_e5m2", "torch.float64": "fp64"}
SLIDING_MSG = "sliding-window attention is not supported by the KV cache yet"


# ---------------------------------------------------------------- identity


def model_fingerprint(model: Any, tokenizer: Any) -> str:
    """sha256 over the stable config, the tokenizer and a cheap weight digest; cached on the model."""
    cached = getattr(model, "_tmix_fingerprint", None)
    if cached:
        return cached
    h = hashlib.sha256()
    h.update(_json(_stable_config(model.config)).encode())
    h.update(_tokenizer_digest(tokenizer))
    h.update(_weight_digest(model))
    fp = h.hexdigest()
    with contextlib.suppress(AttributeError, TypeError):
        object.__setattr__(model, "_tmix_fingerprint", fp)
    return fp


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _stable_config(config: Any) -> dict:
    """config.to_dict() without keys that change with how (not what) the model was loaded."""
    def strip(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items()
                    if k not in VOLATILE_CONFIG_KEYS and not str(k).startswith("_attn_implementation")}
        return d
    return strip(config.to_dict())


def _tokenizer_digest(tokenizer: Any) -> bytes:
    """Vocab, special tokens and chat template (tolerates tokenizer=None)."""
    if tokenizer is None:
        return b"no-tokenizer"
    parts = {
        "vocab": sorted(tokenizer.get_vocab().items()) if hasattr(tokenizer, "get_vocab") else None,
        "special": sorted(map(str, getattr(tokenizer, "all_special_tokens", []) or [])),
        "bos": str(getattr(tokenizer, "bos_token", None)),
        "eos": str(getattr(tokenizer, "eos_token", None)),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return hashlib.sha256(_json(parts).encode()).digest()


def _weight_digest(model: Any) -> bytes:
    """First/last 4096 and 4096 strided elements of the embeddings and the first and last q_proj."""
    tensors = []
    with contextlib.suppress(AttributeError, NotImplementedError):
        tensors.append(model.get_input_embeddings().weight)
    q_projs = [p for n, p in model.named_parameters() if n.endswith("q_proj.weight")]
    tensors += q_projs[:1] + q_projs[-1:] if len(q_projs) > 1 else q_projs
    h = hashlib.sha256()
    for t in tensors:
        h.update(_sample_bytes(t))
    return h.digest()


def _sample_bytes(t: torch.Tensor, n: int = 4096) -> bytes:
    import torch

    if t.device.type == "meta":
        return f"meta{tuple(t.shape)}".encode()
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // n)
    parts = [flat[:n], flat[-n:], flat[::step][:n]]
    sample = torch.cat([p.to(torch.float32) for p in parts]).cpu()
    return str(tuple(t.shape)).encode() + sample.numpy().tobytes()


def cache_key(fingerprint: str, attn: AttentionConfig, prefix_ids: list[int]) -> str:
    """Content address of a prefilled prefix: 24 hex chars of sha256(model, attention, token ids)."""
    h = hashlib.sha256()
    h.update(fingerprint.encode() + b"\n")
    h.update(_json(attn.to_dict()).encode() + b"\n")
    h.update(",".join(str(int(i)) for i in prefix_ids).encode())
    return h.hexdigest()[:24]


def kv_dir(create: bool = True) -> Path:
    """cache_dir()/kv, created on demand (create=False: only its path, for reading)."""
    return cache_subdir("kv", create)


def kv_path_for(key: str) -> Path:
    return kv_dir() / f"{key}{SUFFIX}"


def dtype_name(dtype: torch.dtype | str) -> str:
    """torch.bfloat16 -> "bf16"; strings pass through."""
    return dtype if isinstance(dtype, str) else DTYPE_NAMES.get(str(dtype), str(dtype).removeprefix("torch."))


def build_meta(*, model_id: str, fingerprint: str, dtype: torch.dtype | str, attn: AttentionConfig,
               doc_name: str, doc_sha256: str, template_hash: str, n_tokens: int,
               system: str | None = None) -> dict[str, str]:
    """The metadata of a KV file; save_kv adds num_layers, kv_heads and head_dim from the tensors. `system`: the
    system prompt of the prefix ("" for none), recorded so that a run from the file alone can take it."""
    meta = {
        "tmix_format": FORMAT_VERSION, "tmix_version": tmixcli.__version__, "format": "pt",
        "model_id": str(model_id), "model_fingerprint": fingerprint, "dtype": dtype_name(dtype),
        "doc_name": str(doc_name), "doc_sha256": doc_sha256, "template_hash": template_hash,
        "n_tokens": str(int(n_tokens)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update({f"attn_{k}": str(v) for k, v in attn.to_dict().items() if k in ATTN_FIELDS})
    if system is not None:
        meta["system"] = system
    return meta


ATTN_FLAGS = {"method": "--attention", "n_init": "--n-init", "n_local": "--n-local", "last_n": "--last-n",
              "start_layer": "--start-layer"}


def settings_for(meta: dict[str, str], s: Settings) -> Settings:
    """`s` for answering from a KV file alone: the attention settings and system prompt left unset take the file's
    values; one set otherwise is refused, since the file's prefix was computed under it."""
    fixed: dict[str, Any] = {}
    dense = meta.get("attn_method") == "dense"
    for name, flag in ATTN_FLAGS.items():
        stored, given = meta.get(f"attn_{name}"), getattr(s, name)
        if dense and name != "method" and given is not None and s.method != "dense":
            raise TmixError(f"{flag} {given} cannot apply to this KV file: it was made with --attention dense, "
                            f"which has no triangle layers; leave {flag} out, or prefill the document again with "
                            f"--attention trimix")
        if stored is None or (name != "method" and (dense or not stored.isdigit())):
            continue  # the triangle's settings mean nothing to a dense file; a damaged value is refused on load
        if given is None:
            fixed[name] = stored if name == "method" else int(stored)
        elif str(given) != stored:
            raise TmixError(f"{flag} {given} cannot apply to this KV file: it was made with {flag} {stored}, and "
                            f"attention settings are fixed when a document is prefilled; leave {flag} out, or "
                            f"prefill the document again with {flag} {given}")
    stored = meta.get("system")
    if stored is not None and s.system is None:
        fixed["system"] = stored or None
    elif stored is not None and s.system != stored:
        made = f"with the system prompt {_short(stored)}" if stored else "without a system prompt"
        raise TmixError(f"this KV file was made {made}, which is part of its cached prefix, so --system "
                        f"{_short(s.system)} cannot apply to it; leave --system out to use the file's, or prefill "
                        f"the document again with the new --system")
    return replace(s, **fixed)


def _short(text: str, n: int = 60) -> str:
    """A quoted, shortened piece of text for a message line."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= n else flat[:n] + "...")


# ---------------------------------------------------------------- sliding window


def uses_sliding_window(config: Any) -> bool:
    """True for configs with sliding-window layers (layer_types, or an active sliding_window)."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return True
    if getattr(config, "use_sliding_window", None) is False:
        return False
    window = getattr(config, "sliding_window", None)
    max_pos = getattr(config, "max_position_embeddings", None)
    return isinstance(window, int) and window > 0 and (max_pos is None or window < max_pos)


def refuse_sliding(config: Any) -> None:
    """Raise TmixError for models whose KV cache would be a sliding window."""
    if uses_sliding_window(config):
        name = getattr(config, "model_type", "this model")
        raise TmixError(f"{name}: {SLIDING_MSG}")


# ---------------------------------------------------------------- save


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


def plan_header(entries: list[tuple[str, torch.dtype, list[int]]], meta: dict[str, str],
                size: int | None = None) -> bytes:
    """The safetensors header (length prefix + JSON padded with spaces to 8 bytes, or to exactly `size` bytes in
    all) for tensors (name, dtype, shape) stored back to back in this order."""
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * ST_DTYPES[ST_NAMES[str(dtype)]][1]
        header[name] = {"dtype": ST_NAMES[str(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    pad = -len(raw) % 8 if size is None else size - 8 - len(raw)
    if pad < 0:
        raise TmixError(f"KV metadata too long for its header ({len(raw)} bytes, room for {size - 8})")
    return struct.pack("<Q", len(raw) + pad) + raw + b" " * pad


def full_meta(meta: dict[str, str], n_tokens: int, n_layers: int, kv_heads: int, head_dim: int,
              dtype: torch.dtype) -> dict[str, str]:
    """`meta` plus the fields every KV file has (format, shape, dtype, version); all strings, or TmixError."""
    full = {**meta, "tmix_format": FORMAT_VERSION, "n_tokens": str(n_tokens), "num_layers": str(n_layers),
            "kv_heads": str(kv_heads), "head_dim": str(head_dim)}
    full.setdefault("dtype", dtype_name(dtype))
    full.setdefault("tmix_version", tmixcli.__version__)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in full.items()):
        raise TmixError("KV metadata must map strings to strings")
    return full


def save_kv(path: Path, cache: Any, prefix_ids: list[int], meta: dict[str, str]) -> int:
    """Write cache + prefix ids + meta atomically (temp file, fsync, rename); returns bytes written."""
    from tmixcli import kvwrite

    return kvwrite.save_kv(Path(path), cache, prefix_ids, meta)


def write_error(path: Path, err: BaseException) -> BaseException:
    """The error a failed KV file write is reported as: one line for disk problems, else the error itself."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        detail = f" ({err.strerror})" if err.strerror and "needed" in err.strerror else ""
        return TmixError(f"disk full while writing KV file {path}{detail}; {room_hint(Path(path))}")
    if isinstance(err, OSError):
        return TmixError(f"could not write KV file {path}: {err.strerror or err}")
    return err


def room_hint(path: Path) -> str:
    """How to make room for a KV file: `tmix cache clear` only where it frees space on the file's disk."""
    folder = kv_dir(create=False)
    if path.parent.resolve() == folder.resolve():
        return "free space or run `tmix cache clear`"
    try:
        shared = path.parent.stat().st_dev == folder.stat().st_dev and any(map(_is_kv_file, folder.iterdir()))
    except OSError:
        shared = False
    if shared:
        return f"free space in {path.parent} or run `tmix cache clear` (the KV cache is on the same disk)"
    return f"free space in {path.parent}, or write the file to another disk with -o"


def fsync_dir(d: Path) -> None:
    """Make a rename in `d` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- validate / read


def _read_header(path: Path, check_data: bool = True) -> tuple[dict[str, Any], int, int]:
    """Validate the safetensors framing ourselves (the tensors' data spans too unless not `check_data`); returns
    (header, header_len, file_size)."""
    path = Path(path)
    with os.fdopen(open_kv(path), "rb") as f:
        try:
            size = os.fstat(f.fileno()).st_size
            head = f.read(9)
            n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
            if len(head) < 9 or head[8:9] != b"{":
                raise TmixError(f"{path} is not a safetensors KV file{_kind_hint(head)}")
            if n > MAX_HEADER_BYTES:
                raise TmixError(f"{path}: safetensors header length {n} exceeds the 100 MB limit "
                                "(corrupt or malicious file)")
            if n > size - 8:
                raise TmixError(f"{path} is truncated: header needs {n} bytes, file has {size - 8}")
            f.seek(8)
            raw = f.read(n)
        except OSError as err:
            raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from None
    header = _parse_header(path, raw)
    if check_data:
        _check_tensors(path, header, size - 8 - n)
    return header, n, size


def open_kv(path: Path) -> int:
    """A read-only descriptor of the KV file `path`, opened without waiting on what is no regular file (a FIFO or a
    device swapped in after a check would hold a server for good): TmixError for that."""
    try:
        return open_regular(str(path))
    except FileNotFoundError:
        raise TmixError(f"KV file not found: {path}") from None
    except IsADirectoryError:
        raise TmixError(f"{path} is a directory, not a KV file") from None
    except PermissionError:
        raise TmixError(f"cannot read KV file {path}: permission denied") from None
    except OSError as err:
        raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from None


def _kind_hint(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return " (it looks like a PyTorch/pickle file; tmix never unpickles)"
    return ""


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TmixError(f"{path} is not a safetensors KV file (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise TmixError(f"{path} is not a safetensors KV file (header is not a JSON object)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise TmixError(f"{path}: corrupt KV file (metadata must map strings to strings)")
    return header


def _check_tensors(path: Path, header: dict[str, Any], data_len: int) -> None:
    """Every tensor: known dtype, sane shape, offsets inside the file, bytes == numel x itemsize."""
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise TmixError(f"{path}: corrupt KV file (entry {name!r} is not an object)")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in ST_DTYPES:
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} has unknown dtype {dtype!r})")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} has a bad shape)")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} has bad data offsets)")
        if offs[1] > data_len:
            raise TmixError(f"{path} is truncated: tensor {name!r} ends at data byte {offs[1]}, "
                            f"file has {data_len}")
        if offs[1] - offs[0] != math.prod(shape) * ST_DTYPES[dtype][1]:
            raise TmixError(f"{path}: corrupt KV file (tensor {name!r} size does not match its shape)")
        spans.append(tuple(offs))
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise TmixError(f"{path}: corrupt KV file (tensor data overlaps or has gaps)")
        end = stop
    if end != data_len:
        raise TmixError(f"{path}: corrupt KV file ({data_len - end} trailing bytes after the tensors)")


def _check_version(path: Path, meta: dict[str, str]) -> None:
    version = meta.get("tmix_format")
    if version is None:
        raise TmixError(f"{path} is a safetensors file but not a tmix KV file (no tmix_format in metadata)")
    if version != FORMAT_VERSION:
        made_by = "a newer" if _as_int(version) > int(FORMAT_VERSION) else "an older"
        raise TmixError(f"{path} has KV format version {version!r} (made by {made_by} tmix; this tmix "
                        f"reads version {FORMAT_VERSION}); re-run tmix prefill")


def _as_int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return -1


def read_meta(path: Path) -> dict[str, str]:
    """The validated metadata of a KV file; reads the header only."""
    header, _, _ = _read_header(Path(path))
    meta = header.get("__metadata__", {})
    _check_version(Path(path), meta)
    return meta


def read_checked_meta(path: Path) -> dict[str, str]:
    """read_meta, with its sizes (n_tokens, layers, heads) checked against the header's tensor shapes."""
    header, _, _ = _read_header(Path(path))
    meta = header.get("__metadata__", {})
    _check_version(Path(path), meta)
    _expected_tensors(Path(path), header, meta)
    return meta


def inspect_kv(path: Path) -> dict[str, Any]:
    """Header facts for `tmix cache info`: metadata, tensor count, sizes, the size-formula check, and `damage`: why
    the tensors' data cannot be used (a truncated file, ...), or None."""
    path = Path(path)
    header, header_len, size = _read_header(path, check_data=False)
    meta = header.get("__metadata__", {})
    _check_version(path, meta)
    try:
        _check_tensors(path, header, size - 8 - header_len)
        damage = None
    except TmixError as err:
        damage = str(err)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    expected = None
    with contextlib.suppress(KeyError, ValueError, StopIteration):
        itemsize = next(ST_DTYPES[v["dtype"]][1] for k, v in tensors.items() if k.startswith("layers."))
        dims = [int(meta[k]) for k in ("num_layers", "kv_heads", "n_tokens", "head_dim")]
        expected = dims[0] * 2 * dims[1] * dims[2] * dims[3] * itemsize
    kv_bytes = None
    with contextlib.suppress(KeyError, TypeError, IndexError):
        kv_bytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in tensors.items() if k != "prefix_ids")
    return {"path": str(path), "metadata": meta, "tensor_count": len(tensors), "file_size": size,
            "header_bytes": header_len, "kv_bytes": kv_bytes, "expected_kv_bytes": expected,
            "size_matches": expected == kv_bytes and damage is None, "damage": damage}


# ---------------------------------------------------------------- load / check


def _expected_tensors(path: Path, header: dict[str, Any], meta: dict[str, str]) -> tuple[int, int, int, int]:
    """Check the tensor set against the metadata; returns (layers, kv_heads, tokens, head_dim)."""
    try:
        dims = tuple(int(meta[k]) for k in ("num_layers", "kv_heads", "n_tokens", "head_dim"))
    except (KeyError, ValueError):
        raise TmixError(f"{path}: corrupt KV file (metadata lacks num_layers/kv_heads/n_tokens/head_dim)") \
            from None
    n_layers, heads, tokens, head_dim = dims
    names = {"prefix_ids"} | {f"layers.{i}.{kv}" for i in range(n_layers) for kv in ("keys", "values")}
    if set(header) - {"__metadata__"} != names:
        raise TmixError(f"{path}: KV file tensors do not match its num_layers={n_layers}")
    if header["prefix_ids"]["shape"] != [tokens] or header["prefix_ids"]["dtype"] != "I64":
        raise TmixError(f"{path}: KV file has {header['prefix_ids']['shape']} prefix ids "
                        f"but n_tokens={tokens}")
    for name in names - {"prefix_ids"}:
        if header[name]["shape"] != [1, heads, tokens, head_dim]:
            raise TmixError(f"{path}: tensor {name} has shape {header[name]['shape']}, metadata says "
                            f"[1, {heads}, {tokens}, {head_dim}]")
    return dims


def read_prefix_ids(path: Path) -> list[int]:
    """The prefix token ids a KV file holds (reads that tensor only)."""
    path = Path(path)
    header, head_len, _ = _read_header(path)
    info = header.get("prefix_ids")
    if not isinstance(info, dict) or info["dtype"] != "I64" or len(info["shape"]) != 1:
        raise TmixError(f"{path}: corrupt KV file (no int64 prefix_ids)")
    start, stop = info["data_offsets"]
    fd = open_kv(path)
    try:
        data = os.pread(fd, stop - start, 8 + head_len + start)
    except OSError as err:
        raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) != stop - start:
        raise TmixError(f"{path} is truncated: its prefix ids end past the end of the file")
    return list(struct.unpack(f"<{len(data) // 8}q", data))


def load_kv(path: Path, device: torch.device | str | Sequence[torch.device] = "cpu", rows: int | None = None,
            headroom: int | None = None, give_up: Callable[[int, int, float], bool] | None = None,
            ) -> tuple[DynamicCache, list[int], dict[str, str]]:
    """Validate and read a KV file into a DynamicCache on `device` (or one device per layer, as a
    device map places them); records last use. `rows`: only the first rows (positions) of every layer;
    `headroom`: spare rows to allocate after them (default kvcache.HEADROOM); `give_up`: see kvread.read_pieces
    (kvread.Abandoned is raised through)."""
    import torch
    from transformers import DynamicCache

    from tmixcli import kvread
    from tmixcli.kvcache import GrowingLayer

    path = Path(path)
    header, head_len, _ = _read_header(path)
    meta = header.get("__metadata__", {})
    _check_version(path, meta)
    n_layers, heads, tokens, head_dim = _expected_tensors(path, header, meta)
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
        dtype = getattr(torch, ST_DTYPES[k_info["dtype"]][0])
        layer = GrowingLayer.empty((1, heads, keep, head_dim), dtype, devices[i], headroom)  # keys: [1, Hkv, T, D]
        todo += kvread.pieces(8 + head_len, k_info, layer.keys, keep)
        todo += kvread.pieces(8 + head_len, v_info, layer.values, keep)
        cache.layers.append(layer)
    for d in {d for d in devices if d.type == "cuda"}:
        torch.cuda.synchronize(d)  # the new buffers may reuse memory that queued kernels still read
    try:
        kvread.read_pieces(str(path), todo, give_up=give_up)
    except OSError as err:
        raise TmixError(f"cannot read KV file {path}: {err.strerror or err}") from err
    prefix_ids = read_prefix_ids(path)[:keep]  # prefix_ids: [T]
    with contextlib.suppress(OSError):
        os.utime(path)
    return cache, prefix_ids, meta


def check_kv(meta: dict[str, str], cache: Any, expected: dict[str, str], model_config: Any) -> None:
    """Refuse a loaded KV file that does not fit this run: names the first field that differs."""
    refuse_sliding(model_config)
    check_fields(meta, expected)
    _check_shapes(meta, cache, model_config)


def check_fields(meta: dict[str, str], expected: dict[str, str]) -> None:
    """The metadata part of check_kv (model, dtype, attention, template, document), before any tensor is read."""
    for field in CHECKED_FIELDS:
        if field in expected and meta.get(field) != expected[field]:
            raise TmixError(_mismatch(field, meta.get(field), expected[field]))


def _mismatch(field: str, old: str | None, new: str) -> str:
    if field.startswith("attn_"):
        return f"KV file was made with attention {field[5:]}={old}, now {new}; re-run tmix prefill"
    if field == "model_fingerprint":
        return (f"KV file was made for a different model (fingerprint {str(old)[:12]}, "
                f"now {new[:12]}); re-run tmix prefill")
    if field == "template_hash":
        return (f"KV file was made with another prompt template (hash {old}, now {new}), such as another "
                f"--system; use the system prompt it was made with, or re-run tmix prefill")
    if field == "doc_sha256":
        return f"KV file was made from another document (sha256 {str(old)[:12]}, now {new[:12]})"
    return f"KV file was made with {field} {old}, now {new}; re-run tmix prefill"


def model_kv_dims(config: Any) -> tuple[int, int, int]:
    """(num_layers, kv_heads, head_dim) the model's KV cache has."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def _check_shapes(meta: dict[str, str], cache: Any, config: Any) -> None:
    n_layers, kv_heads, head_dim = model_kv_dims(config)
    layers = list(getattr(cache, "layers", []))
    if len(layers) != n_layers:
        raise TmixError(f"KV file has {len(layers)} layers, the model has {n_layers}")
    tokens = int(meta.get("n_tokens", -1))
    want = meta.get("dtype")
    for i, layer in enumerate(layers):
        shape = list(layer.keys.shape)
        if shape[1] != kv_heads or shape[3] != head_dim:
            raise TmixError(f"KV file layer {i} has kv_heads={shape[1]} head_dim={shape[3]}, "
                            f"the model has kv_heads={kv_heads} head_dim={head_dim}")
        if shape[2] != tokens:
            raise TmixError(f"KV file layer {i} holds {shape[2]} tokens but its n_tokens={tokens}")
        if want and dtype_name(layer.keys.dtype) != want:
            raise TmixError(f"KV file layer {i} has dtype {dtype_name(layer.keys.dtype)}, metadata says {want}")


def check_prefix(stored: list[int], expected: list[int]) -> None:
    """Raise TmixError unless the stored prefix ids are exactly the prompt's prefix."""
    if list(stored) == list(expected):
        return
    first = next((i for i, (a, b) in enumerate(zip(stored, expected)) if a != b), min(len(stored), len(expected)))
    raise TmixError(f"KV file prefix differs from this prompt at token {first} "
                    f"(stored {len(stored)} tokens, prompt prefix {len(expected)}); re-run tmix prefill")


# ---------------------------------------------------------------- listing


def _is_kv_file(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUFFIX) and not p.name.startswith(".")


def list_entries(root: Path | None = None) -> list[dict]:
    """One dict per KV file under root (default cache_dir()/kv, not created), most recently used first; TmixError
    when the folder cannot be read."""
    root = Path(root) if root is not None else kv_dir(create=False)
    if not root.is_dir():
        return []
    try:
        entries = [e for e in map(_entry, root.iterdir()) if e is not None]
    except OSError as err:
        raise TmixError(f"cannot read the cache folder {root}: {err.strerror or err}") from None
    return sorted(entries, key=lambda e: e["last_used"], reverse=True)


def _entry(p: Path) -> dict | None:
    """The listing of one KV file; None for anything else, or a file removed meanwhile."""
    if not _is_kv_file(p):
        return None
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    entry = {"key": p.name[: -len(SUFFIX)], "doc_name": None, "model_id": None, "n_tokens": None,
             "size": st.st_size, "created": None,
             "last_used": datetime.fromtimestamp(st.st_mtime, timezone.utc)
             .isoformat(timespec="seconds"), "path": str(p), "error": None}
    try:
        meta = read_meta(p)
    except TmixError as err:
        entry["error"] = str(err)
        return entry
    entry.update(doc_name=meta.get("doc_name"), model_id=meta.get("model_id"),
                 n_tokens=_as_int(meta.get("n_tokens", "-1")), created=meta.get("created"))
    return entry


def human_size(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)
DEFAULT_CACHE_MAX = "20G"


def parse_size(text: str, what: str = "TMIX_CACHE_MAX") -> int | None:
    """Bytes from "20G", "500M", "1.5T", "123456", "0"; None for "off", "none" or "" (no limit)."""
    if text.strip().lower() in ("", "off", "none"):
        return None
    match = _SIZE.fullmatch(text)
    if not match:
        raise TmixError(f"{what} must be a size like 20G, 500M or off, not {text!r}")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def cache_limit() -> int | None:
    """The KV cache's size cap in bytes from TMIX_CACHE_MAX (default 20G), or None for no cap: "off", or a plain
    "0", which TMIX_CACHE_MAX has always read as no cap (`cache prune --max-size 0` means zero bytes)."""
    text = os.environ.get("TMIX_CACHE_MAX", DEFAULT_CACHE_MAX)
    return None if text.strip() == "0" else parse_size(text)


def cache_bytes(cache: Any) -> int:
    """Bytes of a cache's K/V tensors: about the size of its KV file."""
    return sum(t.numel() * t.element_size() for pair in cache_tensors(cache) for t in pair)


def trim_cache(limit: int | None, keep: Path | None = None,
               root: Path | None = None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Remove least recently used KV files until the cache fits `limit` bytes (never `keep`); the removed entries,
    and (path, why) for files that could not be removed (skipped: a more recently used one goes instead)."""
    if limit is None:
        return [], []
    entries = list_entries(root)  # most recently used first
    total = sum(e["size"] for e in entries)
    removed, failed = [], []
    for e in reversed(entries):
        if total <= limit:
            break
        if keep is not None and Path(e["path"]).resolve() == Path(keep).resolve():
            continue
        why = remove_file(Path(e["path"]))
        if why is not None:
            failed.append((Path(e["path"]), why))
            continue
        total -= e["size"]
        removed.append(e)
    return removed, failed


def remove_file(path: Path) -> str | None:
    """Unlink a cache file (one already gone counts as removed); why it could not be removed, else None."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        return err.strerror or str(err)
    return None


def remove_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Unlink each file (remove_file); (path, why) for those that could not be removed."""
    return [(p, why) for p in paths if (why := remove_file(p)) is not None]


def cannot_remove(failed: Sequence[tuple[Path, str]]) -> str:
    """One line for files that could not be removed: the path and why, or for several the count, a few names and
    the reasons."""
    if len(failed) == 1:
        return f"cannot remove {failed[0][0]}: {failed[0][1]}"
    names = ", ".join(p.name for p, _ in failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    reasons = "; ".join(dict.fromkeys(why for _, why in failed))
    return f"cannot remove {len(failed)} files in {failed[0][0].parent} ({names}): {reasons}"


def temp_files(root: Path | None = None) -> list[Path]:
    """Leftover temp files of interrupted saves."""
    root = Path(root) if root is not None else kv_dir(create=False)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]


def temp_is_stale(path: Path, quiet_s: float = 60.0) -> bool:
    """True for a temp file no save will finish: its writer's pid (in the name) is gone, or, with no readable pid,
    nothing was written to it for `quiet_s`."""
    parts = path.name.split(".")  # "", <name parts...>, <pid>, <8 hex>, "tmp"
    try:
        pid = int(parts[-3])
    except (IndexError, ValueError):
        pid = None
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, owned by someone else
            pass
        return False
    try:
        return time.time() - path.stat().st_mtime > quiet_s
    except OSError:
        return False
