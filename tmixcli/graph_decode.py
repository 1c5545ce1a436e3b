"""Decode steps replayed from a CUDA graph: one captured forward of one token over the in-place KV buffers.

transformers' eager decode step launches a few hundred small kernels: for an 8B model ~23 ms of host time per
token, more than the GPU needs. A graph bakes in every shape, so during graph decoding each layer writes its K/V
at a device-side position into its GrowingLayer buffer and attends over the whole buffer with
`decode_attention_triton`, which reads the valid length on the device. Off with TMIX_CUDA_GRAPHS=0.
"""

from __future__ import annotations


import torch
from transformers.cache_utils import DynamicLayer

from tmixcli.envflags import switch
from tmixcli.kvcache import GrowingLayer, cache_kw

MIN_TOKENS = 8  # below this many decode steps the capture (~2 eager steps) does not pay


class StepLayer(DynamicLayer):
    """Stands in for a GrowingLayer while a graph decodes: writes at `pos`, returns the whole buffers."""

    def __init__(self, layer: GrowingLayer, pos: torch.Tensor) -> None:
        super().__init__()
        self.kbuf, self.vbuf, self.pos, self.n = layer._kbuf, layer._vbuf, pos, layer.keys.shape[-2]
        self.keys, self.values = layer.keys, layer.values
        self.dtype, self.device, self.is_initialized = layer.dtype, layer.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        self.kbuf.index_copy_(2, self.pos, key_states)  # key_states: [1, Hkv, 1, D] -> row pos
        self.vbuf.index_copy_(2, self.pos, value_states)
        return self.kbuf, self.vbuf

    def get_seq_length(self) -> int:
        return self.n  # host-side shapes only; positions come from `pos`


def usable(model: torch.nn.Module, cache) -> bool:
    """Graph decoding needs one CUDA device, in-place layers on it and no sliding-window attention."""
    if not switch("TMIX_CUDA_GRAPHS") or model.device.type != "cuda":
        return False
    if getattr(model.config, "sliding_window", None) is not None and getattr(model.config, "use_sliding_window",
                                                                          True):
        return False
    layers = getattr(cache, "layers", [])
    return bool(layers) and all(isinstance(x, GrowingLayer) and x.is_initialized and x.device == model.device
                                for x in layers)


class GraphDecoder:
    """Captures one decode step of `model` over `cache` (room for `steps` more tokens); `step` replays it."""

    def __init__(self, model: torch.nn.Module, cache, steps: int) -> None:
        self.model, self.cache, self.layers = model, cache, list(cache.layers)
        self.n = cache.get_seq_length()
        device = model.device
        with torch.inference_mode():
            for layer in self.layers:
                layer.reserve(self.n + steps + 1)
            self.pos = torch.full((1,), self.n, dtype=torch.int64, device=device)
            self.tok = torch.zeros((1, 1), dtype=torch.int64, device=device)
            cache.layers = [StepLayer(layer, self.pos) for layer in self.layers]
            try:
                self._capture()
            except BaseException:
                cache.layers = self.layers
                raise

    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.tok, position_ids=self.pos.view(1, 1), **cache_kw(self.model, self.cache),
                         use_cache=True, logits_to_keep=1, tmix_decode_pos=self.pos)
        return out.logits  # logits: [1, 1, V]

    def _capture(self) -> None:
        side = torch.cuda.Stream(self.model.device)
        side.wait_stream(torch.cuda.current_stream(self.model.device))
        with torch.cuda.stream(side):  # warm-up (Triton compiles, cuBLAS picks kernels); rows at pos get rewritten
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream(self.model.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: kvwrite's thread may be copying a KV file out on its own stream meanwhile
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = self._forward()

    def step(self, token: int) -> torch.Tensor:
        """Feed `token` at the next position; returns that position's logits [V] in fp32."""
        with torch.inference_mode():
            self.tok.fill_(token)
            self.pos.fill_(self.n)
            self.graph.replay()
            self.n += 1
            return self.logits[0, -1].to(torch.float32, copy=True)

    def close(self) -> None:
        """Give the cache back its in-place layers, now holding every decoded token."""
        for layer in self.layers:
            layer.keys, layer.values = layer._kbuf[:, :, :self.n], layer._vbuf[:, :, :self.n]
        self.cache.layers = self.layers
        self.graph = None


def start(model: torch.nn.Module, cache, steps: int) -> GraphDecoder | None:
    """A GraphDecoder when `steps` decode steps are worth one and the setup allows it, else None (decode eagerly)."""
    if steps < MIN_TOKENS or not usable(model, cache):
        return None
    try:
        return GraphDecoder(model, cache, steps)
    except Exception:  # noqa: BLE001 - a failed capture (compile error, OOM, ...) must not fail the answer
        return None
