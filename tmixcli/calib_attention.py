"""The "tmix-calib" attention: causal attention whose middle region is scaled by a per-layer alpha.

Importance of layer l = |d NLL(answer tokens) / d alpha_l| at alpha = 1, where alpha_l scales the attention
probabilities of the *middle region* of layer l (rows before the last_n prefix rows, keys outside the sinks and
the local band) and each row is renormalised: at alpha_l = 0 the layer computes exactly tmix's triangle.
PyTorch's fused (flash) CPU kernel gives the dense output and its logsumexp, the triangle output and logsumexp
come blockwise without grad, and the closed form in `fast_middle_scaled_attention` mixes them, so no L x L
matrix is ever materialised or stored. `middle_scaled_attention` is the explicit (chunked, checkpointed)
reference the tests compare it with. Kept apart from calibrate.py so that the CLI starts without torch.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AttentionInterface

NAME = "tmix-calib"
_STATE: dict[str, Any] = {}  # "alpha": tensor [num_layers] (requires grad) while calibrating


def _chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, q0: int,
                     n_init: int, n_local: int, dense_from: int, scale: float) -> torch.Tensor:
    """Rows q0.. of q [B,H,C,D] over keys k/v [B,H,S,D] (S = q0 + C); middle probs times alpha, renormalised."""
    c, s = q.shape[2], k.shape[2]
    p = torch.arange(q0, q0 + c, device=q.device)[:, None]
    j = torch.arange(s, device=q.device)[None, :]
    causal = j <= p  # causal: [C, S]
    middle = causal & (j >= n_init) & (p - j >= n_local) & (p < dense_from)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # scores: [B, H, C, S]
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1, dtype=torch.float32)
    weight = torch.where(middle, alpha.float(), torch.ones((), device=q.device))
    probs = probs * weight
    probs = probs / probs.sum(-1, keepdim=True)
    return torch.matmul(probs.to(v.dtype), v)  # [B, H, C, D]


def middle_scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor,
                            n_init: int, n_local: int, last_n: int, total_len: int | None = None,
                            scale: float | None = None, chunk: int = 512) -> torch.Tensor:
    """Causal attention with the middle region scaled by alpha; q [B,H,Lq,D], k/v [B,Hkv,S,D] -> [B,Lq,H,D].

    alpha = 1 is dense attention, alpha = 0 is tmix's triangle (same contract as tmix_kernels)."""
    b, h, lq, d = q.shape
    s = k.shape[2]
    g = h // k.shape[1]
    k = k.repeat_interleave(g, dim=1) if g > 1 else k  # k, v: [B, H, S, D] (head h uses kv head h // G)
    v = v.repeat_interleave(g, dim=1) if g > 1 else v
    scale = d**-0.5 if scale is None else scale
    dense_from = (s if total_len is None else total_len) - last_n
    first = s - lq
    outs = []
    for a in range(0, lq, chunk):
        e = min(a + chunk, lq)
        args = (q[:, :, a:e], k[:, :, : first + e], v[:, :, : first + e], alpha, first + a,
                n_init, n_local, dense_from, scale)
        if torch.is_grad_enabled() and alpha.requires_grad:
            outs.append(checkpoint(_chunk_attention, *args, use_reentrant=False))
        else:
            outs.append(_chunk_attention(*args))
    return torch.cat(outs, dim=2).transpose(1, 2)  # [B, Lq, H, D]


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B,H,L,D], logsumexp [B,H,L]) from PyTorch's fused CPU kernel (differentiable); k/v expanded."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=bias,
                                                                      scale=scale)


def _triangle_parts(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, n_local: int, split: int,
                    scale: float, block: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle (sinks + local band) output and logsumexp of rows 0..split-1; q [B,H,L,D] with L = S."""
    outs, lses = [], []
    for a in range(0, split, block):
        e = min(a + block, split)
        ws = max(a - n_local + 1, n_init)
        kp = torch.cat([torch.arange(0, min(n_init, e)), torch.arange(ws, e)]).to(q.device)
        p = torch.arange(a, e, device=q.device)[:, None]
        allowed = (kp[None, :] <= p) & ((kp[None, :] < n_init) | (p - kp[None, :] < n_local))
        scores = torch.matmul(q[:, :, a:e], k[:, :, kp].transpose(-1, -2)) * scale  # scores: [B, H, C, K]
        scores = scores.float().masked_fill_(~allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)  # lse: [B, H, C]
        outs.append(torch.matmul(torch.exp(scores - lse[..., None]).to(v.dtype), v[:, :, kp]))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def fast_middle_scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor,
                                 n_init: int, n_local: int, last_n: int, total_len: int | None = None,
                                 scale: float | None = None) -> torch.Tensor:
    """Same value as middle_scaled_attention for any alpha, from fused kernels (full prefill only: Lq = S).

    With c = triangle mass of a row under dense softmax, O the dense and O_tri the triangle output:
    out = (c*O_tri + alpha*(O - c*O_tri)) / (c + alpha*(1 - c)). c and O_tri are detached, so at alpha = 1
    the gradients w.r.t. q/k/v are the dense ones and d out/d alpha is exact."""
    b, h, lq, d = q.shape
    s = k.shape[2]
    if lq != s:
        raise ValueError("fast calibration attention needs a full prefill (queries = keys)")
    g = h // k.shape[1]
    k = k.repeat_interleave(g, dim=1) if g > 1 else k  # k, v: [B, H, S, D]
    v = v.repeat_interleave(g, dim=1) if g > 1 else v
    scale = d**-0.5 if scale is None else scale
    out, lse = _flash(q, k, v, scale, True)  # out: [B, H, L, D], lse: [B, H, L]
    split = min(s, max(0, (s if total_len is None else total_len) - last_n))
    if split == 0:
        return out.transpose(1, 2)
    with torch.no_grad():
        o_tri, lse_tri = _triangle_parts(q.detach(), k.detach(), v.detach(), n_init, n_local, split, scale)
        c = torch.exp(lse_tri - lse[:, :, :split].detach()).clamp(max=1.0)[..., None]  # c: [B, H, split, 1]
    a = alpha.to(out.dtype)
    head = (c * o_tri + a * (out[:, :, :split] - c * o_tri)) / (c + a * (1 - c))
    return torch.cat([head, out[:, :, split:]], dim=2).transpose(1, 2)  # [B, L, H, D]


def calib_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    tmix_total_len: int | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """AttentionInterface entry used only while calibrating (see `calibration_mode`)."""
    from tmixcli.attention import layer_config

    cfg = layer_config(module)
    alpha = _STATE["alpha"][module.layer_idx]
    out = fast_middle_scaled_attention(query, key, value, alpha, cfg.n_init, cfg.n_local, cfg.last_n,
                                       tmix_total_len, scaling)
    return out, None


AttentionInterface.register(NAME, calib_attention)


@contextmanager
def calibration_mode(model: torch.nn.Module, n_init: int, n_local: int, last_n: int):
    """Switch the model to "tmix-calib" with alpha = 1 (leaf, requires grad); restores "tmix" dense after."""
    from tmixcli.attention import attach
    from tmixcli.config import AttentionConfig

    n = model.config.num_hidden_layers
    alpha = torch.ones(n, device=model.device, requires_grad=True)
    _STATE.update(alpha=alpha)
    attach(model, AttentionConfig("trimix", n_init, n_local, last_n, 0))
    model.set_attn_implementation(NAME)
    try:
        yield alpha
    finally:
        _STATE.clear()
        attach(model, AttentionConfig(method="dense"))


def sample_gradient(model: torch.nn.Module, tokenizer, case, alpha: torch.Tensor) -> tuple[list[float], float]:
    """d NLL(answer tokens)/d alpha per layer for one case, and the mean answer-token NLL (nats)."""
    from tmixcli.prompt import build_prompt

    p = build_prompt(tokenizer, case.document, case.question)
    lead = list(tokenizer(case.lead, add_special_tokens=False)["input_ids"]) if case.lead else []
    full = list(tokenizer(case.reference, add_special_tokens=False)["input_ids"])
    n_ans = max(1, len(full) - len(lead))
    ids = torch.tensor([p.ids + full], device=model.device)  # ids: [1, N]
    alpha.grad = None
    out = model(input_ids=ids, use_cache=False, logits_to_keep=n_ans + 1, tmix_total_len=len(p.prefix_ids))
    logits = out.logits[0, :-1].float()  # logits: [n_ans, V], predicting the answer tokens
    loss = torch.nn.functional.cross_entropy(logits, ids[0, -n_ans:])
    if not loss.requires_grad:  # no layer has a middle region at this length: alpha changes nothing
        return [0.0] * alpha.numel(), float(loss)
    loss.backward()
    return alpha.grad.tolist(), float(loss.detach())
