"""Optional torch.compile of each decoder layer's RMSNorms and MLP, which fuses their elementwise work on the GPU.

Attention, rotary embedding and the KV cache stay eager (the tmix attention dispatch is plain Python + Triton).
Each compiled module is compiled with a dynamic sequence length, so every prompt length reuses one graph;
all layers share it. Nothing about the model's classes changes: `nn.Module.compile` wraps the instances.
"""

from __future__ import annotations

import torch

PARTS = ("input_layernorm", "post_attention_layernorm", "mlp")


def resolve_compile(choice: str, device: torch.device) -> bool:
    """"auto" compiles on CUDA only (inductor's CPU code gains little here and needs a C compiler)."""
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"--compile takes auto, on or off, not {choice!r}")
    return choice == "on" or (choice == "auto" and device.type == "cuda")


def compile_blocks(model: torch.nn.Module) -> int:
    """Compile the norms and MLP of every decoder layer plus the final norm; returns how many modules."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        return 0
    n = 0
    for layer in layers:
        for name in PARTS:
            part = getattr(layer, name, None)
            if isinstance(part, torch.nn.Module):
                part.compile(dynamic=True)
                n += 1
    norm = getattr(inner, "norm", None)
    if isinstance(norm, torch.nn.Module):
        norm.compile(dynamic=True)
        n += 1
    return n
