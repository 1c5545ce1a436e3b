"""Built-in model shapes for benchmarks: random weights of a real architecture, built directly on the device."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from tmixcli.errors import TmixError
from tmixcli.modelinfo import ModelLimits, config_limits

if TYPE_CHECKING:
    import torch

# Models above this many parameters are refused on the CPU unless forced (hours per prefill, 30+ GB RAM).
CPU_PARAM_LIMIT = 2_000_000_000

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
# Qwen2.5-7B is 32K native; its model card extends it to 128K with YaRN factor 4.
_QWEN_YARN_ROPE = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                   "original_max_position_embeddings": 32768}

_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-3.1-8b": ("llama", dict(
        num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_parameters=_LLAMA3_ROPE, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009)),
    "qwen2.5-7b": ("qwen2", dict(
        num_hidden_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
        intermediate_size=18944, vocab_size=152064, max_position_embeddings=131072, rms_norm_eps=1e-6,
        rope_parameters=_QWEN_YARN_ROPE, tie_word_embeddings=False, use_sliding_window=False,
        bos_token_id=151643, eos_token_id=151645)),
    "smollm2-135m": ("llama", dict(
        num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2)),
}
ARCH_NAMES = tuple(_SPECS)


def arch_limits(arch: str) -> ModelLimits:
    """Layers and context of a built-in arch (no transformers); TmixError naming the known ones otherwise."""
    if arch not in _SPECS:
        raise TmixError(f"unknown arch {arch!r}: known archs are {', '.join(ARCH_NAMES)}")
    return config_limits(_SPECS[arch][1])


def arch_config(arch: str) -> Any:
    """A fresh transformers config for a built-in arch; TmixError naming the known ones otherwise."""
    arch_limits(arch)
    from transformers import LlamaConfig, Qwen2Config

    kind, kwargs = _SPECS[arch]
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    return cls(**{k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()})


def __getattr__(name: str) -> Any:
    """`ARCHS` is built lazily (it imports transformers): a dict of arch name -> config."""
    if name == "ARCHS":
        return {a: arch_config(a) for a in ARCH_NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def param_count(config: Any) -> int:
    """Parameter count of a Llama/Qwen2-style decoder from its config (embeddings, layers, head)."""
    h, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q = config.num_attention_heads * head_dim
    kv = config.num_key_value_heads * head_dim
    bias = (q + 2 * kv) if config.model_type == "qwen2" else 0
    layer = h * q + 2 * h * kv + q * h + bias + 3 * h * inter + 2 * h
    head = 0 if config.tie_word_embeddings else vocab * h
    return vocab * h + config.num_hidden_layers * layer + h + head


def check_cpu_size(arch: str, bits: int, force: bool = False) -> None:
    """Refuse an arch above CPU_PARAM_LIMIT parameters for a CPU benchmark in `bits`-bit weights (counted from its
    shape, without transformers: before a word about building it); forced, refuse it only when its weights would not
    fit the free memory, where the kernel would kill the run without a word."""
    from tmixcli.memfit import check_numbers

    kind, spec = _SPECS[arch]
    n = param_count(SimpleNamespace(model_type=kind, **spec))
    if n > CPU_PARAM_LIMIT and not force:
        raise TmixError(f"{arch} has {n / 1e9:.1f}B parameters: too large for a CPU benchmark "
                        f"(~{n * bits / 8 / 2**30:.0f} GiB, hours per long prefill); use a GPU, or force it (--force)")
    check_numbers(arch, n, bits, "cpu")


def build_random_model(arch: str, device: torch.device | str, dtype: torch.dtype,
                       force: bool = False) -> torch.nn.Module:
    """Random-weight model of `arch`, allocated and initialised directly on `device` in `dtype` (eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = arch_config(arch)
    device = torch.device(device)
    if device.type == "cpu":
        check_cpu_size(arch, torch.finfo(dtype).bits, force)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()
