"""Cheap checks of a --model value and of --start-layer against it, made before torch is imported (seconds)."""

from __future__ import annotations

import itertools
import json
import os
import stat
import struct
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.modelinfo import converted_gguf_dir, model_folder, model_limits
from tmixcli.paths import DEFAULT_MODEL, not_a_file, open_regular, read_regular

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # the model types whose attention tmix runs
RUNS = "llama, mistral, qwen2 and qwen3 models"
SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")
GGUF_TYPE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar value types
GGUF_STRING = 8


def check_model(spec: str | None) -> None:
    """Refuse a missing model path, a folder transformers cannot load or tmix cannot run, or a .gguf that is not one;
    a hub id is checked only where the local Hugging Face cache holds its config.json."""
    if not spec or spec == DEFAULT_MODEL:
        return
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TmixError(f"model file not found: {spec}")
        converted = converted_gguf_dir(path) / "config.json"
        if converted.is_file():  # converted before: its config.json says what it holds
            check_config(converted, f"{spec} (converted to {converted.parent}) is not a usable model")
        else:
            check_gguf(path)
    elif not path.exists():
        if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:  # `org/name` is a hub id
            raise TmixError(f"model directory not found: {spec}")
        snapshot = model_folder(spec)
        if snapshot is not None and (snapshot / "config.json").is_file():
            check_config(snapshot / "config.json", f"{spec} (in the Hugging Face cache) is not a usable model")
    else:
        check_folder(path, spec)


def check_gguf(path: Path) -> None:
    """Refuse a file that does not start with the GGUF magic bytes, or that holds a model of an architecture tmix
    cannot run, before a conversion is announced."""
    try:
        with os.fdopen(open_regular(str(path)), "rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise TmixError(f"cannot read {path}: {err.strerror or err}") from None
    if head[:4] != b"GGUF":
        raise TmixError(f"{path.name} is not a GGUF model file (it does not start with the bytes 'GGUF')")
    arch = gguf_architecture(head)
    if arch is not None and arch not in FAMILIES:
        raise TmixError(f"{path.name} holds a {arch!r} model (its general.architecture), which tmix cannot run: it "
                        f"runs {RUNS}")


def gguf_architecture(head: bytes) -> str | None:
    """general.architecture from the first bytes of a GGUF file (v2+), where it comes before any array; else None."""
    try:
        version, _, count = struct.unpack_from("<IQQ", head, 4)
        offset = 24
        for _ in range(min(count, 64) if version >= 2 else 0):
            size, = struct.unpack_from("<Q", head, offset)
            key = head[offset + 8:offset + 8 + size]
            kind, = struct.unpack_from("<I", head, offset + 8 + size)
            offset += 12 + size
            if kind == GGUF_STRING:
                size, = struct.unpack_from("<Q", head, offset)
                value = head[offset + 8:offset + 8 + size]
                if key == b"general.architecture":
                    return value.decode("utf-8", "replace")
                offset += 8 + size
            elif kind in GGUF_TYPE_SIZES:
                offset += GGUF_TYPE_SIZES[kind]
            else:  # an array: the header's metadata is not walked further
                return None
    except struct.error:  # a header shorter than it says: the conversion names the damage
        return None
    return None


def check_folder(path: Path, spec: str) -> None:
    """A model folder needs a config.json tmix can run, tokenizer files and weights: say which is missing."""
    special = _special_file(path)
    if special is not None:
        raise TmixError(f"{spec} is not a usable model folder: {special}")
    if not (path / "config.json").is_file():
        raise TmixError(f"{spec} is not a model directory (no config.json)")
    check_config(path / "config.json", f"{spec} is not a usable model folder")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise TmixError(f"{spec} is not a usable model folder: no tokenizer files (tokenizer.json / tokenizer.model)")
    if not any(next(path.glob(pattern), None) is not None for pattern in WEIGHT_PATTERNS):
        raise TmixError(f"{spec} is not a usable model folder: no weight files (*.safetensors / *.bin)")


def _special_file(folder: Path) -> str | None:
    """A FIFO, device or socket in the folder, named ("tokenizer.json is a FIFO ..."): loading the model would wait
    on opening it for good."""
    try:
        entries = list(itertools.islice(folder.iterdir(), 10000)) if folder.is_dir() else []
    except OSError:
        return None
    for entry in entries:
        try:
            mode = entry.stat().st_mode
        except OSError:  # a broken link: transformers names it if it needs the file
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return f"{entry.name} is {not_a_file(entry)}"
    return None


def check_config(file: Path, refused: str) -> None:
    """Refuse a config.json transformers cannot load or tmix cannot run: `refused`, then what is wrong with it."""
    try:
        config = json.loads(read_regular(file).decode("utf-8"))
    except (OSError, ValueError) as err:
        raise TmixError(f"{refused}: cannot read its config.json ({err})") from None
    why = config_problem(config)
    if why is not None:
        raise TmixError(f"{refused}: its config.json {why}")


def config_problem(config: object) -> str | None:
    """What makes a parsed config.json unusable ("has no model_type", ...), or None for one tmix can run."""
    if not isinstance(config, dict):
        return "is not a JSON object"
    kind = config.get("model_type")
    if kind is None or kind == "":
        return f"has no model_type (tmix runs {RUNS})"
    if kind not in FAMILIES:
        return f"has model_type {kind!r}, which tmix cannot run: it runs {RUNS}"
    names = config.get("architectures")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return f"has architectures {names!r}, not a list of class names"
    if names and not any(n.endswith("ForCausalLM") for n in names):
        return f"names no causal language model in architectures {names} (tmix needs a ...ForCausalLM)"
    missing = [key for key in SIZES if config.get(key) is None]
    if missing:
        return f"lacks {', '.join(missing)}"
    for key in SIZES + OPTIONAL_SIZES:
        value = config.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return f"has {key} {value!r}, not a positive whole number"
    return _heads_problem(config)


def _heads_problem(config: dict) -> str | None:
    """Attention heads that cannot be split: query heads not a multiple of KV heads, or no whole head size."""
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    if heads % kv_heads:
        return f"has num_attention_heads {heads}, not a multiple of num_key_value_heads {kv_heads}"
    if config.get("head_dim") is None and config["hidden_size"] % heads:
        return (f"has hidden_size {config['hidden_size']}, not a multiple of num_attention_heads {heads} "
                "(and no head_dim)")
    return None


def check_start_layer(spec: str | None, method: str | None, start_layer: int | None,
                      layers: int | None = None) -> None:
    """Refuse a --start-layer past the model's layers: `layers`, else from its config.json where that is on disk
    (no torch)."""
    if start_layer is None or method == "dense":
        return
    layers = layers or model_limits(spec).layers
    if layers is not None and start_layer > layers:
        raise TmixError(f"--start-layer {start_layer} is past the model's {layers} layers")
