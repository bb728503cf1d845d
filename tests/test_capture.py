"""steering.capture: batching/padding invariance, early stop, hook hygiene, dtypes and residual norms."""

from __future__ import annotations

import copy

import pytest
import torch

from steering.capture import capture
from steering.templates import render_reply

TEXTS = [
    "Hi.",
    "OMG, I updated my laptop last night and now the Wi-Fi is sooo broken, like literally.",
    "Bestie, no way!",
    "The weather is nice today, so let's go for a walk in the park after lunch.",
    "あーし新しいパソコン買ったんだけど、マジ最強じゃん！",
    "Have you tried the new photo app?",
    "Ugh.",
]
TOL = dict(atol=1e-4, rtol=1e-4)


def hook_snapshot(model) -> dict:
    """Every module's forward (pre-)hook ids: capture must leave these exactly as it found them."""
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks
    }


def assert_same(a, b):
    assert a.states.keys() == b.states.keys()
    for layer in a.states:
        torch.testing.assert_close(a.states[layer], b.states[layer], **TOL)


def full_pass(loaded, input_ids: list[int]):
    """A full forward pass with output_hidden_states, on a private copy of the model.

    transformers installs permanent output-capturing hooks on a model the first time hidden states are asked
    for; running this on a copy keeps the shared session models hook-free for other tests' hook checks.
    """
    key = id(loaded.model)
    if key not in _TWINS:
        _TWINS[key] = copy.deepcopy(loaded.model)
    with torch.inference_mode():
        return _TWINS[key](input_ids=torch.tensor([input_ids]), output_hidden_states=True, use_cache=False)


_TWINS: dict[int, torch.nn.Module] = {}


@pytest.fixture(scope="module", autouse=True)
def _drop_twins():
    yield
    _TWINS.clear()


def reference_states(loaded, text: str, layers, position: str) -> dict[int, torch.Tensor]:
    """hidden_states[i + 1] of a full, unhooked pass is the output of block i."""
    r = render_reply(loaded.tokenizer, text)
    out = full_pass(loaded, r.input_ids)
    rows = {}
    for layer in layers:
        hidden = out.hidden_states[layer + 1][0].float()
        rows[layer] = hidden[r.last] if position == "last" else hidden[r.content].mean(dim=0)
    return rows


@pytest.fixture(scope="module")
def fresh_tiny(make_tiny):
    """A tiny model nothing else touches, to check capture leaves no hooks at all."""
    return make_tiny("qwen2", "tiny-qwen2-fresh", seed=1)


@pytest.mark.parametrize("position", ["last", "mean"])
def test_batch_and_padding_invariance_tiny(tiny_qwen2, position):
    layers = list(range(tiny_qwen2.num_layers))
    reference = capture(tiny_qwen2, TEXTS, layers, position, batch_size=1)
    for batch_size, side in [(1, "left"), (3, "right"), (3, "left"), (len(TEXTS), "right"), (len(TEXTS), "left")]:
        got = capture(tiny_qwen2, TEXTS, layers, position, batch_size=batch_size, padding_side=side)
        assert_same(reference, got)


@pytest.mark.parametrize("position", ["last", "mean"])
@pytest.mark.slow
def test_batch_and_padding_invariance_bundled(bundled, position):
    texts, layers = TEXTS[:5], [2, 9, 15]
    reference = capture(bundled, texts, layers, position, batch_size=1)
    for batch_size, side in [(3, "right"), (3, "left")]:
        got = capture(bundled, texts, layers, position, batch_size=batch_size, padding_side=side)
        assert_same(reference, got)


def test_rows_follow_input_order(tiny_qwen2):
    forward = capture(tiny_qwen2, TEXTS, [1, 2], batch_size=2)
    backward = capture(tiny_qwen2, TEXTS[::-1], [1, 2], batch_size=2)
    for layer in (1, 2):
        torch.testing.assert_close(forward.states[layer], backward.states[layer].flip(0), **TOL)
    rows = forward.states[1]
    assert not torch.allclose(rows[0], rows[1])  # distinct texts, distinct rows


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama", pytest.param("bundled", marks=pytest.mark.slow)])
@pytest.mark.parametrize("position", ["last", "mean"])
def test_early_stop_matches_full_pass(request, fixture, position):
    loaded = request.getfixturevalue(fixture)
    text = TEXTS[1]
    for layers in ([1], [0, 2]):
        got = capture(loaded, [text], layers, position)
        expected = reference_states(loaded, text, layers, position)
        for layer in layers:
            torch.testing.assert_close(got.states[layer][0], expected[layer], **TOL)


def test_read_token_is_hidden_state_at_last(tiny_qwen2):
    r = render_reply(tiny_qwen2.tokenizer, TEXTS[3])
    out = full_pass(tiny_qwen2, r.input_ids)
    got = capture(tiny_qwen2, [TEXTS[3]], [1]).states[1][0]
    hidden = out.hidden_states[2][0]
    torch.testing.assert_close(got, hidden[r.last], **TOL)
    # and not the end-of-turn token right after it
    assert not torch.allclose(got, hidden[r.last + 1], **TOL)


def test_early_stop_skips_deeper_blocks(tiny_qwen2):
    calls = []
    handle = tiny_qwen2.layers[2].register_forward_hook(lambda *args: calls.append(1))
    try:
        capture(tiny_qwen2, TEXTS[:3], [1], batch_size=2)
    finally:
        handle.remove()
    assert calls == []


def test_no_hooks_left(fresh_tiny):
    model = fresh_tiny.model
    assert hook_snapshot(model) == {}
    capture(fresh_tiny, TEXTS, [0, 2, 3], batch_size=3)
    assert hook_snapshot(model) == {}
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_no_hooks_left_after_progress_error(fresh_tiny):
    def progress(done, total):
        raise RuntimeError("progress callback failed")

    with pytest.raises(RuntimeError, match="progress callback failed"):
        capture(fresh_tiny, TEXTS, [1, 3], batch_size=2, progress=progress)
    for module in fresh_tiny.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    # and the model still captures normally afterwards
    assert capture(fresh_tiny, TEXTS[:2], [1]).states[1].shape == (2, 64)


def test_hooks_restored_on_shared_model(tiny_qwen2):
    before = hook_snapshot(tiny_qwen2.model)
    capture(tiny_qwen2, TEXTS, [0, 3], batch_size=4)
    assert hook_snapshot(tiny_qwen2.model) == before


def test_progress_reports_counts(tiny_qwen2):
    seen = []
    capture(tiny_qwen2, TEXTS, [1], batch_size=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 7), (6, 7), (7, 7)]


@pytest.mark.parametrize(
    "fixture, layers", [("tiny_qwen2", [0, 1, 3]), pytest.param("bundled", [3, 10], marks=pytest.mark.slow)]
)
def test_residual_norm(request, fixture, layers):
    loaded = request.getfixturevalue(fixture)
    cap = capture(loaded, TEXTS[:3], layers)
    assert sorted(cap.residual_norm) == layers
    for layer in layers:
        assert isinstance(cap.residual_norm[layer], float)
        assert cap.residual_norm[layer] > 0
    if fixture == "bundled":  # residual norms grow with depth in the trained model
        assert cap.residual_norm[10] > cap.residual_norm[3]


def test_unknown_position(tiny_qwen2):
    with pytest.raises(ValueError, match="unknown read position 'first'"):
        capture(tiny_qwen2, TEXTS[:2], [1], read_position="first")


def test_states_are_float32_for_bf16_model(make_tiny):
    loaded = make_tiny("qwen2", "tiny-qwen2-bf16", dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    for position in ("last", "mean"):
        cap = capture(loaded, TEXTS[:3], [1, 3], position, batch_size=2)
        for layer, rows in cap.states.items():
            assert rows.dtype == torch.float32
            assert rows.shape == (3, 64)
            assert torch.isfinite(rows).all()
            assert cap.residual_norm[layer] > 0


def test_precomputed_rendered(tiny_qwen2):
    rendered = [render_reply(tiny_qwen2.tokenizer, t, "Tech", "en") for t in TEXTS[:3]]
    a = capture(tiny_qwen2, TEXTS[:3], [2], topics=["Tech"] * 3)
    b = capture(tiny_qwen2, [], [2], rendered=rendered)
    assert_same(a, b)
    c = capture(tiny_qwen2, TEXTS[:3], [2])  # no topic: a different user turn, different states
    assert not torch.allclose(a.states[2], c.states[2])


def test_residual_norm_value(tiny_qwen2):
    """The median norm over every real token but each text's first (an outlier), pooled across texts."""
    texts, layer = TEXTS[:3], 2
    norms = []
    for text in texts:
        r = render_reply(tiny_qwen2.tokenizer, text)
        out = full_pass(tiny_qwen2, r.input_ids)
        norms.append(out.hidden_states[layer + 1][0, 1:].float().norm(dim=-1))
    expected = float(torch.cat(norms).median())
    for side in ("right", "left"):
        got = capture(tiny_qwen2, texts, [layer], batch_size=3, padding_side=side).residual_norm[layer]
        assert got == pytest.approx(expected, rel=1e-4)


def test_negative_and_out_of_range_layers(tiny_qwen2):
    # -1 is the last block; mixing it with a shallower layer must not stop the pass before block 3 runs
    mixed = capture(tiny_qwen2, TEXTS[:2], [-1, 1])
    plain = capture(tiny_qwen2, TEXTS[:2], [1, 3])
    assert sorted(mixed.states) == [1, 3]
    assert_same(mixed, plain)
    assert mixed.residual_norm[3] > 0
    with pytest.raises(ValueError, match="out of range"):
        capture(tiny_qwen2, TEXTS[:2], [7])


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama", pytest.param("bundled", marks=pytest.mark.slow)])
def test_shared_models_stay_hook_free(request, fixture):
    """Runs after the tests above: nothing here may leave hooks on the session models other files share."""
    model = request.getfixturevalue(fixture).model
    assert hook_snapshot(model) == {}


def test_shared_template_prefix_runs_once_per_topic(tiny_qwen2):
    """Texts with the same topic share the templated prefix: it is computed once and reused from the KV cache."""
    calls = []
    handle = tiny_qwen2.layers[0].register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[:2]))
    try:
        texts = ["First reply.", "Second, longer reply here.", "Third.", "Fourth one.", "Fifth!", "Sixth?"]
        topics = ["Tech", "Tech", "Tech", "Food", "Food", "Food"]
        cap = capture(tiny_qwen2, texts, [0, 1], topics=topics, batch_size=16)
    finally:
        handle.remove()
    assert len(calls) == 4  # two prefixes (batch 1) and two batches of replies (batch 3)
    assert [c[0] for c in calls] == [1, 3, 1, 3]
    assert calls[1][1] < calls[0][1] + 3  # the reply batch holds only the reply and end-of-turn tokens
    assert cap.states[1].shape == (6, 64)
