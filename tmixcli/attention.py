"""TriangleMix dispatch, registered as the "tmix" implementation of transformers' AttentionInterface.

Pattern in global positions: a prefill of T tokens (possibly in chunks) passes `tmix_total_len=T` through the
model's forward kwargs; in layers >= start_layer query p sees key j iff j <= p and (j < n_init or p - j < n_local
or p >= T - last_n). Calls without `tmix_total_len` (the question suffix, decoding) attend densely to everything.
Queries are always the last Lq positions of the keys (batch of one, no padding), so no mask is ever built by
transformers: "tmix" has no mask function, and causality is applied here, bottom-right aligned.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from tmix_kernels import triangle_attention
from tmix_kernels.blockwise import triangle_attention_blockwise
from tmix_kernels.dense import dense_tail_attention
from tmixcli.config import AttentionConfig

NAME = "tmix"
CONFIG_ATTR = "tmix_attention"

try:
    from flash_attn import flash_attn_func  # optional extra: pip install tmix[flash]
except ImportError:
    flash_attn_func = None


@lru_cache(maxsize=64)
def _parse(items: tuple) -> AttentionConfig:
    return AttentionConfig.from_dict(dict(items))


def layer_config(module: torch.nn.Module) -> AttentionConfig:
    """The AttentionConfig attached to the module's model config (dense when none is attached)."""
    d = getattr(module.config, CONFIG_ATTR, None)
    return _parse(tuple(sorted(d.items()))) if d else AttentionConfig(method="dense")


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None,
                    sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention with queries aligned to the end of the keys; q [B,H,Lq,D], k/v [B,Hkv,S,D] -> [B,Lq,H,D]."""
    lq, s = q.shape[2], k.shape[2]
    if sliding_window is not None and sliding_window < s:
        return triangle_attention_blockwise(q, k, v, 0, sliding_window, 0, None, scale)
    if flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        # flash-attn aligns causal masks bottom-right and takes GQA natively: q [B, Lq, H, D]
        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True,
                               softmax_scale=scale)
    gqa = q.shape[1] != k.shape[1]
    if q.is_cuda and 1 < lq < s and q.dtype in (torch.float16, torch.bfloat16):
        with torch.cuda.device(q.device):
            return dense_tail_attention(q, k, v, scale)
    if q.device.type == "cpu" and 1 < lq < s:
        return dense_tail_attention(q, k, v, scale)
    if lq == 1 and not q.is_cuda:  # CPU decode: fold each group's heads into rows (1.3-1.9x; 6x slower on CUDA)
        b, h, _, d = q.shape
        out = F.scaled_dot_product_attention(q.reshape(b, k.shape[1], h // k.shape[1], d), k, v, scale=scale)
        return out.reshape(b, 1, h, d)  # rows of kv head j are query heads j*G .. j*G+G-1, as in repeat_kv
    if lq == s:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    elif lq == 1:
        out = F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    else:
        p = torch.arange(s - lq, s, device=q.device)[:, None]
        mask = torch.arange(s, device=q.device)[None, :] <= p  # mask: [Lq, S] bottom-right causal
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)  # out: [B, Lq, H, D]


def tmix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                   sliding_window: int | None = None, tmix_total_len: int | None = None,
                   tmix_decode_pos: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """AttentionInterface entry: triangle in deep layers during prefill, dense causal otherwise; a graph-captured
    decode step (`tmix_decode_pos`: its position on the device) attends over the first pos + 1 rows of the buffers."""
    if attention_mask is not None:
        raise ValueError("tmix attention runs a batch of one unpadded sequence; got an attention mask")
    if tmix_decode_pos is not None:
        from tmix_kernels.decode_triton import decode_attention_triton

        return decode_attention_triton(query, key, value, tmix_decode_pos, scaling), None
    cfg = layer_config(module)
    if tmix_total_len is not None and cfg.is_triangle(module.layer_idx) and sliding_window is None:
        out = triangle_attention(query, key, value, cfg.n_init, cfg.n_local, cfg.last_n, tmix_total_len, scaling)
    else:
        out = dense_attention(query, key, value, scaling, sliding_window)
    return out, None


def attach(model: torch.nn.Module, attn: AttentionConfig) -> None:
    """Route the model's attention through tmix with these settings (no model class is modified)."""
    setattr(model.config, CONFIG_ATTR, attn.to_dict())
    model.set_attn_implementation(NAME)


AttentionInterface.register(NAME, tmix_attention)
