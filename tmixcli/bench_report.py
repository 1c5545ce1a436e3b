"""The benchmark's report: a markdown table with its header block, CSV rows, or a chart of TTFT vs length."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tmixcli.bench_run import CSV_FIELDS
from tmixcli.config import AttentionConfig, no_triangle_note, triangle_span
from tmixcli.sizes import kilo


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _no_triangle(h: dict[str, Any]) -> str:
    """" (no layer of 30 uses the triangle: dense)" for a start layer at or past the model's last; else ""."""
    note = no_triangle_note(AttentionConfig(start_layer=h["start_layer"]), h["num_layers"])
    return "" if note is None else f" ({note})"


def _status(r: dict[str, Any]) -> str:
    """A row's status, "ok (every layer dense)" for a trimix row whose triangle left nothing out."""
    return r["status"] + (" (every layer dense)" if r["method"] == "trimix" and r.get("all_layers_dense") else "")


def _short_note(result: dict[str, Any]) -> list[str]:
    """A line under the table naming the lengths at which every trimix layer was dense (a short prompt)."""
    h = result["header"]
    span = triangle_span(h["n_init"], h["n_local"], h["last_n"])
    short = [kilo(r["length"]) for r in result["rows"] if r["method"] == "trimix" and r["length"] <= span]
    if not short:
        return []
    return ["", f"every layer dense at {', '.join(short)} tokens (at most n_init + n_local + last_n = {span}): the "
            "triangle leaves nothing out there, so trimix's speedup is noise"]


def format_markdown(result: dict[str, Any]) -> str:
    """The report: a header block and one table row per length and method."""
    h = result["header"]
    lines = [
        f"tmix bench - {h['date']} - git {h['git_commit']}",
        f"model: {h['model']} ({h['num_layers']} layers, context {h['max_context']})",
        f"device: {h['device_name']} [{h['device']}], dtype {h['dtype']}",
        f"torch {h['torch']}, transformers {h['transformers']}, triton {h['triton']}, python {h['python']}",
        f"trimix: start_layer {h['start_layer']}{_no_triangle(h)}, n_init {h['n_init']}, n_local {h['n_local']}, "
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
            kilo(r["length"]), r["method"], _fmt(r["ttft_median_s"]), _fmt(r["ttft_min_s"]), _fmt(r["ttft_max_s"]),
            _fmt(r["tokens_per_s"], 0), _fmt(r["speedup_vs_dense"], 2) + ("x" if r["speedup_vs_dense"] else ""),
            _fmt(r["peak_mem_mib"], 0), _fmt(r["peak_extra_mib"], 0), _fmt(r["warm_ttft_s"]),
            _fmt(r["kv_load_s"]), _fmt(r["kv_save_s"]), _fmt(r["kv_file_mib"], 1), _status(r)]) + " |")
    return "\n".join(lines + _short_note(result))


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
    ax.set_xticks(lengths, [kilo(n) for n in lengths])
    ax.set_yscale("log")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"{h['model']} on {h['device_name']}, {h['dtype']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
