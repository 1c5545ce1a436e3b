"""Benchmark: Triton triangle attention vs SDPA (flash, cuDNN, dense causal) and FlexAttention (same mask).

Run as `python -m tmix_kernels.bench --lengths 32k,64k,128k [--heads 32,8,128] [--json PATH] [--variants JSON]`.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from tmix_kernels import triangle_triton
from tmix_kernels.triangle_triton import default_config, triangle_attention_triton


def _parse_len(s: str) -> int:
    s = s.strip().lower()
    return int(float(s[:-1]) * 1024) if s.endswith("k") else int(s)


def useful_flops(length: int, heads: int, head_dim: int, n_init: int, n_local: int, last_n: int) -> float:
    """FLOPs of the visible (q, k) pairs only: 4 * D * H * pairs."""
    p = torch.arange(length, dtype=torch.float64)
    window = torch.clamp(p + 1, max=n_local)
    sinks = torch.clamp(torch.clamp(p - n_local + 1, max=n_init), min=0)
    vis = torch.where(p >= length - last_n, p + 1, window + sinks)
    return 4.0 * head_dim * heads * float(vis.sum())


def _time(fn, slow: bool = False) -> float:
    return float(do_bench(fn, warmup=5 if slow else 25, rep=20 if slow else 200, return_mode="median"))


def _sdpa(q, k, v, backend) -> tuple[float | None, str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)  # ke: [B, H, S, D]
    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    try:
        with sdpa_kernel([be]):
            def fn(q=q, ke=ke, ve=ve):
                return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)

            fn()
            torch.cuda.synchronize()
            return _time(fn, slow=True), "ok"
    except Exception as e:  # noqa: BLE001 - a missing backend is a result, not a failure
        return None, f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    finally:
        del ke, ve


def _flex(q, k, v, n_init, n_local, last_n, compiled) -> tuple[float | None, str, torch.Tensor | None]:
    try:
        from torch.nn.attention.flex_attention import create_block_mask
    except ImportError as e:
        return None, f"unavailable: {e}", None
    length = q.shape[2]
    tail = length - last_n

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & ((kv_idx < n_init) | (q_idx - kv_idx < n_local) | (q_idx >= tail))

    try:
        kw = {"_compile": True} if "_compile" in inspect.signature(create_block_mask).parameters else {}
        bm = create_block_mask(mask_mod, None, None, length, length, device=q.device, **kw)
        def fn():
            return compiled(q, k, v, block_mask=bm, enable_gqa=True)

        out = fn()
        torch.cuda.synchronize()
        return _time(fn), "ok", out
    except Exception as e:  # noqa: BLE001
        return None, f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:80]}", None


def run(
    lengths: list[int], heads: int = 32, kv_heads: int = 8, head_dim: int = 128,
    dtype: torch.dtype = torch.bfloat16, n_init: int = 8, n_local: int = 512, last_n: int = 128,
    baselines: tuple[str, ...] = ("flex", "flash", "cudnn"), variants: list[dict] | None = None,
    verbose: bool = False,
) -> list[dict]:
    """Time every implementation at each length (B=1); one dict per (length, implementation)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, dynamic=False) if "flex" in baselines else None
    rows = []
    for length in lengths:
        torch.manual_seed(length)
        q = torch.randn(1, heads, length, head_dim, device="cuda", dtype=dtype)  # q: [1, H, L, D]
        k = torch.randn(1, kv_heads, length, head_dim, device="cuda", dtype=dtype)  # k: [1, Hkv, L, D]
        v = torch.randn(1, kv_heads, length, head_dim, device="cuda", dtype=dtype)
        flops = useful_flops(length, heads, head_dim, n_init, n_local, last_n)
        flex_out = None
        if "flex" in baselines:
            ms, status, flex_out = _flex(q, k, v, n_init, n_local, last_n, compiled)
            rows.append({"length": length, "impl": "flex", "ms": ms, "status": status})
        for be in ("flash", "cudnn"):
            if be in baselines:
                ms, status = _sdpa(q, k, v, be)
                rows.append({"length": length, "impl": f"sdpa-{be}", "ms": ms, "status": status})
        for var in [{}] + list(variants or []):
            name = "triangle" + (f"[{','.join(f'{a}={b}' for a, b in var.items())}]" if var else "")

            def fn(var=var, q=q, k=k, v=v):
                return triangle_attention_triton(q, k, v, n_init, n_local, last_n, config=var)

            try:
                out = fn()
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - a variant that does not compile is a result
                rows.append({"length": length, "impl": name, "ms": None, "status": f"failed: {str(e)[:120]}"})
                continue
            err = None
            if flex_out is not None:
                ref = flex_out.transpose(1, 2).float()
                err = float((out.float() - ref).norm() / ref.norm())
            ms = _time(fn)
            ck = triangle_triton.last_compiled.get("fwd")
            regs = f"{getattr(ck, 'n_regs', '?')}/{getattr(ck, 'n_spills', '?')}"
            cfg = {**default_config(head_dim, dtype, q.device), **var}
            rows.append({"length": length, "impl": name, "ms": ms, "status": "ok", "tflops": flops / ms * 1e-9,
                         "err_vs_flex": err, "regs_spills": regs, "config": cfg})
        if verbose:
            for r in rows:
                if r["length"] == length:
                    print({a: b for a, b in r.items() if a != "config"}, flush=True)
        del q, k, v, flex_out
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: ms per implementation and each one's ratio to flex and to cuDNN."""
    by = {(r["length"], r["impl"]): r for r in rows}
    lines = ["| L | impl | ms | TFLOP/s (useful) | flex / impl | cuDNN / impl | err vs flex |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ms"] is None:
            lines.append(f"| {r['length']} | {r['impl']} | {r['status']} | | | | |")
            continue
        flex, cud = by.get((r["length"], "flex"), {}).get("ms"), by.get((r["length"], "sdpa-cudnn"), {}).get("ms")

        def ratio(base, ms=r["ms"]):
            return f"{base / ms:.2f}x" if base else "-"

        tf = f"{r['tflops']:.0f}" if r.get("tflops") else ""
        err = f"{r['err_vs_flex']:.1e}" if r.get("err_vs_flex") is not None else ""
        lines.append(f"| {r['length']} | {r['impl']} | {r['ms']:.3f} | {tf} | {ratio(flex)} | {ratio(cud)} | {err} |")
    return "\n".join(lines)


def header(last_n: int = 128, heads: tuple[int, int, int] = (32, 8, 128), n_init: int = 8, n_local: int = 512) -> str:
    """Device, versions and date of this run."""
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    h, hkv, d = heads
    return (f"{datetime.date.today().isoformat()} | {dev} | torch {torch.__version__} | triton {triton.__version__}"
            f" | B=1, H={h}, Hkv={hkv}, D={d}, bf16, n_init={n_init}, n_local={n_local}, last_n={last_n}")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lengths", default="32k,64k,128k")
    ap.add_argument("--baselines", default="flex,flash,cudnn", help="comma list; empty for none")
    ap.add_argument("--variants", default="", help='JSON list of config overrides, e.g. [{"block_n":128}]')
    ap.add_argument("--last-n", type=int, default=128)
    ap.add_argument("--heads", default="32,8,128", help="query heads, kv heads, head dim (Qwen2.5-7B: 28,4,128)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench needs a CUDA GPU")
    lengths = [_parse_len(s) for s in a.lengths.split(",") if s.strip()]
    variants = json.loads(a.variants) if a.variants else None
    baselines = tuple(b for b in a.baselines.split(",") if b)
    try:
        heads = tuple(int(x) for x in a.heads.split(","))
        h, hkv, d = heads
    except ValueError:
        raise SystemExit(f"--heads wants three integers H,HKV,D, got {a.heads!r}") from None
    rows = run(lengths, heads=h, kv_heads=hkv, head_dim=d, last_n=a.last_n, baselines=baselines,
               variants=variants, verbose=True)
    print(header(a.last_n, heads))
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": header(a.last_n, heads), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
