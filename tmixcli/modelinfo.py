"""A model's depth and context from its config.json, read without torch where the model is already on disk, so
arguments that do not fit it are refused before the slow imports and the load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.paths import DEFAULT_MODEL, converted_gguf_name, models_dir, read_regular


@dataclass(frozen=True)
class ModelLimits:
    """Decoder layers and context length; None where the config does not say (or is not on disk yet)."""

    layers: int | None = None
    context: int | None = None


def converted_gguf_dir(path: Path) -> Path:
    """Where a .gguf file is converted to once (named by its stem and size)."""
    return models_dir() / converted_gguf_name(path)


def model_folder(spec: str | None) -> Path | None:
    """Where the files of the model `--model` names are, as models.load_model finds them (None: not on disk yet)."""
    try:
        if not spec or spec == DEFAULT_MODEL:
            return models_dir() / DEFAULT_MODEL
        path = Path(spec).expanduser()
        if path.suffix == ".gguf":
            return converted_gguf_dir(path) if path.is_file() else None
        if path.is_dir():
            return path
    except (OSError, RuntimeError, TmixError):
        return None
    return _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of a hub id's main revision, if there is one (never the network)."""
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or Path(home) / "hub")
    hub = hub.expanduser()
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except (OSError, ValueError):
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None


def model_limits(spec: str | None = None) -> ModelLimits:
    """Layers and context of `spec` (default: $TMIX_MODEL, else the embedded model) from its config.json on disk."""
    try:
        folder = model_folder(spec or os.environ.get("TMIX_MODEL"))
        data = json.loads(read_regular(folder / "config.json")) if folder is not None else {}
    except (OSError, ValueError):
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
