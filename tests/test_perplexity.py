"""Batched perplexity under the plain model: each row scores as it would alone."""

from __future__ import annotations

import math

import pytest

from steering.perplexity import median, perplexities

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "How do I keep my plants alive in a small, dark apartment?"}],
    [{"role": "user", "content": "Tell me a joke."}],
]
REPLIES = ["Hello there, how can I help?", "Water them weekly and pick shade plants.", ""]


def test_batched_rows_match_solo_rows_and_empty_is_nan(tiny_qwen2):
    together = perplexities(tiny_qwen2, CONVERSATIONS, REPLIES, batch_size=3)
    alone = [perplexities(tiny_qwen2, [c], [r])[0] for c, r in zip(CONVERSATIONS, REPLIES)]
    assert together[:2] == pytest.approx(alone[:2], rel=1e-4)
    assert math.isnan(together[2]) and math.isnan(alone[2])
    assert all(v > 1 for v in together[:2])


def test_token_ids_and_text_give_the_same_value(tiny_qwen2):
    ids = tiny_qwen2.tokenizer(REPLIES[1], add_special_tokens=False)["input_ids"]
    by_ids = perplexities(tiny_qwen2, CONVERSATIONS[1:2], [ids])[0]
    assert by_ids == pytest.approx(perplexities(tiny_qwen2, CONVERSATIONS[1:2], REPLIES[1:2])[0], rel=1e-6)


def test_mismatched_lengths_are_refused(tiny_qwen2):
    with pytest.raises(ValueError, match="2 conversations for 1 replies"):
        perplexities(tiny_qwen2, CONVERSATIONS[:2], REPLIES[:1])


def test_median_ignores_nan_and_inf():
    assert median([3.0, math.nan, 1.0, math.inf, 2.0]) == 2.0
    assert median([1.0, 4.0]) == 2.5
    assert median([math.nan]) is None
