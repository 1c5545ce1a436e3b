"""Each eval case's KV for dense and every trimix method, sharing the work that is exact to share: the haystack
prefix's KV (SharedPrefix) and, below a start layer, the dense run's layers (case_caches)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tmixcli.config import AttentionConfig


# Decoder stacks whose forward feeds `inputs_embeds` unchanged into the first layer (no embedding scale): a subset
# of modelcheck.FAMILIES, kept apart since a new family may scale them (Granite, Gemma); others run a full prefill.
REUSE_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


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
    from tmixcli.kvcache import cache_kw

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
            model(**feed, **cache_kw(model, cache), use_cache=True, logits_to_keep=1, tmix_total_len=total)
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
