"""`tmix calibrate`: find the lowest safe TriangleMix start layer for a model and save it as a profile.

Importance of layer l = |d NLL(answer tokens) / d alpha_l| at alpha = 1, where alpha_l scales the attention
probabilities of the *middle region* of layer l (rows before the last_n prefix rows, keys outside the sinks and
the local band) and each row is renormalised: at alpha_l = 0 the layer computes exactly tmix's triangle.
One forward + backward per sample through the "tmix-calib" attention: PyTorch's fused (flash) CPU kernel gives
the dense output and its logsumexp, the triangle output and logsumexp come blockwise without grad, and the
closed form in `fast_middle_scaled_attention` mixes them, so no L x L matrix is ever materialised or stored.
`middle_scaled_attention` is the explicit (chunked, checkpointed) reference the tests compare it with.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer
from torch.utils.checkpoint import checkpoint
from transformers import AttentionInterface


if TYPE_CHECKING:
    from tmixcli.models import LoadedModel

NAME = "tmix-calib"
_STATE: dict[str, Any] = {}  # "alpha": tensor [num_layers] (requires grad) while calibrating


def _chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, q0: int,
                     n_init: int, n_local: int, dense_from: int, scale: float) -> torch.Tensor:
    """Rows q0.. of q [B,H,C,D] over keys k/v [B,H,S,D] (S = q0 + C); middle probs times alpha, renormalised."""
    c, s = q.shape[2], k.shape[2]
    p = torch.arange(q0, q0 + c, device=q.device)[:, None]
    j = torch.arange(s, device=q.device)[None, :]
    causal = j <= p  # causal: [C, S]
    middle = causal & (j >= n_init) & (p - j >= n_local) & (p < dense_from)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # scores: [B, H, C, S]
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1, dtype=torch.float32)
    weight = torch.where(middle, alpha.float(), torch.ones((), device=q.device))
    probs = probs * weight
    probs = probs / probs.sum(-1, keepdim=True)
    return torch.matmul(probs.to(v.dtype), v)  # [B, H, C, D]


def middle_scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor,
                            n_init: int, n_local: int, last_n: int, total_len: int | None = None,
                            scale: float | None = None, chunk: int = 512) -> torch.Tensor:
    """Causal attention with the middle region scaled by alpha; q [B,H,Lq,D], k/v [B,Hkv,S,D] -> [B,Lq,H,D].

    alpha = 1 is dense attention, alpha = 0 is tmix's triangle (same contract as tmix_kernels)."""
    b, h, lq, d = q.shape
    s = k.shape[2]
    g = h // k.shape[1]
    k = k.repeat_interleave(g, dim=1) if g > 1 else k  # k, v: [B, H, S, D] (head h uses kv head h // G)
    v = v.repeat_interleave(g, dim=1) if g > 1 else v
    scale = d**-0.5 if scale is None else scale
    dense_from = (s if total_len is None else total_len) - last_n
    first = s - lq
    outs = []
    for a in range(0, lq, chunk):
        e = min(a + chunk, lq)
        args = (q[:, :, a:e], k[:, :, : first + e], v[:, :, : first + e], alpha, first + a,
                n_init, n_local, dense_from, scale)
        if torch.is_grad_enabled() and alpha.requires_grad:
            outs.append(checkpoint(_chunk_attention, *args, use_reentrant=False))
        else:
            outs.append(_chunk_attention(*args))
    return torch.cat(outs, dim=2).transpose(1, 2)  # [B, Lq, H, D]


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B,H,L,D], logsumexp [B,H,L]) from PyTorch's fused CPU kernel (differentiable); k/v expanded."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=bias,
                                                                      scale=scale)


def _triangle_parts(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, n_local: int, split: int,
                    scale: float, block: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle (sinks + local band) output and logsumexp of rows 0..split-1; q [B,H,L,D] with L = S."""
    outs, lses = [], []
    for a in range(0, split, block):
        e = min(a + block, split)
        ws = max(a - n_local + 1, n_init)
        kp = torch.cat([torch.arange(0, min(n_init, e)), torch.arange(ws, e)]).to(q.device)
        p = torch.arange(a, e, device=q.device)[:, None]
        allowed = (kp[None, :] <= p) & ((kp[None, :] < n_init) | (p - kp[None, :] < n_local))
        scores = torch.matmul(q[:, :, a:e], k[:, :, kp].transpose(-1, -2)) * scale  # scores: [B, H, C, K]
        scores = scores.float().masked_fill_(~allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)  # lse: [B, H, C]
        outs.append(torch.matmul(torch.exp(scores - lse[..., None]).to(v.dtype), v[:, :, kp]))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def fast_middle_scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor,
                                 n_init: int, n_local: int, last_n: int, total_len: int | None = None,
                                 scale: float | None = None) -> torch.Tensor:
    """Same value as middle_scaled_attention for any alpha, from fused kernels (full prefill only: Lq = S).

    With c = triangle mass of a row under dense softmax, O the dense and O_tri the triangle output:
    out = (c*O_tri + alpha*(O - c*O_tri)) / (c + alpha*(1 - c)). c and O_tri are detached, so at alpha = 1
    the gradients w.r.t. q/k/v are the dense ones and d out/d alpha is exact."""
    b, h, lq, d = q.shape
    s = k.shape[2]
    if lq != s:
        raise ValueError("fast calibration attention needs a full prefill (queries = keys)")
    g = h // k.shape[1]
    k = k.repeat_interleave(g, dim=1) if g > 1 else k  # k, v: [B, H, S, D]
    v = v.repeat_interleave(g, dim=1) if g > 1 else v
    scale = d**-0.5 if scale is None else scale
    out, lse = _flash(q, k, v, scale, True)  # out: [B, H, L, D], lse: [B, H, L]
    split = min(s, max(0, (s if total_len is None else total_len) - last_n))
    if split == 0:
        return out.transpose(1, 2)
    with torch.no_grad():
        o_tri, lse_tri = _triangle_parts(q.detach(), k.detach(), v.detach(), n_init, n_local, split, scale)
        c = torch.exp(lse_tri - lse[:, :, :split].detach()).clamp(max=1.0)[..., None]  # c: [B, H, split, 1]
    a = alpha.to(out.dtype)
    head = (c * o_tri + a * (out[:, :, :split] - c * o_tri)) / (c + a * (1 - c))
    return torch.cat([head, out[:, :, split:]], dim=2).transpose(1, 2)  # [B, L, H, D]


def calib_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    tmix_total_len: int | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """AttentionInterface entry used only while calibrating (see `calibration_mode`)."""
    from tmixcli.attention import layer_config

    cfg = layer_config(module)
    alpha = _STATE["alpha"][module.layer_idx]
    out = fast_middle_scaled_attention(query, key, value, alpha, cfg.n_init, cfg.n_local, cfg.last_n,
                                       tmix_total_len, scaling)
    return out, None


AttentionInterface.register(NAME, calib_attention)


@contextmanager
def calibration_mode(model: torch.nn.Module, n_init: int, n_local: int, last_n: int):
    """Switch the model to "tmix-calib" with alpha = 1 (leaf, requires grad); restores "tmix" dense after."""
    from tmixcli.attention import attach
    from tmixcli.config import AttentionConfig

    n = model.config.num_hidden_layers
    alpha = torch.ones(n, device=model.device, requires_grad=True)
    _STATE.update(alpha=alpha)
    attach(model, AttentionConfig("trimix", n_init, n_local, last_n, 0))
    model.set_attn_implementation(NAME)
    try:
        yield alpha
    finally:
        _STATE.clear()
        attach(model, AttentionConfig(method="dense"))


def sample_gradient(model: torch.nn.Module, tokenizer, case, alpha: torch.Tensor) -> tuple[list[float], float]:
    """d NLL(answer tokens)/d alpha per layer for one case, and the mean answer-token NLL (nats)."""
    from tmixcli.prompt import build_prompt

    p = build_prompt(tokenizer, case.document, case.question)
    lead = list(tokenizer(case.lead, add_special_tokens=False)["input_ids"]) if case.lead else []
    full = list(tokenizer(case.reference, add_special_tokens=False)["input_ids"])
    n_ans = max(1, len(full) - len(lead))
    ids = torch.tensor([p.ids + full], device=model.device)  # ids: [1, N]
    alpha.grad = None
    out = model(input_ids=ids, use_cache=False, logits_to_keep=n_ans + 1, tmix_total_len=len(p.prefix_ids))
    logits = out.logits[0, :-1].float()  # logits: [n_ans, V], predicting the answer tokens
    loss = torch.nn.functional.cross_entropy(logits, ids[0, -n_ans:])
    loss.backward()
    return alpha.grad.tolist(), float(loss.detach())


def importance_profile(lm: LoadedModel, samples: int, length: int, tasks: list[str], seed: int, n_init: int,
                       n_local: int, last_n: int, progress: bool = True) -> dict:
    """Per-layer importance (mean |grad| over samples), mean signed grad and the answer NLL of each sample."""
    from tmixcli.tasks import make_cases

    cases = make_cases(lm.tokenizer, tasks, samples, length, seed)
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


def recommend(result: dict, dense_name: str = "dense") -> int | None:
    """Lowest evaluated start layer with accuracy >= dense - 1 case and greedy agreement >= 95%."""
    from tmixcli.evaluate import AGREEMENT

    methods = result["methods"]
    dense = methods[dense_name]["overall"]["correct"]
    ok = [m["start_layer"] for name, m in methods.items() if name != dense_name
          and m["overall"]["correct"] >= dense - 1 and m["overall"]["agreement"] >= AGREEMENT]
    return min(ok) if ok else None


def profile_path(fingerprint: str) -> Path:
    from tmixcli.paths import cache_dir

    return cache_dir() / "profiles" / f"{fingerprint[:24]}.json"


def save_profile(profile: dict) -> Path:
    """Write the profile atomically (temp file in the same dir, then os.replace)."""
    path = profile_path(profile["fingerprint"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    return data


def plot_importance(importance: list[float], start: int | None, path: str) -> bool:
    """Bar chart of per-layer importance with the chosen start layer; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(importance)), importance, color="tab:blue")
    if start is not None:
        ax.axvline(start - 0.5, color="tab:red", linestyle="--", label=f"start layer {start}")
        ax.legend()
    ax.set_xlabel("layer")
    ax.set_ylabel("|d NLL / d alpha| (nats)")
    ax.set_title("Answer loss sensitivity to the middle attention region")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def run_calibrate(lm: LoadedModel, samples: int = 4, length: int = 6144, cases: int = 20,
                  tasks: list[str] | None = None, tolerance: float = 0.05, n_init: int = 8, n_local: int = 512,
                  last_n: int = 128, seed: int = 0, save: bool = True, progress: bool = True,
                  grad_length: int | None = None) -> dict:
    """Importance profile -> candidate start layers -> eval against dense -> recommended start layer (+ saved).

    Gradient samples are `grad_length` tokens (default min(length, 3072): the backward is the slow part)."""
    from tmixcli import __version__
    from tmixcli.evaluate import run_eval, trimix_configs
    from tmixcli.kvstore import model_fingerprint

    tasks = tasks or ["needle"]
    t0 = time.perf_counter()
    grad_length = grad_length or min(length, 3072)
    prof = importance_profile(lm, samples, grad_length, tasks, seed + 1000, n_init, n_local, last_n, progress)
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
    profile = {"model_id": lm.model_id, "fingerprint": model_fingerprint(lm.model, lm.tokenizer),
               "start_layer": n_layers if start is None else start, "verified": start is not None,
               "candidates": cands, "importance": prof["importance"], "grad": prof["grad"],
               "nll": prof["nll"], "eval": _eval_summary(ev), "eval_records": ev["records"] if ev else [],
               "created": datetime.now(timezone.utc).isoformat(),
               "tmix_version": __version__, "params": {"n_init": n_init, "n_local": n_local, "last_n": last_n},
               "settings": {"samples": samples, "grad_length": grad_length, "length": length, "cases": cases,
                            "tasks": tasks, "tolerance": tolerance, "seed": seed},
               "timing": {"gradient_s": t_grad, "eval_s": ev["wall_s"] if ev else 0.0,
                          "total_s": time.perf_counter() - t0}}
    if save and ev is not None:
        profile["path"] = str(save_profile(profile))
    return profile


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
    verdict = "verified" if profile["verified"] else "no candidate passed: keeping every layer dense"
    lines.append(f"recommended start layer: {profile['start_layer']} ({verdict})")
    if "path" in profile:
        lines.append(f"profile saved: {profile['path']}")
    return "\n".join(lines)


def calibrate_command(
    model: Annotated[str | None, typer.Option("--model", help="HF id, local dir or .gguf (default SmolLM2).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Samples for the gradient profile.")] = 4,
    length: Annotated[str, typer.Option("--length", help="Eval prompt length in tokens (e.g. 6k).")] = "6k",
    grad_length: Annotated[str | None, typer.Option("--grad-length", help="Gradient sample length.")] = None,
    cases: Annotated[int, typer.Option("--cases", min=0, help="Eval cases (0: skip eval, save nothing).")] = 20,
    tasks: Annotated[str, typer.Option("--tasks", help="Tasks for samples and eval: only tasks the model solves "
                                       "densely (see tmix eval); agreement on a task at chance measures noise.")
                     ] = "needle",
    tolerance: Annotated[float, typer.Option("--tolerance", help="Max summed importance of triangle layers.")] = 0.05,
    n_init: Annotated[int, typer.Option("--n-init", help="Sink tokens.")] = 8,
    n_local: Annotated[int, typer.Option("--n-local", help="Local window.")] = 512,
    last_n: Annotated[int, typer.Option("--last-n", help="Last prefix rows that attend densely.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Task generation seed.")] = 0,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a PNG bar chart of the importance.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, bf16, fp16 or fp32.")] = "auto",
) -> None:
    """Measure per-layer reliance on the middle attention region and save the best TriangleMix start layer."""
    from tmixcli.evaluate import _check_tasks, parse_lengths
    from tmixcli.models import load_model

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    _check_tasks(task_list)
    lens = parse_lengths(length)
    lm = load_model(model, device=device, dtype=dtype, progress=not quiet)
    glen = parse_lengths(grad_length)[0] if grad_length else None
    profile = run_calibrate(lm, samples, lens[0], cases, task_list, tolerance, n_init, n_local, last_n, seed,
                            progress=not quiet, grad_length=glen)
    if plot and not plot_importance(profile["importance"], profile["start_layer"], plot):
        typer.echo("tmix: matplotlib is not installed: no plot written", err=True)
    typer.echo(json.dumps(profile, indent=2) if as_json else format_report(profile))
