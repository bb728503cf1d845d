"""KV cache layers with room to grow (steering/kv_buffer.py): the same keys and values as transformers' DynamicLayer
through updates, growth, assignment and row selection, and the same logits through a model."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from steering.kv_buffer import SPARE, GrowingLayer, growing_cache, plain_layers
from tests.conftest import build_tiny


def chunks(seed: int, sizes, rows: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 2, n, 4, generator=gen), torch.randn(rows, 2, n, 4, generator=gen)) for n in sizes]


def test_updates_hold_what_dynamic_layer_holds_past_every_growth():
    growing, dynamic = GrowingLayer(), DynamicLayer()
    for keys, values in chunks(0, [5] + [1] * (2 * SPARE + 3)):
        got, want = growing.update(keys, values), dynamic.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert growing.get_seq_length() == dynamic.get_seq_length() == 5 + 2 * SPARE + 3
    assert growing._keys.shape[-2] >= growing.get_seq_length()  # the view hides the spare room


def test_assigned_rows_and_selected_rows_go_on_growing():
    growing, dynamic = GrowingLayer(), DynamicLayer()
    steps = chunks(1, [4, 1, 1])
    for keys, values in steps:
        growing.update(keys, values), dynamic.update(keys, values)
    for layer in (growing, dynamic):
        layer.batch_select_indices(torch.tensor([2, 0]))  # rows leave
        layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, 3, 0))  # padded on the left, as a join does
        layer.values = torch.nn.functional.pad(layer.values, (0, 0, 3, 0))
    for keys, values in chunks(2, [1, 1, 1], rows=2):
        got, want = growing.update(keys, values), dynamic.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert growing.get_seq_length() == 3 + 6 + 3


def test_a_growing_cache_only_for_full_attention_models(tokenizer):
    from transformers import Qwen2Config

    plain = build_tiny(Qwen2Config, tokenizer, "plain")
    sliding = build_tiny(
        Qwen2Config, tokenizer, "sliding", use_sliding_window=True, sliding_window=8, max_window_layers=2
    )
    cache = growing_cache(plain.model.config)
    assert plain_layers(cache) and all(type(layer) is GrowingLayer for layer in cache.layers)
    assert growing_cache(sliding.model.config) is None
    assert not plain_layers(DynamicCache(config=sliding.model.config))


def test_a_model_reads_the_same_logits_through_either_cache(tiny_qwen2):
    ids = torch.tensor([[5, 17, 300, 42, 7, 99], [8, 8, 9, 1000, 3, 2]])
    caches = [growing_cache(tiny_qwen2.model.config), None]
    outs = []
    for cache in caches:
        with torch.inference_mode():
            out = tiny_qwen2.model(input_ids=ids, past_key_values=cache, use_cache=True)
            logits, cache = [out.logits[:, -1]], out.past_key_values
            for _ in range(SPARE + 5):  # past one growth
                token = logits[-1].argmax(-1, keepdim=True)
                out = tiny_qwen2.model(input_ids=token, past_key_values=cache, use_cache=True)
                logits.append(out.logits[:, -1])
        outs.append(torch.stack(logits))
    assert torch.equal(outs[0], outs[1])
