"""Running settings on a model: batched groups equal solo runs, cut = shorter run, perplexity ratios, recommend."""

from __future__ import annotations

import pytest

from steering.generate import GenerationSettings, generate_rows
from steering.steer import Steering
from steering.sweep import (
    Setting,
    SweepCell,
    cells_table,
    cut,
    generate_settings,
    judge_grid,
    recommend,
    sweep,
)
from steering.vectors import SteeringVector
from tests.helpers import random_steering_vector

PROMPTS = ["Hi! How are you today?", "What should I cook tonight?"]


@pytest.fixture
def vector() -> SteeringVector:
    return random_steering_vector(seed=1)


def conversations():
    return [[{"role": "user", "content": p}] for p in PROMPTS]


def test_each_setting_gets_what_a_solo_run_gives(tiny_qwen2, vector):
    settings = [
        Setting("1-2", 0.0, repetition_penalty=1.1),
        Setting("1-2", 4.0, repetition_penalty=1.1),
        Setting("1-2", 2.0, mode="clamp", apply_to="generated", repetition_penalty=1.1),
    ]
    out = generate_settings(tiny_qwen2, vector, conversations(), settings, max_new_tokens=6)
    for setting in settings:
        solo = generate_rows(
            tiny_qwen2,
            conversations(),
            [setting.strength] * 2,
            Steering(vector, setting.layers, 0.0, setting.scale, setting.apply_to, setting.mode),
            GenerationSettings(max_new_tokens=6, repetition_penalty=1.1),
        )
        assert out[setting].texts == solo.texts, setting
        assert [len(ids) for ids in out[setting].token_ids] == solo.token_counts
    assert out[settings[0]].texts != out[settings[1]].texts


def test_a_cut_reply_equals_a_shorter_greedy_run(tiny_qwen2, vector):
    setting = Setting("1-2", 3.0)
    long = generate_settings(tiny_qwen2, vector, conversations(), [setting], max_new_tokens=10)[setting]
    short = generate_settings(tiny_qwen2, vector, conversations(), [setting], max_new_tokens=4)[setting]
    assert cut(tiny_qwen2, long, 4).texts == short.texts


def test_sweep_covers_the_grid_and_rates_perplexity_against_plain(tiny_qwen2, vector):
    seen = []
    cells = sweep(
        tiny_qwen2,
        vector,
        PROMPTS,
        ["1", "1-2"],
        [0.0, 3.0],
        "en",
        max_new_tokens=5,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert [(c.layers, c.strength) for c in cells] == [([1], 0.0), ([1], 3.0), ([1, 2], 0.0), ([1, 2], 3.0)]
    assert cells[0].summary is cells[2].summary  # strength 0 is one plain run whatever the layers
    assert cells[0].summary["perplexity_ratio"] == pytest.approx(1.0)
    assert all(c.summary["perplexity_ratio"] > 0 for c in cells)
    assert seen[-1][0] == seen[-1][1] == 3 * len(PROMPTS)  # per reply, not per layer option
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # it only grows
    row = cells_table(cells)[1]
    assert row["layers"] == "1" and row["mode"] == "add" and "broken_examples" not in row


def test_progress_moves_inside_one_batched_call_at_least_once_per_cell(tiny_qwen2, vector):
    """One layer option: every strength's replies come from one generate call, and the bar still moves with its
    tokens (it used to jump from 0 to the end), never back, never past the total."""
    strengths = [0.0, 1.0, 2.0, 3.0]
    seen = []
    cells = sweep(
        tiny_qwen2,
        vector,
        PROMPTS,
        ["1-2"],
        strengths,
        "en",
        max_new_tokens=12,
        progress=lambda d, t: seen.append((d, t)),
    )
    total = len(strengths) * len(PROMPTS)
    assert len(cells) == len(strengths) and {t for _, t in seen} == {total}
    done = [d for d, _ in seen]
    assert done[-1] == total and done == sorted(set(done)) and len(done) >= len(cells)
    assert len([d for d in done if d < total]) >= len(cells) - 1  # reported while the one call was running


def test_progress_counts_only_this_threads_forward_passes(tiny_qwen2, vector):
    """Another user's generation on the shared model must not move this sweep's bar."""
    import threading

    import torch

    from steering.sweep import _forward_passes

    run = lambda ids: tiny_qwen2.model(input_ids=torch.tensor([ids]))  # noqa: E731
    passes, other = [], threading.Thread(target=run, args=([1, 2],))
    with _forward_passes(tiny_qwen2, passes.append):
        other.start()
        other.join()
        run([1, 2, 3])
    run([1])  # after: the hook is gone
    assert passes == [1]


def cell(strength, markers, broken, ratio, mode="add") -> SweepCell:
    summary = {"marker_share": markers, "broken_share": broken, "perplexity_ratio": ratio, "style": markers}
    return SweepCell(Setting("1-2", strength, mode=mode), [1, 2], summary)


def test_recommend_takes_the_most_gal_readable_cell():
    cells = [
        cell(0.0, 0.1, 0.0, 1.0),
        cell(2.0, 0.5, 0.0, 1.5),
        cell(3.0, 0.9, 0.10, 1.8),  # too often broken
        cell(4.0, 0.95, 0.0, 3.0),  # too far from plain fluency
        cell(2.5, 0.7, 0.05, 2.5, mode="clamp"),  # both limits met exactly
    ]
    best = recommend(cells)
    assert best.strength == 2.5 and best.setting.mode == "clamp"
    assert recommend([cell(0.0, 0.5, 0.0, 1.0), cell(2.0, 0.5, 0.0, 1.1)]) is None  # no more gal than plain


def test_judge_grid_sets_ratios_per_repetition_penalty(tiny_qwen2, vector):
    settings = [Setting("1", 0.0, repetition_penalty=rp) for rp in (1.0, 1.3)] + [
        Setting("1", 2.0, repetition_penalty=1.3)
    ]
    cells = judge_grid(tiny_qwen2, generate_settings(tiny_qwen2, vector, conversations(), settings, 4), "en")
    plain13 = next(c for c in cells if c.setting == settings[1]).summary["perplexity"]
    steered = next(c for c in cells if c.setting == settings[2]).summary
    assert steered["perplexity_ratio"] == pytest.approx(steered["perplexity"] / plain13)
