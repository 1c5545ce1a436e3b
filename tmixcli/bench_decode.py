"""Decode speed on a prefilled context: transformers' DynamicCache (a torch.cat of the whole K/V per token) vs
tmix's in-place cache (kvcache.GrowingLayer), eager and as `tmix ask` decodes: on CUDA replayed from a captured
graph, on the CPU with the direct step of cpu_decode. Usage:

    python -m tmixcli.bench_decode --arch llama-3.1-8b --lengths 32k,128k --tokens 64 --json out.json
    python -m tmixcli.bench_decode --lengths 2k,7k            # the default model on this machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone

import torch
from transformers.cache_utils import DynamicLayer

from tmixcli import attention, cpu_decode, generate
from tmixcli.bench_measure import device_name, package_version, sync
from tmixcli.bench_run import resolve_model
from tmixcli.config import AttentionConfig, default_start_layer
from tmixcli.errors import TmixError
from tmixcli.graph_decode import GraphDecoder
from tmixcli.kvcache import GrowingLayer
from tmixcli.listopts import parse_lengths
from tmixcli.filekind import check_output
from tmixcli.plotfile import write_whole


def decode_rate(model: torch.nn.Module, cache, n: int) -> float:
    """Tokens per second of n greedy single-token steps on top of `cache` (rewound afterwards)."""
    base = cache.get_seq_length()
    logits = generate.extend(model, cache, [1])
    sync(model.device)
    start = time.perf_counter()
    for _ in range(n):
        logits = generate.extend(model, cache, [generate.choose(logits)])
    sync(model.device)
    rate = n / (time.perf_counter() - start)
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., :base, :], layer.values[..., :base, :]
    return rate


def step_rate(model: torch.nn.Module, cache, n: int) -> float:
    """Tokens per second of n steps of a GraphDecoder (CUDA; capture not timed) or a CpuDecoder (rewound afterwards)."""
    base = cache.get_seq_length()
    dec = GraphDecoder(model, cache, n + 1) if model.device.type == "cuda" else cpu_decode.CpuDecoder(model, cache)
    logits = dec.step(1)
    sync(model.device)
    start = time.perf_counter()
    for _ in range(n):
        logits = dec.step(generate.choose(logits))
    sync(model.device)
    rate = n / (time.perf_counter() - start)
    dec.close()
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., :base, :], layer.values[..., :base, :]
    return rate


def to_plain(cache) -> None:
    """Swap every layer for a transformers DynamicLayer holding a contiguous copy (one layer at a time)."""
    for i, layer in enumerate(cache.layers):
        plain = DynamicLayer()
        plain.lazy_initialization(layer.keys, layer.values)
        plain.keys, plain.values = layer.keys.contiguous().clone(), layer.values.contiguous().clone()
        cache.layers[i] = plain


def to_growing(cache) -> None:
    """Swap every layer back for an in-place GrowingLayer (one layer at a time)."""
    for i, layer in enumerate(cache.layers):
        cache.layers[i] = GrowingLayer.holding(layer.keys, layer.values)


def run(model: torch.nn.Module, lengths: list[int], tokens: int, repeats: int, log) -> list[dict]:
    """Per length: `repeats` rounds of (in place, DynamicCache) decode rates on one prefilled context; medians."""
    cfg = model.config
    attention.attach(model, AttentionConfig(start_layer=default_start_layer(cfg.model_type, cfg.num_hidden_layers)))
    rows = []
    for length in lengths:
        ids = torch.randint(0, cfg.vocab_size, (length,), generator=torch.Generator().manual_seed(length)).tolist()
        cache, _ = generate.prefill(model, ids)
        step = "graph" if model.device.type == "cuda" else "cpu_step" if cpu_decode.usable(model, cache) else None
        rates: dict[str, list[float]] = {"in_place": [], "dynamic_cache": [], **({step: []} if step else {})}
        for _ in range(repeats):
            to_growing(cache)
            decode_rate(model, cache, 4)  # warm-up
            rates["in_place"].append(decode_rate(model, cache, tokens))
            if step:
                rates[step].append(step_rate(model, cache, tokens))
            to_plain(cache)
            decode_rate(model, cache, 4)
            rates["dynamic_cache"].append(decode_rate(model, cache, tokens))
        del cache
        med = {k: statistics.median(v) for k, v in rates.items()}
        row = {"length": length, "tokens": tokens, "in_place_tok_s": round(med["in_place"], 2),
               "dynamic_cache_tok_s": round(med["dynamic_cache"], 2),
               "speedup": round(med["in_place"] / med["dynamic_cache"], 3)}
        if step:
            row.update({f"{step}_tok_s": round(med[step], 2),
                        f"{step}_speedup": round(med[step] / med["dynamic_cache"], 3)})
        rows.append({**row, "samples": {k: [round(r, 2) for r in v] for k, v in rates.items()}})
        log(f"bench_decode: {length} tokens of context: in place {med['in_place']:.1f} tok/s, DynamicCache "
            f"{med['dynamic_cache']:.1f} tok/s" + (f", {step.replace('_', ' ')} {med[step]:.1f} tok/s" if step else ""))
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    """The command line: bad input (a length, the --json path, the model) is one "tmix: error:" line, no traceback."""
    ap = argparse.ArgumentParser(description=__doc__.split("Usage:")[0].strip())
    ap.add_argument("--arch", default=None, help="llama-3.1-8b, qwen2.5-7b or smollm2-135m (random weights)")
    ap.add_argument("--model", default=None, help="HF id, model dir or .gguf (default: the embedded model)")
    ap.add_argument("--lengths", default="2k,7k")
    ap.add_argument("--tokens", type=int, default=32, help="decoded tokens timed per cache kind and round")
    ap.add_argument("--repeats", type=int, default=3, help="rounds, the two cache kinds alternating")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", default=None, help="also write the result here (whole or not at all)")
    a = ap.parse_args(argv)
    try:
        _bench(a, " ".join(argv if argv is not None else sys.argv[1:]))
    except TmixError as err:
        ap.exit(err.code, f"tmix: error: {err}\n")


def _bench(a: argparse.Namespace, args: str) -> None:
    """Check the options, then load, measure, print the result and write it to --json."""
    lengths, out = parse_lengths(a.lengths), check_output(a.json, "--json")
    if a.tokens < 1 or a.repeats < 1:
        raise TmixError("need --tokens >= 1 and --repeats >= 1")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    model, label, _ = resolve_model(a.model, a.arch, a.device, a.dtype, False, log)
    with torch.inference_mode():
        rows = run(model, lengths, a.tokens, a.repeats, log)
    result = {"tool": f"python -m tmixcli.bench_decode {args}",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": label,
              "device_name": device_name(model.device), "dtype": str(model.dtype).removeprefix("torch."),
              "torch": package_version("torch"), "transformers": package_version("transformers"),
              "cpu_threads": torch.get_num_threads(), "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        write_whole(out, lambda tmp: tmp.write_text(text + "\n"), "--json")

if __name__ == "__main__":
    main()
