"""Whether a model's weights fit the memory they would load into, judged from their files' headers before the load:
a model too large for the machine is one line, exit 1 as for memory that runs out (or, with `--dtype auto` on the
CPU, half-size bf16 weights) instead of a process the kernel kills without a word after a long load."""

from __future__ import annotations

import shutil
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.sizes import human_size
from tmixcli.sysmem import available_bytes
from tmixcli.weightfiles import weight_elements

CPU_MARGIN = 1.15  # the weights, and what tmix, torch and a prefill need beside them
GPU_MARGIN = 1.05  # the weights, and the CUDA context's share not yet taken
CONVERT_MARGIN = 1.6  # a GGUF conversion's peak beside its fp32 weights (SmolLM2-135M: 0.84 GB over 0.54 GB)


def _free(device_type: str, index: int | None) -> int | None:
    """Bytes free on the CPU or on the GPU `index`."""
    if device_type != "cuda":
        return available_bytes()
    import torch

    return torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())[0]


def auto_bf16_note(folder: Path | None) -> str | None:
    """Why `--dtype auto` on the CPU loads bf16 rather than fp32, if it must: fp32 weights would not fit the free
    memory and bf16 ones would (None: fp32, or nothing known)."""
    n = weight_elements(folder) if folder is not None else None
    free = available_bytes()
    if n is None or free is None or n * 4 * CPU_MARGIN <= free or n * 2 * CPU_MARGIN > free:
        return None
    return (f"the model's weights need ~{human_size(n * 4)} in fp32 and {human_size(free)} of memory is free: "
            f"loading them in bf16 (~{human_size(n * 2)}; --dtype fp32 to insist)")


def _gpu_hint() -> str:
    import torch

    return ("--device-map auto spreads it over the GPUs" if torch.cuda.device_count() > 1 else
            "a smaller model, or --device cpu")


def check_room(model_id: str, folder: Path | None, bits: int, device_type: str, index: int | None = None) -> None:
    """Refuse a model whose `bits`-bit weights would not fit the free memory of the CPU or GPU they load into."""
    n = weight_elements(folder) if folder is not None else None
    if n is not None:
        check_numbers(f"model {model_id!r}", n, bits, device_type, index)


def check_numbers(label: str, n: int, bits: int, device_type: str, index: int | None = None) -> None:
    """Refuse `n` weights of `bits` bits that would not fit the free memory of the CPU or GPU (`label` names them)."""
    free = _free(device_type, index)
    need = n * bits / 8
    if free is None or need * (GPU_MARGIN if device_type == "cuda" else CPU_MARGIN) <= free:
        return
    where = "the GPU has" if device_type == "cuda" else "the machine has"
    halved = bits > 16 and need / 2 * CPU_MARGIN <= free
    hint = (_gpu_hint() if device_type == "cuda" else "--dtype bf16 halves it" if halved else
            "a smaller model, or free memory")
    raise TmixError(f"{label} needs ~{human_size(int(need))} of memory for its {bits}-bit weights and {where} "
                    f"{human_size(free)} free: {hint}", code=1)


def _count(n: int) -> str:
    """8030261248 -> "8.0B", 134515008 -> "135M", 4096 -> "4096"."""
    return f"{n / 1e9:.1f}B" if n >= 10**9 else f"{n / 1e6:.0f}M" if n >= 10**6 else str(n)


def check_conversion(name: str, elements: int | None, folder: Path) -> None:
    """Refuse converting the GGUF `name` (`elements` numbers) where its fp32 weights would not fit the free memory
    while they are converted, or the free disk of the models `folder` once written."""
    if elements is None:
        return
    need = elements * 4
    free = available_bytes()
    if free is not None and need * CONVERT_MARGIN > free:
        raise TmixError(f"converting {name} needs ~{human_size(int(need * CONVERT_MARGIN))} of memory (its "
                        f"{_count(elements)} weights in fp32) and the machine has {human_size(free)} free: convert "
                        f"it on a larger machine, or use a smaller model", code=1)
    try:
        disk = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > disk:
        raise TmixError(f"converting {name} writes ~{human_size(need)} of fp32 weights and {folder} has "
                        f"{human_size(disk)} free: free disk space, or set TMIX_MODELS_DIR to a larger disk", code=1)
