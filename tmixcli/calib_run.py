"""The calibration run: the gradient importance profile, candidate start layers evaluated against dense, the
recommended start layer (checked on real documents with --facts), and the profile saved."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from tmixcli.calib_profile import keep_profile, short_note, without_saved
from tmixcli.config import AttentionConfig, triangle_span
from tmixcli.eval_plan import check_triangle_lengths, method_name, plan_cases, trimix_configs
from tmixcli.eval_run import AGREEMENT, ANSWER_TOKENS, run_eval
from tmixcli.sizes import count

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


def default_grad_length(length: int, n_init: int, n_local: int, last_n: int) -> int:
    """Gradient samples: as long as the eval, at most 3072 tokens (the backward is the slow part)."""
    return min(length, max(3072, triangle_span(n_init, n_local, last_n) + 1))


def check_calibration_lengths(length: int, grad_length: int, n_init: int, n_local: int, last_n: int) -> None:
    """Refuse prompts too short for the triangle to differ from dense attention (nothing to measure)."""
    check_triangle_lengths([("--length", length), ("--grad-length", grad_length)], n_init, n_local, last_n,
                           "calibrate")


def recommend(result: dict, dense_name: str = "dense") -> int | None:
    """Lowest evaluated start layer with accuracy >= dense - 1 case and greedy agreement >= 95%."""
    methods = result["methods"]
    dense = methods[dense_name]["overall"]["correct"]
    ok = [m["start_layer"] for name, m in methods.items() if name != dense_name
          and m["overall"]["correct"] >= dense - 1 and m["overall"]["agreement"] >= AGREEMENT]
    return min(ok) if ok else None


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def run_calibrate(lm: LoadedModel, samples: int = 4, length: int = 6144, cases: int = 20,
                  tasks: list[str] | None = None, tolerance: float = 0.05, n_init: int = AttentionConfig.n_init,
                  n_local: int = AttentionConfig.n_local, last_n: int = AttentionConfig.last_n, seed: int = 0,
                  save: bool = True, progress: bool = True, grad_length: int | None = None,
                  facts: FactSet | None = None) -> dict:
    """Importance profile -> candidate start layers -> eval against dense -> recommended start layer (+ saved).

    Gradient samples are `grad_length` tokens (default: `default_grad_length`). Every length is checked before
    any work. With `facts` (real documents), the recommendation must also pass there, else it moves up until one
    does. A profile calibrated under `min_save_length` tokens is not saved."""
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
    cands = pick_candidates(prof["importance"], tolerance)
    _log(progress, f"calibrate: gradients in {t_grad:.0f} s; candidate start layers {cands}")
    ev, start, unverifiable = _search(lm, cands, length, cases, tasks, seed, n_init, n_local, last_n, progress)
    fact_check = None
    if facts is not None and start is not None:
        start, fact_check = confirm_on_facts(lm, facts, start, n_init, n_local, last_n, progress)
    settings = {"samples": samples, "grad_length": grad_length, "length": length, "cases": cases, "tasks": tasks,
                "tolerance": tolerance, "seed": seed, "facts": str(facts.source) if facts is not None else None}
    profile = _profile_record(lm, prof, cands, ev, start, unverifiable, fact_check, settings,
                              {"n_init": n_init, "n_local": n_local, "last_n": last_n}, t0, t_grad)
    if unverifiable:
        profile["no_signal"] = unverifiable
    elif save and ev is not None:
        if (why := short_note(length, n_init, n_local, last_n)) is not None:
            profile["not_saved"] = why
        else:
            keep_profile(profile)
    if "path" in profile:
        cfg = lm.model.config
        profile["without_profile"] = without_saved(profile["fingerprint"], cfg.model_type, cfg.num_hidden_layers)
    return profile


def _search(lm: LoadedModel, cands: list[int], length: int, cases: int, tasks: list[str], seed: int, n_init: int,
            n_local: int, last_n: int, progress: bool) -> tuple[dict | None, int | None, str | None]:
    """Evaluate the candidates lowest first against dense, up to the first that passes: the merged eval (None when
    nothing ran), that start layer (None when none passed or nothing can be verified) and `no_signal`'s reason."""
    n_layers = lm.model.config.num_hidden_layers
    evs: list[dict] = []
    start = None
    for cfg in trimix_configs(cands, n_init, n_local, last_n, n_layers) if cases > 0 else []:
        evs.append(run_eval(lm, [length], cases, [cfg], tasks, seed, progress=progress, stop_early=True))
        if not evs[-1]["stopped_early"] and (start := recommend(evs[-1])) is not None:
            break  # candidates go lowest first: the first that passes is the recommendation
        if not evs[-1]["stopped_early"] and no_signal(evs[-1], length) is not None:
            break  # every candidate meets the same dense answers: none right, nothing to pass
    ev = _merge_evals(evs)
    unverifiable = None if ev is None else no_signal(ev, length)
    return ev, None if unverifiable else start, unverifiable


def _profile_record(lm: LoadedModel, prof: dict, cands: list[int], ev: dict | None, start: int | None,
                    unverifiable: str | None, fact_check: dict | None, settings: dict, params: dict, t0: float,
                    t_grad: float) -> dict:
    """The profile as saved and reported: model, start layer, gradients, eval, settings and timing (from `t0`)."""
    from tmixcli import __version__
    from tmixcli.kvstore import model_fingerprint

    n_layers = lm.model.config.num_hidden_layers
    return {"model": lm.model_id, "fingerprint": model_fingerprint(lm.model, lm.tokenizer),
            "start_layer": _start_layer(ev, unverifiable, start, n_layers),
            "verified": start is not None,
            "candidates": cands, "importance": prof["importance"], "grad": prof["grad"],
            "nll": prof["nll"], "eval": _eval_summary(ev), "eval_records": ev["records"] if ev else [],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tmix_version": __version__, "params": params, "settings": settings, "facts": fact_check,
            "timing": {"gradient_s": t_grad, "eval_s": ev["wall_s"] if ev else 0.0,
                       "total_s": time.perf_counter() - t0}}


def _start_layer(ev: dict | None, unverifiable: str | None, start: int | None, n_layers: int) -> int | None:
    """The profile's start layer: None when nothing was evaluated or nothing can be verified; `n_layers` (triangle in
    no layer) when no candidate passed; else the recommended `start`."""
    if ev is None or unverifiable:
        return None
    if start is None:
        return n_layers
    return start


def no_signal(ev: dict, length: int) -> str | None:
    """Why an eval cannot verify a start layer: dense attention answered none of its cases right (the model cannot do
    the task, so agreeing with dense measures nothing); None when dense got some right."""
    dense = ev["methods"]["dense"]["overall"]
    if dense["correct"] > 0:
        return None
    n = dense["n"]
    return (f"dense attention got 0 of {count(n, 'case')} right at {length} tokens: nothing to verify a "
            "start layer against (calibrate on --tasks the model solves densely; see tmix eval)")


def confirm_on_facts(lm: LoadedModel, facts: FactSet, start: int, n_init: int, n_local: int, last_n: int,
                     progress: bool = True, step: int = 2) -> tuple[int | None, dict]:
    """The lowest start layer >= `start` (in steps of `step`) that passes on the real-document facts, or None."""
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
    from tmixcli.eval_run import summarize  # facts has its own, which confirm_on_facts uses


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
