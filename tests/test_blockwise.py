"""CPU TriangleMix path against the float64 dense-masked reference on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from tmix_kernels import triangle_attention
from tmix_kernels.blockwise import triangle_attention_blockwise
from tmix_kernels.reference import triangle_mask, triangle_reference

CASES = [  # (S, Lq, H, Hkv, D, n_init, n_local, last_n, total_len)
    (37, 37, 4, 4, 64, 3, 8, 5, None),        # odd L, GQA 1
    (300, 300, 12, 3, 64, 0, 64, 40, None),   # n_init = 0, GQA 4
    (513, 513, 9, 3, 128, 8, 128, 17, None),  # L not a multiple of any block, GQA 3, d=128
    (100, 100, 8, 2, 64, 8, 512, 20, None),   # L < n_local
    (50, 50, 4, 1, 64, 4, 16, 128, None),     # L < last_n (everything dense)
    (700, 129, 8, 2, 64, 8, 100, 30, None),   # queries are the tail of the keys (continuation chunk)
    (400, 150, 6, 2, 128, 4, 64, 16, 900),    # a middle chunk of a longer prefill: no last rows yet
    (333, 333, 4, 2, 64, 8, 1, 0, None),      # window of one, no last rows
]


@pytest.mark.parametrize("case", CASES, ids=[f"S{c[0]}-Lq{c[1]}-G{c[2] // c[3]}-d{c[4]}" for c in CASES])
@pytest.mark.parametrize("block", [64, 128])
def test_blockwise_matches_reference(case, block):
    s, lq, h, hkv, d, n_init, n_local, last_n, total = case
    gen = torch.Generator().manual_seed(hash((case, block)) % 2**31)
    q = torch.randn(2, h, lq, d, generator=gen)
    k, v = torch.randn(2, 2, hkv, s, d, generator=gen)
    out = triangle_attention_blockwise(q, k, v, n_init, n_local, last_n, total, block=block)
    ref = triangle_reference(q, k, v, n_init, n_local, last_n, total)
    assert out.shape == (2, lq, h, d) and torch.isfinite(out).all()
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


def test_noncontiguous_query_layout():
    """q as transformers hands it over after a transpose: [B, L, H, D] storage viewed as [B, H, L, D]."""
    q = torch.randn(1, 91, 6, 64).transpose(1, 2)
    k, v = torch.randn(2, 1, 2, 91, 64)
    out = triangle_attention(q, k, v, 2, 16, 9)
    ref = triangle_reference(q, k, v, 2, 16, 9)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


def test_mask_definition():
    m = triangle_mask(10, 10, n_init=2, n_local=3, last_n=2)
    assert m[5].tolist() == [True, True, False, True, True, True, False, False, False, False]
    assert m[9].tolist() == [True] * 10  # a last row sees everything
    assert not m.triu(1).any()  # causal
