"""KV cache layers with room to grow, and caches of different rows stacked into one.

A decoding step writes its token's keys and values in place instead of copying
the whole cache, as transformers' DynamicLayer does with torch.cat on every step (for 16 rows of 150-token
conversations, tens of milliseconds of each step on a CPU).

GrowingLayer keeps keys and values at the front of buffers with SPARE positions free at the end; `keys` and `values`
are views of the filled part, so attention reads the very same numbers. Assigning `keys` or `values` (live_batch.py
joins, selects and trims rows by assignment, as transformers' own batch_select_indices does) starts a new buffer of
exactly that tensor; the next update makes room again. `growing_cache` is a DynamicCache of GrowingLayers, for a
model whose cache has full-attention layers only (`plain_layers`); other models keep their own cache.

`stack_rows` puts the rows of several such caches into one (rows joining a live batch, prefill passes of different
lengths): each part is left-padded with masked positions to the widest, so every row keeps its own positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

SPARE = 64  # positions of room made at a time: one copy every SPARE steps instead of every step


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values grow in place (see the module docstring)."""

    def __init__(self):
        self._keys = self._values = None
        self._length = self._values_length = 0  # filled positions (set apart: keys and values are assigned apart)
        super().__init__()

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._keys is None else self._keys[..., : self._length, :]

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._keys, self._length = tensor, _filled(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._values is None else self._values[..., : self._values_length, :]

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._values, self._values_length = tensor, _filled(tensor)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True
            self._keys = self._values = None
            self._length = self._values_length = 0
        new = key_states.shape[-2]
        if self._keys is None or self._keys.shape[-2] < self._length + new:
            self._make_room(key_states, value_states, self._length + new + SPARE)
        end = self._length + new
        self._keys[..., self._length : end, :] = key_states
        self._values[..., self._length : end, :] = value_states
        self._length = self._values_length = end
        return self.keys, self.values

    def _make_room(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        """New buffers of `capacity` positions holding what is filled so far."""
        keys = key_states.new_zeros(*key_states.shape[:-2], capacity, key_states.shape[-1])
        values = value_states.new_zeros(*value_states.shape[:-2], capacity, value_states.shape[-1])
        if self._keys is not None and self._length:
            keys[..., : self._length, :] = self._keys[..., : self._length, :]
            values[..., : self._length, :] = self._values[..., : self._length, :]
        self._keys, self._values = keys, values


def _filled(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None or tensor.dim() < 2 else tensor.shape[-2]


def pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """`t` with n zero (masked) positions added at the start of dimension `dim` (-1 or -2)."""
    if not n:
        return t
    return F.pad(t, (n, 0)) if dim == -1 else F.pad(t, (0, 0, n, 0))


def stack_rows(caches: list, masks: list[torch.Tensor]) -> tuple:
    """The rows of `caches` (full-attention caches, with masks [rows, width]) in one cache and mask, in order, each
    part left-padded to the widest. The first cache is reused."""
    width = max(mask.shape[1] for mask in masks)
    pads = [width - mask.shape[1] for mask in masks]
    for layers in zip(*(cache.layers for cache in caches)):
        keys = torch.cat([pad_left(layer.keys, n, -2) for layer, n in zip(layers, pads)])
        values = torch.cat([pad_left(layer.values, n, -2) for layer, n in zip(layers, pads)])
        layers[0].keys, layers[0].values = keys, values
    return caches[0], torch.cat([pad_left(mask, n, -1) for mask, n in zip(masks, pads)])


def plain_layers(cache) -> bool:
    """Whether every layer of `cache` is a full-attention one (columns can be moved, joined and reused)."""
    layers = getattr(cache, "layers", None)
    return layers is not None and all(type(layer) in (DynamicLayer, GrowingLayer) for layer in layers)


def growing_cache(config) -> DynamicCache | None:
    """An empty DynamicCache of GrowingLayers for a model with `config`, or None when its layers are not all full
    attention (sliding windows: the model makes its own cache)."""
    cache = DynamicCache(config=config)
    if not plain_layers(cache):
        return None
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache
