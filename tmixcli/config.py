"""Plain settings (no torch): the attention pattern of each layer, and what a user sets for one run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Paper's start layers (TriangleMix, 2025): Llama-3.1-8B 16 of 32, Qwen2.5-7B 20 of 28; otherwise half.
KNOWN_START_LAYERS = {("llama", 32): 16, ("qwen2", 28): 20}
ATTENTION_MINIMUMS = {"n_init": 0, "n_local": 1, "last_n": 0, "start_layer": 0}  # each setting's least value


@dataclass(frozen=True)
class AttentionConfig:
    """`method` is "trimix" or "dense"; layers with index >= start_layer use the triangle pattern."""

    method: str = "trimix"
    n_init: int = 8
    n_local: int = 512
    last_n: int = 128
    start_layer: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("trimix", "dense"):
            raise ValueError(f"attention method must be 'trimix' or 'dense', not {self.method!r}")
        if any(getattr(self, name) < low for name, low in ATTENTION_MINIMUMS.items()):
            raise ValueError("need " + ", ".join(f"{name} >= {low}" for name, low in ATTENTION_MINIMUMS.items()))

    def is_triangle(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` uses the triangle pattern (else dense attention)."""
        return self.method == "trimix" and layer_idx >= self.start_layer

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict: for JSON output, KV metadata and the model config it is attached to."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttentionConfig:
        """The config of a to_dict() dict (validated); keys that are not fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def no_triangle_note(attn: AttentionConfig, num_layers: int | None) -> str | None:
    """For a trimix start at or past the model's last layer, that it runs dense attention; else None."""
    if attn.method != "trimix" or num_layers is None or attn.start_layer < num_layers:
        return None
    return f"no layer of {num_layers} uses the triangle: dense"


def triangle_span(n_init: int, n_local: int, last_n: int) -> int:
    """Up to this many prompt tokens the triangle is dense attention (no middle region to leave out)."""
    return n_init + n_local + last_n


def short_prompt_note(attn: AttentionConfig, n_tokens: int) -> str | None:
    """For a trimix prompt of at most n_init + n_local + last_n tokens, that every layer runs dense attention (the
    triangle has no middle region to leave out); else None."""
    span = triangle_span(attn.n_init, attn.n_local, attn.last_n)
    if attn.method != "trimix" or n_tokens > span:
        return None
    return f"the prompt's {n_tokens} tokens are within n_init + n_local + last_n = {span}: every layer is dense"


def all_layers_dense(attn: AttentionConfig, num_layers: int | None, n_tokens: int) -> bool:
    """Whether a prefill of `n_tokens` with these settings attends densely in every layer (--json says so)."""
    return (attn.method != "trimix" or no_triangle_note(attn, num_layers) is not None
            or short_prompt_note(attn, n_tokens) is not None)


def default_start_layer(model_type: str, num_layers: int) -> int:
    """The paper's start layer for known models, else half the layers."""
    return KNOWN_START_LAYERS.get((model_type, num_layers), num_layers // 2)


@dataclass
class Settings:
    """Everything a user can set for ask/prefill/chat. An attention field left None takes AttentionConfig's default
    (start_layer: the calibrated profile, else the paper's), or from a KV file alone the file's value."""

    method: str | None = None
    n_init: int | None = None
    n_local: int | None = None
    last_n: int | None = None
    start_layer: int | None = None
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_repeats: bool = True
    use_cache: bool = True
    truncate: bool = False
    chunk_size: int | None = None
    progress: bool = True
    kv_required: bool = False  # `tmix prefill`: the KV file is the product, so a file over the cache cap is an error
    question: str | None = None  # `tmix ask`'s question: checked to fit the context before any prefill or load
