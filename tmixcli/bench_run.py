"""The TTFT benchmark: each length and method timed cold (and warm from its KV file), one row per pair."""

from __future__ import annotations

import hashlib
import platform
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmixcli.bench_measure import (device_name, git_commit, guarded, measure_ttft, measure_warm, memory_kind,
                                   package_version, random_ids)
from tmixcli.config import AttentionConfig, no_triangle_note
from tmixcli.errors import TmixError
from tmixcli.modelinfo import ModelLimits

if TYPE_CHECKING:
    import torch

QUESTION_TOKENS = 20
METHODS = ("dense", "trimix")
MIB = 2**20
CSV_FIELDS = ("length", "method", "status", "ttft_median_s", "ttft_min_s", "ttft_max_s", "tokens_per_s",
              "speedup_vs_dense", "peak_mem_mib", "peak_extra_mib", "warm_ttft_s", "kv_load_s", "kv_save_s",
              "kv_file_mib", "first_token", "all_layers_dense")


# ---------------------------------------------------------------- model


def resolve_model(model: Any, arch: str | None, device: str, dtype: str, force: bool,
                  log: Callable[[str], None], threads: str | None = None) -> tuple[torch.nn.Module, str, Any]:
    """(model in eval mode, label, tokenizer or None) from a module, a LoadedModel, a --model spec or an --arch;
    a --model loaded on the CPU gets `threads` (default: $TMIX_THREADS, else auto)."""
    import torch

    from tmixcli.models import LoadedModel, load_model, resolve_device, resolve_dtype

    if model is not None and arch is not None:
        raise TmixError("give either --model or --arch, not both")
    if isinstance(model, LoadedModel):
        return model.model.eval(), model.model_id, model.tokenizer
    if isinstance(model, torch.nn.Module):
        return model.eval(), type(model).__name__, None
    if arch is not None:
        from tmixcli.archs import arch_limits, build_random_model

        arch_limits(arch)  # an unknown arch is refused before a word about building it
        dev = resolve_device(device)
        log(f"bench: building {arch} with random weights on {dev}...")
        return build_random_model(arch, dev, resolve_dtype(dtype, dev), force=force), f"{arch} (random weights)", None
    loaded = load_model(model, device=device, dtype=dtype, progress=True, threads=threads)
    return loaded.model, loaded.model_id, loaded.tokenizer


def _profile_start(model: torch.nn.Module, tokenizer: Any) -> tuple[int, str] | None:
    """The start layer of a `tmix calibrate` profile for this exact model and how to name it, if there is one."""
    if tokenizer is None:
        return None
    from tmixcli.calib_profile import load_profile, profile_label
    from tmixcli.kvstore import model_fingerprint

    profile = load_profile(model_fingerprint(model, tokenizer))
    return None if profile is None else (int(profile["start_layer"]), profile_label(profile))


def check_fits(lengths: list[int] | tuple[int, ...], methods: list[str] | tuple[str, ...], start_layer: int | None,
               limits: ModelLimits, spec: str | None = None) -> None:
    """Refuse a --start-layer past the model's layers (for trimix), and lengths none of which fit its context; a
    limit that is None is not known yet (`spec`: the --model whose config.json may tell the layers)."""
    from tmixcli.modelcheck import check_start_layer

    check_start_layer(spec, "trimix" if "trimix" in methods else "dense", start_layer, limits.layers)
    if limits.context is not None and lengths and min(lengths) > limits.context:
        listed = f"{lengths[0]} is" if len(lengths) == 1 else f"{', '.join(map(str, lengths))} are all"
        raise TmixError(f"--lengths {listed} past the model's context ({limits.context} tokens): nothing to time")


def loaded_limits(model: torch.nn.Module) -> ModelLimits:
    """A loaded model's layers and context (None where its config has no context)."""
    cfg = model.config
    return ModelLimits(cfg.num_hidden_layers, getattr(cfg, "max_position_embeddings", None))


def _attn_configs(model: torch.nn.Module, methods: list[str], start_layer: int | None, n_init: int,
                  n_local: int, last_n: int) -> dict[str, Any]:
    from tmixcli.config import default_start_layer

    cfg = model.config
    start = default_start_layer(cfg.model_type, cfg.num_hidden_layers) if start_layer is None else start_layer
    try:
        return {m: AttentionConfig(method=m, n_init=n_init, n_local=n_local, last_n=last_n, start_layer=start)
                for m in methods}
    except ValueError as err:
        raise TmixError(str(err)) from None


# ---------------------------------------------------------------- the benchmark


def run_bench(model: Any = None, *, arch: str | None = None, lengths: list[int] | tuple[int, ...] = (2048,),
              methods: list[str] | tuple[str, ...] = METHODS, repeats: int = 3, warmup: int = 1,
              start_layer: int | None = None, n_init: int = AttentionConfig.n_init,
              n_local: int = AttentionConfig.n_local, last_n: int = AttentionConfig.last_n,
              chunk_size: int | None = None, device: str = "auto", dtype: str = "auto", warm: bool = True,
              seed: int = 0, force: bool = False, threads: int | str | None = None, compile: str = "auto",
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark TTFT per length and method; returns {"header": {...}, "rows": [...]} (times in seconds).

    `model` is a --model spec (None = the default model), a LoadedModel or a torch module; or give `arch`.
    `threads` (N or "auto"; default $TMIX_THREADS, else auto) sets torch's CPU threads once for the whole run
    (restored afterwards); `compile` (auto|on|off) fuses each
    layer's norms and MLP with torch.compile (auto: on CUDA), compiled during the warm-up rounds."""
    if repeats < 1 or warmup < 0:
        raise TmixError("need --repeats >= 1 and --warmup >= 0")
    if chunk_size is not None and chunk_size < 1:
        raise TmixError("--chunk-size must be at least 1")
    if compile not in ("auto", "on", "off"):
        raise TmixError(f"--compile takes auto, on or off, not {compile!r}")
    log = log or (lambda _msg: None)
    with torch_threads(threads) as count:
        model, label, tokenizer = resolve_model(model, arch, device, dtype, force, log, threads=str(count))
        if start_layer is None and (found := _profile_start(model, tokenizer)) is not None:
            start_layer = found[0]
            log(f"bench: start layer {start_layer} from the {found[1]}")
        attn = _attn_configs(model, list(methods), start_layer, n_init, n_local, last_n)
        start = next(iter(attn.values())).start_layer
        check_fits(lengths, methods, start, loaded_limits(model))
        if "trimix" in attn and (note := no_triangle_note(attn["trimix"], model.config.num_hidden_layers)):
            log(f"bench: trimix from layer {start}: {note}")
        compiled = _compile(model, compile, warmup, log)
        header = _header(model, label, attn, chunk_size, repeats, warmup, seed)
        header["compiled"] = compiled
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="tmix-bench-") as tmp:
            for i, length in enumerate(lengths):
                opts = {"chunk_size": chunk_size, "repeats": repeats, "warmup": warmup, "warm": warm,
                        "seed": seed + i, "tmp": Path(tmp), "log": log}
                rows += _bench_length(model, label, length, attn, opts)
    return {"header": header, "rows": rows}


def _compile(model: torch.nn.Module, choice: str, warmup: int, log: Callable[[str], None]) -> bool:
    from tmixcli.fuse import compile_blocks, resolve_compile

    if not resolve_compile(choice, model.device):
        return False
    if warmup < 1:
        log("bench: --warmup 0 with --compile: the first timed round includes compilation")
    log(f"bench: torch.compile of {compile_blocks(model)} norm/MLP modules (compiled in the first round)")
    return True


@contextmanager
def torch_threads(spec: int | str | None) -> Iterator[int]:
    """Run the block with `spec` torch CPU threads (N or "auto"; None: $TMIX_THREADS, else auto), decided once; yields
    the count and restores torch's afterwards."""
    import torch

    from tmixcli.threads import configure_threads

    saved = torch.get_num_threads()
    count = configure_threads(None if spec is None else str(spec))
    try:
        yield count
    finally:
        torch.set_num_threads(saved)


def _header(model: torch.nn.Module, label: str, attn: dict[str, Any], chunk_size: int | None,
            repeats: int, warmup: int, seed: int) -> dict[str, Any]:
    import torch

    from tmixcli.kvheader import dtype_name

    cfg = model.config
    first = next(iter(attn.values()))
    return {
        "tool": "tmix bench", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": label, "device": str(model.device), "device_name": device_name(model.device),
        "dtype": dtype_name(model.dtype), "torch": package_version("torch"),
        "transformers": package_version("transformers"), "triton": package_version("triton"),
        "git_commit": git_commit(), "python": platform.python_version(),
        "num_layers": cfg.num_hidden_layers, "max_context": getattr(cfg, "max_position_embeddings", None),
        "start_layer": first.start_layer, "triangle_layers": max(0, cfg.num_hidden_layers - first.start_layer),
        "n_init": first.n_init, "n_local": first.n_local,
        "last_n": first.last_n, "chunk_size": chunk_size, "repeats": repeats, "warmup": warmup, "seed": seed,
        "question_tokens": QUESTION_TOKENS, "memory": memory_kind(model.device),
        "cpu_threads": torch.get_num_threads(),
    }


def _empty_row(length: int, method: str, status: str, dense: bool) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in CSV_FIELDS}
    row.update(length=length, method=method, status=status, ttft_samples_s=[], all_layers_dense=dense)
    return row


def _bench_length(model: torch.nn.Module, label: str, length: int, attn: dict[str, Any],
                  opts: dict[str, Any]) -> list[dict[str, Any]]:
    """All repeats of one length, methods interleaved per repeat (dense, trimix, dense, trimix, ...)."""
    from tmixcli.config import all_layers_dense, short_prompt_note

    ctx = getattr(model.config, "max_position_embeddings", None)
    dense = {m: all_layers_dense(cfg, model.config.num_hidden_layers, length) for m, cfg in attn.items()}
    if ctx is not None and length > ctx:
        opts["log"](f"bench: {length} tokens exceeds the model's context ({ctx}): skipped")
        return [_empty_row(length, m, f"exceeds context ({ctx})", dense[m]) for m in attn]
    if "trimix" in attn and (note := short_prompt_note(attn["trimix"], length)):
        opts["log"](f"bench: {length} tokens, trimix: {note}")
    ids = random_ids(length, model.config.vocab_size, opts["seed"])
    rows = {m: _empty_row(length, m, "ok", dense[m]) for m in attn}
    rounds = opts["warmup"] + opts["repeats"]
    for r in range(rounds):
        for method, cfg in attn.items():
            if rows[method]["status"] == "ok":
                _one_round(model, label, ids, method, cfg, rows[method], r, opts)
    _summarise(list(rows.values()), length)
    return list(rows.values())


def _one_round(model: torch.nn.Module, label: str, ids: list[int], method: str, cfg: Any,
               row: dict[str, Any], r: int, opts: dict[str, Any]) -> None:
    """One timed (or warm-up) prefill of `method`; the last round also saves the KV and times follow-ups."""
    from tmixcli.attention import attach

    attach(model, cfg)
    last = r == opts["warmup"] + opts["repeats"] - 1
    kv_path = opts["tmp"] / f"{method}-{len(ids)}.safetensors" if last and opts["warm"] else None
    tag = f"warmup {r + 1}/{opts['warmup']}" if r < opts["warmup"] else f"repeat {r - opts['warmup'] + 1}"
    res = guarded(model, lambda: measure_ttft(model, ids, opts["chunk_size"], kv_path,
                                               _kv_meta(model, label, cfg, ids) if kv_path else None))
    if isinstance(res, str):
        row["status"] = res
        opts["log"](f"bench: {len(ids)} tokens, {method}, {tag}: {res}")
        return
    opts["log"](f"bench: {len(ids)} tokens, {method}, {tag}: TTFT {res['ttft']:.3f} s")
    if r >= opts["warmup"]:
        row["ttft_samples_s"].append(res["ttft"])
        row["peak_mem_mib"] = max(row["peak_mem_mib"] or 0, res["peak"] / MIB)
        row["peak_extra_mib"] = max(row["peak_extra_mib"] or 0, res["extra"] / MIB)
        row["first_token"] = res["token"]
    if res["kv_error"]:
        row["status"] = f"warm: {res['kv_error']}"
    elif kv_path is not None:
        row["kv_file_mib"] = res["kv_bytes"] / MIB
        row["kv_save_s"] = res["kv_save"]
        _warm_rounds(model, kv_path, row, opts)
        kv_path.unlink(missing_ok=True)


def _warm_rounds(model: torch.nn.Module, kv_path: Path, row: dict[str, Any], opts: dict[str, Any]) -> None:
    """Time load_kv + a 20-token question + first token, `warmup` + `repeats` times (medians kept)."""
    question = random_ids(QUESTION_TOKENS, model.config.vocab_size, opts["seed"] + 7919)
    warm_t, load_t = [], []
    for r in range(opts["warmup"] + opts["repeats"]):
        res = guarded(model, lambda: measure_warm(model, kv_path, question))
        if isinstance(res, str):
            row["status"] = f"warm: {res}"
            opts["log"](f"bench: {len(question)}-token follow-up for {row['method']}: {res}")
            return
        if r >= opts["warmup"]:
            warm_t.append(res[0])
            load_t.append(res[1])
    row["warm_ttft_s"] = statistics.median(warm_t)
    row["kv_load_s"] = statistics.median(load_t)
    opts["log"](f"bench: {row['length']} tokens, {row['method']}, warm follow-up ({QUESTION_TOKENS} tokens from "
                f"the KV file): {row['warm_ttft_s']:.3f} s (load {row['kv_load_s']:.3f} s)")



def _kv_meta(model: torch.nn.Module, label: str, cfg: Any, ids: list[int]) -> dict[str, str]:
    from tmixcli import kvstore

    digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
    return kvstore.build_meta(model_id=label, fingerprint=kvstore.model_fingerprint(model, None),
                              dtype=model.dtype, attn=cfg, doc_name=f"bench-random-{len(ids)}",
                              doc_sha256=digest, template_hash="bench", n_tokens=len(ids))


def _summarise(rows: list[dict[str, Any]], length: int) -> None:
    """Fill medians, min/max, tokens/s and the speedup against the dense row."""
    for row in rows:
        samples = row["ttft_samples_s"]
        if (row["status"] == "ok" or row["status"].startswith("warm:")) and samples:
            med = statistics.median(samples)
            row.update(ttft_median_s=med, ttft_min_s=min(samples), ttft_max_s=max(samples),
                       tokens_per_s=length / med)
    dense = next((r for r in rows if r["method"] == "dense" and r["ttft_median_s"]), None)
    for row in rows:
        if dense and row["ttft_median_s"]:
            row["speedup_vs_dense"] = dense["ttft_median_s"] / row["ttft_median_s"]
