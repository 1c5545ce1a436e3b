"""Triton triangle attention vs the float64 reference: interpreter cases (subprocess, CPU) and GPU cases."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from interp import interpreter_results

# Each case: (name, B, H, Hkv, Lq, S, D, n_init, n_local, last_n, total_len, dtype, config overrides).
CASES = [
    ("odd_L_mha", 1, 2, 2, 37, 37, 64, 4, 16, 8, None, "float32", {}),
    ("L_lt_n_local_gqa4", 1, 8, 2, 45, 45, 64, 8, 64, 8, None, "float32", {}),
    ("L_lt_last_n_gqa3", 1, 6, 2, 30, 30, 64, 8, 16, 40, None, "float32", {}),
    ("odd_blocks_d128_fp16", 1, 4, 1, 203, 203, 128, 8, 48, 24, None, "float16", {}),
    ("tail_queries_gqa3", 1, 3, 1, 70, 250, 64, 8, 32, 16, None, "float32", {}),
    ("chunk_before_end", 1, 4, 1, 64, 200, 64, 8, 32, 16, 260, "float16", {}),
    ("chunk_crosses_last", 1, 4, 1, 64, 200, 64, 8, 32, 40, 220, "float32", {}),
    ("n_init_0_d128", 1, 4, 1, 150, 150, 128, 0, 32, 16, None, "float32", {}),
    ("last_n_0_b2", 2, 4, 2, 120, 120, 64, 8, 24, 0, None, "float16", {}),
    ("d96_padded", 1, 4, 1, 90, 90, 96, 8, 32, 16, None, "float32", {}),
    ("one_loop_bm64", 1, 8, 2, 300, 300, 64, 8, 64, 24, None, "float16", {"block_m": 64, "block_n": 32,
                                                                            "split_loops": False}),
    ("bm16_gqa4_nlocal_odd", 1, 4, 1, 99, 99, 64, 3, 19, 9, None, "float32", {"block_m": 16, "block_n": 16}),
    ("tma_b2_tail", 2, 4, 2, 60, 150, 64, 8, 32, 20, 170, "float32", {"tma": True}),
    ("tma_d96_fp16", 1, 4, 1, 77, 77, 96, 0, 16, 8, None, "float16", {"tma": True}),
    ("edge16_gqa4", 1, 8, 2, 230, 230, 64, 8, 50, 16, None, "float32", {"block_n": 32, "edge_n": 16}),
    ("edge8_tail_fp16", 1, 4, 1, 90, 260, 64, 5, 37, 12, 270, "float16", {"block_n": 32, "edge_n": 8}),
    ("gqa7_idle_head", 1, 14, 2, 77, 77, 64, 8, 20, 9, None, "float32", {}),
    ("gqa5_bm16_chunk", 1, 5, 1, 61, 140, 64, 4, 24, 12, 150, "float16", {"block_m": 16, "block_n": 16}),
]
BAD = [  # (name, q shape, k shape, dtype, kwargs): each must raise ValueError
    ("heads_not_multiple", (1, 6, 8, 64), (1, 4, 8, 64), "float32", {}),
    ("more_q_than_k", (1, 4, 9, 64), (1, 1, 8, 64), "float32", {}),
    ("head_dim_512", (1, 4, 8, 512), (1, 1, 8, 512), "float32", {}),
    ("float64", (1, 4, 8, 64), (1, 1, 8, 64), "float64", {}),
    ("n_local_0", (1, 4, 8, 64), (1, 1, 8, 64), "float32", {"n_local": 0}),
    ("total_lt_s", (1, 4, 8, 64), (1, 1, 8, 64), "float32", {"total_len": 4}),
]


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def _interp_main() -> None:
    """Runs in a subprocess with TRITON_INTERPRET=1: prints {case: result} as JSON on the last line."""
    from tmix_kernels.reference import triangle_reference
    from tmix_kernels.triangle_triton import triangle_attention_triton

    res = {}
    for name, b, h, hkv, lq, s, d, ni, nl, ln, tot, dt, cfg in CASES:
        seed = int.from_bytes(os.urandom(4), "little")
        g = torch.Generator().manual_seed(seed)
        dtype = getattr(torch, dt)
        q = torch.randn(b, lq, h, d, generator=g).to(dtype).transpose(1, 2)  # q: [B, H, Lq, D], strided
        k = torch.randn(b, s, hkv, d, generator=g).to(dtype).transpose(1, 2)  # k: [B, Hkv, S, D], strided
        v = torch.randn(b, hkv, s, d, generator=g).to(dtype)
        out = torch.full((b, lq, h, d), float("nan"), dtype=dtype)
        triangle_attention_triton(q, k, v, ni, nl, ln, tot, out=out, config=cfg)
        ref = triangle_reference(q, k, v, ni, nl, ln, tot)
        res[name] = {"err": _rel(out, ref), "nan": bool(out.isnan().any()), "seed": seed}
    for name, qs, ks, dt, kw in BAD:
        dtype = getattr(torch, dt)
        q, k = torch.randn(qs).to(dtype), torch.randn(ks).to(dtype)
        try:
            triangle_attention_triton(q, k, k.clone(), **{"n_init": 8, "n_local": 16, "last_n": 4, **kw})
            res[name] = "no error"
        except ValueError as e:
            res[name] = f"ValueError: {e}"
    print(json.dumps(res))


@pytest.fixture(scope="module")
def interp_results() -> dict:
    return interpreter_results(__file__)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_interpreter_matches_reference(interp_results: dict, case: tuple) -> None:
    r = interp_results[case[0]]
    tol = 1e-4 if case[11] == "float32" else 5e-3
    assert not r["nan"], f"unwritten/NaN output (seed {r['seed']})"
    assert r["err"] < tol, f"rel err {r['err']:.2e} >= {tol} (seed {r['seed']})"


@pytest.mark.parametrize("bad", BAD, ids=[c[0] for c in BAD])
def test_interpreter_rejects_bad_input(interp_results: dict, bad: tuple) -> None:
    assert interp_results[bad[0]].startswith("ValueError"), interp_results[bad[0]]


def _ref_rows(q, k, v, rows, n_init, n_local, last_n, total) -> torch.Tensor:
    """float64 reference for the query rows `rows` only: -> [B, r, H, D]."""
    _, h, lq, d = q.shape
    s = k.shape[2]
    g = h // k.shape[1]
    qs = q[:, :, rows].double()  # qs: [B, H, r, D]
    kk, vv = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)  # kk: [B, H, S, D]
    scores = (qs @ kk.transpose(-1, -2)) * d**-0.5  # scores: [B, H, r, S]
    p = (s - lq + rows)[:, None]
    j = torch.arange(s, device=q.device)[None, :]
    keep = (j <= p) & ((j < n_init) | (p - j < n_local) | (p >= total - last_n))
    out = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1) @ vv
    return out.transpose(1, 2)


SHARED_CASES = [  # (B, H, Hkv, Lq, S, D, n_init, n_local, last_n, total_len, config): the default config
    (1, 32, 8, 32768, 32768, 128, 8, 512, 128, None, {}),
    (1, 32, 8, 4133, 4133, 128, 8, 512, 128, None, {}),
    (1, 32, 8, 3001, 20000, 128, 8, 512, 128, 24000, {}),
    (1, 32, 8, 3001, 20000, 128, 8, 512, 128, None, {}),
    (2, 32, 8, 1000, 1000, 64, 0, 256, 0, None, {}),
    (1, 24, 8, 777, 777, 128, 4, 100, 300, None, {}),
]
GPU_CASES = SHARED_CASES + [  # the Triton kernel's other configs
    (1, 32, 8, 5000, 5000, 128, 8, 512, 128, None, {"split_loops": False}),
    (1, 32, 8, 5000, 5000, 128, 8, 512, 128, None, {"block_n": 128, "num_stages": 2}),
    (1, 32, 8, 5000, 5000, 128, 8, 512, 128, None, {"tma": True}),
    (1, 32, 8, 3001, 20000, 128, 8, 512, 128, 20100, {"tma": True}),
    (1, 16, 4, 2000, 2000, 64, 8, 256, 64, None, {"tma": True}),
    (1, 32, 8, 5000, 5000, 128, 8, 512, 128, None, {"edge_n": 64}),
    (1, 32, 8, 3001, 20000, 128, 8, 300, 128, 20100, {"edge_n": 32, "tma": False}),
    (1, 28, 4, 9001, 9001, 128, 8, 512, 128, None, {}),  # Qwen2.5-7B heads: GQA 7 packed as 8 (one idle head)
    (1, 9, 3, 4097, 4097, 64, 8, 512, 128, None, {}),  # the default model's heads: GQA 3 packed as 4, d 64
    (1, 40, 8, 3001, 20000, 128, 8, 512, 128, 20100, {}),  # GQA 5, a continuation chunk
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[f"case{i}" for i in range(len(GPU_CASES))])
def test_gpu_matches_reference(case: tuple, dtype: torch.dtype) -> None:
    from tmix_kernels.triangle_triton import triangle_attention_triton

    b, h, hkv, lq, s, d, ni, nl, ln, tot, cfg = case
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    q = torch.randn(b, lq, h, d, device="cuda", dtype=dtype).transpose(1, 2)  # q: [B, H, Lq, D], strided
    k = torch.randn(b, hkv, s, d, device="cuda", dtype=dtype)
    v = torch.randn(b, hkv, s, d, device="cuda", dtype=dtype)
    out = torch.full((b, lq, h, d), float("nan"), device="cuda", dtype=dtype)
    triangle_attention_triton(q, k, v, ni, nl, ln, tot, out=out, config=cfg)
    torch.cuda.synchronize()
    assert not out.isnan().any(), "unwritten or NaN output"
    total = s if tot is None else tot
    edge = min(max(total - ln - (s - lq), 0), lq)
    picks = [torch.arange(min(64, lq)), torch.arange(max(edge - 64, 0), min(edge + 64, lq)),
             torch.arange(max(lq - 64, 0), lq), torch.randint(0, lq, (128,))]
    rows = torch.unique(torch.cat(picks)).to("cuda")
    ref = _ref_rows(q, k, v, rows, ni, nl, ln, total)
    err = _rel(out[:, rows], ref)
    assert err < (2e-2 if dtype == torch.bfloat16 else 5e-3), f"rel err {err:.2e}"


if __name__ == "__main__" and sys.argv[1:] == ["--interp"]:
    _interp_main()
