"""Whether a model's weights fit the memory they would load into, judged from their files' headers before the load:
a model too large for the machine is one line (or, with `--dtype auto` on the CPU, half-size bf16 weights) instead
of a process the kernel kills without a word after a long load."""

from __future__ import annotations

from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.kvfolder import human_size
from tmixcli.sysmem import available_bytes
from tmixcli.weightfiles import weight_elements

CPU_MARGIN = 1.15  # the weights, and what tmix, torch and a prefill need beside them
GPU_MARGIN = 1.05  # the weights, and the CUDA context's share not yet taken


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
    free = _free(device_type, index) if n is not None else None
    if n is None or free is None:
        return
    need = n * bits / 8
    if need * (GPU_MARGIN if device_type == "cuda" else CPU_MARGIN) <= free:
        return
    where = "the GPU has" if device_type == "cuda" else "the machine has"
    halved = bits > 16 and need / 2 * CPU_MARGIN <= free
    hint = (_gpu_hint() if device_type == "cuda" else "--dtype bf16 halves it" if halved else
            "a smaller model, or free memory")
    raise TmixError(f"model {model_id!r} needs ~{human_size(int(need))} of memory for its {bits}-bit weights and "
                    f"{where} {human_size(free)} free: {hint}")
