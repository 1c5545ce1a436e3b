"""`tmix eval`: accuracy of TriangleMix vs dense on synthetic long-context tasks, agreement and first-token KL."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tmixcli.cli_options import MODEL_HELP, env_options
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError
from tmixcli.eval_plan import check_lengths, check_tasks, check_triangle_lengths, trimix_configs
from tmixcli.eval_run import ANSWER_TOKENS, run_eval
from tmixcli.listopts import items, parse_ints, parse_lengths


def format_table(result: dict) -> str:
    """Human-readable table: one row per method and length, plus an overall row per method."""
    rows = [["method", "length", "correct", "accuracy", "agree", "same text", "KL(first)"]]
    for name, m in result["methods"].items():
        parts = [(str(n), m["by_length"][str(n)]) for n in result["lengths"]]
        if len(parts) > 1:
            parts.append(("all", m["overall"]))
        for length, s in parts:
            dense = name == "dense"
            rows.append([name, length, f"{s['correct']}/{s['n']}", f"{s['accuracy']:.2f}",
                         "-" if dense else f"{s['agreement']:.0%}", "-" if dense else f"{s['text_agreement']:.0%}",
                         "-" if dense else f"{s['kl']:.4f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def eval_command(
    command: typer.Context,
    model: Annotated[str | None, typer.Option(
        "--model", metavar="MODEL", envvar="TMIX_MODEL", help=MODEL_HELP)] = None,
    lengths: Annotated[str, typer.Option(
        "--lengths", metavar="LENGTHS", help="Prompt lengths in tokens, e.g. 2k,6k.")] = "2k,6k",
    cases: Annotated[int, typer.Option("--cases", metavar="N", min=1, help="Cases per length.")] = 10,
    tasks: Annotated[str, typer.Option(
        "--tasks", metavar="TASKS", help="Tasks: needle,multikey,multivalue,vt.")] = "needle,multikey",
    start_layers: Annotated[str, typer.Option(
        "--start-layers", metavar="LAYERS", help="Trimix start layers vs dense.")] = "10,15,20",
    n_init: Annotated[int, typer.Option("--n-init", metavar="N", help="Sink tokens.")] = AttentionConfig.n_init,
    n_local: Annotated[int, typer.Option("--n-local", metavar="N", help="Local window.")] = AttentionConfig.n_local,
    last_n: Annotated[int, typer.Option(
        "--last-n", metavar="N", help="Last prefix rows that attend densely.")] = AttentionConfig.last_n,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Task generation seed.")] = 0,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", metavar="N", min=1, help="Answer length cap (default 24; 32 with --facts).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(
        "--dtype", metavar="auto|bf16|fp16|fp32", help="auto, bf16, fp16 or fp32.")] = "auto",
    facts: Annotated[str | None, typer.Option(
        "--facts", metavar="FILE", help="Real documents instead: a JSON file of prompts and questions with known "
        "answers (see sample_docs/questions.json); --lengths, --cases, --tasks and --seed are then unused.")] = None,
) -> None:
    """Compare TriangleMix start layers with dense attention on synthetic long-context tasks or real documents."""
    from tmixcli.cli_options import check_attention_numbers, check_model_options, check_seed
    from tmixcli.modelinfo import model_limits

    check_attention_numbers(n_init, n_local, last_n)
    check_seed(seed)
    check_model_options(device, dtype, None, None, "off", model, env_options(command))
    lens = parse_lengths(lengths)
    task_list = items(tasks, "--tasks")
    check_tasks(task_list)
    starts = parse_ints(start_layers, "--start-layers")
    if not starts:
        raise TmixError("--start-layers is empty: give the start layers to compare with dense, such as 10,15,20")
    fact_set = None
    if facts is not None:
        from tmixcli.facts import FactSet

        fact_set = FactSet.from_file(facts)  # a bad file fails before the model loads
    limits = model_limits(model)  # from the config on disk: refuse what cannot fit before loading the model
    trimix_configs(starts, n_init, n_local, last_n, limits.layers)
    if fact_set is None:
        check_triangle_lengths([("--lengths", n) for n in lens], n_init, n_local, last_n, "compare")
        check_lengths(lens, limits.context, max_new_tokens or ANSWER_TOKENS)

    from tmixcli.models import load_model

    lm = load_model(model, device=device, dtype=dtype, progress=not quiet)
    methods = trimix_configs(starts, n_init, n_local, last_n, lm.model.config.num_hidden_layers)
    if fact_set is not None:
        from tmixcli import facts as facts_mod

        result = facts_mod.run_facts(lm, fact_set, methods, max_new_tokens or 32, progress=not quiet)
        typer.echo(json.dumps(result, indent=2) if as_json else facts_mod.format_table(result))
        return
    result = run_eval(lm, lens, cases, methods, task_list, seed, max_new_tokens or ANSWER_TOKENS, progress=not quiet)
    typer.echo(json.dumps(result, indent=2) if as_json else format_table(result))
