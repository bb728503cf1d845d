"""Hook-based steering: pushes, positions, scales, stacking, cleanup, thread isolation."""

from __future__ import annotations

import threading

import pytest
import torch

from steering.steer import Steering, layer_pushes, steer, strength_warning
from steering.vectors import SteeringVector, VectorFileError
from tests.helpers import hooks_left


def random_vector(hidden: int, layers, seed: int = 0, with_stats: bool = True) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in layers:
        v = torch.randn(hidden, generator=gen)
        directions[layer] = v / v.norm()
    stats = {layer: {"mean_diff_norm": 2.0 + layer, "residual_norm": 10.0} for layer in layers} if with_stats else {}
    return SteeringVector(directions, {"model": "tiny"} if with_stats else {}, stats)


def block_outputs(loaded, ids, layers):
    """Record each block's output (after any earlier-registered steering hook) for one forward."""
    seen = {}
    handles = [
        loaded.layers[i].register_forward_hook(
            lambda _m, _i, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).clone())
        )
        for i in layers
    ]
    try:
        with torch.inference_mode():
            loaded.model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.fixture
def ids(tokenizer):
    return tokenizer("Hello there, how are you?", return_tensors="pt")["input_ids"]


def test_calibrated_push_is_mean_difference_shared_over_layers():
    vec = random_vector(64, [1, 2])
    pushes = layer_pushes(Steering(vec, [1, 2], 1.0, "calibrated"), 4)
    assert pushes[1].step == pytest.approx((2.0 + 1) / 2, rel=1e-5)
    assert pushes[2].step == pytest.approx((2.0 + 2) / 2, rel=1e-5)
    assert pushes[1].unit.norm().item() == pytest.approx(1.0, rel=1e-5)
    raw = layer_pushes(Steering(vec, [1, 2], 1.0, "raw"), 4)
    assert raw[1].step == pytest.approx(1.0, rel=1e-5)


def test_bare_vector_needs_raw_scale():
    vec = random_vector(64, [1], with_stats=False)
    with pytest.raises(ValueError, match="scale='raw'"):
        layer_pushes(Steering(vec, [1], 1.0, "calibrated"), 4)
    assert layer_pushes(Steering(vec, [1], 1.0, "raw"), 4)[1].step == pytest.approx(1.0)


def test_all_positions_get_the_push_and_hooks_are_removed(tiny_qwen2, ids):
    vec = random_vector(64, [1])
    base = block_outputs(tiny_qwen2, ids, [1])[1]
    with steer(tiny_qwen2, Steering(vec, [1], 3.0, "raw", "all")):
        steered = block_outputs(tiny_qwen2, ids, [1])[1]
    delta = steered - base
    expected = 3.0 * vec.directions[1]
    assert torch.allclose(delta[0], expected.expand_as(delta[0]), atol=1e-5)
    assert hooks_left(tiny_qwen2.model) == 0


def test_last_position_only_touches_the_last_token(tiny_qwen2, ids):
    vec = random_vector(64, [1])
    base = block_outputs(tiny_qwen2, ids, [1])[1]
    with steer(tiny_qwen2, Steering(vec, [1], 3.0, "raw", "last")):
        steered = block_outputs(tiny_qwen2, ids, [1])[1]
    delta = steered - base
    assert torch.allclose(delta[0, :-1], torch.zeros_like(delta[0, :-1]), atol=1e-6)
    assert torch.allclose(delta[0, -1], 3.0 * vec.directions[1], atol=1e-5)


def test_generated_position_skips_the_prompt_pass(tiny_qwen2, ids):
    vec = random_vector(64, [1])
    base = block_outputs(tiny_qwen2, ids, [1])[1]
    with steer(tiny_qwen2, Steering(vec, [1], 3.0, "raw", "generated")):
        first = block_outputs(tiny_qwen2, ids, [1])[1]
        second = block_outputs(tiny_qwen2, ids, [1])[1]
    assert torch.allclose(first, base, atol=1e-6)
    assert not torch.allclose(second, base, atol=1e-3)


def test_stacked_vectors_add(tiny_qwen2, ids):
    a, b = random_vector(64, [2], seed=1), random_vector(64, [2], seed=2)
    base = block_outputs(tiny_qwen2, ids, [2])[2]
    with steer(tiny_qwen2, [Steering(a, [2], 2.0, "raw"), Steering(b, [2], -1.0, "raw")]):
        both = block_outputs(tiny_qwen2, ids, [2])[2]
    expected = 2.0 * a.directions[2] - 1.0 * b.directions[2]
    assert torch.allclose((both - base)[0, 0], expected, atol=1e-5)


def test_per_row_strengths(tiny_qwen2, ids):
    vec = random_vector(64, [1])
    batch = ids.repeat(3, 1)
    base = block_outputs(tiny_qwen2, batch, [1])[1]
    with steer(tiny_qwen2, Steering(vec, [1], [0.0, 1.0, -2.0], "raw")):
        steered = block_outputs(tiny_qwen2, batch, [1])[1]
    for row, s in enumerate([0.0, 1.0, -2.0]):
        assert torch.allclose((steered - base)[row, 0], s * vec.directions[1], atol=1e-5)


def test_hooks_removed_after_exception(tiny_qwen2):
    vec = random_vector(64, [1])
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_qwen2, Steering(vec, [1], 1.0, "raw")):
            assert hooks_left(tiny_qwen2.model) == 1
            raise RuntimeError("boom")
    assert hooks_left(tiny_qwen2.model) == 0


def test_vector_for_another_model_is_refused(tiny_qwen2):
    wrong = random_vector(128, [1])
    with pytest.raises(VectorFileError, match="hidden size 128"):
        with steer(tiny_qwen2, Steering(wrong, [1], 1.0)):
            pass
    assert hooks_left(tiny_qwen2.model) == 0


def test_missing_layer_and_bad_values(tiny_qwen2):
    vec = random_vector(64, [1])
    with pytest.raises(ValueError, match="no direction for layers"):
        with steer(tiny_qwen2, Steering(vec, [2], 1.0)):
            pass
    with pytest.raises(ValueError, match="finite"):
        with steer(tiny_qwen2, Steering(vec, [1], float("nan"))):
            pass
    with pytest.raises(ValueError, match="apply_to"):
        with steer(tiny_qwen2, Steering(vec, [1], 1.0, apply_to="middle")):
            pass
    assert hooks_left(tiny_qwen2.model) == 0


def test_absurd_strength_warns(tiny_qwen2):
    vec = random_vector(64, [1])
    with pytest.warns(UserWarning, match="broken text"):
        with steer(tiny_qwen2, Steering(vec, [1], 1000.0)):
            pass


def test_strength_warning_message():
    vec = random_vector(64, [1])
    assert strength_warning(Steering(vec, [1], 8.0)) is None
    assert strength_warning(Steering(vec, [1], [0.0, -2.0])) is None
    assert "broken text" in strength_warning(Steering(vec, [1], [0.0, -9.0]))
    assert strength_warning(Steering(vec, [1], 150.0, "raw")) is None
    assert "raw" in strength_warning(Steering(vec, [1], 250.0, "raw"))


def test_partly_calibrated_vector_needs_raw_scale():
    vec = random_vector(64, [1, 2])
    vec.stats[2].pop("mean_diff_norm")
    with pytest.raises(ValueError, match="scale='raw'"):
        layer_pushes(Steering(vec, [1], 1.0, "calibrated"), 4)


def test_other_threads_are_not_steered(tiny_qwen2, ids):
    """A hook bound to one thread leaves a concurrent forward in another thread untouched."""
    vec = random_vector(64, [1])
    base = block_outputs(tiny_qwen2, ids, [1])[1]
    inside, other = threading.Event(), {}

    def other_thread():
        inside.wait(5)
        other["out"] = block_outputs(tiny_qwen2, ids, [1])[1]

    t = threading.Thread(target=other_thread)
    t.start()
    with steer(tiny_qwen2, Steering(vec, [1], 5.0, "raw")):
        inside.set()
        t.join(10)
        mine = block_outputs(tiny_qwen2, ids, [1])[1]
    assert torch.allclose(other["out"], base, atol=1e-6)
    assert not torch.allclose(mine, base, atol=1e-3)


def with_projections(vec: SteeringVector, base: float, top: float) -> SteeringVector:
    for layer in vec.layers:
        vec.stats[layer].update(baseline_projection=base, gyaru_projection=top)
    return vec


def test_norm_preserving_keeps_each_positions_norm_and_moves_toward_the_direction(tiny_qwen2, ids):
    vec = random_vector(64, [1])
    base = block_outputs(tiny_qwen2, ids, [1])[1]
    with steer(tiny_qwen2, Steering(vec, [1], [0.0, 3.0], "raw", "all", "norm_preserving")):
        out = block_outputs(tiny_qwen2, torch.cat([ids, ids]), [1])[1]
    assert torch.allclose(out[0], base[0], atol=1e-5)  # strength 0: untouched
    assert torch.allclose(out[1].norm(dim=-1), base[0].norm(dim=-1), rtol=1e-4)
    unit = vec.directions[1]
    assert ((out[1] @ unit) > (base[0] @ unit)).all()


def test_clamp_sets_the_projection_to_its_target_and_zero_is_off(tiny_qwen2, ids):
    vec = with_projections(random_vector(64, [1, 2]), base=-1.0, top=2.0)
    base = block_outputs(tiny_qwen2, ids, [1])[1]
    with steer(tiny_qwen2, Steering(vec, [1, 2], [0.0, 1.5], "calibrated", "all", "clamp")):
        out = block_outputs(tiny_qwen2, torch.cat([ids, ids]), [1])[1]
    unit = vec.directions[1]
    assert torch.allclose(out[0], base[0], atol=1e-5)
    # standard projection + 1.5 × the gap, at every position: set, not added
    assert torch.allclose(out[1] @ unit, torch.full((ids.shape[1],), -1.0 + 1.5 * 3.0), atol=1e-4)
    orthogonal = out[1] - (out[1] @ unit)[:, None] * unit
    assert torch.allclose(orthogonal, base[0] - (base[0] @ unit)[:, None] * unit, atol=1e-4)


def test_clamp_on_a_vector_without_projections_says_what_is_missing(tiny_qwen2):
    vec = random_vector(64, [1])
    with pytest.raises(ValueError, match="re-extract"):
        with steer(tiny_qwen2, Steering(vec, [1], 1.0, "calibrated", "all", "clamp")):
            pass
    assert hooks_left(tiny_qwen2.model) == 0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode 'push'"):
        layer_pushes(Steering(random_vector(64, [1]), [1], 1.0, "raw", "all", "push"), 4)
