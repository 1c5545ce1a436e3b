"""A KV cache that appends in place: each layer keeps a buffer with spare room instead of re-concatenating.

transformers' DynamicLayer copies a layer's whole K/V on every decoded token (`torch.cat`); at long contexts that
copy costs as much as the attention itself. GrowingLayer writes new tokens into spare rows of a buffer and exposes
`keys`/`values` as views of its first `n` rows, so rewinding (slicing `keys`) and saving work unchanged.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

HEADROOM = 1024  # spare rows after a prefill or a load: a question and its answer fit without a regrow


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose `update` writes into spare buffer rows; regrows by max(HEADROOM, n/8) when full."""

    def __init__(self, expected: int = 0) -> None:
        super().__init__()
        self.expected = expected  # tokens the first update should make room for (a chunked prefill's total)
        self._kbuf: torch.Tensor | None = None  # [B, Hkv, capacity, D]
        self._vbuf: torch.Tensor | None = None

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, device: torch.device | None = None,
                headroom: int | None = None) -> GrowingLayer:
        """A layer holding these keys/values, copied into a buffer on `device` (default: theirs) with spare rows."""
        layer = cls()
        layer.dtype, layer.device = keys.dtype, device or keys.device
        layer._alloc(keys, values, keys.shape[-2] + (HEADROOM if headroom is None else headroom))
        layer.is_initialized = True
        return layer

    @classmethod
    def empty(cls, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device,
              headroom: int | None = None) -> GrowingLayer:
        """A layer of shape [B, Hkv, n, D] whose rows the caller fills (kvread writes a loaded file into it)."""
        layer = cls()
        layer.dtype, layer.device = dtype, device
        cap = shape[2] + (HEADROOM if headroom is None else headroom)
        layer._kbuf = torch.empty((*shape[:2], cap, shape[3]), dtype=dtype, device=device)
        layer._vbuf = torch.empty_like(layer._kbuf)
        layer.keys, layer.values = layer._kbuf[:, :, :shape[2]], layer._vbuf[:, :, :shape[2]]
        layer.is_initialized = True
        return layer

    def _alloc(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """New buffers of `capacity` rows holding `keys`/`values` (a regrow copies the rows once)."""
        n = keys.shape[-2]
        shape = (*keys.shape[:2], capacity, keys.shape[-1])
        self._kbuf = torch.empty(shape, dtype=keys.dtype, device=self.device)
        self._vbuf = torch.empty(shape, dtype=values.dtype, device=self.device)
        self._kbuf[:, :, :n].copy_(keys, non_blocking=True)
        self._vbuf[:, :, :n].copy_(values, non_blocking=True)
        self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]

    def _owns_keys(self) -> bool:
        """Whether `keys`/`values` are still prefixes of the buffers (other cache methods may replace them)."""
        return (self._kbuf is not None and self.keys is not None and self.keys.data_ptr() == self._kbuf.data_ptr()
                and self.keys.stride() == self._kbuf.stride() and self.values.data_ptr() == self._vbuf.data_ptr()
                and self.values.stride() == self._vbuf.stride())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append key/value states [B, Hkv, new, D]; returns the layer's keys/values so far (views)."""
        if key_states.requires_grad and torch.is_grad_enabled():  # autograd through the cache: never in place
            self._kbuf = self._vbuf = None
            return super().update(key_states, value_states, *args, **kwargs)
        new = key_states.shape[-2]
        if not self.is_initialized or self.keys is None or self.keys.numel() == 0:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True
            self._alloc(key_states, value_states, max(self.expected, new) + HEADROOM)
            return key_states, value_states  # contiguous inputs: kernels may take their fast paths
        n = self.keys.shape[-2]
        need = n + new
        frozen = self._kbuf is not None and self._kbuf.is_inference() and not torch.is_inference_mode_enabled()
        if frozen or not self._owns_keys() or need > self._kbuf.shape[-2]:  # frozen: made under inference_mode
            self._alloc(self.keys, self.values, need + max(HEADROOM, need // 8))
        self._kbuf[:, :, n:need].copy_(key_states)
        self._vbuf[:, :, n:need].copy_(value_states)
        self.keys, self.values = self._kbuf[:, :, :need], self._vbuf[:, :, :need]
        return self.keys, self.values

    def reserve(self, rows: int) -> None:
        """Make room for `rows` tokens in all (one regrow now, none while decoding)."""
        if self._kbuf is None or not self._owns_keys() or self._kbuf.shape[-2] < rows:
            self._alloc(self.keys, self.values, max(rows, self.keys.shape[-2] + HEADROOM))

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        super().reset()


def growing_cache(config, expected: int = 0) -> DynamicCache:
    """DynamicCache for `config` whose full-attention layers append in place (sliding layers stay as they are);
    the first update allocates room for `expected` tokens plus HEADROOM."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(expected) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache



def cache_kw(model: torch.nn.Module, cache: DynamicCache | None) -> dict[str, DynamicCache | None]:
    """The forward keyword that passes `cache` to `model`: `cache` since transformers 5.24, `past_key_values` before
    (which 5.24 still takes, with a FutureWarning on every call)."""
    return {_cache_name(type(model)): cache}


@functools.cache
def _cache_name(cls: type) -> str:
    """Which of the two names `cls.forward` takes."""
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"
