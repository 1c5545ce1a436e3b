"""Dense causal attention for a query chunk that is the tail of a longer key sequence (chunked prefill, suffix).

SDPA aligns `is_causal` top-left when Lq < S, and an explicit mask makes it compute every masked pair, so the
chunk is split: queries against the earlier keys need no mask (GQA folded into rows, K/V never copied), queries
against their own keys are a square causal block; the two partial results are merged by their log-sum-exp.
CUDA uses cuDNN/flash, the CPU PyTorch's flash kernel.
"""

from __future__ import annotations

import torch

_BACKENDS = ["cudnn", "flash"]


def _attn_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B,H,L,D], lse [B,H,L] fp32) from the fastest fused kernel that returns the log-sum-exp."""
    if not q.is_cuda:  # PyTorch's flash CPU kernel (fp32/bf16/fp16)
        r = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
        return r[0], r[1]
    for name in list(_BACKENDS):
        try:
            if name == "cudnn":
                r = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False,
                                                                       scale=scale)
                return r[0], r[1].reshape(q.shape[:3])
            r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
            return r[0], r[1]
        except (RuntimeError, TypeError, AttributeError):
            _BACKENDS.remove(name)
    raise RuntimeError("no fused attention kernel with log-sum-exp output is available")


def dense_tail_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """q [B,H,Lq,D] at positions S-Lq..S-1, k/v [B,Hkv,S,D] -> causal out [B, Lq, H, D]."""
    b, h, lq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    g = h // hkv
    scale = d**-0.5 if scale is None else scale
    q0 = s - lq
    if q0 == 0:  # no earlier keys: one causal square (GQA via expanded K/V)
        o, _ = _attn_lse(q.contiguous(), k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), True, scale)
        return o.transpose(1, 2)
    # earlier keys: every query sees all of them; fold the G heads of a group into rows -> [B, Hkv, G*Lq, D]
    qf = q.reshape(b, hkv, g * lq, d)
    o1, l1 = _attn_lse(qf, k[:, :, :q0], v[:, :, :q0], False, scale)
    o1, l1 = o1.reshape(b, h, lq, d), l1.reshape(b, h, lq)
    # the chunk's own keys: square causal block, K/V of the chunk expanded to H heads
    kc = k[:, :, q0:].repeat_interleave(g, dim=1)
    vc = v[:, :, q0:].repeat_interleave(g, dim=1)
    o2, l2 = _attn_lse(q.contiguous(), kc, vc, True, scale)
    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)  # w: [B, H, Lq]
    out = (o1.float() * w1[..., None] + o2.float() * w2[..., None]) / (w1 + w2)[..., None]
    return out.to(q.dtype).transpose(1, 2)
