"""Per-row steering (steering/row_steer.py): rows of one batch with their own vectors, layers, strengths, scales,
modes, positions and half-lives give exactly each row's solo steer.py run; plain rows are untouched; hooks go."""

from __future__ import annotations

import threading

import pytest
import torch

from steering.capture import block_output
from steering.generate import GenerationSettings, generate_rows
from steering.row_steer import generate_mixed, plan_row, row_steer
from steering.steer import Steering, steer
from steering.vectors import SteeringVector
from tests.helpers import hooks_left

GREEDY = GenerationSettings(max_new_tokens=12)
# prompts of different lengths: the batch is left-padded
CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Tell me something about cooking dinner tonight, please."}],
    [{"role": "user", "content": "What is love?"}],
    [{"role": "user", "content": "Hello there, how are you doing today, my friend?"}],
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": "Explain the weather."}],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "A joke, please."},
    ],
]


def clamp_vector(hidden: int, layers, seed: int, base: float, top: float) -> SteeringVector:
    """A random unit-direction vector with the stats every scale and mode needs (clamp's projections too)."""
    gen = torch.Generator().manual_seed(seed)
    directions, stats = {}, {}
    for layer in layers:
        v = torch.randn(hidden, generator=gen)
        directions[layer] = v / v.norm()
        stats[layer] = {
            "mean_diff_norm": 2.0 + layer,
            "residual_norm": 10.0,
            "baseline_projection": base,
            "gyaru_projection": top,
        }
    return SteeringVector(directions, {"model": "tiny"}, stats)


@pytest.fixture(scope="module")
def vectors():
    return clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0), clamp_vector(64, [0, 1, 2, 3], 2, 0.5, 3.0)


def mixed_rows(vectors):
    a, b = vectors
    return [
        None,
        Steering(a, "1-2", 3.0, "calibrated", "all", "add"),
        Steering(b, [0, 3], -2.0, "raw", "generated", "norm_preserving", 4.0),
        Steering(a, "2", 1.5, "calibrated", "last", "clamp"),
        Steering(b, "0-3", 5.0, "raw", "all", "clamp", 3.0),
        None,
        Steering(a, "0,3", 6.0, "raw", "last", "add", 2.0),
    ]


def solo(loaded, conversation, steering, settings=GREEDY) -> str:
    strength = steering.strength if steering is not None else 0.0
    return generate_rows(loaded, [conversation], [strength], steering, settings).texts[0]


def test_mixed_batch_rows_equal_their_solo_runs(tiny_qwen2, vectors):
    """Two vectors, different layer sets, scales, modes, positions and half-lives, plain rows, left padding."""
    rows = mixed_rows(vectors)
    batch = generate_mixed(tiny_qwen2, CONVERSATIONS, rows, GREEDY)
    for conversation, steering, text in zip(CONVERSATIONS, rows, batch.texts):
        assert text == solo(tiny_qwen2, conversation, steering)
    assert hooks_left(tiny_qwen2.model) == 0
    # and the steering did something: steered rows are not their conversation's plain reply
    changed = [text != solo(tiny_qwen2, c, None) for c, s, text in zip(CONVERSATIONS, rows, batch.texts) if s]
    assert sum(changed) >= 4
    assert batch.strengths == [0.0 if s is None else s.strength for s in rows]


def test_same_conversation_many_settings(tiny_qwen2, vectors):
    """One prompt (no padding) under every mode and position, as the app's columns do."""
    a, b = vectors
    rows = [
        Steering(a, "1-3", 2.0, mode="add"),
        Steering(a, "1-3", 2.0, mode="norm_preserving"),
        Steering(a, "1-3", 2.0, mode="clamp"),
        Steering(b, "1", 4.0, apply_to="generated", half_life=1.5),
        None,
        Steering(b, "1", 0.0, mode="clamp"),  # strength 0 clamps nothing: the plain reply
    ]
    conversation = CONVERSATIONS[1]
    batch = generate_mixed(tiny_qwen2, [conversation] * len(rows), rows, GREEDY)
    for steering, text in zip(rows, batch.texts):
        assert text == solo(tiny_qwen2, conversation, steering)
    assert batch.texts[-1] == batch.texts[-2]


def block_outputs(loaded, ids, layer):
    seen = {}

    def record(_module, _inputs, output):
        seen["h"] = block_output(output).clone()  # returns None: the output is left as it is

    handle = loaded.layers[layer].register_forward_hook(record)
    try:
        with torch.inference_mode():
            loaded.model(input_ids=ids)
    finally:
        handle.remove()
    return seen["h"]


def test_plain_rows_and_unsteered_layers_are_untouched(tiny_qwen2, vectors, tokenizer):
    a, b = vectors
    ids = tokenizer(["Hello there, how are you?"] * 3, return_tensors="pt")["input_ids"]
    plain = block_outputs(tiny_qwen2, ids, 1)
    rows = [None, Steering(a, "1", 2.0), Steering(b, "2", 2.0)]
    with row_steer(tiny_qwen2, rows) as hooks:
        assert sorted(hooks) == [1, 2]
        steered = block_outputs(tiny_qwen2, ids, 1)  # registered after the steering hook: sees its output
    assert torch.equal(steered[0], plain[0])  # plain row
    assert not torch.equal(steered[1], plain[1])  # steered at layer 1
    assert torch.equal(steered[2], plain[2])  # steered only at layer 2, so layer 1 is untouched
    with steer(tiny_qwen2, Steering(a, "1", 2.0)):
        reference = block_outputs(tiny_qwen2, ids[:1], 1)
    assert torch.equal(steered[1], reference[0])  # exactly steer.py's push
    assert hooks_left(tiny_qwen2.model) == 0


def test_other_threads_are_not_steered_and_hooks_go_on_error(tiny_qwen2, vectors, tokenizer):
    a, _ = vectors
    ids = tokenizer(["Hello there"] * 2, return_tensors="pt")["input_ids"]
    plain = block_outputs(tiny_qwen2, ids, 1)
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with row_steer(tiny_qwen2, [Steering(a, "1", 5.0), Steering(a, "1", -5.0)]):
            thread = threading.Thread(target=lambda: seen.setdefault("h", block_outputs(tiny_qwen2, ids, 1)))
            thread.start()
            thread.join()
            raise RuntimeError("boom")
    assert torch.equal(seen["h"], plain)
    assert hooks_left(tiny_qwen2.model) == 0


def test_a_batch_of_another_size_is_refused(tiny_qwen2, vectors, tokenizer):
    a, _ = vectors
    ids = tokenizer(["Hello"] * 3, return_tensors="pt")["input_ids"]
    with (
        row_steer(tiny_qwen2, [Steering(a, "1", 1.0), None]),
        pytest.raises(ValueError, match="2 rows met a batch of 3"),
    ):
        with torch.inference_mode():
            tiny_qwen2.model(input_ids=ids)
    assert hooks_left(tiny_qwen2.model) == 0


def test_plan_row_checks_like_steer(tiny_qwen2, vectors):
    a, _ = vectors
    assert plan_row(tiny_qwen2, None) is None
    plan = plan_row(tiny_qwen2, Steering(a, "1-2", 2.0, mode="clamp", apply_to="last", half_life=3.0))
    assert plan.layers == [1, 2] and (plan.strength, plan.mode, plan.apply_to, plan.half_life) == (
        2.0,
        "clamp",
        "last",
        3.0,
    )
    with pytest.raises(ValueError, match="one strength"):
        plan_row(tiny_qwen2, Steering(a, "1", [1.0, 2.0]))
    with pytest.raises(ValueError, match="layers"):
        plan_row(tiny_qwen2, Steering(a, "9", 1.0))
    with pytest.raises(ValueError, match="apply_to"):
        plan_row(tiny_qwen2, Steering(a, "1", 1.0, apply_to="everywhere"))
    with pytest.raises(ValueError, match="finite"):
        plan_row(tiny_qwen2, Steering(a, "1", float("nan")))
    with pytest.raises(ValueError, match="half_life"):
        plan_row(tiny_qwen2, Steering(a, "1", 1.0, half_life=-2.0))


@pytest.mark.slow
def test_bundled_mixed_batch_equals_solo_runs(bundled):
    """The shipped English and Japanese vectors, different layer bands, plain rows, padding, on the real model."""
    from steering.vector_files import load_vector

    root = pytest.importorskip("tests.conftest").ROOT
    gal, gyaru = (root / "vectors" / f"smollm2-135m-instruct_{n}.pt" for n in ("gal_en", "gyaru_ja"))
    if not (gal.is_file() and gyaru.is_file()):
        pytest.skip("the shipped vectors are not here")
    gal, gyaru = load_vector(gal), load_vector(gyaru)
    rows = [
        None,
        Steering(gal, "12-16", 3.0, apply_to="generated"),
        Steering(gyaru, "10-13", 3.0, mode="norm_preserving"),
        Steering(gal, "14", 12.0, "raw", "last", half_life=8.0),
        None,
    ]
    conversations = [CONVERSATIONS[i] for i in (1, 1, 3, 2, 6)]
    settings = GenerationSettings(max_new_tokens=16)
    batch = generate_mixed(bundled, conversations, rows, settings)
    for conversation, steering, text in zip(conversations, rows, batch.texts):
        assert text == solo(bundled, conversation, steering, settings)
    assert batch.texts[0] != batch.texts[1]
    assert hooks_left(bundled.model) == 0


def test_bf16_mixed_batch_equals_solo_runs(make_tiny, vectors):
    """The pushes are computed in the model's own dtype exactly as steer.py computes them."""
    model = make_tiny("qwen2", name="tiny-qwen2-bf16", dtype=torch.bfloat16)
    rows = mixed_rows(vectors)
    batch = generate_mixed(model, CONVERSATIONS, rows, GREEDY)
    for conversation, steering, text in zip(CONVERSATIONS, rows, batch.texts):
        assert text == solo(model, conversation, steering)
    assert hooks_left(model.model) == 0
