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


def run(lengths: list[int], chunk: int, h: int = 32, hkv: int = 8, d: int = 128) -> None:
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}")
    for s in lengths:
        q = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
        k, v = torch.randn(2, 1, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        ke, ve = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        rows = {"sdpa enable_gqa (default pick)":
                lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)}
        for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            def f(be=be):
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            rows[f"sdpa {name}, K/V expanded"] = f

            def g(be=be):
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            rows[f"sdpa {name}, enable_gqa"] = g
        qt = q[:, :, -chunk:]
        rows[f"tail chunk {chunk} (x{s // chunk} = whole prefill)"] = lambda: dense_tail_attention(qt, k, v)
        for name, fn in rows.items():
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
        del q, k, v, ke, ve
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", default="32k,128k")
    p.add_argument("--chunk", type=int, default=16384)
    a = p.parse_args(argv)
    run([int(x[:-1]) * 1024 if x.endswith("k") else int(x) for x in a.lengths.split(",")], a.chunk)


if __name__ == "__main__":
    main()
