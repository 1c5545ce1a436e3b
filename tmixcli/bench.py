"""`tmix bench`: time to first token of dense vs TriangleMix prefill, and of a follow-up from a saved KV file."""

from __future__ import annotations

import csv
import gc
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tmixcli.errors import TmixError
from tmixcli.plotfile import check_plot

if TYPE_CHECKING:
    import torch

QUESTION_TOKENS = 20
METHODS = ("dense", "trimix")
MIB = 2**20
CSV_FIELDS = ("length", "method", "status", "ttft_median_s", "ttft_min_s", "ttft_max_s", "tokens_per_s",
              "speedup_vs_dense", "peak_mem_mib", "peak_extra_mib", "warm_ttft_s", "kv_load_s", "kv_save_s",
              "kv_file_mib", "first_token")


# ---------------------------------------------------------------- option parsing


def parse_lengths(spec: str) -> list[int]:
    """"4k,32k,128k" -> [4096, 32768, 131072] (k = 1024); plain numbers are token counts."""
    out = []
    for part in (p.strip().lower() for p in spec.split(",") if p.strip()):
        try:
            n = int(float(part[:-1]) * 1024) if part.endswith("k") else int(part)
        except ValueError:
            raise TmixError(f"bad length {part!r} in --lengths: use numbers like 2048 or 4k") from None
        if n < 1:
            raise TmixError(f"bad length {part!r} in --lengths: must be at least 1 token")
        out.append(n)
    if not out:
        raise TmixError("--lengths is empty")
    return out


def parse_methods(spec: str) -> list[str]:
    """"dense,trimix" -> ["dense", "trimix"]; unknown names are refused."""
    out = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise TmixError(f"bad --methods {spec!r}: choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------- environment


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


# ---------------------------------------------------------------- timing and memory


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_kind(device: torch.device) -> str:
    """How peak memory is measured on this device (goes into the report header)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during the prefill (extra = above the weights)"
    if _rss_bytes() is not None:
        return "process RSS sampled every 5 ms from /proc/self/statm during the prefill (extra = above start)"
    return "peak RSS of the process so far (ru_maxrss, monotonic)"


class MemoryProbe:
    """Peak memory during a block: CUDA peak allocated, else RSS sampled by a thread (ru_maxrss fallback)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryProbe:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = self.peak = torch.cuda.memory_allocated(self.device)
        elif _rss_bytes() is not None:
            self.base = self.peak = _rss_bytes() or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


# ---------------------------------------------------------------- measurements


def measure_ttft(model: torch.nn.Module, ids: list[int], chunk_size: int | None = None,
                 kv_path: Path | None = None, meta: dict[str, str] | None = None) -> dict[str, Any]:
    """One cold TTFT (prefill + first token), synchronised; with `kv_path` the KV file is written during the
    prefill, as `tmix ask` does, and kv_save is the wait after the first token until it is on disk.

    Returns ttft (s), peak and extra memory (bytes), first token, kv_bytes, kv_save (s), kv_error (a failed save)."""
    from tmixcli import kvstore, kvwrite
    from tmixcli.generate import choose, prefill

    device = model.device
    writer = None
    if kv_path is not None:
        n_layers, kv_heads, head_dim = kvstore.model_kv_dims(model.config)
        writer = kvwrite.KVWriter(kv_path, n_layers, kv_heads, head_dim, model.dtype, ids, meta or {})
    _sync(device)
    try:
        with MemoryProbe(device) as mem:
            start = time.perf_counter()
            cache, logits = prefill(model, ids, chunk_size=chunk_size,
                                    on_rows=writer.rows if writer is not None else None)
            token = choose(logits)
            _sync(device)
            ttft = time.perf_counter() - start
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    res = {"ttft": ttft, "peak": mem.peak, "extra": max(0, mem.peak - mem.base), "token": token,
           "kv_bytes": None, "kv_error": None, "kv_save": None}
    if writer is not None:
        try:
            start = time.perf_counter()
            writer.finish()
            if writer.usable:  # else (a sliding-window layer, another dtype) the finished cache is saved whole
                res["kv_bytes"] = writer.wait()
            else:
                res["kv_bytes"] = kvstore.save_kv(kv_path, cache, ids, meta or {})
            res["kv_save"] = time.perf_counter() - start
        except TmixError as err:
            res["kv_error"] = str(err)
    del cache, logits
    return res


def measure_warm(model: torch.nn.Module, kv_path: Path, question: list[int]) -> tuple[float, float]:
    """(load_kv + extend(question) + first token, load_kv alone) in seconds, synchronised."""
    from tmixcli import kvstore
    from tmixcli.generate import choose, extend

    device = model.device
    _sync(device)
    start = time.perf_counter()
    cache, _, _ = kvstore.load_kv(kv_path, device)
    _sync(device)
    loaded = time.perf_counter()
    choose(extend(model, cache, question))
    _sync(device)
    end = time.perf_counter()
    del cache
    return end - start, loaded - start


def _random_ids(n: int, vocab: int, seed: int) -> list[int]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=gen).tolist()


# ---------------------------------------------------------------- model


def _resolve_model(model: Any, arch: str | None, device: str, dtype: str, force: bool,
                   log: Callable[[str], None]) -> tuple[torch.nn.Module, str, Any]:
    """(model in eval mode, label, tokenizer or None) from a module, a LoadedModel, a --model spec or an --arch."""
    import torch

    from tmixcli.models import LoadedModel, load_model, resolve_device, resolve_dtype

    if model is not None and arch is not None:
        raise TmixError("give either --model or --arch, not both")
    if isinstance(model, LoadedModel):
        return model.model.eval(), model.model_id, model.tokenizer
    if isinstance(model, torch.nn.Module):
        return model.eval(), type(model).__name__, None
    if arch is not None:
        from tmixcli.archs import build_random_model

        dev = resolve_device(device)
        log(f"bench: building {arch} with random weights on {dev}...")
        return build_random_model(arch, dev, resolve_dtype(dtype, dev), force=force), f"{arch} (random weights)", None
    loaded = load_model(model, device=device, dtype=dtype, progress=True)
    return loaded.model, loaded.model_id, loaded.tokenizer


def _profile_start(model: torch.nn.Module, tokenizer: Any) -> tuple[int, str] | None:
    """The start layer of a `tmix calibrate` profile for this exact model and how to name it, if there is one."""
    if tokenizer is None:
        return None
    from tmixcli.calibrate import load_profile, profile_label
    from tmixcli.kvstore import model_fingerprint

    profile = load_profile(model_fingerprint(model, tokenizer))
    return None if profile is None else (int(profile["start_layer"]), profile_label(profile))


def _attn_configs(model: torch.nn.Module, methods: list[str], start_layer: int | None, n_init: int,
                  n_local: int, last_n: int) -> dict[str, Any]:
    from tmixcli.config import AttentionConfig, default_start_layer

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
              start_layer: int | None = None, n_init: int = 8, n_local: int = 512, last_n: int = 128,
              chunk_size: int | None = None, device: str = "auto", dtype: str = "auto", warm: bool = True,
              seed: int = 0, force: bool = False, threads: int | None = None, compile: str = "auto",
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark TTFT per length and method; returns {"header": {...}, "rows": [...]} (times in seconds).

    `model` is a --model spec (None = the default model), a LoadedModel or a torch module; or give `arch`.
    `threads` sets torch's CPU threads for the run (restored afterwards); `compile` (auto|on|off) fuses each
    layer's norms and MLP with torch.compile (auto: on CUDA), compiled during the warm-up rounds."""
    if repeats < 1 or warmup < 0:
        raise TmixError("need --repeats >= 1 and --warmup >= 0")
    if chunk_size is not None and chunk_size < 1:
        raise TmixError("--chunk-size must be at least 1")
    if threads is not None and threads < 1:
        raise TmixError("--threads must be at least 1")
    if compile not in ("auto", "on", "off"):
        raise TmixError(f"--compile takes auto, on or off, not {compile!r}")
    log = log or (lambda _msg: None)
    with torch_threads(threads):
        model, label, tokenizer = _resolve_model(model, arch, device, dtype, force, log)
        compiled = _compile(model, compile, warmup, log)
        if start_layer is None and (found := _profile_start(model, tokenizer)) is not None:
            start_layer = found[0]
            log(f"bench: start layer {start_layer} from the {found[1]}")
        attn = _attn_configs(model, list(methods), start_layer, n_init, n_local, last_n)
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
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with n torch CPU threads (None: $TMIX_THREADS or the auto probe), restoring the count."""
    import torch

    from tmixcli.threads import configure_threads

    saved = torch.get_num_threads()
    configure_threads(None if n is None else str(n))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _header(model: torch.nn.Module, label: str, attn: dict[str, Any], chunk_size: int | None,
            repeats: int, warmup: int, seed: int) -> dict[str, Any]:
    import torch

    from tmixcli.kvstore import dtype_name

    cfg = model.config
    first = next(iter(attn.values()))
    return {
        "tool": "tmix bench", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": label, "device": str(model.device), "device_name": _device_name(model.device),
        "dtype": dtype_name(model.dtype), "torch": _version("torch"), "transformers": _version("transformers"),
        "triton": _version("triton"), "git_commit": _git_commit(), "python": platform.python_version(),
        "num_layers": cfg.num_hidden_layers, "max_context": getattr(cfg, "max_position_embeddings", None),
        "start_layer": first.start_layer, "n_init": first.n_init, "n_local": first.n_local,
        "last_n": first.last_n, "chunk_size": chunk_size, "repeats": repeats, "warmup": warmup, "seed": seed,
        "question_tokens": QUESTION_TOKENS, "memory": memory_kind(model.device),
        "cpu_threads": torch.get_num_threads(),
    }


def _empty_row(length: int, method: str, status: str) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in CSV_FIELDS}
    row.update(length=length, method=method, status=status, ttft_samples_s=[])
    return row


def _bench_length(model: torch.nn.Module, label: str, length: int, attn: dict[str, Any],
                  opts: dict[str, Any]) -> list[dict[str, Any]]:
    """All repeats of one length, methods interleaved per repeat (dense, trimix, dense, trimix, ...)."""
    ctx = getattr(model.config, "max_position_embeddings", None)
    if ctx is not None and length > ctx:
        opts["log"](f"bench: {length} tokens exceeds the model's context ({ctx}): skipped")
        return [_empty_row(length, m, f"exceeds context ({ctx})") for m in attn]
    ids = _random_ids(length, model.config.vocab_size, opts["seed"])
    rows = {m: _empty_row(length, m, "ok") for m in attn}
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
    res = _guarded(model, lambda: measure_ttft(model, ids, opts["chunk_size"], kv_path,
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
    question = _random_ids(QUESTION_TOKENS, model.config.vocab_size, opts["seed"] + 7919)
    warm_t, load_t = [], []
    for r in range(opts["warmup"] + opts["repeats"]):
        res = _guarded(model, lambda: measure_warm(model, kv_path, question))
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


def _guarded(model: torch.nn.Module, fn: Callable[[], Any]) -> Any:
    """fn(), or "out of memory" after freeing caches; memory is always released afterwards."""
    try:
        result = fn()
    except (RuntimeError, MemoryError) as err:
        if not (_is_oom(err) or isinstance(err, MemoryError)):
            raise
        result = "out of memory"
    _free(model.device)
    return result


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


# ---------------------------------------------------------------- output


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def format_markdown(result: dict[str, Any]) -> str:
    """The report: a header block and one table row per length and method."""
    h = result["header"]
    lines = [
        f"tmix bench - {h['date']} - git {h['git_commit']}",
        f"model: {h['model']} ({h['num_layers']} layers, context {h['max_context']})",
        f"device: {h['device_name']} [{h['device']}], dtype {h['dtype']}",
        f"torch {h['torch']}, transformers {h['transformers']}, triton {h['triton']}, python {h['python']}",
        f"trimix: start_layer {h['start_layer']}, n_init {h['n_init']}, n_local {h['n_local']}, "
        f"last_n {h['last_n']}, chunk_size {h['chunk_size'] or 'none'}; repeats {h['repeats']}, "
        f"warmup {h['warmup']}; norms/MLP {'torch.compile' if h.get('compiled') else 'eager'}",
        f"memory: {h['memory']}",
        f"warm: load_kv (file in page cache) + {h['question_tokens']}-token question + first token; "
        "KV wait: after the last round's first token, until its KV file (written during the prefill) is on disk",
        "",
        "| length | method | TTFT median (s) | min | max | prefill tok/s | speedup vs dense | peak mem (MiB) "
        "| extra (MiB) | warm TTFT (s) | KV load (s) | KV wait (s) | KV file (MiB) | status |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append("| " + " | ".join([
            _k(r["length"]), r["method"], _fmt(r["ttft_median_s"]), _fmt(r["ttft_min_s"]), _fmt(r["ttft_max_s"]),
            _fmt(r["tokens_per_s"], 0), _fmt(r["speedup_vs_dense"], 2) + ("x" if r["speedup_vs_dense"] else ""),
            _fmt(r["peak_mem_mib"], 0), _fmt(r["peak_extra_mib"], 0), _fmt(r["warm_ttft_s"]),
            _fmt(r["kv_load_s"]), _fmt(r["kv_save_s"]), _fmt(r["kv_file_mib"], 1), r["status"]]) + " |")
    return "\n".join(lines)


def format_csv(result: dict[str, Any]) -> str:
    """One CSV line per row (times in s, memory in MiB); empty cells for missing values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in result["rows"]:
        writer.writerow({k: "" if r[k] is None else r[k] for k in CSV_FIELDS})
    return buf.getvalue()


def write_plot(result: dict[str, Any], path: Path) -> None:
    """Chart (type from `path`'s extension): TTFT (median, min-max bars) vs prompt length per method, and warm TTFT."""
    from matplotlib.figure import Figure

    from tmixcli.plotfile import save_figure

    h = result["header"]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        ok = [r for r in result["rows"] if r["method"] == method and r["ttft_median_s"]]
        if not ok:
            continue
        x = [r["length"] for r in ok]
        y = [r["ttft_median_s"] for r in ok]
        err = [[r["ttft_median_s"] - r["ttft_min_s"] for r in ok], [r["ttft_max_s"] - r["ttft_median_s"] for r in ok]]
        bars = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{method} (cold prefill)")
        warm = [r for r in ok if r["warm_ttft_s"]]
        if warm:
            ax.plot([r["length"] for r in warm], [r["warm_ttft_s"] for r in warm], marker="x", linestyle=":",
                    color=bars[0].get_color(), label=f"{method} (warm: KV file + question)")
    lengths = sorted({r["length"] for r in result["rows"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [_k(n) for n in lengths])
    ax.set_yscale("log")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"{h['model']} on {h['device_name']}, {h['dtype']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------- CLI


def kernel_bench(arch: str, lengths: list[int], n_init: int, n_local: int, last_n: int, as_json: bool) -> None:
    """`tmix bench --kernels`: tmix_kernels.bench at the head shapes of `arch`, one table (or JSON)."""
    import torch

    from tmixcli.archs import arch_config

    cfg = arch_config(arch)
    if not torch.cuda.is_available():
        raise TmixError("tmix bench --kernels times CUDA kernels and needs a GPU")
    from tmix_kernels import bench as kb

    heads = (cfg.num_attention_heads, cfg.num_key_value_heads,
             getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    rows = kb.run(lengths, heads=heads[0], kv_heads=heads[1], head_dim=heads[2], n_init=n_init, n_local=n_local,
                  last_n=last_n)
    if as_json:
        print(json.dumps({"header": kb.header(last_n, heads, n_init, n_local), "rows": rows}, indent=1))
    else:
        print(kb.header(last_n, heads, n_init, n_local))
        print(kb.table(rows))


def bench_command(
    model: Annotated[str | None, typer.Option("--model", help="Model: HF id, local dir or .gguf "
                                              "(default: the embedded SmolLM2-135M-Instruct).")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="Built-in architecture with random weights: "
                                             "llama-3.1-8b, qwen2.5-7b or smollm2-135m.")] = None,
    lengths: Annotated[str, typer.Option("--lengths", help="Prompt lengths, k = 1024.")] = "4k,32k,128k",
    methods: Annotated[str, typer.Option("--methods", help="Attention methods to compare.")] = "dense,trimix",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per length and method.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 1,
    start_layer: Annotated[int | None, typer.Option("--start-layer", help="First TriangleMix layer (default: a "
                                                    "calibrated profile of the model, else its paper value, "
                                                    "else half).")] = None,
    n_init: Annotated[int, typer.Option("--n-init", help="Sink tokens.")] = 8,
    n_local: Annotated[int, typer.Option("--n-local", help="Local window.")] = 512,
    last_n: Annotated[int, typer.Option("--last-n", help="Last queries that see everything.")] = 128,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="Prefill in chunks of N tokens.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, bf16, fp16 or fp32.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (header + rows).")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a chart of TTFT vs length (.png, .svg, .pdf, "
                                              "...: the file's type is its extension).")] = None,
    no_warm: Annotated[bool, typer.Option("--no-warm", help="Skip the saved-KV follow-up timing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Allow a >2B-parameter --arch on the CPU.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads (default: torch's; "
                                                "1 is steadier on a busy machine).")] = None,
    compile: Annotated[str, typer.Option("--compile", help="torch.compile each layer's norms and MLP: auto "
                                         "(on CUDA), on or off.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")] = False,
    kernels: Annotated[bool, typer.Option("--kernels", help="Time the attention alone instead (CUDA): the Triton "
                                          "triangle kernel vs SDPA flash/cuDNN dense and FlexAttention with the same "
                                          "mask, at --arch's head shapes (default llama-3.1-8b).")] = False,
) -> None:
    """Time to first token, dense vs TriangleMix, at several prompt lengths (random token ids)."""
    if as_json and as_csv:
        raise TmixError("give --json or --csv, not both")
    if kernels:
        return kernel_bench(arch or "llama-3.1-8b", parse_lengths(lengths), n_init, n_local, last_n, as_json)
    plot = check_plot(plot)
    log = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    result = run_bench(model, arch=arch, lengths=parse_lengths(lengths), methods=parse_methods(methods),
                       repeats=repeats, warmup=warmup, start_layer=start_layer, n_init=n_init, n_local=n_local,
                       last_n=last_n, chunk_size=chunk_size, device=device, dtype=dtype, warm=not no_warm,
                       force=force, threads=threads, compile=compile, log=log)
    result["header"]["wall_s"] = round(time.perf_counter() - start, 1)
    if as_json:
        print(json.dumps(result, indent=2))
    elif as_csv:
        print(format_csv(result), end="")
    else:
        print(format_markdown(result))
    sys.stdout.flush()  # the results are out before a plot that fails
    if plot is not None:
        write_plot(result, plot)
    if log is not None:
        log(f"bench: done in {result['header']['wall_s']:.0f} s" + (f", plot written to {plot}" if plot else ""))
