"""Reference point for the band: vendor SDPA kernels on many short problems of the band's tile shape.

A band tile is 128 query rows (4 heads x 32 positions) over ~576 keys. This times cuDNN and flash SDPA
(non-causal, no mask, one shared kv head so K/V come from L2 as in the band) on N problems of Lq x Lk, so the
band kernel's TFLOP/s can be compared with what hand-written Hopper kernels reach on loops that short.
Run as `python -m tmix_kernels.bench_tiles [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from tmix_kernels.bench import header

SHAPES = ((128, 576, 1024), (256, 576, 512), (128, 1088, 512), (128, 2112, 256), (4096, 4096, 8))


def run(shapes=SHAPES, heads: int = 32, head_dim: int = 128) -> list[dict]:
    """TFLOP/s of cuDNN and flash SDPA on (Lq, Lk, N) problems: q [N, H, Lq, D], k/v [N, 1, Lk, D]."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    for lq, lk, n in shapes:
        q = torch.randn(n, heads, lq, head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(n, 1, lk, head_dim, device="cuda", dtype=torch.bfloat16)  # k: [N, 1, Lk, D], GQA
        v = torch.randn(n, 1, lk, head_dim, device="cuda", dtype=torch.bfloat16)
        flops = 4.0 * n * heads * lq * lk * head_dim
        for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel([be]):
                def fn(q=q, k=k, v=v):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

                fn()
                torch.cuda.synchronize()
                ms = float(do_bench(fn, warmup=25, rep=200, return_mode="median"))
            rows.append({"lq": lq, "lk": lk, "n": n, "impl": name, "ms": ms, "tflops": flops / ms * 1e-9})
            print(rows[-1], flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_tiles needs a CUDA GPU")
    rows = run()
    print(header())
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": header(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
