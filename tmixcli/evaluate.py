"""`tmix eval`: accuracy of TriangleMix vs dense on synthetic long-context tasks, agreement and first-token KL.

Agreement = the method's greedy answer (its numbers / variable names, see `answer_key`) equals dense's;
"same text" = the whole greedy answer is identical. Work that is exact to share is shared (see REUSE_TYPES):
the cases of a length reuse the KV of their common haystack prefix (`SharedPrefix`), and a trimix method re-runs
only its layers >= start_layer on the hidden states of the case's dense run (`case_caches`).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tmixcli.errors import TmixError

if TYPE_CHECKING:
    import torch

    from tmixcli.config import AttentionConfig
    from tmixcli.models import LoadedModel

KEY = re.compile(r"\d[\d,]{2,}\d|\d{3,}|\b[A-Z]{5}\b")  # an answer: a number of 3+ digits or a variable name


def _answered(text: str) -> bool:
    """The text holds an answer and has just ended a sentence of more than three words (not "2." of a list)."""
    line = text.rstrip("\n").split("\n")[-1]
    return bool(re.search(r"[.!?]$", line)) and len(line.split()) > 3 and bool(KEY.search(text))


# Decoder stacks whose forward feeds `inputs_embeds` unchanged into the first layer (no embedding scale).
REUSE_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def parse_lengths(text: str, option: str = "--lengths") -> list[int]:
    """"2k,6k,3000" -> [2048, 6144, 3000]; each at least 1 token."""
    out = [_length(part, f"in {option}", "numbers like 2k,6k or 3000")
           for part in filter(None, (p.strip().lower() for p in text.split(",")))]
    if not out:
        raise TmixError(f"{option} is empty")
    return out


def parse_length(text: str, option: str) -> int:
    """One length, "6k" -> 6144, for an option that takes a single value: a list is refused."""
    if "," in text:
        raise TmixError(f"{option} takes one length, not a list ({text!r}): use a number like 6k or 3000")
    if not text.strip():
        raise TmixError(f"{option} is empty: use a number like 6k or 3000")
    return _length(text.strip().lower(), f"for {option}", "a number like 6k or 3000")


def _length(part: str, where: str, examples: str) -> int:
    """Tokens of one length ("6k" = 6144), at least 1; TmixError saying `where` it was and `examples`."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", part)
    if not m:
        raise TmixError(f"bad length {part!r} {where}: use {examples}")
    n = int(float(m.group(1)) * (1024 if m.group(2) else 1))
    if n < 1:
        raise TmixError(f"bad length {part!r} {where}: must be at least 1 token")
    return n


def check_triangle_lengths(lengths: list[tuple[str, int]], n_init: int, n_local: int, last_n: int,
                           purpose: str) -> None:
    """Refuse a prompt length, given as (option, tokens), at which the triangle is dense attention: nothing to
    `purpose` ("compare", "calibrate")."""
    from tmixcli.config import triangle_span

    span = triangle_span(n_init, n_local, last_n)
    for option, n in lengths:
        if n <= span:
            raise TmixError(f"{option} {n} is too short to {purpose}: up to n_init + n_local + last_n = {span} "
                            f"tokens the triangle is dense attention; give at least {span + 1}")


def parse_ints(text: str) -> list[int]:
    """"9,15,9" -> [9, 15]: comma-separated integers, each once, in the order given."""
    try:
        return list(dict.fromkeys(int(p) for p in text.split(",") if p.strip()))
    except ValueError:
        raise TmixError(f"expected comma-separated integers, got {text!r}") from None


def check_lengths(lengths: list[int], context: int | None, answer_tokens: int, option: str = "--lengths") -> None:
    """Refuse a prompt length that leaves the answer no room in the model's context (None: not known yet)."""
    for n in lengths:
        if context is not None and n + answer_tokens > context:
            raise TmixError(f"{option} {n}: {n} prompt tokens + {answer_tokens} for the answer exceed the model's "
                            f"context ({context})")


def plan_cases(tokenizer, lengths: list[int], cases: int, tasks: list[str], seed: int, context: int,
               answer_tokens: int, option: str = "--lengths") -> list[list]:
    """Every length's cases, refused before any prefill where a length is below the tasks' bare prompt or its
    longest prompt and answer do not fit the model's context."""
    from tmixcli.tasks import bare_prompt_tokens, make_cases

    check_lengths(lengths, context, answer_tokens, option)  # before tokenizing a haystack of that length
    floor = bare_prompt_tokens(tokenizer, tasks)
    plan = []
    for n in lengths:
        if n < floor:
            raise TmixError(f"{option} {n}: too short for the {'/'.join(tasks)} task: its facts and question alone "
                            f"take {floor} tokens; give at least {floor}")
        made = make_cases(tokenizer, tasks, cases, n, seed)
        longest = max((c.tokens for c in made), default=0)
        if longest + answer_tokens > context:
            raise TmixError(f"{option} {n}: its prompts take up to {longest} tokens + {answer_tokens} for the answer, "
                            f"past the model's context ({context})")
        plan.append(made)
    return plan


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


KV = list  # per layer: (keys [1, Hkv, T, D], values) or None for a layer the run did not touch


def run_layers(model: torch.nn.Module, cfg: AttentionConfig, start: int, prior: KV | None, total: int,
               ids: list[int] | None = None, hidden: torch.Tensor | None = None,
               capture: set[int] | frozenset = frozenset()) -> tuple[KV, dict[int, torch.Tensor]]:
    """Run layers >= start on new tokens on top of `prior` (every layer's KV of the first c positions, or None).

    The new tokens come as `ids` (start 0) or as the hidden states entering layer `start` (a layer's output
    depends only on its input and its own KV). Returns every layer's KV afterwards and the hidden states of the
    new tokens entering each layer in `capture`."""
    import torch
    from transformers import DynamicCache

    from tmixcli.attention import attach

    attach(model, cfg)
    cache = DynamicCache(config=model.config)
    for i, kv in enumerate(prior or []):
        if kv is not None and kv[0].shape[2]:
            cache.update(kv[0], kv[1], i)
    store, handles = _capture_inputs(model, set(capture))
    inner = model.model
    layers = inner.layers
    if start:
        inner.layers = torch.nn.ModuleList(list(layers)[start:])  # attention modules keep their layer_idx
    try:
        with torch.inference_mode():
            feed = ({"input_ids": torch.tensor([ids], device=model.device)} if hidden is None
                    else {"inputs_embeds": hidden})
            model(**feed, past_key_values=cache, use_cache=True, logits_to_keep=1, tmix_total_len=total)
    finally:
        inner.layers = layers
        for h in handles:
            h.remove()
    kv = [(layer.keys, layer.values) if getattr(layer, "is_initialized", False) else None for layer in cache.layers]
    return kv, store


def as_cache(model: torch.nn.Module, kv: KV):
    """A DynamicCache holding these per-layer KV tensors (answering appends to copies, never to them)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def _crop(kv: KV, c: int) -> KV:
    return [None if x is None else (x[0][:, :, :c], x[1][:, :, :c]) for x in kv]


class SharedPrefix:
    """The KV of the needle-free haystack prompt, dense and per trimix start layer, for every case to reuse.

    Positions before a case's first difference from the haystack have the same KV in the case (causal
    attention; and triangle rows p < T - last_n do not depend on T), so a case only runs its own tail."""

    def __init__(self, model: torch.nn.Module, ids: list[int], methods: list[AttentionConfig]) -> None:
        from tmixcli.config import AttentionConfig

        self.ids = ids
        self.last_n = max((m.last_n for m in methods), default=0)
        starts = {m.start_layer for m in methods}
        self.dense, hidden = run_layers(model, AttentionConfig(method="dense"), 0, None, len(ids), ids=ids,
                                        capture=starts)
        self.tri: dict[int, KV] = {}
        for s in sorted(starts):
            cfg = next(m for m in methods if m.start_layer == s)
            tail, _ = run_layers(model, cfg, s, None, len(ids), hidden=hidden[s])
            self.tri[s] = self.dense[:s] + tail[s:]

    def usable(self, ids: list[int]) -> int:
        """How many leading positions of `ids` can take the shared KV (0: none)."""
        n = 0
        limit = min(len(self.ids), len(ids)) - self.last_n - 1
        while n < limit and ids[n] == self.ids[n]:
            n += 1
        return max(n, 0)


def case_caches(model: torch.nn.Module, ids: list[int], methods: list[AttentionConfig],
                shared: SharedPrefix | None = None):
    """Yield (method config or None for dense, KV of `ids`): dense first, then each method, reusing what is exact.

    Trimix layers below the start layer are the dense ones; with `shared`, the haystack prefix is not re-run."""
    from tmixcli.config import AttentionConfig

    dense_cfg = AttentionConfig(method="dense")
    if model.config.model_type not in REUSE_TYPES:
        yield None, run_layers(model, dense_cfg, 0, None, len(ids), ids=ids)[0]
        for cfg in methods:
            yield cfg, run_layers(model, cfg, 0, None, len(ids), ids=ids)[0]
        return
    c = shared.usable(ids) if shared is not None else 0
    starts = {m.start_layer for m in methods}
    dense, hidden = run_layers(model, dense_cfg, 0, _crop(shared.dense, c) if c else None, len(ids),
                               ids=ids[c:], capture=starts)
    yield None, dense
    for cfg in methods:
        s = cfg.start_layer
        prior = (_crop(dense[:s], c) + _crop(shared.tri[s][s:], c)) if c else None
        tail, _ = run_layers(model, cfg, s, prior, len(ids), hidden=hidden[s])
        yield cfg, dense[:s] + tail[s:]


def answer(model: torch.nn.Module, tokenizer, cache, suffix_ids: list[int], stops: set[int],
           max_new_tokens: int, done: Callable[[str], bool] | None = None) -> tuple[torch.Tensor, str]:
    """Greedy answer on top of a prefilled cache until `done(text)` (default: the first sentence that holds a
    task's answer): (log-probs of the first answer token [V], text)."""
    import torch

    from tmixcli import cpu_decode
    from tmixcli.generate import extend

    logits = extend(model, cache, suffix_ids)
    first = torch.log_softmax(logits, dim=-1)
    ids: list[int] = []
    stepper = cpu_decode.start(model, cache)  # decode as `tmix ask` does on the CPU
    for i in range(max_new_tokens):
        tok = int(torch.argmax(logits))
        if tok in stops:
            break
        ids.append(tok)
        if (done or _answered)(tokenizer.decode(ids, skip_special_tokens=True)):
            break
        if i + 1 < max_new_tokens:
            logits = stepper.step(tok) if stepper is not None else extend(model, cache, [tok])
    return first, tokenizer.decode(ids, skip_special_tokens=True).strip()


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) in nats from log-probabilities."""
    return float((logp.exp() * (logp - logq)).sum().clamp_min(0.0))


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def answer_key(text: str) -> str:
    """The answer a text gives: its numbers (3+ digits) and variable-like names in order, else its first line."""
    found = KEY.findall(text)
    if found:
        return " ".join(f.replace(",", "") for f in found)
    return " ".join(text.strip().split("\n")[0].split()).lower()


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
                   same_text=_same(text, ref_text), kl=kl(ref_lp, lp), seconds=time.perf_counter() - t0)
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


ANSWER_TOKENS = 24  # the answer cap of synthetic cases
AGREEMENT = 0.95  # the fidelity bar: greedy answers equal to dense's in at least this share of cases


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
    return {"model_id": lm.model_id, "lengths": lengths, "cases": cases, "tasks": tasks, "seed": seed,
            "max_new_tokens": max_new_tokens, "params": params, "methods": summarize(records, lengths),
            "records": records, "stopped_early": stopped, "wall_s": time.perf_counter() - start}


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


def trimix_configs(starts: list[int], n_init: int, n_local: int, last_n: int,
                   num_layers: int | None) -> list[AttentionConfig]:
    """One trimix AttentionConfig per start layer (validated against the model's depth where it is known)."""
    from tmixcli.config import AttentionConfig

    out = []
    for s in starts:
        if s < 0:
            raise TmixError(f"start layer {s} is negative")
        if num_layers is not None and s >= num_layers:
            raise TmixError(f"start layer {s} is outside the model's {num_layers} layers")
        try:
            out.append(AttentionConfig("trimix", n_init, n_local, last_n, s))
        except ValueError as err:
            raise TmixError(str(err)) from None
    return out


def eval_command(
    model: Annotated[str | None, typer.Option(
        "--model", metavar="MODEL", help="HF id, local dir or .gguf (default SmolLM2).")] = None,
    lengths: Annotated[str, typer.Option(
        "--lengths", metavar="LENGTHS", help="Prompt lengths in tokens, e.g. 2k,6k.")] = "2k,6k",
    cases: Annotated[int, typer.Option("--cases", metavar="N", min=1, help="Cases per length.")] = 10,
    tasks: Annotated[str, typer.Option(
        "--tasks", metavar="TASKS", help="Tasks: needle,multikey,multivalue,vt.")] = "needle,multikey",
    start_layers: Annotated[str, typer.Option(
        "--start-layers", metavar="LAYERS", help="Trimix start layers vs dense.")] = "10,15,20",
    n_init: Annotated[int, typer.Option("--n-init", metavar="N", help="Sink tokens.")] = 8,
    n_local: Annotated[int, typer.Option("--n-local", metavar="N", help="Local window.")] = 512,
    last_n: Annotated[int, typer.Option("--last-n", metavar="N", help="Last prefix rows that attend densely.")] = 128,
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
    from tmixcli.envflags import check_switches
    from tmixcli.modelcheck import check_model
    from tmixcli.modelinfo import model_limits

    check_switches()
    lens = parse_lengths(lengths)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    _check_tasks(task_list)
    starts = parse_ints(start_layers)
    if not starts:
        raise TmixError("--start-layers is empty: give the start layers to compare with dense, such as 10,15,20")
    fact_set = None
    if facts is not None:
        from tmixcli.facts import FactSet

        fact_set = FactSet.from_file(facts)  # a bad file fails before the model loads
    check_model(model)
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


def _check_tasks(tasks: list[str]) -> None:
    from tmixcli.tasks import TASKS

    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise TmixError(f"unknown task(s) {', '.join(bad) or '(none)'}: choose from {', '.join(TASKS)}")
