"""`tmix eval`: accuracy of TriangleMix vs dense on synthetic long-context tasks, agreement and first-token KL.

Agreement = the method's greedy answer (its numbers / variable names, see `answer_key`) equals dense's;
"same text" = the whole greedy continuation (max_new_tokens) is identical. Per case the dense prefill runs
once; it also records the hidden states entering each start layer, so a trimix method re-runs only its own
layers >= start_layer (the layers below see the same inputs and attention as dense, so their KV is shared)
when the architecture allows it (see REUSE_TYPES).
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tmixcli.errors import TmixError

if TYPE_CHECKING:
    import torch

    from tmixcli.config import AttentionConfig
    from tmixcli.models import LoadedModel

# Decoder stacks whose forward feeds `inputs_embeds` unchanged into the first layer (no embedding scale).
REUSE_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def parse_lengths(text: str) -> list[int]:
    """"2k,6k,3000" -> [2048, 6144, 3000]."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", part)
        if not m:
            raise TmixError(f"bad length {part!r}: use numbers like 2k,6k or 3000")
        out.append(int(float(m.group(1)) * (1024 if m.group(2) else 1)))
    if not out:
        raise TmixError("no lengths given")
    return out


def parse_ints(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise TmixError(f"expected comma-separated integers, got {text!r}") from None


def method_name(cfg: AttentionConfig) -> str:
    return "dense" if cfg.method == "dense" else f"trimix@{cfg.start_layer}"


def _capture_inputs(model: torch.nn.Module, starts: set[int]):
    """Forward pre-hooks storing the hidden states that enter each layer in `starts`; returns (store, handles)."""
    store: dict[int, torch.Tensor] = {}
    layers = model.model.layers
    handles = []
    for s in starts:
        def hook(_mod, args, kwargs, s=s):
            store[s] = (args[0] if args else kwargs["hidden_states"]).clone()
        handles.append(layers[s].register_forward_pre_hook(hook, with_kwargs=True))
    return store, handles


def _dense_prefill(model: torch.nn.Module, ids: list[int], starts: set[int]):
    """Dense prefill; returns (cache, per-layer KV snapshot, hidden states entering each start layer)."""
    from tmixcli.attention import attach
    from tmixcli.config import AttentionConfig
    from tmixcli.generate import prefill

    attach(model, AttentionConfig(method="dense"))
    store, handles = _capture_inputs(model, starts)
    try:
        cache, _ = prefill(model, ids)
    finally:
        for h in handles:
            h.remove()
    kv = [(layer.keys, layer.values) for layer in cache.layers]  # extend() concatenates: these stay length T
    return cache, kv, store


def _prefill_from(model: torch.nn.Module, hidden: torch.Tensor, start: int, kv: list, total: int):
    """Run layers >= start on the stored hidden states; the KV of layers < start is the dense one."""
    import torch
    from transformers import DynamicCache

    inner = model.model
    layers = inner.layers
    cache = DynamicCache(config=model.config)
    inner.layers = torch.nn.ModuleList(list(layers)[start:])
    try:
        with torch.inference_mode():
            model(inputs_embeds=hidden, past_key_values=cache, use_cache=True, logits_to_keep=1,
                  tmix_total_len=total)
    finally:
        inner.layers = layers
    for i in range(start):
        cache.update(kv[i][0], kv[i][1], i)
    return cache


def method_prefill(model: torch.nn.Module, ids: list[int], cfg: AttentionConfig, dense_kv: list | None = None,
                   hidden: dict | None = None):
    """The KV cache of `ids` under cfg; reuses the dense run's lower layers when given and supported."""
    from tmixcli.attention import attach
    from tmixcli.generate import prefill

    attach(model, cfg)
    start = cfg.start_layer
    if hidden is not None and start in hidden and 0 < start and model.config.model_type in REUSE_TYPES:
        return _prefill_from(model, hidden[start], start, dense_kv, len(ids))
    cache, _ = prefill(model, ids)
    return cache


def answer(model: torch.nn.Module, tokenizer, cache, suffix_ids: list[int], stops: set[int],
           max_new_tokens: int) -> tuple[torch.Tensor, str]:
    """Greedy answer on top of a prefilled cache: (log-probs of the first answer token [V], text)."""
    import torch

    from tmixcli.generate import extend

    logits = extend(model, cache, suffix_ids)
    first = torch.log_softmax(logits, dim=-1)
    ids: list[int] = []
    for i in range(max_new_tokens):
        tok = int(torch.argmax(logits))
        if tok in stops:
            break
        ids.append(tok)
        if i + 1 < max_new_tokens:
            logits = extend(model, cache, [tok])
    return first, tokenizer.decode(ids, skip_special_tokens=True).strip()


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) in nats from log-probabilities."""
    return float((logp.exp() * (logp - logq)).sum().clamp_min(0.0))


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def answer_key(text: str) -> str:
    """The answer a text gives: its numbers (3+ digits) and variable-like names in order, else its first line."""
    found = re.findall(r"\d[\d,]{2,}\d|\d{3,}|\b[A-Z]{5}\b", text)
    if found:
        return " ".join(f.replace(",", "") for f in found)
    return " ".join(text.strip().split("\n")[0].split()).lower()


def eval_case(lm: LoadedModel, case, methods: list[AttentionConfig], max_new_tokens: int) -> list[dict]:
    """Dense plus every trimix method on one case; one record per method."""
    from tmixcli.generate import stop_ids
    from tmixcli.prompt import build_prompt
    from tmixcli.tasks import score

    model, tok = lm.model, lm.tokenizer
    stops = stop_ids(tok, model)
    p = build_prompt(tok, case.document, case.question)
    t0 = time.perf_counter()
    cache, kv, hidden = _dense_prefill(model, p.prefix_ids, {m.start_layer for m in methods})
    ref_lp, ref_text = answer(model, tok, cache, p.suffix_ids, stops, max_new_tokens)
    del cache
    base = {"task": case.task, "depth": case.depth, "tokens": case.tokens, "answers": case.answers}
    recs = [dict(base, method="dense", start_layer=None, text=ref_text, correct=score(ref_text, case.answers),
                 agree=True, same_text=True, kl=0.0, seconds=time.perf_counter() - t0)]
    for cfg in methods:
        t0 = time.perf_counter()
        cache = method_prefill(model, p.prefix_ids, cfg, kv, hidden)
        lp, text = answer(model, tok, cache, p.suffix_ids, stops, max_new_tokens)
        del cache
        recs.append(dict(base, method=method_name(cfg), start_layer=cfg.start_layer, text=text,
                         correct=score(text, case.answers), agree=answer_key(text) == answer_key(ref_text),
                         same_text=_same(text, ref_text), kl=kl(ref_lp, lp), seconds=time.perf_counter() - t0))
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


def run_eval(lm: LoadedModel, lengths: list[int], cases: int, methods: list[AttentionConfig],
             tasks: list[str] | None = None, seed: int = 0, max_new_tokens: int = 24,
             progress: bool = True) -> dict:
    """Evaluate dense (always) and each trimix config on `cases` generated cases per length."""
    from tmixcli.tasks import TASKS, make_cases

    tasks = list(tasks or TASKS)
    methods = [m for m in methods if m.method == "trimix"]
    start = time.perf_counter()
    records: list[dict] = []
    for length in lengths:
        for i, case in enumerate(make_cases(lm.tokenizer, tasks, cases, length, seed)):
            recs = eval_case(lm, case, methods, max_new_tokens)
            for r in recs:
                r["length"] = length
            records += recs
            _log(progress, f"[{length} {i + 1}/{cases}] {case.task} depth={case.depth} ({case.tokens} tok): "
                 + ", ".join(f"{r['method']} {'ok' if r['correct'] else 'miss'}"
                             f"{'' if r['agree'] else ' (differs)'} {r['seconds']:.0f}s" for r in recs))
    params = {k: methods[0].to_dict()[k] for k in ("n_init", "n_local", "last_n")} if methods else {}
    return {"model_id": lm.model_id, "lengths": lengths, "cases": cases, "tasks": tasks, "seed": seed,
            "max_new_tokens": max_new_tokens, "params": params, "methods": summarize(records, lengths),
            "records": records, "wall_s": time.perf_counter() - start}


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


def trimix_configs(starts: list[int], n_init: int, n_local: int, last_n: int, num_layers: int):
    """One trimix AttentionConfig per start layer (validated against the model's depth)."""
    from tmixcli.config import AttentionConfig

    out = []
    for s in starts:
        if not 0 <= s < num_layers:
            raise TmixError(f"start layer {s} is outside the model's {num_layers} layers")
        try:
            out.append(AttentionConfig("trimix", n_init, n_local, last_n, s))
        except ValueError as err:
            raise TmixError(str(err)) from None
    return out


def eval_command(
    model: Annotated[str | None, typer.Option("--model", help="HF id, local dir or .gguf (default SmolLM2).")] = None,
    lengths: Annotated[str, typer.Option("--lengths", help="Prompt lengths in tokens, e.g. 2k,6k.")] = "2k,6k",
    cases: Annotated[int, typer.Option("--cases", min=1, help="Cases per length.")] = 10,
    tasks: Annotated[str, typer.Option("--tasks", help="Tasks: needle,multikey,multivalue,vt.")] = "needle,multikey",
    start_layers: Annotated[str, typer.Option("--start-layers", help="Trimix start layers vs dense.")] = "10,15,20",
    n_init: Annotated[int, typer.Option("--n-init", help="Sink tokens.")] = 8,
    n_local: Annotated[int, typer.Option("--n-local", help="Local window.")] = 512,
    last_n: Annotated[int, typer.Option("--last-n", help="Last prefix rows that attend densely.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Task generation seed.")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Answer length cap.")] = 24,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, bf16, fp16 or fp32.")] = "auto",
) -> None:
    """Compare TriangleMix start layers with dense attention on synthetic long-context tasks."""
    from tmixcli.models import load_model

    lens = parse_lengths(lengths)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    _check_tasks(task_list)
    lm = load_model(model, device=device, dtype=dtype, progress=not quiet)
    methods = trimix_configs(parse_ints(start_layers), n_init, n_local, last_n, lm.model.config.num_hidden_layers)
    result = run_eval(lm, lens, cases, methods, task_list, seed, max_new_tokens, progress=not quiet)
    typer.echo(json.dumps(result, indent=2) if as_json else format_table(result))


def _check_tasks(tasks: list[str]) -> None:
    from tmixcli.tasks import TASKS

    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise TmixError(f"unknown task(s) {', '.join(bad) or '(none)'}: choose from {', '.join(TASKS)}")
