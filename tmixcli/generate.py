"""Prefill a prefix (TriangleMix or dense, optionally chunked), continue with a suffix, stream sampled tokens."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from transformers import DynamicCache

from tmixcli import cpu_decode, graph_decode
from tmixcli.checkpoints import between_steps
from tmixcli.checkpoints import check as _check_between_steps
from tmixcli.errors import TmixError
from tmixcli.kvcache import cache_kw, growing_cache
from tmixcli.models import decoder_layers
from tmixcli.prompt import Tokenizer
from tmixcli.stdout import is_terminal



class NonFiniteOutput(TmixError):
    """The first logits hold NaN or inf, so every answer token would be noise (often an empty answer)."""


@contextmanager
def stoppable_layers(model: torch.nn.Module, ahead: int = 2):
    """Run the between_steps checks before each decoder layer, so a prefill can stop between two layers. On a GPU
    the host would queue a whole prefill long before it runs: it waits there until at most `ahead` layers are queued."""
    layers = decoder_layers(model)
    if not between_steps or layers is None:
        yield
        return
    queued: list[torch.cuda.Event] = []

    def gate(layer: torch.nn.Module, _args) -> None:  # a pre-hook that returns a value would replace the inputs
        param = next(layer.parameters(), None)
        if param is not None and param.device.type == "cuda":
            queued.append(torch.cuda.Event())
            queued[-1].record(torch.cuda.current_stream(param.device))
            if len(queued) > ahead:
                queued.pop(0).synchronize()
        _check_between_steps()

    handles = [layer.register_forward_pre_hook(gate) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


PROGRESS_AFTER_S = 2.0  # a prefill shorter than this shows no bar (at a terminal) and no line (elsewhere)


@contextmanager
def layer_progress(model: torch.nn.Module, total_steps: int, enabled: bool = True, n_tokens: int = 0):
    """Each decoder layer's forward hook shows how a prefill of `n_tokens` goes, once it has taken PROGRESS_AFTER_S:
    at a terminal a tqdm bar; elsewhere (a log file) one status line, "prefilling N tokens ...", instead."""
    layers = decoder_layers(model)
    if not enabled or layers is None:
        yield
        return
    if is_terminal(sys.stderr):
        from tqdm import tqdm

        cols, rows = _terminal_size(sys.stderr)
        bar = tqdm(total=total_steps * len(layers), desc="prefill", unit="layer", delay=PROGRESS_AFTER_S,
                   file=sys.stderr, leave=False, ncols=cols, nrows=rows,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        close = bar.close

        def tick(*_) -> None:  # a hook that returns a value would replace the layer's output
            bar.update(1)
    else:
        start, said = time.monotonic(), []

        def tick(*_) -> None:
            if not said and time.monotonic() - start >= PROGRESS_AFTER_S:
                said.append(True)
                print(f"tmix: prefilling {n_tokens} tokens ...", file=sys.stderr, flush=True)
        close = None
    handles = [layer.register_forward_hook(tick) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        if close is not None:
            close()


def _terminal_size(stream: object) -> tuple[int, int]:
    """The bar's width and the screen's height. A terminal that reports no size (0x0: a pty nobody sized, as `script`
    opens one) gets 80x24: tqdm would take its -1x-1 as "no room" and draw nothing at all."""
    try:
        cols, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        cols = rows = 0
    return (cols if cols > 0 else 80) - 1, rows if rows > 0 else 24


def auto_chunk_size(model: torch.nn.Module, n_tokens: int, headroom: float = 0.85) -> int | None:
    """None (one shot) when the prefill fits the GPU's free memory, else the largest power-of-two chunk that does."""
    if model.device.type != "cuda":
        return None
    cfg = model.config
    el = torch.finfo(model.dtype).bits // 8
    heads, kv_heads = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_per_token = cfg.num_hidden_layers * 2 * kv_heads * head_dim * el
    # live activations of one layer per token: residual, normed (fp32 upcast), q, attn out, 3 MLP intermediates
    act_per_token = el * (4 * cfg.hidden_size + heads * head_dim) + 4 * cfg.hidden_size + 3 * el * cfg.intermediate_size
    free = torch.cuda.mem_get_info(model.device)[0] * headroom
    budget = free - n_tokens * kv_per_token
    if n_tokens * act_per_token <= budget:
        return None
    chunk = 1 << 20
    while chunk > 256 and chunk * act_per_token > budget:
        chunk //= 2
    return chunk


RowsCallback = Callable[[int, torch.Tensor, torch.Tensor, int], None]


@contextmanager
def rows_done(model: torch.nn.Module, cache: DynamicCache, span: list[int], on_rows: RowsCallback | None):
    """Call on_rows(layer, keys, values, start) as each decoder layer finishes the rows span[0]:span[1]
    (keys/values: views [1, Hkv, n, D] of the cache, final from then on): kvwrite saves them meanwhile."""
    layers = decoder_layers(model)
    if on_rows is None or layers is None or len(layers) != len(cache.layers):
        yield
        return

    def hook(i: int):
        def done(*_) -> None:  # a hook that returns a value would replace the layer's output
            layer = cache.layers[i]
            a, b = span
            on_rows(i, layer.keys[..., a:b, :], layer.values[..., a:b, :], a)
        return done

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def prefill(model: torch.nn.Module, prefix_ids: list[int], chunk_size: int | None = None,
            progress: bool = False, cache: DynamicCache | None = None,
            on_rows: RowsCallback | None = None) -> tuple[DynamicCache, torch.Tensor]:
    """Run the prefix (triangle layers see the TriangleMix pattern); returns the KV cache and last logits [V].

    `cache`: the prefix's first rows, already computed (reuse.py); only the rest is run, in global positions.
    `on_rows`: told about each layer's new rows as soon as that layer has computed them (see rows_done)."""
    device = model.device
    ids = torch.tensor([prefix_ids], device=device)  # ids: [1, T]
    total = ids.shape[1]
    step = chunk_size or auto_chunk_size(model, total) or total
    done = 0 if cache is None else cache.get_seq_length()
    if cache is None:
        cache = growing_cache(model.config, expected=total)  # appends in place: no K/V copy per decoded token
    n_chunks = -(-(total - done) // step)
    span = [done, done]
    with layer_progress(model, n_chunks, progress, total - done), rows_done(model, cache, span, on_rows), \
            stoppable_layers(model):
        for start in range(done, total, step):
            _check_between_steps()
            span[:] = [start, min(start + step, total)]
            out = model(input_ids=ids[:, start:start + step], **cache_kw(model, cache), use_cache=True,
                        logits_to_keep=1, tmix_total_len=total)
    return cache, out.logits[0, -1].float()


@torch.inference_mode()
def extend(model: torch.nn.Module, cache: DynamicCache, ids: list[int]) -> torch.Tensor:
    """Append tokens to the cache with dense attention; returns the last position's logits [V] in fp32."""
    x = torch.tensor([ids], device=model.device)
    out = model(input_ids=x, **cache_kw(model, cache), use_cache=True, logits_to_keep=1)
    return out.logits[0, -1].float()


def choose(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> int:
    """Greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def stop_ids(tokenizer: Tokenizer, model: torch.nn.Module) -> set[int]:
    """End-of-turn and end-of-text ids of this model family."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if e is not None:
            ids.add(int(e))
    vocab = tokenizer.get_vocab()
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "</s>"):
        if tok in vocab:
            ids.add(vocab[tok])
    return ids


def generate_ids(model: torch.nn.Module, cache: DynamicCache, suffix_ids: list[int], stops: set[int],
                 max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, on_first: Callable[[], None] | None = None) -> Iterator[int]:
    """Run the suffix on top of the cache, then decode token by token until a stop id (not yielded)."""
    gen = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
    with stoppable_layers(model):  # a long question is a prefill of its own
        logits = extend(model, cache, suffix_ids)
    if not bool(torch.isfinite(logits).all()):  # a damaged KV file or an overflowing dtype: no token means anything
        raise NonFiniteOutput("the model's output is not a number (NaN or inf)")
    stepper = None  # steps after the first token: a CUDA graph replay (graph_decode) or a direct CPU step (cpu_decode)
    try:
        for i in range(max_new_tokens):
            _check_between_steps()
            tok = choose(logits, temperature, top_p, gen)
            if i == 0 and on_first is not None:
                on_first()
            if tok in stops:
                return
            yield tok
            if i + 1 < max_new_tokens:
                if i == 0:
                    stepper = graph_decode.start(model, cache, max_new_tokens - 1) or cpu_decode.start(model, cache)
                logits = stepper.step(tok) if stepper is not None else extend(model, cache, [tok])
    finally:
        if stepper is not None:
            stepper.close()


def stream_text(tokenizer: Tokenizer, token_iter: Iterable[int]) -> Iterator[str]:
    """Incremental detokenisation: yields printable text deltas (holds back partial UTF-8 sequences)."""
    ids: list[int] = []
    shown = ""
    for tok in token_iter:
        ids.append(tok)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue
        yield text[len(shown):]
        shown = text
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if len(text) > len(shown):
        yield text[len(shown):]
