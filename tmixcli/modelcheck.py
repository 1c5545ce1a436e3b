"""Cheap checks of a --model value, of --start-layer against it and of where and how it loads (--device, --dtype,
--device-map), made before torch is imported (seconds)."""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.ggufheader import EndsInHeader, GgufHeader, read_header
from tmixcli.modelinfo import converted_gguf_dir, model_folder, model_limits, model_ref
from tmixcli.filekind import not_a_file, open_regular, read_regular
from tmixcli.weightfiles import weights_problem

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
# The model types tmix runs: the one list (README, docs/usage.md and tests/tiny.py follow it; tests check them).
# Adding one: docs/contributing.md, "Adding a model family".
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
RUNS = f"{', '.join(FAMILIES[:-1])} and {FAMILIES[-1]} models"  # for the errors: "llama, ... and qwen3 models"
SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")


def check_model(spec: str | None, env: bool = False) -> None:
    """Refuse a missing model path, a folder transformers cannot load or tmix cannot run, or a .gguf that is not one;
    a hub id is checked only where the local Hugging Face cache holds its config.json. `env`: `spec` came from
    TMIX_MODEL, which the errors then name."""
    ref = model_ref(spec)
    if ref.kind == "default":
        return
    named = spec + from_env(spec, env)
    if ref.kind == "missing":
        raise TmixError(ref.not_found(named))
    if ref.kind == "gguf":
        converted = converted_gguf_dir(ref.path) / "config.json"
        if converted.is_file():  # converted before: its config.json says what it holds
            check_config(converted, f"{named} (converted to {converted.parent}) is not a usable model")
        else:
            check_gguf(ref.path, from_env(spec, env))
    elif ref.kind == "hub":
        snapshot = model_folder(spec)
        if snapshot is None:  # not in the local Hugging Face cache: only a download can bring it
            check_hub_reachable(spec, env=env)
        elif (snapshot / "config.json").is_file():
            check_config(snapshot / "config.json", f"{named} (in the Hugging Face cache) is not a usable model")
    else:
        check_folder(ref.path, named)


def from_env(spec: str | None, env: bool = False) -> str:
    """' (TMIX_MODEL)' after a model `spec` that came from that variable, not from --model (`env`, which the command
    knows from its option's source: cli_options.env_options), for the errors that name it (a stale export is hard to
    spot otherwise); else ''."""
    return " (TMIX_MODEL)" if spec and env else ""


def check_hub_reachable(model_id: str, timeout_s: float = 3.0, env: bool = False) -> None:
    """Fail at once, not after torch's import and a minute of retries, when a model missing from the local Hugging
    Face cache cannot be fetched: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, or the hub does not answer.
    `env`: `model_id` came from TMIX_MODEL (from_env)."""
    import socket
    from urllib.parse import urlparse

    hint = "pass a local model folder or .gguf file, or download it where there is network"
    shown = repr(model_id) + from_env(model_id, env)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"):  # as huggingface_hub reads them
            raise TmixError(f"model {shown} is not in the local Hugging Face cache and {name} is set: {hint}")
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
    except OSError:
        raise TmixError(f"model {shown} is not in the local Hugging Face cache and {url.hostname} cannot be "
                        f"reached: {hint}") from None


def check_gguf(path: Path, note: str = "") -> GgufHeader:
    """Refuse a file that does not start with the GGUF magic bytes, holds a model of an architecture tmix cannot run,
    or ends before its header or its tensor data does, before a conversion is announced; what its header says.
    `note` follows the file's name in the error (from_env)."""
    name = path.name + note
    try:
        with os.fdopen(open_regular(str(path)), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(4) != b"GGUF":
                raise TmixError(f"{name} is not a GGUF model file (it does not start with the bytes 'GGUF')")
            f.seek(0)
            header = read_header(f, size)
    except EndsInHeader:
        raise TmixError(f"{name} is truncated: the file ends inside its GGUF header, after {size} bytes") from None
    except OSError as err:
        raise TmixError(f"cannot read {path}{note}: {err.strerror or err}") from None
    arch = header.architecture
    if arch is not None and arch not in FAMILIES:
        raise TmixError(f"{name} holds a {arch!r} model (its general.architecture), which tmix cannot run: it "
                        f"runs {RUNS}")
    if header.data_end is not None and header.data_end > size:
        raise TmixError(f"{name} is truncated: its tensors end at byte {header.data_end}, the file has {size}")
    return header


def check_folder(path: Path, spec: str) -> None:
    """A model folder needs a config.json tmix can run, whole tokenizer files and weights: say which is missing or
    damaged."""
    if not path.is_dir():
        raise TmixError(f"{spec} is {not_a_file(path) or 'a file'}, not a model folder (give a folder with a "
                        "config.json, or a .gguf file)")
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
    why = _tokenizer_problem(path) or weights_problem(path)
    if why is not None:
        raise TmixError(f"{spec} is not a usable model folder: {why}")


def _tokenizer_problem(folder: Path) -> str | None:
    """A tokenizer.json that is empty or cut short (its end read, not the whole file: it can be megabytes), or a
    tokenizer_config.json that is not JSON: what a tokenizer load would stop on."""
    try:
        with os.fdopen(open_regular(str(folder / "tokenizer.json")), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 64))
            tail = f.read().rstrip()
    except OSError:  # none (another tokenizer file serves), or one the load names
        tail = None
    if tail is not None and not tail:
        return "tokenizer.json is empty"
    if tail is not None and not tail.endswith(b"}"):
        return "tokenizer.json is truncated (its JSON ends before its closing brace)"
    try:
        json.loads(read_regular(folder / "tokenizer_config.json"))
    except OSError:
        return None
    except ValueError as err:
        return f"tokenizer_config.json cannot be read ({err})"
    return None


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


def check_placement(device: str = "auto", dtype: str = "auto", device_map: str | None = None) -> None:
    """Refuse a mistyped --device, --dtype or --device-map: the one rule, checked before torch is imported
    (cli_options) and again where models resolves them, for callers that skip the command line."""
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise TmixError(f"unknown device {device!r}: use auto, cpu or cuda")
    if dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise TmixError(f"unknown dtype {dtype!r}: use auto, bf16, fp16 or fp32")
    if device_map not in (None, "auto"):
        raise TmixError(f"--device-map takes only 'auto', not {device_map!r}")


def check_start_layer(spec: str | None, method: str | None, start_layer: int | None,
                      layers: int | None = None) -> None:
    """Refuse a --start-layer past the model's layers: `layers`, else from its config.json where that is on disk
    (no torch)."""
    if start_layer is None or method == "dense":
        return
    layers = layers or model_limits(spec).layers
    if layers is not None and start_layer > layers:
        raise TmixError(f"--start-layer {start_layer} is past the model's {layers} layers")
