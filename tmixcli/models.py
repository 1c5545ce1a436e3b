"""Load a model and tokenizer: the embedded default (SmolLM2-135M-Instruct GGUF), an HF id, a local dir, a .gguf."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from tmixcli import convert, filetok, oom
from tmixcli.errors import TmixError
from tmixcli.modelcheck import check_folder, check_hub_reachable, check_placement, from_env
from tmixcli.memfit import auto_bf16_note, check_room
from tmixcli.oom import BF16_ADVICE, MODEL_ADVICE
from tmixcli.modelinfo import converted_gguf_dir, model_context, model_folder, model_ref
from tmixcli.paths import DEFAULT_MODEL
from tmixcli.filekind import read_regular
from tmixcli.prompt import Tokenizer
from tmixcli.sizes import human_size
from tmixcli.threads import configure_threads
from tmixcli.weightfiles import weight_elements

LAYER_KEY = re.compile(r"\blayers\.(\d+)\.")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class LoadedModel:
    """A causal LM ready for tmix: model (eval mode), tokenizer, a stable id, device and dtype."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    model_id: str
    device: torch.device
    dtype: torch.dtype

    @property
    def context(self) -> int:
        """The context length in tokens (max_position_embeddings; unbounded where the config has none)."""
        return model_context(self.model)


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device of a --device value (auto: the GPU where there is one); TmixError for a mistyped value or for
    cuda where no GPU is visible."""
    check_placement(device=device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TmixError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The decoder layers of a causal LM (`model.model.layers`), None for another layout."""
    return getattr(getattr(model, "model", None), "layers", None)


def layer_devices(model: torch.nn.Module) -> list[torch.device] | None:
    """The device of each decoder layer's weights (differs per layer under a device map); None if unknown."""
    layers = decoder_layers(model)
    if layers is None:
        return None
    devices = []
    for layer in layers:
        param = next(layer.parameters(), None)
        if param is None or param.device.type == "meta":  # offloaded: accelerate moves it in at run time
            return None
        devices.append(param.device)
    return devices


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype of a --dtype value: auto is bf16 on a GPU, fp32 on the CPU (where load_model still picks bf16
    if fp32 weights would not fit the free memory: _fitting_dtype)."""
    check_placement(dtype=dtype)
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def _resolve_source(spec: str | None, progress: bool) -> tuple[str, Path | None, str]:
    """Map a --model value to (path or id, its local folder (None: a hub id), stable model id)."""
    ref = model_ref(spec)
    if ref.kind == "default":
        folder = convert.default_model_dir(progress)
        return str(folder), folder, DEFAULT_MODEL
    if ref.kind == "missing":
        raise TmixError(ref.not_found(spec + from_env(spec)))
    if ref.kind == "gguf":
        converted = converted_gguf_dir(ref.path)
        if not (converted / "config.json").is_file():
            convert.convert_gguf(ref.path.resolve(), converted, progress)
        return str(converted), converted, ref.path.name
    if ref.kind == "folder":
        check_folder(ref.path, spec + from_env(spec))
        return str(ref.path), ref.path, ref.path.resolve().name
    return spec, None, spec


def _load_failed(model_id: str, err: Exception | None, folder: Path | None = None) -> TmixError:
    why = (str(err).splitlines() or [""])[0]
    if "ignore_mismatched_sizes" in why:  # transformers points to a report that tmix keeps quiet
        why = "the tensor shapes in its weight files do not match its config.json's sizes"
    elif isinstance(err, SafetensorError):  # damage the early check (weightfiles) did not see
        why = f"a weight file is damaged (safetensors: {why})"
    elif isinstance(err, json.JSONDecodeError) and folder is not None:
        why = _broken_json(folder) or why
    return TmixError(f"could not load model {model_id!r}: {why}")


def _broken_json(folder: Path) -> str | None:
    """Which of a model folder's JSON files does not parse ("tokenizer.json cannot be read (...)"), if one does not."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "generation_config.json", "config.json"):
        try:
            json.loads(read_regular(folder / name))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            return f"{name} cannot be read ({err})"
    return None


def _check_weights(model_id: str, config: object, info: dict) -> None:
    """Refuse weights that lack tensors the model needs (they would be random) or hold layers past its config's:
    the config.json and the weight files do not belong together."""
    missing = sorted(info.get("missing_keys") or ())
    layers = getattr(config, "num_hidden_layers", None) or 0
    extra = sorted(k for k in info.get("unexpected_keys") or () if (m := LAYER_KEY.search(k)) and int(m[1]) >= layers)
    if missing:
        raise TmixError(f"could not load model {model_id!r}: its weight files lack {len(missing)} of the tensors its "
                        f"config.json asks for ({missing[0]}, ...); the two do not belong together")
    if extra:
        raise TmixError(f"could not load model {model_id!r}: its weight files hold {len(extra)} tensors of layers past "
                        f"the {layers} its config.json has ({extra[0]}, ...); the two do not belong together")


def _fitting_dtype(model_id: str, folder: Path | None, dtype: str, dt: torch.dtype, dev: torch.device,
                   progress: bool) -> torch.dtype:
    """The dtype to load in (`--dtype auto` on the CPU: bf16 where fp32 weights would not fit the free memory), after
    refusing weights that would not fit it at all."""
    if dtype == "auto" and dev.type == "cpu":
        note = auto_bf16_note(folder)
        if note is not None:
            dt = torch.bfloat16
            if progress:
                print(f"tmix: {note}", file=sys.stderr, flush=True)
    check_room(model_id, folder, torch.finfo(dt).bits, dev.type, dev.index)
    return dt


def _loading(model_id: str, folder: Path | None, dt: torch.dtype) -> tuple[str, str, str]:
    """What an allocation that fails while the model loads is said with (oom.error): the step, advice, the size."""
    bits = torch.finfo(dt).bits
    n = weight_elements(folder) if folder is not None else None
    size = f"its {bits}-bit weights take ~{human_size(n * bits // 8)}" if n else ""
    halves = bits > 16 and oom.address_limit() is None  # under ulimit -v the file's own mapping stays as large
    return f"loading model {model_id!r}", BF16_ADVICE if halves else MODEL_ADVICE, size


def _from_pretrained(source: str, folder: Path | None, model_id: str, dt: torch.dtype, extra: dict,
                     loading: tuple[str, str, str]) -> tuple[Tokenizer, torch.nn.Module, dict]:
    """Tokenizer, model and loading info; offline first, then from the hub (an id not in the local cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    last_err: Exception | None = None
    for local_only in (True, False):
        if not local_only:
            if folder is not None:  # a local folder: nothing to download
                raise _load_failed(model_id, last_err, folder)
            check_hub_reachable(model_id)
        try:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model, info = AutoModelForCausalLM.from_pretrained(
                source, dtype=dt, local_files_only=local_only, attn_implementation="sdpa", output_loading_info=True,
                **extra)
            return tok, model, info
        except (OSError, ValueError) as err:
            oom.check(err, *loading)
            last_err = err
        except (RuntimeError, SafetensorError) as err:  # a local file that does not fit: fetching it again won't help
            oom.check(err, *loading)
            raise _load_failed(model_id, err, folder) from None
    raise _load_failed(model_id, last_err, folder)


def load_model(spec: str | None = None, device: str = "auto", dtype: str = "auto",
               progress: bool = True, device_map: str | None = None, threads: str | None = None) -> LoadedModel:
    """Load model + tokenizer; HF ids are tried offline first so a cached model needs no network.

    `device_map="auto"` spreads the layers over every visible GPU (accelerate); each layer's attention runs
    on its own device. On the CPU, `threads` (N or "auto", default $TMIX_THREADS or auto) sets torch's threads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a < 1 s load needs no bar; the one-time conversion prints its own lines
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if dev.type == "cpu":
        configure_threads(threads)
    check_placement(device_map=device_map)
    extra = {} if device_map is None else {"device_map": "auto"}
    source, folder, model_id = _resolve_source(spec, progress)
    if device_map is None:
        dt = _fitting_dtype(model_id, folder or model_folder(source), dtype, dt, dev, progress)
        if dev.type == "cuda":
            extra["device_map"] = dev  # straight onto the GPU: no copy of the weights in the machine's memory first
    loading = _loading(model_id, folder or model_folder(source), dt)
    with oom.step(*loading):
        tok, model, info = _from_pretrained(source, folder, model_id, dt, extra, loading)
        _check_weights(model_id, model.config, info)
        if device_map is None:
            model.to(dev)
    model.eval()
    lm = LoadedModel(model, tok, model_id, model.device, dt)
    filetok.remember(lm, source)  # later runs fit documents from the tokenizer's files, before the load
    return lm
