"""steering.extract: the three methods and the statistics against independent numpy code, and extract() end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steering.extract import (
    METHODS,
    auc,
    direction_from_diffs,
    extract,
    layer_stats,
    pc1_explained_variance,
    suggest_layer,
)

STAT_KEYS = {
    "mean_diff_norm",
    "projected_mean_diff",
    "pc1_explained_variance",
    "cos_mean_diff",
    "residual_norm",
    "heldout_accuracy",
    "heldout_auc",
}

POSITIVES = [
    "OMG this is sooo cute, like literally iconic!",
    "Ugh, my phone is literally dead by lunch. So annoying!!",
    "Bestie, you have to try this cafe, it's totally vibes.",
    "No way, that movie was lowkey the best ever, I'm screaming.",
    "Like, the Wi-Fi is sooo broken rn, I can't even.",
    "Yasss, new nails today and they're totally slaying.",
    "Omg the train was late again, like seriously?!",
    "Girl, this weather is giving summer, love it!",
]
NEGATIVES = [
    "This is very cute and quite distinctive.",
    "My phone battery runs out before lunch, which is inconvenient.",
    "You should try this cafe; the atmosphere is pleasant.",
    "That movie was one of the best I have seen.",
    "The Wi-Fi is not working well at the moment.",
    "I had my nails done today, and they look nice.",
    "The train was late again this morning.",
    "The weather feels like summer, which I enjoy.",
]


def random_diffs(seed: int = 0, n: int = 24, hidden: int = 16) -> np.ndarray:
    """Differences with a shared offset (a real mean) plus anisotropic noise (a clear PC1)."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=hidden) * 0.7
    scales = np.linspace(3.0, 0.2, hidden)
    return offset + rng.normal(size=(n, hidden)) * scales @ np.linalg.qr(rng.normal(size=(hidden, hidden)))[0]


def top_eigvec(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return vectors[:, np.argmax(values)]


def aligned(vec: np.ndarray, mean: np.ndarray) -> np.ndarray:
    vec = vec / np.linalg.norm(vec)
    return -vec if vec @ mean < 0 else vec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_diff(seed):
    diffs = random_diffs(seed)
    expected = diffs.mean(axis=0) / np.linalg.norm(diffs.mean(axis=0))
    got = direction_from_diffs(diffs, "mean_diff")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_diff_is_top_singular_vector(seed):
    diffs = random_diffs(seed)
    mean = diffs.mean(axis=0)
    expected = aligned(top_eigvec(diffs.T @ diffs), mean)
    got = direction_from_diffs(diffs, "pca_diff")
    assert abs(np.linalg.norm(got) - 1) < 1e-12
    cos = float(got @ expected)
    assert abs(cos) > 0.9999
    assert cos > 0  # same sign: aligned with the mean difference
    assert got @ mean > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_center_is_pc1_of_centered(seed):
    diffs = random_diffs(seed)
    mean = diffs.mean(axis=0)
    expected = aligned(top_eigvec(np.cov(diffs, rowvar=False)), mean)
    got = direction_from_diffs(diffs, "pca_center")
    cos = float(got @ expected)
    assert abs(cos) > 0.9999
    assert cos > 0
    assert got @ mean > 0


def test_methods_differ_on_anisotropic_data():
    diffs = random_diffs(0)
    dirs = {m: direction_from_diffs(diffs, m) for m in METHODS}
    assert abs(dirs["mean_diff"] @ dirs["pca_center"]) < 0.999


def test_sign_alignment_when_flipped():
    diffs = random_diffs(3)
    for method in ("pca_diff", "pca_center"):
        a = direction_from_diffs(diffs, method)
        b = direction_from_diffs(-diffs, method)  # mean flips: the direction must flip with it
        np.testing.assert_allclose(a, -b, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pc1_explained_variance(seed):
    diffs = random_diffs(seed)
    values = np.linalg.eigvalsh(np.cov(diffs, rowvar=False))
    assert pc1_explained_variance(diffs) == pytest.approx(values.max() / values.sum(), rel=1e-9)
    assert 0 < pc1_explained_variance(diffs) <= 1


def test_pc1_explained_variance_edge_cases():
    assert pc1_explained_variance(np.ones((5, 3))) == 0.0  # no variance at all
    line = np.outer(np.arange(6.0), [1.0, 2.0, -1.0])  # all variance on one axis
    assert pc1_explained_variance(line) == pytest.approx(1.0)


def brute_auc(pos, neg) -> float:
    score = 0.0
    for p in pos:
        for q in neg:
            score += 1.0 if p > q else 0.5 if p == q else 0.0
    return score / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)  # small integers: many ties
    neg = rng.integers(0, 5, size=rng.integers(1, 12)).astype(float)
    assert auc(pos, neg) == pytest.approx(brute_auc(pos, neg), abs=1e-12)


def test_auc_extremes():
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5


def test_direction_errors():
    with pytest.raises(ValueError, match="unknown method"):
        direction_from_diffs(random_diffs(), "ica")
    with pytest.raises(ValueError, match="zero"):
        direction_from_diffs(np.zeros((4, 8)), "mean_diff")
    with pytest.raises(ValueError, match="not finite"):
        direction_from_diffs(np.full((4, 8), np.nan), "mean_diff")


def test_direction_deterministic():
    diffs = random_diffs(4)
    for method in METHODS:
        assert np.array_equal(direction_from_diffs(diffs, method), direction_from_diffs(diffs.copy(), method))


def test_layer_stats_numbers():
    rng = np.random.default_rng(7)
    diffs = random_diffs(5, n=10, hidden=8)
    direction = direction_from_diffs(diffs, "pca_center")
    pos, neg = rng.normal(size=(3, 8)) + 1, rng.normal(size=(3, 8))
    stats = layer_stats(diffs, direction, 12.5, (pos, neg), (pos, neg))
    mean = diffs.mean(axis=0)
    assert stats["mean_diff_norm"] == pytest.approx(np.linalg.norm(mean))
    assert stats["projected_mean_diff"] == pytest.approx(mean @ direction)
    assert stats["cos_mean_diff"] == pytest.approx(mean @ direction / np.linalg.norm(mean))
    assert stats["residual_norm"] == 12.5
    assert stats["heldout_auc"] == pytest.approx(brute_auc(pos @ direction, neg @ direction))
    threshold = ((pos @ direction).mean() + (neg @ direction).mean()) / 2
    accuracy = (((pos @ direction) > threshold).sum() + ((neg @ direction) <= threshold).sum()) / 6
    assert stats["heldout_accuracy"] == pytest.approx(accuracy)
    assert "heldout_auc" not in layer_stats(diffs, direction, 1.0, None, (pos, neg))


# --------------------------------------------------------------------------- extract() on a model


@pytest.fixture(scope="module")
def extraction(tiny_qwen2):
    return extract(tiny_qwen2, POSITIVES, NEGATIVES, layers=[1, 2, 3], batch_size=4)


def test_extract_directions_and_stats(extraction):
    assert sorted(extraction.directions) == [1, 2, 3]
    for layer, direction in extraction.directions.items():
        assert direction.dtype == torch.float32
        assert direction.shape == (64,)
        assert float(direction.norm()) == pytest.approx(1.0, abs=1e-5)
        stats = extraction.stats[layer]
        assert STAT_KEYS <= stats.keys()
        assert stats["train_pairs"] + stats["heldout_pairs"] == 8
        assert stats["heldout_pairs"] >= 1
        assert stats["residual_norm"] > 0
        assert 0 <= stats["heldout_auc"] <= 1 and 0 <= stats["heldout_accuracy"] <= 1
        assert stats["cos_mean_diff"] == pytest.approx(1.0, abs=1e-6)  # mean_diff: the direction is the mean
    assert {"capture_s", "fit_s"} <= extraction.timings.keys()


def test_extract_default_layers(tiny_qwen2):
    result = extract(tiny_qwen2, POSITIVES[:4], NEGATIVES[:4])
    assert sorted(result.directions) == [1, 2, 3]  # 4 layers: middle band 1..3


def test_extract_is_deterministic(tiny_qwen2, extraction):
    again = extract(tiny_qwen2, POSITIVES, NEGATIVES, layers=[1, 2, 3], batch_size=4)
    for layer in extraction.directions:
        assert torch.equal(extraction.directions[layer], again.directions[layer])
        assert extraction.stats[layer] == again.stats[layer]


@pytest.mark.parametrize("method", ["pca_diff", "pca_center"])
def test_extract_other_methods(tiny_qwen2, method):
    result = extract(tiny_qwen2, POSITIVES, NEGATIVES, layers="2", method=method, read_position="mean")
    direction = result.directions[2]
    assert float(direction.norm()) == pytest.approx(1.0, abs=1e-5)
    assert result.stats[2]["projected_mean_diff"] >= 0  # sign aligned with the mean difference


def test_extract_few_pairs_holds_nothing_out(tiny_qwen2):
    result = extract(tiny_qwen2, POSITIVES[:3], NEGATIVES[:3], layers=[2])
    assert result.stats[2]["heldout_pairs"] == 0
    assert "heldout_auc" not in result.stats[2]


def test_extract_input_errors(tiny_qwen2):
    with pytest.raises(ValueError, match="same non-zero number"):
        extract(tiny_qwen2, POSITIVES[:3], NEGATIVES[:2])
    with pytest.raises(ValueError, match="same non-zero number"):
        extract(tiny_qwen2, [], [])
    with pytest.raises(ValueError, match="unknown method"):
        extract(tiny_qwen2, POSITIVES[:2], NEGATIVES[:2], method="lda")
    with pytest.raises(ValueError, match="out of range"):
        extract(tiny_qwen2, POSITIVES[:2], NEGATIVES[:2], layers="4")


def test_model_generates_normally_after_extraction(tiny_qwen2):
    tok = tiny_qwen2.tokenizer
    model = tiny_qwen2.model
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Say something."}], add_generation_prompt=True, tokenize=False
    )
    inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)

    def generate():
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)

    before_out = generate()
    modules_before = [id(m) for m in model.model.layers]
    named_before = {name: id(m) for name, m in model.named_modules()}
    forward_before = {name: m.forward for name, m in model.named_modules()}
    extract(tiny_qwen2, POSITIVES, NEGATIVES, layers=[0, 3])
    assert [id(m) for m in model.model.layers] == modules_before
    assert {name: id(m) for name, m in model.named_modules()} == named_before
    assert {name: m.forward for name, m in model.named_modules()} == forward_before
    assert not model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(generate(), before_out)


def test_suggest_layer():
    stats = {
        layer: {"heldout_auc": auc_value, "mean_diff_norm": 1.0, "residual_norm": 1.0}
        for layer, auc_value in {5: 0.7, 10: 0.95, 12: 0.95, 28: 1.0}.items()
    }
    # 28 is in the last fifth of 30 layers: avoided; ties broken toward 40% depth (12)
    assert suggest_layer(stats, 30) == 12
    no_heldout = {3: {"mean_diff_norm": 1.0, "residual_norm": 10.0}, 8: {"mean_diff_norm": 4.0, "residual_norm": 20.0}}
    assert suggest_layer(no_heldout, 30) == 8
