"""Times the dense-attention options tmix can use on CUDA (Llama-3.1-8B heads, bf16): one-shot and chunk tails.

python -m tmix_kernels.bench_dense --lengths 32k,128k --chunk 16384
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tmix_kernels.dense import dense_tail_attention
from tmix_kernels.reference import triangle_reference


def _ms(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def _rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> dict:
    """The timed variants for one length: SDPA backends (GQA native or K/V expanded) and the chunk tail."""
    g = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    rows = {"sdpa enable_gqa (default pick)":
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)}
    for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        def expanded(be=be):
            with sdpa_kernel([be]):
                return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)

        def native(be=be):
            with sdpa_kernel([be]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        rows[f"sdpa {name}, K/V expanded"] = expanded
        rows[f"sdpa {name}, enable_gqa"] = native
    qt = q[:, :, -chunk:]
    rows[f"tail chunk {chunk} (x{k.shape[2] // chunk} = whole prefill)"] = lambda: dense_tail_attention(qt, k, v)
    return rows


def _one_length(s: int, chunk: int, h: int, hkv: int, d: int) -> None:
    q = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, hkv, s, d, device="cuda", dtype=torch.bfloat16)
    for name, fn in _rows(q, k, v, chunk).items():
        try:
            t = _ms(fn)
            extra = f"  (x{s // chunk}: {t * s / chunk:.1f} ms)" if name.startswith("tail") else ""
            print(f"L={s // 1024}K  {name:<40} {t:9.2f} ms{extra}")
        except Exception as err:  # report and go on: a backend may be unavailable
            print(f"L={s // 1024}K  {name:<40} unavailable: {str(err).splitlines()[0][:80]}")
    small = 2048
    qs, ks, vs = q[:, :, :small], k[:, :, :small], v[:, :, :small]
    out = dense_tail_attention(qs[:, :, -300:], ks, vs)
    ref = triangle_reference(qs[:, :, -300:], ks, vs, 0, small + 1, 0)
    print(f"tail correctness rel err {((out.double() - ref).norm() / ref.norm()).item():.2e}")


def run(lengths: list[int], chunk: int, h: int = 32, hkv: int = 8, d: int = 128) -> None:
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}")
    for s in lengths:
        _one_length(s, chunk, h, hkv, d)
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", default="32k,128k")
    p.add_argument("--chunk", type=int, default=16384)
    a = p.parse_args(argv)
    run([int(x[:-1]) * 1024 if x.endswith("k") else int(x) for x in a.lengths.split(",")], a.chunk)


if __name__ == "__main__":
    main()
