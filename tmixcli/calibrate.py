"""`tmix calibrate`: find the lowest safe TriangleMix start layer for a model and save it as a profile."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated

import typer

from tmixcli.calib_profile import check_profile_folder, short_note
from tmixcli.calib_report import format_report, override_line, plot_importance
from tmixcli.calib_run import GRAD_ANSWER_TOKENS, check_calibration_lengths, default_grad_length, run_calibrate
from tmixcli.cli_options import MODEL_HELP, env_options
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError
from tmixcli.eval_plan import check_lengths, check_tasks, trimix_configs
from tmixcli.eval_run import ANSWER_TOKENS
from tmixcli.listopts import items, parse_length


def _check_before_load(model: str | None, length: int, grad_length: int | None, cases: int, n_init: int,
                       n_local: int, last_n: int, quiet: bool, device: str, dtype: str, env: frozenset[str]) -> int:
    """Refuse settings, lengths and a profiles folder that cannot work, before the model loads; the gradient length."""
    from tmixcli.cli_options import check_model_options
    from tmixcli.modelinfo import model_limits

    check_model_options(device, dtype, None, None, "off", model, env)
    trimix_configs([0], n_init, n_local, last_n, None)  # the triangle's settings
    grad_length = grad_length or default_grad_length(length, n_init, n_local, last_n)
    check_calibration_lengths(length, grad_length, n_init, n_local, last_n)
    why = short_note(length, n_init, n_local, last_n)
    if cases > 0 and why is None:
        check_profile_folder()
    context = model_limits(model).context
    check_lengths([grad_length], context, GRAD_ANSWER_TOKENS, "--grad-length")
    if cases > 0:
        check_lengths([length], context, ANSWER_TOKENS, "--length")
        if why is not None:
            if not quiet:
                print(f"calibrate: the profile will not be saved: {why}", file=sys.stderr, flush=True)
    return grad_length


def calibrate_command(
    command: typer.Context,
    model: Annotated[str | None, typer.Option(
        "--model", metavar="MODEL", envvar="TMIX_MODEL", help=MODEL_HELP)] = None,
    samples: Annotated[int, typer.Option(
        "--samples", metavar="N", min=1, help="Samples for the gradient profile.")] = 4,
    length: Annotated[str, typer.Option(
        "--length", metavar="LENGTH", help="Eval prompt length in tokens (e.g. 6k).")] = "6k",
    grad_length: Annotated[str | None, typer.Option(
        "--grad-length", metavar="LENGTH", help="Gradient sample length.")] = None,
    cases: Annotated[int, typer.Option(
        "--cases", metavar="N", min=0, help="Eval cases (0: skip eval, save nothing).")] = 20,
    tasks: Annotated[str, typer.Option(
        "--tasks", metavar="TASKS", help="Tasks for samples and eval: only tasks the model solves "
        "densely (see tmix eval); agreement on a task at chance measures noise.")
                     ] = "needle",
    tolerance: Annotated[float, typer.Option(
        "--tolerance", metavar="X", help="Max summed importance of triangle layers "
        "(a finite number, at least 0).")] = 0.05,
    n_init: Annotated[int, typer.Option("--n-init", metavar="N", help="Sink tokens.")] = AttentionConfig.n_init,
    n_local: Annotated[int, typer.Option("--n-local", metavar="N", help="Local window.")] = AttentionConfig.n_local,
    last_n: Annotated[int, typer.Option(
        "--last-n", metavar="N", help="Last prefix rows that attend densely.")] = AttentionConfig.last_n,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Task generation seed.")] = 0,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE", help="Write a bar chart of the importance (.png, .svg, "
        ".pdf, ...: the file's type is its extension).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(
        "--dtype", metavar="auto|bf16|fp16|fp32", help="auto, bf16, fp16 or fp32.")] = "auto",
    facts: Annotated[str | None, typer.Option(
        "--facts", metavar="FILE", help="Also require the start layer to pass on real documents (a facts file as for "
        "tmix eval --facts); it moves up two layers at a time until it does.")] = None,
) -> None:
    """Measure per-layer reliance on the middle attention region and save the best TriangleMix start layer."""
    from tmixcli.cli_options import check_attention_numbers, check_seed
    from tmixcli.facts import FactSet
    from tmixcli.plotfile import check_plot

    check_attention_numbers(n_init, n_local, last_n)
    check_seed(seed)
    if not 0 <= tolerance < math.inf:  # also refuses nan
        raise TmixError(f"--tolerance must be a finite number, at least 0 (the summed importance the triangle "
                        f"layers may have), not {tolerance}")
    plot_path = check_plot(plot)
    fact_set = FactSet.from_file(facts) if facts is not None else None
    task_list = items(tasks, "--tasks")
    check_tasks(task_list)
    n = parse_length(length, "--length")
    glen = parse_length(grad_length, "--grad-length") if grad_length is not None else None
    glen = _check_before_load(model, n, glen, cases, n_init, n_local, last_n, quiet, device, dtype,
                              env_options(command))
    from tmixcli.models import load_model  # torch: seconds

    lm = load_model(model, device=device, dtype=dtype, progress=not quiet)
    profile = run_calibrate(lm, samples, n, cases, task_list, tolerance, n_init, n_local, last_n, seed,
                            progress=not quiet, grad_length=glen, facts=fact_set)
    typer.echo(json.dumps(profile, indent=2) if as_json else format_report(profile))
    if as_json and not quiet and "path" in profile:  # the report says so; a script's user is told here
        print(f"calibrate: profile saved: {profile['path']}; {override_line(profile)}", file=sys.stderr, flush=True)
    errors = []
    if plot_path is not None:
        try:
            plot_importance(profile["importance"], profile["start_layer"], plot_path)
        except TmixError as err:
            errors.append(str(err))
    if "save_error" in profile:
        errors.append(profile["save_error"])
    if errors:
        raise TmixError("; ".join(errors))
