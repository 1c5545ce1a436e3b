"""The eval run: dense and each trimix method on every case of every length, one record each, and their summary."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from tmixcli.eval_answer import answer, answer_key, kl, same_text
from tmixcli.eval_plan import method_name, plan_cases
from tmixcli.eval_prefill import REUSE_TYPES, SharedPrefix, as_cache, case_caches

if TYPE_CHECKING:
    from tmixcli.config import AttentionConfig
    from tmixcli.models import LoadedModel


ANSWER_TOKENS = 24  # the answer cap of synthetic cases
AGREEMENT = 0.95  # the fidelity bar: greedy answers equal to dense's in at least this share of cases


def eval_case(lm: LoadedModel, case, methods: list[AttentionConfig], max_new_tokens: int,
              shared: SharedPrefix | None = None) -> list[dict]:
    """Dense plus every trimix method on one case; one record per method."""
    from tmixcli.generate import stop_ids
    from tmixcli.prompt import build_prompt
    from tmixcli.tasks import score

    model, tok = lm.model, lm.tokenizer
    stops = stop_ids(tok, model)
    p = build_prompt(tok, case.document, case.question)
    base = {"task": case.task, "depth": case.depth, "tokens": case.tokens, "answers": case.answers}
    recs: list[dict] = []
    t0 = time.perf_counter()
    ref_lp = ref_text = None
    for cfg, kv in case_caches(model, p.prefix_ids, methods, shared):
        lp, text = answer(model, tok, as_cache(model, kv), p.suffix_ids, stops, max_new_tokens)
        if cfg is None:
            ref_lp, ref_text = lp, text
        rec = dict(base, method="dense" if cfg is None else method_name(cfg),
                   start_layer=None if cfg is None else cfg.start_layer, text=text,
                   correct=score(text, case.answers), agree=answer_key(text) == answer_key(ref_text),
                   same_text=same_text(text, ref_text), kl=kl(ref_lp, lp), seconds=time.perf_counter() - t0)
        recs.append(rec)
        t0 = time.perf_counter()
    return recs


def _summary(recs: list[dict]) -> dict:
    n = len(recs)
    correct = sum(r["correct"] for r in recs)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
            "agreement": sum(r["agree"] for r in recs) / n if n else 0.0,
            "text_agreement": sum(r.get("same_text", r["agree"]) for r in recs) / n if n else 0.0,
            "kl": sum(r["kl"] for r in recs) / n if n else 0.0,
            "seconds": sum(r["seconds"] for r in recs)}


def summarize(records: list[dict], lengths: list[int]) -> dict:
    """Per method: overall, per target length and per task."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == name]
        out[name] = {"start_layer": mine[0]["start_layer"], "overall": _summary(mine),
                     "by_length": {str(n): _summary([r for r in mine if r["length"] == n]) for n in lengths},
                     "by_task": {t: _summary([r for r in mine if r["task"] == t])
                                 for t in dict.fromkeys(r["task"] for r in mine)}}
    return out


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def hopeless(records: list[dict], total: int, name: str, agreement: float = AGREEMENT) -> bool:
    """True once `name` can no longer reach correct >= dense - 1 and agreement >= `agreement` over `total` cases."""
    mine = [r for r in records if r["method"] == name]
    dense = sum(r["correct"] for r in records if r["method"] == "dense")
    left = total - len(mine)
    if sum(r["correct"] for r in mine) + left < dense - 1:
        return True
    return sum(not r["agree"] for r in mine) > total - math.ceil(agreement * total - 1e-9)


def run_eval(lm: LoadedModel, lengths: list[int], cases: int, methods: list[AttentionConfig],
             tasks: list[str] | None = None, seed: int = 0, max_new_tokens: int = ANSWER_TOKENS,
             progress: bool = True, stop_early: bool = False) -> dict:
    """Evaluate dense (always) and each trimix config on `cases` generated cases per length.

    stop_early (one method, one length): stop as soon as the method cannot pass `hopeless`'s bar."""
    from tmixcli.modelinfo import model_context
    from tmixcli.prompt import build_prompt
    from tmixcli.tasks import TASKS, haystack_document

    tasks = list(tasks or TASKS)
    methods = [m for m in methods if m.method == "trimix"]
    plan = plan_cases(lm.tokenizer, lengths, cases, tasks, seed, model_context(lm.model), max_new_tokens)
    start = time.perf_counter()
    records: list[dict] = []
    stopped = False
    for length, length_cases in zip(lengths, plan, strict=True):
        if stopped:
            break
        shared = None
        if lm.model.config.model_type in REUSE_TYPES and cases > 1:
            t0 = time.perf_counter()
            hay = build_prompt(lm.tokenizer, haystack_document(lm.tokenizer, tasks, length, seed), "?").prefix_ids
            shared = SharedPrefix(lm.model, hay, methods)
            _log(progress, f"[{length}] shared haystack prefix ({len(hay)} tok) prefilled in "
                 f"{time.perf_counter() - t0:.0f}s")
        for i, case in enumerate(length_cases):
            recs = eval_case(lm, case, methods, max_new_tokens, shared)
            for r in recs:
                r["length"] = length
            records += recs
            _log(progress, f"[{length} {i + 1}/{cases}] {case.task} depth={case.depth} ({case.tokens} tok): "
                 + ", ".join(f"{r['method']} {'ok' if r['correct'] else 'miss'}"
                             f"{'' if r['agree'] else ' (differs)'} {r['seconds']:.0f}s" for r in recs))
            if stop_early and len(methods) == 1 and hopeless(records, cases, method_name(methods[0])):
                _log(progress, f"[{length}] {method_name(methods[0])} cannot pass any more: stopped after "
                     f"{i + 1} cases")
                stopped = True
                break
    params = {k: methods[0].to_dict()[k] for k in ("n_init", "n_local", "last_n")} if methods else {}
    return {"model": lm.model_id, "lengths": lengths, "cases": cases, "tasks": tasks, "seed": seed,
            "max_new_tokens": max_new_tokens, "params": params, "methods": summarize(records, lengths),
            "records": records, "stopped_early": stopped, "wall_s": time.perf_counter() - start}
