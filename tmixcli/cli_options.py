"""The options that ask, prefill, text, chat and serve share, and the checks of option values made before torch is
imported (model, device, dtype, threads and TMIX_* switches; seeds; attention numbers), which bench, eval and calibrate
make too. Also where an option took its value (command line or environment) and this run's arguments (ARGV)."""

from __future__ import annotations

import os
from typing import Optional

import typer

from tmixcli.config import ATTENTION_MINIMUMS, AttentionConfig, Settings
from tmixcli.errors import TmixError

MODEL_HELP = "HF model id, local model dir or .gguf file (default: embedded SmolLM2-135M-Instruct)."
ModelOpt = typer.Option(None, "--model", metavar="MODEL", envvar="TMIX_MODEL", help=MODEL_HELP)
DeviceOpt = typer.Option("auto", "--device", metavar="auto|cpu|cuda", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", metavar="auto|N", envvar="TMIX_THREADS",
                          help="CPU threads: a number, or auto (the cores other tmix runs and other processes "
                          "leave free). A run answered by `tmix serve` without one uses the server's.")
ServeThreadsOpt = typer.Option(None, "--threads", metavar="auto|N", envvar="TMIX_THREADS",
                               help="CPU threads for each request: a number, or auto (the cores other tmix runs and "
                               "other processes leave free, decided per request). A request with its own --threads "
                               "or TMIX_THREADS uses that.")
DeviceMapOpt = typer.Option(None, "--device-map", metavar="auto",
                            help="'auto': spread a model too big for one GPU over all GPUs.")
DtypeOpt = typer.Option("auto", "--dtype", metavar="auto|bf16|fp16|fp32",
                        help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.")
ATTN_HELP = "trimix (TriangleMix prefill; the default) or dense."
AttnOpt = typer.Option(None, "--attention", metavar="trimix|dense",
                       help=f"{ATTN_HELP} Attention options left out take a --kv file's values.")
PrefillAttnOpt = typer.Option(None, "--attention", metavar="trimix|dense", help=ATTN_HELP)  # prefill takes no --kv
NInitOpt = typer.Option(None, "--n-init", metavar="N",
                        help=f"Sink tokens every query sees in triangle layers (default {AttentionConfig.n_init}).")
NLocalOpt = typer.Option(None, "--n-local", metavar="N",
                         help=f"Local window of triangle layers (default {AttentionConfig.n_local}).")
LastNOpt = typer.Option(None, "--last-n", metavar="N",
                        help=f"Last queries of the prefill that see every token (default {AttentionConfig.last_n}).")
StartOpt = typer.Option(None, "--start-layer", metavar="N",
                        help="First triangle layer (default: calibrated profile, else the paper's, else half).")
ChunkOpt = typer.Option(None, "--chunk-size", metavar="N",
                        help="Prefill in chunks of this many tokens (bounds memory).")
SystemOpt = typer.Option(None, "--system", metavar="TEXT", help="System prompt.")
PagesOpt = typer.Option(None, "--pages", metavar="PAGES", help="PDF pages to read, e.g. 3-10, 1,4,7-9, 5- or -2.")
PasswordOpt = typer.Option(None, "--password", metavar="TEXT", help="Password of an encrypted PDF.")
TruncOpt = typer.Option(False, "--truncate", help="Cut the end of a document that does not fit the context.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No status lines on stderr.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of streaming text.")
PrefillJsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of the KV file's path and status "
                              "lines.")
NoCacheOpt = typer.Option(False, "--no-cache", help="Neither read nor write a KV cache file.")
MaxNewOpt = typer.Option(256, "--max-new-tokens", metavar="N", help="Answer length limit.")
TempOpt = typer.Option(0.0, "--temperature", metavar="T", help="0 = greedy.")
TopPOpt = typer.Option(1.0, "--top-p", metavar="P", help="Nucleus sampling threshold (with --temperature > 0).")
SeedOpt = typer.Option(None, "--seed", metavar="N",
                       help="Sampling seed (with --temperature > 0), 0 to 2**64-1 (18446744073709551615).")
RepeatOpt = typer.Option(True, "--stop-repeats/--no-stop-repeats",
                         help="End an answer that has begun to loop (one passage three times in a row; list numbers "
                         "counting up do not hide a loop).")
CompileOpt = typer.Option("off", "--compile", metavar="off|on|auto",
                          help="torch.compile each layer's norms and MLP (auto = on CUDA): "
                          "faster long prefills after a one-time compilation of a few seconds.")


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's largest seed
ARGV: list[str] = []  # this run's arguments as tmix's main got them: handed to a `tmix serve`, named in usage errors


def settings(**kw) -> Settings:
    """The run's Settings from its options, refusing values out of range in one line."""
    if kw["method"] not in (None, "trimix", "dense"):
        raise TmixError(f"--attention must be trimix or dense, not {kw['method']!r}")
    if kw.get("max_new_tokens", 1) < 1:
        raise TmixError("--max-new-tokens must be at least 1")
    if not 0 <= kw.get("temperature", 0.0) <= 100:  # also refuses nan and inf
        raise TmixError("--temperature must be between 0 (greedy) and 100")
    if not 0 < kw.get("top_p", 1.0) <= 1:
        raise TmixError("--top-p must be in (0, 1]")
    if kw.get("temperature", 0.0) == 0 and kw.get("top_p", 1.0) < 1:
        raise TmixError("--top-p applies only to sampling: give it with --temperature above 0 (0, the default, is "
                        "greedy decoding)")
    check_seed(kw.get("seed"))
    if kw.get("chunk_size") is not None and kw["chunk_size"] < 1:
        raise TmixError("--chunk-size must be at least 1")
    check_attention_numbers(kw.get("n_init"), kw.get("n_local"), kw.get("last_n"), kw.get("start_layer"))
    return Settings(**kw)


def check_seed(seed: Optional[int]) -> None:
    """Refuse a --seed outside 0..2**64-1 (None: not given)."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise TmixError(f"--seed must be from 0 to 2**64-1 ({MAX_SEED}), not {seed}")


def check_attention_numbers(n_init: Optional[int], n_local: Optional[int], last_n: Optional[int],
                            start_layer: Optional[int] = None) -> None:
    """Refuse an attention option below its least value (config.ATTENTION_MINIMUMS), naming it (None: not given)."""
    for name, value in (("n_init", n_init), ("n_local", n_local), ("last_n", last_n), ("start_layer", start_layer)):
        low = ATTENTION_MINIMUMS[name]
        if value is not None and value < low:
            raise TmixError(f"--{name.replace('_', '-')} must be at least {low}, not {value}")


def env_options(ctx: typer.Context) -> frozenset[str]:
    """The command's options that took their value from their environment variable (TMIX_MODEL, TMIX_THREADS), not
    from its command line: click's parameter source, which holds however the app is invoked (tmix's main, CliRunner)."""
    return frozenset(name for name in ctx.params if _source(ctx, name) == "ENVIRONMENT")


def on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the command's option `name` (its parameter's name) was given on its command line, not left at its
    default: click's parameter source, as env_options."""
    return _source(ctx, name) == "COMMANDLINE"


def _source(ctx: typer.Context, name: str) -> str:
    """Where the command's parameter `name` took its value: "COMMANDLINE", "ENVIRONMENT", "DEFAULT", ..."""
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else "DEFAULT"


def check_model_options(device: str, dtype: str, device_map: Optional[str], threads: Optional[str],
                        compile: str, model: Optional[str] = None, env: frozenset[str] = frozenset()) -> None:
    """Refuse a mistyped model option or TMIX_* switch before torch is imported (seconds) or a document is read: what
    every command that loads a model checks first. `env`: the options that came from their variable (env_options)."""
    from tmixcli.envflags import check_switches
    from tmixcli.modelcheck import check_model, check_placement

    check_switches()
    check_model(model, env="model" in env)
    check_placement(device, dtype, device_map)
    if compile not in ("auto", "on", "off"):
        raise TmixError(f"--compile takes auto, on or off, not {compile!r}")
    check_threads(threads, env="threads" in env)


def check_threads(threads: Optional[str], env: bool = False) -> None:
    """Refuse a --threads (else TMIX_THREADS) that is neither auto (any case) nor 1 to the CPU count, naming where it
    came from (`env`: the --threads value is TMIX_THREADS's); the one rule for a thread count (threads.py obeys it)."""
    spec = threads or os.environ.get("TMIX_THREADS") or "auto"
    if spec.lower() != "auto" and not (spec.isdigit() and 1 <= int(spec) <= (os.cpu_count() or 1)):
        name = "--threads" if threads and not env else "TMIX_THREADS"
        raise TmixError(f"{name} must be 'auto' or a number from 1 to this machine's {os.cpu_count()} CPUs, "
                        f"not {spec!r}")
