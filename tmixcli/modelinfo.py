"""A model's depth and context from its config.json, read without torch where the model is already on disk, so
arguments that do not fit it are refused before the slow imports and the load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.paths import DEFAULT_MODEL, models_dir


@dataclass(frozen=True)
class ModelLimits:
    """Decoder layers and context length; None where the config does not say (or is not on disk yet)."""

    layers: int | None = None
    context: int | None = None


def converted_gguf_dir(path: Path) -> Path:
    """Where a .gguf file is converted to once (named by its stem and size)."""
    return models_dir() / f"gguf-{path.stem}-{path.stat().st_size}"


def _config_path(spec: str | None) -> Path | None:
    """config.json of the model `--model` names (as models.load_model reads it), if it is on disk already."""
    if not spec or spec == DEFAULT_MODEL:
        return models_dir() / DEFAULT_MODEL / "config.json"
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return converted_gguf_dir(path) / "config.json" if path.is_file() else None
    if path.exists():
        return path / "config.json"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec, "config.json")  # the local HF cache only, never the network
    return Path(found) if isinstance(found, str) else None


def model_limits(spec: str | None = None) -> ModelLimits:
    """Layers and context of `spec` (default: $TMIX_MODEL, else the embedded model) from its config.json on disk."""
    try:
        path = _config_path(spec or os.environ.get("TMIX_MODEL"))
        data = json.loads(path.read_text()) if path is not None else {}
    except (ImportError, OSError, ValueError, RuntimeError, TmixError):
        return ModelLimits()
    if not isinstance(data, dict):
        return ModelLimits()
    if "num_hidden_layers" not in data and isinstance(data.get("text_config"), dict):
        data = data["text_config"]
    return ModelLimits(_positive(data.get("num_hidden_layers")), _positive(data.get("max_position_embeddings")))


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def model_context(model: object) -> int:
    """The loaded model's context length (max_position_embeddings; unbounded where its config has none)."""
    return int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
