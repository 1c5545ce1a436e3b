"""A cold KV file (page cache dropped) on a GPU: plain load vs tmix's load-or-prefill-again, Llama-3.1-8B shapes.

Run on the GPU machine as root (it drops the page cache):
`python docs/scripts/cold_kv.py --tokens 131072 --json OUT.jsonl`. Random weights and ids; the file is written to
$TMIX_CACHE_DIR (default ~/.cache/tmix) and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import torch

from tmixcli import archs, attention, context, generate, kvfolder, kvread, kvstore, kvwrite
from tmixcli.config import AttentionConfig, Settings
from tmixcli.models import LoadedModel


def _drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _clock() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    model = archs.build_random_model("llama-3.1-8b", "cuda", torch.bfloat16)
    attn = AttentionConfig(method="trimix", start_layer=16)
    attention.attach(model, attn)
    ids = torch.randint(0, model.config.vocab_size, (a.tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    generate.prefill(model, ids, chunk_size=a.chunk_size)  # kernel compiles, cuBLAS/cuDNN start-up for every shape
    t = _clock()
    cache, _ = generate.prefill(model, ids, chunk_size=a.chunk_size)
    prefill_s = _clock() - t
    meta = kvstore.build_meta(model_id="llama-3.1-8b (random)", fingerprint="random", dtype=torch.bfloat16, attn=attn,
                              doc_name="random", doc_sha256="", template_hash="", n_tokens=len(ids))
    meta["prefill_s"] = f"{prefill_s:.3f}"
    path = kvfolder.kv_dir() / "cold-probe.safetensors"
    t = _clock()
    kvwrite.save_kv(path, cache, ids, meta)
    save_s = _clock() - t
    del cache
    torch.cuda.empty_cache()
    rows = {"tokens": a.tokens, "prefill_s": prefill_s, "save_s": save_s, "bytes": path.stat().st_size}
    _drop_page_cache()
    t = _clock()
    kvread.load_kv(path, "cuda")
    rows["plain_load_cold_s"] = _clock() - t
    torch.cuda.empty_cache()
    lm = LoadedModel(model, None, "random", torch.device("cuda"), torch.bfloat16)
    s = Settings(chunk_size=a.chunk_size, progress=False)
    for rep in range(2):
        _drop_page_cache()
        ctx = context.Context(lm, attn, [], None, "random", None)
        t = _clock()
        context.read_or_recompute(ctx, path, s, {}, None)
        rows[f"tmix_cold_{rep}_s"], rows[f"tmix_cold_{rep}_recomputed"] = _clock() - t, ctx.recomputed is not None
        torch.cuda.empty_cache()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # now wholly in the page cache
    ctx = context.Context(lm, attn, [], None, "random", None)
    t = _clock()
    context.read_or_recompute(ctx, path, s, {}, None)
    rows["tmix_warm_s"] = _clock() - t
    rows["tmix_warm_recomputed"] = ctx.recomputed is not None
    rows["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows["device"] = torch.cuda.get_device_name()
    rows["torch"] = torch.__version__
    print(json.dumps(rows), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(rows) + "\n")
    os.unlink(path)


if __name__ == "__main__":
    main()
