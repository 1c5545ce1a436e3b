"""Split-K decode attention (length read on the device) vs the float64 reference: interpreter and GPU cases."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from interp import interpreter_results

# (name, H, Hkv, D, buffer rows C, valid keys L, dtype, n_splits)
CASES = [
    ("gqa4_d64", 8, 2, 64, 100, 37, "float32", None),
    ("full_buffer_d128_fp16", 12, 4, 128, 90, 90, "float16", 3),
    ("one_key_mha", 4, 4, 64, 50, 1, "float32", 5),
    ("gqa7_d96_fp16", 14, 2, 96, 70, 33, "float16", None),
    ("split_edge", 4, 1, 64, 64, 48, "float32", 4),
]


def _run(h, hkv, d, cap, n, dtype, splits, device) -> tuple[float, bool]:
    from tmix_kernels.decode_triton import decode_attention_triton
    from tmix_kernels.reference import triangle_reference

    g = torch.Generator(device=device).manual_seed(int.from_bytes(os.urandom(4), "little"))
    q = torch.randn(1, h, 1, d, generator=g, device=device).to(dtype)
    k, v = torch.randn(2, 1, hkv, cap, d, generator=g, device=device).to(dtype)
    k[:, :, n:], v[:, :, n:] = float("nan"), float("nan")  # rows past the length must never be read
    out = decode_attention_triton(q, k, v, torch.tensor([n - 1], device=device), n_splits=splits)
    ref = triangle_reference(q, k[:, :, :n], v[:, :, :n], 0, 1, 1)
    return float((out.double() - ref).norm() / ref.norm()), bool(out.isnan().any())


def _interp_main() -> None:
    res = {name: _run(h, hkv, d, c, n, getattr(torch, dt), s, "cpu") for name, h, hkv, d, c, n, dt, s in CASES}
    print(json.dumps(res))


@pytest.fixture(scope="module")
def interp_results() -> dict:
    return interpreter_results(__file__)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_interpreter_matches_reference(interp_results: dict, case: tuple) -> None:
    err, nan = interp_results[case[0]]
    assert not nan and err < (1e-5 if case[6] == "float32" else 2e-3), err


GPU_CASES = [(32, 8, 128, 40000, 32769), (28, 4, 128, 9000, 9000), (9, 3, 64, 5000, 1), (32, 8, 128, 2048, 777)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[f"case{i}" for i in range(len(GPU_CASES))])
def test_gpu_matches_reference(case: tuple, dtype: torch.dtype) -> None:
    err, nan = _run(*case, dtype, None, "cuda")
    assert not nan and err < (2e-2 if dtype == torch.bfloat16 else 5e-3), err


if __name__ == "__main__" and sys.argv[1:] == ["--interp"]:
    _interp_main()
