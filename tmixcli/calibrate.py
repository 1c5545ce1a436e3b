"""`tmix calibrate`: find the lowest safe TriangleMix start layer for a model and save it as a profile.

Importance of layer l = |d NLL(answer tokens) / d alpha_l| at alpha = 1, where alpha_l scales the attention
probabilities of the *middle region* of layer l (rows before the last_n prefix rows, keys outside the sinks and
the local band) and each row is renormalised: at alpha_l = 0 the layer computes exactly tmix's triangle.
One forward + backward per sample through the "tmix-calib" attention (tmixcli/calib_attention.py).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tmixcli.config import triangle_span
from tmixcli.errors import TmixError

if TYPE_CHECKING:
    from tmixcli.facts import FactSet
    from tmixcli.models import LoadedModel


GRAD_ANSWER_TOKENS = 32  # room for a gradient sample's reference answer after its prompt
FACTS_ANSWER_TOKENS = 32  # `run_facts`'s answer cap, as calibrate runs it


def importance_profile(lm: LoadedModel, cases: list, n_init: int, n_local: int, last_n: int,
                       progress: bool = True) -> dict:
    """Per-layer importance (mean |grad| over the sample cases), mean signed grad and each sample's answer NLL."""
    from tmixcli.calib_attention import calibration_mode, sample_gradient

    samples = len(cases)
    grads, nll = [], []
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)  # only alpha needs a gradient
    try:
        with calibration_mode(lm.model, n_init, n_local, last_n) as alpha:
            for i, case in enumerate(cases):
                t0 = time.perf_counter()
                g, loss = sample_gradient(lm.model, lm.tokenizer, case, alpha)
                grads.append(g)
                nll.append(loss)
                _log(progress, f"calibrate: sample {i + 1}/{samples} ({case.task}, {case.tokens} tok) "
                     f"answer NLL {loss:.3f}, {time.perf_counter() - t0:.0f} s")
    finally:
        for p in params:
            p.requires_grad_(True)
    n = len(grads[0])
    return {"importance": [sum(abs(g[i]) for g in grads) / len(grads) for i in range(n)],
            "grad": [sum(g[i] for g in grads) / len(grads) for i in range(n)], "nll": nll}


def pick_candidates(importance: list[float], tolerance: float, count: int = 2, step: int = 2) -> list[int]:
    """Lowest L >= 1 whose tail sum of importance (layers >= L) is <= tolerance, then higher neighbours."""
    n = len(importance)
    first = next((s for s in range(1, n) if sum(importance[s:]) <= tolerance), n - 1)
    return sorted({min(first + i * step, n - 1) for i in range(count)})


def min_save_length(n_init: int, n_local: int, last_n: int) -> int:
    """The shortest eval length whose profile is saved and used: below it the triangle leaves out too little."""
    return 2 * triangle_span(n_init, n_local, last_n)


def default_grad_length(length: int, n_init: int, n_local: int, last_n: int) -> int:
    """Gradient samples: as long as the eval, at most 3072 tokens (the backward is the slow part)."""
    return min(length, max(3072, triangle_span(n_init, n_local, last_n) + 1))


def check_calibration_lengths(length: int, grad_length: int, n_init: int, n_local: int, last_n: int) -> None:
    """Refuse prompts too short for the triangle to differ from dense attention (nothing to measure)."""
    from tmixcli.evaluate import check_triangle_lengths

    check_triangle_lengths([("--length", length), ("--grad-length", grad_length)], n_init, n_local, last_n,
                           "calibrate")


def short_note(length: int, n_init: int, n_local: int, last_n: int) -> str | None:
    """Why a profile calibrated at `length` tokens is not saved, or None when it is long enough."""
    least = min_save_length(n_init, n_local, last_n)
    if length >= least:
        return None
    return (f"at {length} tokens the triangle leaves out too little to stand for long documents "
            f"(a saved profile needs --length {least} or more)")


def profile_label(profile: dict) -> str:
    """How the status line names a profile: "calibrated profile at 6K tokens, shipped with tmix"."""
    length = (profile.get("settings") or {}).get("length")
    at = f" at {length // 1024}K tokens" if isinstance(length, int) and length % 1024 == 0 else (
        f" at {length} tokens" if isinstance(length, int) else "")
    return f"calibrated profile{at}" + (", shipped with tmix" if profile.get("source") == "shipped" else "")


def recommend(result: dict, dense_name: str = "dense") -> int | None:
    """Lowest evaluated start layer with accuracy >= dense - 1 case and greedy agreement >= 95%."""
    from tmixcli.evaluate import AGREEMENT

    methods = result["methods"]
    dense = methods[dense_name]["overall"]["correct"]
    ok = [m["start_layer"] for name, m in methods.items() if name != dense_name
          and m["overall"]["correct"] >= dense - 1 and m["overall"]["agreement"] >= AGREEMENT]
    return min(ok) if ok else None


def profile_path(fingerprint: str, create: bool = False) -> Path:
    """Where this model's saved profile is; create=True makes its folder (TmixError when it cannot be made)."""
    from tmixcli.paths import cache_subdir

    return cache_subdir("profiles", create) / f"{fingerprint[:24]}.json"


def save_profile(profile: dict) -> Path:
    """Write the profile atomically (temp file in the same dir, then os.replace); TmixError when it cannot be."""
    path = profile_path(profile["fingerprint"], create=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise TmixError(_cannot_save(path.parent, err)) from None
        raise
    return path


def check_profile_folder() -> None:
    """Refuse a profiles folder where no profile can be written before calibrating, not after (a trial temp file)."""
    from tmixcli.paths import cache_subdir

    folder = cache_subdir("profiles")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise TmixError(_cannot_save(folder, err)) from None


def _cannot_save(folder: Path, err: OSError) -> str:
    return f"cannot save the calibration profile in {folder}: {err.strerror or err}"


BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"  # shipped profiles (the embedded default model)


def load_profile(fingerprint: str) -> dict | None:
    """This model's profile: the user's saved one, else a shipped one; None when missing or invalid.

    The result's "source" says which ("saved" or "shipped")."""
    for source, path in (("saved", profile_path(fingerprint)), ("shipped", BUILTIN_DIR / f"{fingerprint[:24]}.json")):
        data = _read_profile(path, fingerprint)
        if data is not None:
            return dict(data, source=source)
    return None


def _read_profile(path: Path, fingerprint: str) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    if not isinstance(data.get("start_layer"), int) or isinstance(data["start_layer"], bool):
        return None
    return None if _too_short(data) else data


def _too_short(data: dict) -> bool:
    """A profile calibrated at a length under `min_save_length` (saved by an older tmix): not used."""
    length, params = (data.get("settings") or {}).get("length"), data.get("params") or {}
    try:
        return isinstance(length, int) and short_note(length, params["n_init"], params["n_local"],
                                                      params["last_n"]) is not None
    except (KeyError, TypeError):
        return False


def plot_importance(importance: list[float], start: int | None, path: Path) -> None:
    """Bar chart of per-layer importance with the chosen start layer (a file type `check_plot` accepted)."""
    from matplotlib.figure import Figure

    from tmixcli.plotfile import save_figure

    fig = Figure(figsize=(8, 3.5), layout="tight")
    ax = fig.add_subplot()
    ax.bar(range(len(importance)), importance, color="tab:blue")
    if start is not None:
        ax.axvline(start - 0.5, color="tab:red", linestyle="--", label=f"start layer {start}")
        ax.legend()
    ax.set_xlabel("layer")
    ax.set_ylabel("|d NLL / d alpha| (nats)")
    ax.set_title("Answer loss sensitivity to the middle attention region")
    save_figure(fig, path)


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def run_calibrate(lm: LoadedModel, samples: int = 4, length: int = 6144, cases: int = 20,
                  tasks: list[str] | None = None, tolerance: float = 0.05, n_init: int = 8, n_local: int = 512,
                  last_n: int = 128, seed: int = 0, save: bool = True, progress: bool = True,
                  grad_length: int | None = None, facts: FactSet | None = None) -> dict:
    """Importance profile -> candidate start layers -> eval against dense -> recommended start layer (+ saved).

    Gradient samples are `grad_length` tokens (default: `default_grad_length`). Every length is checked before
    any work. With `facts` (real documents), the recommendation must also pass there, else it moves up until one
    does. A profile calibrated under `min_save_length` tokens is not saved."""
    from tmixcli import __version__
    from tmixcli.evaluate import ANSWER_TOKENS, plan_cases, run_eval, trimix_configs
    from tmixcli.kvstore import model_fingerprint
    from tmixcli.modelinfo import model_context

    tasks = tasks or ["needle"]
    grad_length = grad_length or default_grad_length(length, n_init, n_local, last_n)
    check_calibration_lengths(length, grad_length, n_init, n_local, last_n)
    context = model_context(lm.model)
    samples_cases = plan_cases(lm.tokenizer, [grad_length], samples, tasks, seed + 1000, context, GRAD_ANSWER_TOKENS,
                               "--grad-length")[0]
    if cases > 0:
        plan_cases(lm.tokenizer, [length], cases, tasks, seed, context, ANSWER_TOKENS, "--length")
    if facts is not None:
        from tmixcli.facts import prompt_ids

        prompt_ids(lm, facts, FACTS_ANSWER_TOKENS)
    t0 = time.perf_counter()
    prof = importance_profile(lm, samples_cases, n_init, n_local, last_n, progress)
    t_grad = time.perf_counter() - t0
    n_layers = lm.model.config.num_hidden_layers
    cands = pick_candidates(prof["importance"], tolerance)
    _log(progress, f"calibrate: gradients in {t_grad:.0f} s; candidate start layers {cands}")
    evs: list[dict] = []
    start = None
    for cfg in trimix_configs(cands, n_init, n_local, last_n, n_layers) if cases > 0 else []:
        evs.append(run_eval(lm, [length], cases, [cfg], tasks, seed, progress=progress, stop_early=True))
        if not evs[-1]["stopped_early"] and (start := recommend(evs[-1])) is not None:
            break  # candidates go lowest first: the first that passes is the recommendation
    ev = _merge_evals(evs)
    fact_check = None
    if facts is not None and start is not None:
        start, fact_check = confirm_on_facts(lm, facts, start, n_init, n_local, last_n, progress)
    profile = {"model_id": lm.model_id, "fingerprint": model_fingerprint(lm.model, lm.tokenizer),
               "start_layer": None if ev is None else n_layers if start is None else start,
               "verified": start is not None,
               "candidates": cands, "importance": prof["importance"], "grad": prof["grad"],
               "nll": prof["nll"], "eval": _eval_summary(ev), "eval_records": ev["records"] if ev else [],
               "created": datetime.now(timezone.utc).isoformat(),
               "tmix_version": __version__, "params": {"n_init": n_init, "n_local": n_local, "last_n": last_n},
               "settings": {"samples": samples, "grad_length": grad_length, "length": length, "cases": cases,
                            "tasks": tasks, "tolerance": tolerance, "seed": seed,
                            "facts": str(facts.source) if facts is not None else None},
               "facts": fact_check,
               "timing": {"gradient_s": t_grad, "eval_s": ev["wall_s"] if ev else 0.0,
                          "total_s": time.perf_counter() - t0}}
    if save and ev is not None:
        if (why := short_note(length, n_init, n_local, last_n)) is not None:
            profile["not_saved"] = why
        else:
            keep_profile(profile)
    return profile


def keep_profile(profile: dict) -> None:
    """Save the profile, recording its path; or, when it cannot be saved, why (the report still shows the result)."""
    try:
        profile["path"] = str(save_profile(profile))
    except TmixError as err:
        profile["save_error"] = str(err)


def confirm_on_facts(lm: LoadedModel, facts: FactSet, start: int, n_init: int, n_local: int, last_n: int,
                     progress: bool = True, step: int = 2) -> tuple[int | None, dict]:
    """The lowest start layer >= `start` (in steps of `step`) that passes on the real-document facts, or None."""
    from tmixcli.evaluate import method_name, trimix_configs
    from tmixcli.facts import passes, run_facts, summarize

    n_layers = lm.model.config.num_hidden_layers
    reference: dict = {}
    records: list[dict] = []
    found = None
    for s in range(start, n_layers, step):
        cfg = trimix_configs([s], n_init, n_local, last_n, n_layers)[0]
        records += run_facts(lm, facts, [cfg], FACTS_ANSWER_TOKENS, progress=progress,
                             reference=reference)["records"]
        ok = passes(summarize(records), method_name(cfg))
        _log(progress, f"calibrate: facts at start layer {s}: {'pass' if ok else 'fail'}")
        if ok:
            found = s
            break
    return found, {"methods": summarize(records), "records": records}


def _merge_evals(evs: list[dict]) -> dict | None:
    """One eval result from the per-candidate runs: dense rows from the longest run, each candidate's own rows."""
    from tmixcli.evaluate import summarize

    if not evs:
        return None
    longest = max(evs, key=lambda e: len(e["records"]))
    records = [r for r in longest["records"] if r["method"] == "dense"]
    for e in evs:
        records += [r for r in e["records"] if r["method"] != "dense"]
    methods = summarize(records, longest["lengths"])
    for e in evs:  # mark the candidates whose eval stopped early (they ran fewer cases than dense)
        for name in e["methods"]:
            if name != "dense":
                methods[name]["stopped_early"] = e["stopped_early"]
    return dict(longest, records=records, methods=methods, wall_s=sum(e["wall_s"] for e in evs))


def _eval_summary(ev: dict | None) -> dict:
    if ev is None:
        return {}
    return {name: {"start_layer": m["start_layer"], **m["overall"]} for name, m in ev["methods"].items()}


def format_report(profile: dict) -> str:
    """Per-layer importance bars, the eval rows and the recommendation."""
    imp = profile["importance"]
    top = max(imp) or 1.0
    lines = ["layer  importance  tail-sum"]
    for i, v in enumerate(imp):
        lines.append(f"{i:5d}  {v:10.5f}  {sum(imp[i:]):8.4f}  " + "#" * round(30 * v / top))
    lines.append(f"candidates: {profile['candidates']} (tolerance {profile['settings']['tolerance']})")
    for name, s in profile["eval"].items():
        extra = "" if name == "dense" else (f"  agree {s['agreement']:.0%}  same text "
                                            f"{s.get('text_agreement', s['agreement']):.0%}  KL {s['kl']:.4f}")
        lines.append(f"{name:12s} {s['correct']}/{s['n']}{extra}")
    if profile.get("facts"):
        for name, s in profile["facts"]["methods"].items():
            lines.append(f"facts {name:6s} {s['correct']}/{s['n']} (dense {s['dense_correct']}/{s['n']})")
    at = f" at {profile['settings']['length']} tokens" if "length" in profile["settings"] else ""
    if profile["start_layer"] is None:
        lines.append("recommended start layer: not verified (eval skipped with --cases 0; nothing saved)")
    elif profile["verified"]:
        lines.append(f"recommended start layer: {profile['start_layer']} (verified{at})")
    else:
        lines.append(f"recommended start layer: {profile['start_layer']} (no candidate passed{at}: "
                     "keeping every layer dense)")
    if "path" in profile:
        lines.append(f"profile saved: {profile['path']}")
    elif "not_saved" in profile:
        lines.append(f"profile not saved: {profile['not_saved']}; use --start-layer {profile['start_layer']} for "
                     "prompts this short")
    elif "save_error" in profile:
        lines.append(f"profile not saved (use --start-layer {profile['start_layer']} instead)")
    return "\n".join(lines)


def _check_before_load(model: str | None, length: int, grad_length: int | None, cases: int, n_init: int,
                       n_local: int, last_n: int, quiet: bool) -> int:
    """Refuse settings, lengths and a profiles folder that cannot work, before the model loads; the gradient length."""
    from tmixcli.evaluate import ANSWER_TOKENS, check_lengths, trimix_configs
    from tmixcli.envflags import check_switches
    from tmixcli.modelcheck import check_model
    from tmixcli.modelinfo import model_limits

    check_switches()
    check_model(model)
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
            _log(not quiet, f"calibrate: the profile will not be saved: {why}")
    return grad_length


def calibrate_command(
    model: Annotated[str | None, typer.Option(
        "--model", metavar="MODEL", help="HF id, local dir or .gguf (default SmolLM2).")] = None,
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
    n_init: Annotated[int, typer.Option("--n-init", metavar="N", help="Sink tokens.")] = 8,
    n_local: Annotated[int, typer.Option("--n-local", metavar="N", help="Local window.")] = 512,
    last_n: Annotated[int, typer.Option("--last-n", metavar="N", help="Last prefix rows that attend densely.")] = 128,
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
    from tmixcli.evaluate import _check_tasks, parse_length
    from tmixcli.facts import FactSet
    from tmixcli.plotfile import check_plot

    if not 0 <= tolerance < math.inf:  # also refuses nan
        raise TmixError(f"--tolerance must be a finite number, at least 0 (the summed importance the triangle "
                        f"layers may have), not {tolerance}")
    plot_path = check_plot(plot)
    fact_set = FactSet.from_file(facts) if facts is not None else None
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    _check_tasks(task_list)
    n = parse_length(length, "--length")
    glen = parse_length(grad_length, "--grad-length") if grad_length is not None else None
    glen = _check_before_load(model, n, glen, cases, n_init, n_local, last_n, quiet)
    from tmixcli.models import load_model  # torch: seconds

    lm = load_model(model, device=device, dtype=dtype, progress=not quiet)
    profile = run_calibrate(lm, samples, n, cases, task_list, tolerance, n_init, n_local, last_n, seed,
                            progress=not quiet, grad_length=glen, facts=fact_set)
    typer.echo(json.dumps(profile, indent=2) if as_json else format_report(profile))
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
