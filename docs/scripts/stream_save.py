"""A fresh prefill's KV file written after the prefill and the answer (the old way) vs while they run (kvwrite.py).

Per round: prefill, answer (greedy decode of --new-tokens tokens, no stop ids), file complete on disk; the
variants alternate so both see the same disk. Random weights for `--arch` (GPU), or the embedded default model.

Usage: python docs/scripts/stream_save.py --arch llama-3.1-8b --tokens 131072 --json OUT.jsonl      (GPU)
       python docs/scripts/stream_save.py --tokens 3700 --json OUT.jsonl                           (CPU, default)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tmixcli import attention, generate, kvfolder, kvstore, kvwrite
from tmixcli.context import rewind
from tmixcli.config import AttentionConfig


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _dirty() -> int:
    """Bytes of the page cache not yet on disk (Dirty + Writeback in /proc/meminfo)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return -1
    return sum(int(x.split()[1]) * 1024 for x in lines if x.startswith(("Dirty:", "Writeback:")))


def _model(arch: str | None):
    if arch:
        from tmixcli.archs import build_random_model

        return build_random_model(arch, torch.device("cuda"), torch.bfloat16), 16
    from tmixcli.models import load_model

    lm = load_model(None, device="cpu", dtype="auto", progress=False)
    return lm.model, 9


def one_round(model, ids: list[int], path: Path, attn: AttentionConfig, variant: str, new_tokens: int,
              chunk_size: int | None) -> dict:
    dev = model.device
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(model.config)
    meta = kvstore.build_meta(model_id="probe", fingerprint="f", dtype=model.dtype, attn=attn, doc_name="probe",
                              doc_sha256="0", template_hash="t", n_tokens=len(ids))
    switch = sys.getswitchinterval()
    if variant == "streamed-switch":  # diagnosis: does the writer thread wait for the GIL during the prefill?
        sys.setswitchinterval(0.0005)
    t0 = _clock(dev)
    writer = None
    if variant != "after":
        writer = kvwrite.KVWriter(path, n_layers, kv_heads, head_dim, model.dtype, ids, meta)
    cache, _ = generate.prefill(model, ids, chunk_size=chunk_size, on_rows=writer.rows if writer else None)
    t1 = _clock(dev)
    at_prefill, dirty_prefill = (writer.written if writer else 0), _dirty()
    if writer:
        writer.finish({"prefill_s": f"{t1 - t0:.3f}"})
    toks = list(generate.generate_ids(model, cache, [5, 6, 7], set(), new_tokens))
    t2 = _clock(dev)
    at_answer, dirty_answer = (writer.written if writer else 0), _dirty()
    rewind(cache, len(ids))  # as `tmix ask` does after the answer
    if writer:
        writer.wait()
    else:
        kvwrite.save_kv(path, cache, ids, meta)
    t3 = _clock(dev)
    sys.setswitchinterval(switch)
    size = path.stat().st_size
    path.unlink()
    del cache
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"variant": variant, "tokens": len(ids), "chunk_size": chunk_size, "prefill_s": t1 - t0, "answer_s": t2 - t1,
            "decode_tok_s": (len(toks) - 1) / (t2 - t1), "save_after_answer_s": t3 - t2, "total_s": t3 - t0,
            "written_at_prefill_end": at_prefill, "written_at_answer_end": at_answer,
            "dirty_at_prefill_end": dirty_prefill, "dirty_at_answer_end": dirty_answer,
            "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default=None)
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--variants", default="after,streamed")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    model, start = _model(a.arch)
    attn = AttentionConfig(method="trimix", start_layer=start)
    attention.attach(model, attn)
    ids = torch.randint(0, model.config.vocab_size, (a.tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    generate.prefill(model, ids[:4096])  # kernel compiles, library start-up
    path = kvfolder.kv_dir() / "stream-probe.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
             "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu"}
    for rep in range(a.reps):
        for variant in a.variants.split(","):
            row = {**one_round(model, ids, path, attn, variant, a.new_tokens, a.chunk_size), "rep": rep, **stamp}
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
