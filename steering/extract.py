"""Extract per-layer gyaru directions from paired activations, three ways, with per-layer statistics.

Methods (all deterministic: full SVD in float64, never a randomized solver):
    mean_diff   difference of means, normalized (usually the best direction; see docs).
    pca_diff    top right-singular vector of the raw (uncentered) differences, sign aligned with the mean.
    pca_center  PC1 of the centered differences, sign aligned with the mean — the reference run's sklearn PCA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .capture import Capture, capture
from .checks import check_int
from .data import split
from .models import LoadedModel
from .settings import CHARS_PER_TOKEN, MAX_TEXT_TOKENS, METHODS, parse_layers
from .templates import Rendered, render_reply


def direction_from_diffs(diffs: np.ndarray, method: str) -> np.ndarray:
    """Unit direction (float64) from an [n_pairs, hidden] array of positive − negative differences."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    diffs = np.asarray(diffs, dtype=np.float64)
    mean = diffs.mean(axis=0)
    if method == "mean_diff":
        vec = mean
    else:
        matrix = diffs - mean if method == "pca_center" else diffs
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        vec = vt[0]
        if vec @ mean < 0:
            vec = -vec
    norm = np.linalg.norm(vec)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the differences are all zero or not finite: cannot extract a direction")
    return vec / norm


def pc1_explained_variance(diffs: np.ndarray) -> float:
    """Share of the variance of the centered differences on PC1 (what the reference run reported)."""
    centered = np.asarray(diffs, dtype=np.float64)
    centered = centered - centered.mean(axis=0)
    s = np.linalg.svd(centered, compute_uv=False)
    total = float((s**2).sum())
    return float(s[0] ** 2 / total) if total > 0 else 0.0


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive projects above a random negative (ties count half)."""
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def layer_stats(
    diffs: np.ndarray,
    direction: np.ndarray,
    residual_norm: float,
    heldout: tuple[np.ndarray, np.ndarray] | None,
    train: tuple[np.ndarray, np.ndarray],
) -> dict:
    """The per-layer numbers saved beside a direction."""
    mean = np.asarray(diffs, dtype=np.float64).mean(axis=0)
    mean_norm = float(np.linalg.norm(mean))
    stats = {
        "mean_diff_norm": mean_norm,
        "projected_mean_diff": float(mean @ direction),
        "pc1_explained_variance": pc1_explained_variance(diffs),
        "cos_mean_diff": float(mean @ direction / mean_norm) if mean_norm > 0 else 0.0,
        "residual_norm": float(residual_norm),
    }
    tpos, tneg = (np.asarray(x, dtype=np.float64) @ direction for x in train)
    # Where each side sits along the direction: the clamp steering mode sets hidden states relative to these.
    stats["gyaru_projection"] = float(tpos.mean())
    stats["baseline_projection"] = float(tneg.mean())
    if heldout is not None and len(heldout[0]) > 0:
        pos, neg = (np.asarray(x, dtype=np.float64) @ direction for x in heldout)
        threshold = (tpos.mean() + tneg.mean()) / 2
        correct = (pos > threshold).sum() + (neg <= threshold).sum()
        stats["heldout_accuracy"] = float(correct / (len(pos) + len(neg)))
        stats["heldout_auc"] = auc(pos, neg)
    return stats


def text_token_cap(loaded: LoadedModel, max_text_tokens: int | None = MAX_TEXT_TOKENS) -> int:
    """The most tokens one extraction text may have: `max_text_tokens` (None: no limit of its own), and never more
    than the model's context."""
    if max_text_tokens is None:
        return loaded.context_length
    return min(check_int(max_text_tokens, "max_text_tokens", minimum=1), loaded.context_length)


def render_checked(
    loaded: LoadedModel,
    texts: Sequence[str],
    topics: Sequence[str | None],
    lang: str,
    max_text_tokens: int | None = MAX_TEXT_TOKENS,
    labels: Sequence[str] | None = None,
) -> list[Rendered]:
    """Each text templated as a reply (what capture reads), refused when it is too long: first by characters
    (CHARS_PER_TOKEN per allowed token, before anything is tokenized: a 50 MB line costs nothing), then by its
    tokens (at most text_token_cap) and by the whole templated sequence (at most the model's context).

    `labels[i]` names text i in messages (e.g. 'FILE line 3, field "gyaru"'); default 'text 4 of 20'.
    """
    cap = text_token_cap(loaded, max_text_tokens)
    max_chars = CHARS_PER_TOKEN * cap

    def name(i: int) -> str:
        return labels[i] if labels is not None else f"text {i + 1} of {len(texts)}"

    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise ValueError(
                f"{name(i)}: {len(text):,} characters, over the limit of {max_chars:,} characters "
                f"({CHARS_PER_TOKEN} per token of the {cap:,}-token limit per text); shorten it"
            )
    rendered = []
    for i, (text, topic) in enumerate(zip(texts, topics)):
        item = render_reply(loaded.tokenizer, text, topic, lang, "")
        if len(item.content) > cap:
            raise ValueError(
                f"{name(i)}: {len(item.content):,} tokens, over the limit of {cap:,} tokens per text "
                f"(max_text_tokens {max_text_tokens}, the model's context {loaded.context_length}); shorten it"
            )
        if len(item.input_ids) > loaded.context_length:
            raise ValueError(
                f"{name(i)}: {len(item.input_ids):,} tokens with the chat template around it, over the model's "
                f"{loaded.context_length:,}-token context; shorten it"
            )
        rendered.append(item)
    return rendered


@dataclass
class Extraction:
    """Unit directions and per-layer stats, plus timings; pipeline.py turns it into a savable SteeringVector."""

    directions: dict[int, torch.Tensor]
    stats: dict[int, dict]
    timings: dict[str, float]


def extract(
    loaded: LoadedModel,
    positives: Sequence[str],
    negatives: Sequence[str],
    layers=None,
    method: str = "mean_diff",
    read_position: str = "mean",
    topics: Sequence[str | None] | None = None,
    lang: str = "en",
    heldout_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    max_text_tokens: int | None = MAX_TEXT_TOKENS,
    labels: Sequence[str] | None = None,
) -> Extraction:
    """Capture both sides of every pair in one batched pass and fit a direction per layer.

    A text longer than `max_text_tokens` (or the model's context) is refused before the model runs; `labels` names
    each text (positives, then negatives) in that message."""
    if len(positives) != len(negatives) or not positives:
        raise ValueError(
            f"need the same non-zero number of positive and negative texts (got {len(positives)} and {len(negatives)})"
        )
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    layer_list = parse_layers(layers, loaded.num_layers)
    n = len(positives)
    topics = list(topics) if topics is not None else [None] * n
    texts = list(positives) + list(negatives)
    t0 = time.perf_counter()
    rendered = render_checked(loaded, texts, topics + topics, lang, max_text_tokens, labels)
    cap: Capture = capture(
        loaded,
        texts,
        layer_list,
        read_position,
        topics=topics + topics,
        lang=lang,
        batch_size=batch_size,
        progress=progress,
        rendered=rendered,
    )
    t1 = time.perf_counter()
    # Fewer than 4 pairs leave too little to both fit and test: use them all for fitting.
    train_idx, held_idx = (sorted(part) for part in split(range(n), heldout_fraction if n >= 4 else 0.0, seed))
    directions, stats = {}, {}
    for layer in layer_list:
        pos, neg = cap.states[layer][:n].numpy(), cap.states[layer][n:].numpy()
        diffs = pos[train_idx] - neg[train_idx]
        direction = direction_from_diffs(diffs, method)
        heldout = (pos[held_idx], neg[held_idx]) if held_idx else None
        stats[layer] = layer_stats(
            diffs, direction, cap.residual_norm[layer], heldout, (pos[train_idx], neg[train_idx])
        )
        directions[layer] = torch.from_numpy(direction.astype(np.float32))
    fit_s = time.perf_counter() - t1
    stats_meta = {"train_pairs": len(train_idx), "heldout_pairs": len(held_idx)}
    for s in stats.values():
        s.update(stats_meta)
    return Extraction(directions, stats, {"capture_s": t1 - t0, "fit_s": fit_s})


def suggest_layer(stats: dict[int, dict], num_layers: int) -> int:
    """A layer to start steering from: the best held-out AUC (without held-out pairs: the mean difference's norm
    relative to the layer's residual norm) outside the last fifth of the model, where steering tends to break
    text; ties go to the layer nearest 40 % depth."""
    usable = {layer: s for layer, s in stats.items() if layer < 0.8 * num_layers} or stats
    if all("heldout_auc" in s for s in usable.values()):
        score = {layer: s["heldout_auc"] for layer, s in usable.items()}
    else:  # separation relative to the layer's scale: raw norms grow with depth
        score = {layer: s["mean_diff_norm"] / max(s["residual_norm"], 1e-6) for layer, s in usable.items()}
    return max(usable, key=lambda layer: (round(score[layer], 3), -abs(layer - 0.4 * num_layers)))
