"""What a --model value names, and the model's depth and context from its config.json, read without torch where
the model is already on disk, so arguments that do not fit it are refused before the slow imports and the load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tmixcli.errors import TmixError
from tmixcli.paths import DEFAULT_MODEL, converted_gguf_name, models_dir
from tmixcli.filekind import read_regular


@dataclass(frozen=True)
class ModelLimits:
    """Decoder layers and context length; None where the config does not say (or is not on disk yet)."""

    layers: int | None = None
    context: int | None = None


def converted_gguf_dir(path: Path) -> Path:
    """Where a .gguf file is converted to once (named by its stem and size)."""
    return models_dir() / converted_gguf_name(path)


class ModelRef(NamedTuple):
    """What a --model value names (model_ref): `kind` "default" (the embedded model), "gguf" (a .gguf file), "folder"
    (another path that exists), "missing" (a path that does not) or "hub" (a Hugging Face id); `path`: the path, ~
    expanded (None for the default and a hub id)."""

    kind: str
    path: Path | None

    def not_found(self, named: str) -> str:
        """The error for a "missing" path, `named` as the user gave it."""
        return f"model {'file' if self.path.suffix == '.gguf' else 'directory'} not found: {named}"


def model_ref(spec: str | None) -> ModelRef:
    """What a --model value names: nothing or DEFAULT_MODEL is the default, a .gguf name a GGUF file, a path that exists
    a folder, a name that looks like a path (/, ., ~ first, or two slashes) a missing one, else a hub id ("org/name").
    A path that cannot even be looked up (an unknown ~user, a name too long) does not exist."""
    if not spec or spec == DEFAULT_MODEL:
        return ModelRef("default", None)
    path = Path(spec)
    try:
        path = path.expanduser()
        found = path.is_file() if path.suffix == ".gguf" else path.exists()
    except (OSError, RuntimeError):
        found = False
    if found:
        return ModelRef("gguf" if path.suffix == ".gguf" else "folder", path)
    if path.suffix == ".gguf" or spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        return ModelRef("missing", path)
    return ModelRef("hub", None)


def model_folder(spec: str | None) -> Path | None:
    """Where the files of the model `--model` names are, as models.load_model finds them (None: not on disk yet)."""
    ref = model_ref(spec)
    try:
        if ref.kind == "default":
            return models_dir() / DEFAULT_MODEL
        if ref.kind == "gguf":
            return converted_gguf_dir(ref.path)
        if ref.kind == "folder":
            return ref.path if ref.path.is_dir() else None
    except (OSError, RuntimeError, TmixError):
        return None
    return _hub_snapshot(spec) if ref.kind == "hub" else None


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
    """Layers and context of the model `--model` names (None: the embedded one) from its config.json on disk."""
    try:
        folder = model_folder(spec)
        data = json.loads(read_regular(folder / "config.json")) if folder is not None else {}
    except (OSError, ValueError):
        return ModelLimits()
    return config_limits(data)


def config_limits(config: object) -> ModelLimits:
    """Layers and context a parsed config.json gives (a multimodal model's in its text_config): positive whole
    numbers, else None. The one reading of these sizes before a load (model_limits, textcap, filetok)."""
    if not isinstance(config, dict):
        return ModelLimits()
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    return ModelLimits(_positive(config.get("num_hidden_layers")), _positive(config.get("max_position_embeddings")))


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def model_context(model: object) -> int:
    """The loaded model's context length (max_position_embeddings; unbounded where its config has none)."""
    return int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
