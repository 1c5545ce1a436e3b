"""Prefix reuse at long context on a GPU: a 120K-token document that grows by N tokens, prefilled from its
old KV file's rows (reuse.py), from the old cache as `tmix serve` holds it in memory, and from scratch.
Random Llama-3.1-8B weights, trimix (start layer 16).

Usage: python docs/scripts/reuse_gpu.py WORK_DIR [OLD_TOKENS] [ADDED_TOKENS]   (rows -> WORK_DIR/rows.jsonl)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from tmixcli import attention, context, generate, kvread, kvstore, kvwrite, reuse
from tmixcli.archs import build_random_model
from tmixcli.config import AttentionConfig


def _now() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    n_old = int(sys.argv[2]) if len(sys.argv) > 2 else 120_000
    n_add = int(sys.argv[3]) if len(sys.argv) > 3 else 8_000
    model = build_random_model("llama-3.1-8b", torch.device("cuda"), torch.bfloat16)
    attn = AttentionConfig(method="trimix", start_layer=16)
    attention.attach(model, attn)
    gen = torch.Generator().manual_seed(0)
    old = torch.randint(0, model.config.vocab_size, (n_old,), generator=gen).tolist()
    new = old + torch.randint(0, model.config.vocab_size, (n_add,), generator=gen).tolist()
    cache, _ = generate.prefill(model, old)
    meta = kvstore.build_meta(model_id="llama-3.1-8b (random)", fingerprint="f", dtype=torch.bfloat16, attn=attn,
                              doc_name="old", doc_sha256="0", template_hash="t", n_tokens=n_old)
    path = work / "old.safetensors"
    kvwrite.save_kv(path, cache, old, meta)
    del cache
    torch.cuda.empty_cache()
    rows_out = []
    _, chunked_logits = generate.prefill(model, new, chunk_size=n_add)  # the noise of any chunked prefill
    torch.cuda.empty_cache()
    for rep in range(2):
        start = _now()
        found = reuse.best_file(new, {"model_fingerprint": "f"}, attn, folder=work)
        assert found is not None
        _, rows = found
        base, _, _ = kvread.load_kv(path, "cuda", rows=rows, headroom=len(new) - rows)
        loaded = _now()
        cache, reused_logits = generate.prefill(model, new, cache=base)
        done = _now()
        del cache, base
        torch.cuda.empty_cache()
        start2 = _now()
        cache, fresh_logits = generate.prefill(model, new)
        fresh = _now() - start2
        del cache
        torch.cuda.empty_cache()
        held, _, _ = kvread.load_kv(path, "cuda")  # what the server holds after its last question (not timed)
        start3 = _now()
        context.rewind(held, rows)
        cache, memory_logits = generate.prefill(model, new, cache=held)
        from_memory = _now() - start3
        del cache, held
        torch.cuda.empty_cache()
        memory_cos = torch.nn.functional.cosine_similarity(memory_logits, fresh_logits, dim=0).item()
        cos = torch.nn.functional.cosine_similarity(reused_logits, fresh_logits, dim=0).item()
        same = bool(reused_logits.argmax() == fresh_logits.argmax())
        chunked_cos = torch.nn.functional.cosine_similarity(chunked_logits, fresh_logits, dim=0).item()
        rows_out.append({"rep": rep, "old_tokens": n_old, "new_tokens": len(new), "reused_rows": rows,
                         "find_and_load_s": round(loaded - start, 3), "continue_prefill_s": round(done - loaded, 3),
                         "reused_total_s": round(done - start, 3), "fresh_prefill_s": round(fresh, 3),
                         "from_serve_memory_s": round(from_memory, 3), "memory_logits_cosine": round(memory_cos, 5),
                         "logits_cosine": round(cos, 5), "same_argmax": same,
                         "chunked_one_shot_cosine": round(chunked_cos, 5),
                         "device": torch.cuda.get_device_name(), "torch": torch.__version__})
        print(json.dumps(rows_out[-1]), flush=True)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_out))


if __name__ == "__main__":
    main()
