"""Generation: one batched pass for plain and steered rows, streaming, chat settings, concurrency, cleanup."""

from __future__ import annotations

import gc
import threading

import pytest
import torch

from steering.generate import (
    GenerationSettings,
    Utf8SafeDecoder,
    generate_batch,
    prepare_prompt,
    stream_batch,
    stream_rows,
)
from steering.steer import Steering
from steering.vectors import SteeringVector
from tests.helpers import hooks_left

GREEDY = GenerationSettings(max_new_tokens=12)
CHAT = [{"role": "user", "content": "What should I cook for dinner tonight?"}]


@pytest.fixture(scope="module")
def vector(bundled) -> SteeringVector:
    """A real gal vector from a handful of pairs on the bundled model (layers 8-12)."""
    from steering.extract import extract

    pos = [
        "OMG, like, this cafe is totally iconic, bestie!",
        "Ugh, I literally can't even with this homework.",
        "Like, the vibes at this party are sooo good!",
        "Babe, this outfit is literally everything, slay!",
    ]
    neg = [
        "This cafe is well known in the city.",
        "This homework is very difficult for me.",
        "The atmosphere at this party is pleasant.",
        "This outfit looks very good on you.",
    ]
    result = extract(bundled, pos, neg, layers="8-12", heldout_fraction=0.0)
    return SteeringVector(result.directions, {"model": "bundled"}, result.stats)


@pytest.mark.slow
def test_rows_equal_their_solo_runs(bundled, vector):
    steering = Steering(vector, "8-12", 0.0)
    batch = generate_batch(bundled, CHAT, [0.0, 3.0, -2.0], steering, GREEDY)
    for strength, text in zip([0.0, 3.0, -2.0], batch.texts):
        solo = generate_batch(bundled, CHAT, [strength], steering, GREEDY)
        assert solo.texts[0] == text
    assert batch.texts[0] != batch.texts[1]
    assert hooks_left(bundled.model) == 0


@pytest.mark.slow
def test_strength_zero_is_the_plain_model(bundled, vector):
    steered = generate_batch(bundled, CHAT, [0.0], Steering(vector, "8-12", 0.0), GREEDY)
    plain = generate_batch(bundled, CHAT, [0.0], None, GREEDY)
    assert steered.texts == plain.texts


@pytest.mark.slow
def test_stream_concatenation_equals_final_decode(bundled, vector):
    steering = Steering(vector, "8-12", 0.0)
    frames = list(stream_batch(bundled, CHAT, [0.0, 3.0], steering, GREEDY))
    final = generate_batch(bundled, CHAT, [0.0, 3.0], steering, GREEDY)
    assert frames[-1] == final.texts
    for row in range(2):  # each frame extends the previous one
        for before, after in zip(frames, frames[1:]):
            assert after[row].startswith(before[row])
    assert len(frames) > 3
    assert hooks_left(bundled.model) == 0


def test_japanese_stream_never_shows_broken_characters(tokenizer):
    text = "あーしマジでウケるんだけど！ギャル語ってめっちゃエモいじゃん🥺✨"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) / 2  # byte-level BPE really splits these characters
    decoder, pieces = Utf8SafeDecoder(tokenizer), []
    for token in ids:
        pieces.append(decoder.push(token))
    pieces.append(decoder.flush())
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert sum(1 for p in pieces if p == "") > 0  # some tokens were held back


@pytest.mark.slow
def test_abandoned_stream_removes_hooks_and_frees_the_model(bundled, vector):
    steering = Steering(vector, "8-12", 3.0)
    stream = stream_batch(bundled, CHAT, [0.0, 3.0], steering, GenerationSettings(max_new_tokens=200))
    next(stream)
    next(stream)
    stream.close()  # the client went away
    assert hooks_left(bundled.model) == 0
    stream = stream_batch(bundled, CHAT, [0.0, 3.0], steering, GREEDY)
    next(stream)
    del stream  # dropped without close
    gc.collect()
    assert hooks_left(bundled.model) == 0
    assert generate_batch(bundled, CHAT, [0.0], None, GREEDY).texts[0]


@pytest.mark.slow
def test_exception_inside_generation_leaves_no_hook(bundled, vector, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(bundled.model, "generate", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        generate_batch(bundled, CHAT, [0.0, 2.0], Steering(vector, "8-12", 0.0), GREEDY)
    with pytest.raises(RuntimeError, match="generation failed"):
        list(stream_batch(bundled, CHAT, [0.0, 2.0], Steering(vector, "8-12", 0.0), GREEDY))
    monkeypatch.undo()
    assert hooks_left(bundled.model) == 0


@pytest.mark.slow
def test_concurrent_threads_do_not_see_each_others_steering(bundled, vector):
    steering = Steering(vector, "8-12", 0.0)
    strengths = [0.0, 4.0, -3.0, 2.0]
    solo = {s: generate_batch(bundled, CHAT, [s], steering, GREEDY).texts[0] for s in strengths}
    results, barrier = {}, threading.Barrier(len(strengths))

    def run(s):
        barrier.wait()
        results[s] = generate_batch(bundled, CHAT, [s], steering, GREEDY).texts[0]

    threads = [threading.Thread(target=run, args=(s,)) for s in strengths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == solo
    assert hooks_left(bundled.model) == 0


@pytest.mark.slow
def test_same_seed_same_sampled_reply(bundled):
    settings = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=123)
    a = generate_batch(bundled, CHAT, [0.0], None, settings).texts[0]
    b = generate_batch(bundled, CHAT, [0.0], None, settings).texts[0]
    c = generate_batch(
        bundled, CHAT, [0.0], None, GenerationSettings(max_new_tokens=12, temperature=1.0, seed=7)
    ).texts[0]
    assert a == b
    assert a != c


def test_multi_turn_and_system_prompt_reach_the_template(tiny_qwen2):
    history = [
        {"role": "user", "content": "My name is Aiko."},
        {"role": "assistant", "content": "Nice to meet you!"},
        {"role": "user", "content": "What is my name?"},
    ]
    settings = GenerationSettings(max_new_tokens=4, system_prompt="Answer like a gal.")
    prompt = prepare_prompt(tiny_qwen2, history, settings)
    text = tiny_qwen2.tokenizer.decode(prompt.input_ids)
    assert "Answer like a gal." in text and "My name is Aiko." in text and "Nice to meet you!" in text
    assert text.rstrip().endswith("assistant")


def test_long_prompt_is_cut_from_the_left_with_a_notice(tiny_qwen2):
    long = [{"role": "user", "content": "word " * 2000 + "final question?"}]
    settings = GenerationSettings(max_new_tokens=8)
    prompt = prepare_prompt(tiny_qwen2, long, settings)
    assert prompt.notice and "kept the last" in prompt.notice
    assert len(prompt.input_ids) == tiny_qwen2.context_length - 8
    result = generate_batch(tiny_qwen2, long, [0.0], None, settings)
    assert result.notice == prompt.notice
    heard = []
    frames = list(stream_batch(tiny_qwen2, long, [0.0], None, settings, on_notice=heard.append))
    assert heard == [prompt.notice] and frames[-1] == result.texts


@pytest.mark.slow
def test_rows_can_continue_their_own_conversations(bundled, vector):
    steering = Steering(vector, "8-12", 0.0)
    plain_history = [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me about your day."},
    ]
    steered_history = [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "OMG hi bestie!!"},
        {"role": "user", "content": "Tell me about your day."},
    ]
    frames = list(stream_rows(bundled, [plain_history, steered_history], [0.0, 3.0], steering, GREEDY))
    solo_plain = generate_batch(bundled, plain_history, [0.0], None, GREEDY).texts[0]
    assert frames[-1][0] == solo_plain  # the shorter row is left-padded; greedy text is unchanged
    assert frames[-1][1] and hooks_left(bundled.model) == 0


def test_empty_prompt_is_a_clear_error(tiny_qwen2):
    with pytest.raises(ValueError, match="empty prompt"):
        generate_batch(tiny_qwen2, [{"role": "user", "content": "   "}], [0.0], None, GREEDY)


def test_nonzero_strength_without_vector_is_refused(tiny_qwen2):
    with pytest.raises(ValueError, match="need a vector"):
        generate_batch(tiny_qwen2, CHAT, [0.0, 1.0], None, GREEDY)


def test_bf16_model_is_steered_in_its_own_dtype(tokenizer):
    from transformers import Qwen2Config

    from tests.conftest import build_tiny
    from tests.test_steer import random_vector

    tiny = build_tiny(Qwen2Config, tokenizer, "tiny-bf16", dtype=torch.bfloat16)
    vec = random_vector(64, [1, 2])
    out = generate_batch(
        tiny, CHAT, [0.0, 5.0], Steering(vec, [1, 2], 0.0, "raw"), GenerationSettings(max_new_tokens=6)
    )
    assert len(out.texts) == 2 and hooks_left(tiny.model) == 0
