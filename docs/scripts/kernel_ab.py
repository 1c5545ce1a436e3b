"""A/B timing of the triangle kernel: an old copy against the working tree, interleaved, same inputs (kernel-notes v12).

Usage: git show REV:kernels/triangle_triton.py > /tmp/tri_old.py
       python docs/scripts/kernel_ab.py /tmp/tri_old.py 32768,131072 [H,HKV,D] [JSON list of configs for the new one]
Prints one JSON line per length: flex ms, each kernel's error against flex and three do_bench medians (ms).
"""
import importlib.util
import json
import sys

import torch
from torch.nn.attention.flex_attention import flex_attention
from triton.testing import do_bench

from tmix_kernels.bench import _flex
from tmix_kernels.triangle_triton import triangle_attention_triton as new

spec = importlib.util.spec_from_file_location("tri_old", sys.argv[1])
old_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old_module)
old = old_module.triangle_attention_triton
compiled = torch.compile(flex_attention, dynamic=False)
heads, kv_heads, head_dim = (int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "32,8,128").split(","))
variants = json.loads(sys.argv[4]) if len(sys.argv) > 4 else [{}]
for length in (int(x) for x in sys.argv[2].split(",")):
    torch.manual_seed(length)
    q = torch.randn(1, heads, length, head_dim, device="cuda", dtype=torch.bfloat16)  # q: [1, H, L, D]
    k = torch.randn(1, kv_heads, length, head_dim, device="cuda", dtype=torch.bfloat16)  # k: [1, Hkv, L, D]
    v = torch.randn(1, kv_heads, length, head_dim, device="cuda", dtype=torch.bfloat16)
    flex_ms, _, flex_out = _flex(q, k, v, 8, 512, 128, compiled)
    ref = flex_out.transpose(1, 2).float()
    fns = {"old": lambda q=q, k=k, v=v: old(q, k, v, 8, 512, 128)}
    for i, var in enumerate(variants):
        fns[f"new{i}"] = lambda q=q, k=k, v=v, var=var: new(q, k, v, 8, 512, 128, config=var)
    res = {"L": length, "flex": flex_ms}
    for name, fn in fns.items():
        out = fn()
        torch.cuda.synchronize()
        res[name + "_err"] = float((out.float() - ref).norm() / ref.norm())
    for _ in range(3):
        for name, fn in fns.items():
            res.setdefault(name, []).append(round(float(do_bench(fn, warmup=25, rep=200, return_mode="median")), 4))
    print(json.dumps(res), flush=True)
    del q, k, v, flex_out, ref, fns
    torch.cuda.empty_cache()
