"""Cheap checks of a --model value and of --start-layer against it, made before torch is imported (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.modelinfo import converted_gguf_dir, model_limits
from tmixcli.paths import DEFAULT_MODEL

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def check_model(spec: str | None) -> None:
    """Refuse a missing model path, a folder transformers cannot load, or a .gguf that is not one; hub ids pass."""
    if not spec or spec == DEFAULT_MODEL:
        return
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TmixError(f"model file not found: {spec}")
        if not (converted_gguf_dir(path) / "config.json").is_file():
            check_gguf(path)
    elif not path.exists():
        if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:  # `org/name` is a hub id
            raise TmixError(f"model directory not found: {spec}")
    else:
        check_folder(path, spec)


def check_gguf(path: Path) -> None:
    """Refuse a file that does not start with the GGUF magic bytes, before a conversion is announced."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise TmixError(f"cannot read {path}: {err.strerror or err}") from None
    if magic != b"GGUF":
        raise TmixError(f"{path.name} is not a GGUF model file (it does not start with the bytes 'GGUF')")


def check_folder(path: Path, spec: str) -> None:
    """A model folder needs a config.json, tokenizer files and weights: say which is missing."""
    if not (path / "config.json").is_file():
        raise TmixError(f"{spec} is not a model directory (no config.json)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TmixError(f"{spec} is not a usable model folder: cannot read its config.json ({err})") from None
    if not isinstance(config, dict):
        raise TmixError(f"{spec} is not a usable model folder: its config.json is not a JSON object")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise TmixError(f"{spec} is not a usable model folder: no tokenizer files (tokenizer.json / tokenizer.model)")
    if not any(next(path.glob(pattern), None) is not None for pattern in WEIGHT_PATTERNS):
        raise TmixError(f"{spec} is not a usable model folder: no weight files (*.safetensors / *.bin)")


def check_start_layer(spec: str | None, method: str | None, start_layer: int | None) -> None:
    """Refuse a --start-layer past the model's layers where its config.json is on disk (no torch)."""
    if start_layer is None or method == "dense":
        return
    layers = model_limits(spec).layers
    if layers is not None and start_layer > layers:
        raise TmixError(f"--start-layer {start_layer} is past the model's {layers} layers")
