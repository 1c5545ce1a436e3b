"""`tmix bench`: time to first token of dense vs TriangleMix prefill, and of a follow-up from a saved KV file."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from tmixcli.bench_report import format_csv, format_markdown, write_plot
from tmixcli.bench_run import METHODS, check_fits, run_bench
from tmixcli.cli_options import MODEL_HELP, check_attention_numbers, check_model_options, env_options
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError
from tmixcli.listopts import items, parse_lengths
from tmixcli.plotfile import check_plot


# ---------------------------------------------------------------- option parsing


def parse_methods(spec: str) -> list[str]:
    """"dense,trimix" -> ["dense", "trimix"]; unknown names are refused."""
    out = items(spec, "--methods")
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise TmixError(f"bad --methods {spec!r}: choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(out))


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


def _check_before_load(model: str | None, arch: str | None, lengths: list[int], methods: list[str],
                       start_layer: int | None, device: str, dtype: str, force: bool, threads: str | None,
                       compile: str, env: frozenset[str]) -> None:
    """Refuse a model, arch, model option, start layer or lengths that cannot work before anything is loaded or built;
    so is an --arch too large for the CPU it would be built on (judged without torch)."""
    from tmixcli.archs import arch_limits, check_cpu_size
    from tmixcli.modelinfo import model_limits
    from tmixcli.serverkey import gpu_here

    if model is not None and arch is not None:
        raise TmixError("give either --model or --arch, not both")
    check_model_options(device, dtype, None, threads, compile, model, env)
    limits = arch_limits(arch) if arch is not None else model_limits(model)
    check_fits(lengths, methods, start_layer, limits, model)
    if arch is not None and (device == "cpu" or (device == "auto" and not gpu_here())):
        check_cpu_size(arch, 16 if dtype in ("bf16", "fp16") else 32, force)


def bench_command(
    command: typer.Context,
    model: Annotated[str | None, typer.Option("--model", metavar="MODEL", envvar="TMIX_MODEL",
                                              help=f"{MODEL_HELP} --arch overrides TMIX_MODEL.")] = None,
    arch: Annotated[str | None, typer.Option(
        "--arch", metavar="ARCH", help="Built-in architecture with random weights: "
        "llama-3.1-8b, qwen2.5-7b or smollm2-135m.")] = None,
    lengths: Annotated[str, typer.Option(
        "--lengths", metavar="LENGTHS", help="Prompt lengths, k = 1024.")] = "4k,32k,128k",
    methods: Annotated[str, typer.Option(
        "--methods", metavar="METHODS", help="Attention methods to compare.")] = "dense,trimix",
    repeats: Annotated[int, typer.Option("--repeats", metavar="N", help="Timed runs per length and method.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", metavar="N", help="Untimed runs first.")] = 1,
    start_layer: Annotated[int | None, typer.Option(
        "--start-layer", metavar="N", help="First TriangleMix layer (default: a "
        "calibrated profile of the model, else its paper value, "
        "else half).")] = None,
    n_init: Annotated[int, typer.Option("--n-init", metavar="N", help="Sink tokens.")] = AttentionConfig.n_init,
    n_local: Annotated[int, typer.Option("--n-local", metavar="N", help="Local window.")] = AttentionConfig.n_local,
    last_n: Annotated[int, typer.Option(
        "--last-n", metavar="N", help="Last queries that see everything.")] = AttentionConfig.last_n,
    chunk_size: Annotated[int | None, typer.Option(
        "--chunk-size", metavar="N", help="Prefill in chunks of N tokens.")] = None,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(
        "--dtype", metavar="auto|bf16|fp16|fp32", help="auto, bf16, fp16 or fp32.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (header + rows).")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE", help="Write a chart of TTFT vs length (.png, .svg, .pdf, "
        "...: the file's type is its extension).")] = None,
    no_warm: Annotated[bool, typer.Option("--no-warm", help="Skip the saved-KV follow-up timing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Allow a >2B-parameter --arch on the CPU.")] = False,
    threads: Annotated[str | None, typer.Option(
        "--threads", metavar="auto|N", envvar="TMIX_THREADS", help="CPU threads for the whole run: a number (1 is "
        "steadier on a busy machine), or auto (the default: the cores other tmix runs and other processes leave "
        "free, decided once at the start).")] = None,
    compile: Annotated[str, typer.Option(
        "--compile", metavar="auto|on|off", help="torch.compile each layer's norms and MLP: auto "
        "(on CUDA), on or off.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")] = False,
    kernels: Annotated[bool, typer.Option("--kernels", help="Time the attention alone instead (CUDA): the Triton "
                                          "triangle kernel vs SDPA flash/cuDNN dense and FlexAttention with the same "
                                          "mask, at --arch's head shapes (default llama-3.1-8b).")] = False,
) -> None:
    """Time to first token, dense vs TriangleMix, at several prompt lengths (random token ids)."""
    if as_json and as_csv:
        raise TmixError("give --json or --csv, not both")
    env = env_options(command)
    if arch is not None and "model" in env:  # TMIX_MODEL gives way to --arch
        model = None
    check_attention_numbers(n_init, n_local, last_n, start_layer)
    if kernels:
        return kernel_bench(arch or "llama-3.1-8b", parse_lengths(lengths), n_init, n_local, last_n, as_json)
    lens, method_list = parse_lengths(lengths), parse_methods(methods)
    _check_before_load(model, arch, lens, method_list, start_layer, device, dtype, force, threads, compile, env)
    plot = check_plot(plot)
    log = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    result = run_bench(model, arch=arch, lengths=lens, methods=method_list,
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
