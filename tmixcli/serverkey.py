"""The key a `tmix serve` is found by: the settings its model options resolve to, not the options as typed.

`--dtype auto` on a CPU is fp32, `--device cuda` is cuda:0, the default model may be named or left out, and a model
folder may be named relative to any working folder: each setting has one spelling here, so a client finds a server
with the same settings however either was spelled, and never one whose settings differ. Clients resolve `--device
auto` without importing torch (seconds); the server, which imports it anyway, asks torch itself (see gpu_here).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.modelinfo import model_ref
from tmixcli.paths import DEFAULT_MODEL, cache_root, models_dir

_GPU_NODES = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")  # NVIDIA, WSL2, ROCm: no GPU is usable without one


def server_key(model: str | None, device: str, dtype: str, device_map: str | None, compile: str,
               cuda: bool | None = None) -> str:
    """What a server must match: the model, device, dtype, device map and compilation these options resolve to, and
    the cache folder (its socket's name: a long cache path puts every socket in one temp folder, serve_client).

    `cuda`: whether `--device auto` means CUDA here (None: judged by gpu_here, as a client does)."""
    dev = _device(device, cuda)
    gpu = dev.startswith("cuda")
    return json.dumps({
        "model": _model(model),
        "device": dev,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES") if gpu else None,  # which GPU cuda:0 is
        "dtype": ("bf16" if gpu else "fp32") if dtype == "auto" else dtype,
        "device_map": device_map or "",
        "compile": compile == "on" or (compile == "auto" and gpu),
        "cache": _real(cache_root()),
    }, sort_keys=True)


def _device(device: str, cuda: bool | None) -> str:
    """cpu or cuda:N, as torch.device(...) places the model."""
    if device == "auto":
        device = "cuda" if (gpu_here() if cuda is None else cuda) else "cpu"
    return "cuda:0" if device == "cuda" else device


def _model(spec: str | None) -> list[str]:
    """One spelling per model: the default (named, left out, or its converted folder), a file or folder by its real
    absolute path, else a hub id as given (what modelinfo.model_ref says it names)."""
    ref = model_ref(spec)
    if ref.kind == "default":
        return ["default"]
    try:
        real = ref.path.resolve() if ref.kind in ("gguf", "folder") else None
    except (OSError, RuntimeError):  # a symlink loop: not a path tmix could load either
        real = None
    if real is None:
        return ["id", spec]
    return ["default"] if real == _default_dir() else ["path", str(real)]


def _real(path: Path) -> str:
    """`path` by its real absolute path (links resolved), as far as it exists."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop: named as written
        return str(path.absolute())


def _default_dir() -> Path | None:
    """Where the default model is converted to (None when the cache folder cannot be used)."""
    try:
        return (models_dir() / DEFAULT_MODEL).resolve()
    except (OSError, RuntimeError, TmixError):
        return None


def gpu_here() -> bool:
    """Whether torch would find a GPU for `--device auto`, judged without importing torch: a CUDA or ROCm build of
    it, a GPU device node, and CUDA_VISIBLE_DEVICES (if set) naming a device first."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):  # a torch module without a spec: nothing to read
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return False
    if not re.search(r"^(cuda|hip)\b[^=\n]*=\s*['\"]", text, re.M):  # `cuda = None` in a CPU build
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        first = visible.split(",")[0].strip()
        if not (first.isdigit() or first.startswith(("GPU-", "MIG-"))):  # "", "-1": every GPU hidden
            return False
    return any(glob.glob(node) for node in _GPU_NODES)
