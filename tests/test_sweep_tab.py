"""steering.sweep_tab: the Sweep tab's grid checked before any generation and run on the tiny model, the "best"
line, and the swept cells a user picks and applies to the Chat tab."""

from __future__ import annotations

import pytest
import torch

from steering.messages import localized
from steering.settings import MAX_SWEEP_OPTIONS, MAX_SWEEP_STRENGTHS
from steering.sweep import MAX_BROKEN, MAX_PERPLEXITY_RATIO, Setting, SweepCell
from steering.sweep_tab import SweepGrid, SweepPicks, best_line, best_setting, picked_setting, sweep_grid
from steering.vectors import SteeringVector
from tests.helpers import has_japanese

NUM_LAYERS = 4  # the tiny models' depth


def make_vector(projections: bool = True, calibrated: bool = True, layers=(1, 2, 3)) -> SteeringVector:
    gen = torch.Generator().manual_seed(5)
    directions = {layer: torch.nn.functional.normalize(torch.randn(64, generator=gen), dim=0) for layer in layers}
    stats = {}
    for layer in layers:
        stats[layer] = {"mean_diff_norm": 3.0} if calibrated else {}
        if projections:
            stats[layer].update(gyaru_projection=2.0, baseline_projection=-1.0)
    return SteeringVector(directions, {"model": "tiny-qwen2", "lang": "en"}, stats)


# ------------------------------------------------------------------------------------------------ the grid


def test_grid_options_are_resolved_and_the_same_layers_swept_once():
    grid = sweep_grid(
        make_vector(), "1-2 1,2 3 -1", "0, 2 2 4", NUM_LAYERS, "calibrated", "norm_preserving", "generated"
    )
    assert grid.layer_options == ["1-2", "3"]  # 1,2 is 1-2 and -1 is layer 3
    assert grid.strengths == [0.0, 2.0, 4.0] and grid.size == 6
    assert (grid.scale, grid.mode, grid.apply_to, grid.warning) == ("calibrated", "norm_preserving", "generated", None)


def test_grid_warns_about_a_strength_far_outside_readable_text():
    grid = sweep_grid(make_vector(), "1-2", "0,50", NUM_LAYERS)
    assert grid.warning is not None and "beyond" in grid.warning and "50" in grid.warning


@pytest.mark.parametrize(
    "options, strengths, message",
    [
        ("", "0,2", "layer option"),
        ("1-2", "", "strength"),
        ("1-2", "0,x", "not a number"),
        ("1-2 0", "0,2", "no direction for layers \\[0\\]"),
        ("1-9", "0,2", "out of range"),
        (" ".join(["1"] * (MAX_SWEEP_OPTIONS + 1)), "0", f"at most {MAX_SWEEP_OPTIONS}"),
        ("1", ",".join(str(i) for i in range(MAX_SWEEP_STRENGTHS + 1)), f"at most {MAX_SWEEP_STRENGTHS}"),
    ],
)
def test_bad_grids_are_refused(options, strengths, message):
    with pytest.raises(ValueError, match=message):
        sweep_grid(make_vector(), options, strengths, NUM_LAYERS)


def test_what_the_vector_cannot_do_is_refused_before_generating():
    with pytest.raises(ValueError, match="calibrated scale is unknown"):
        sweep_grid(make_vector(calibrated=False), "1-2", "0,2", NUM_LAYERS, "calibrated")
    sweep_grid(make_vector(calibrated=False), "1-2", "0,2", NUM_LAYERS, "raw")  # the raw scale works on a bare file
    with pytest.raises(ValueError, match="mode 'clamp' needs the per-layer projections"):
        sweep_grid(make_vector(projections=False), "1-2", "0,2", NUM_LAYERS, "calibrated", "clamp")
    with pytest.raises(ValueError, match="unknown mode"):
        sweep_grid(make_vector(), "1-2", "0,2", NUM_LAYERS, "calibrated", "sideways")
    with pytest.raises(ValueError, match="unknown apply-to") as info:
        sweep_grid(make_vector(), "1-2", "0,2", NUM_LAYERS, "calibrated", "add", "everywhere")
    assert has_japanese(localized(info.value, "ja")) and "everywhere" in localized(info.value, "ja")


def test_a_grid_runs_every_cell_with_its_setting_and_reports_progress_per_cell(tiny_qwen2):
    grid = sweep_grid(make_vector(), "1-2 2-3", "0,3", tiny_qwen2.num_layers, "calibrated", "clamp", "generated")
    calls = []
    cells = grid.run(tiny_qwen2, make_vector(), 2, max_new_tokens=4, progress=lambda d, t: calls.append((d, t)))
    assert [(c.setting.layers, c.strength) for c in cells] == [("1-2", 0.0), ("1-2", 3.0), ("2-3", 0.0), ("2-3", 3.0)]
    assert {(c.setting.mode, c.setting.apply_to) for c in cells} == {("clamp", "generated")}
    assert all(c.summary["replies"] == 2 for c in cells)  # 2 prompts per cell
    assert cells[0].replies == cells[2].replies  # strength 0 is the same plain run whatever the layers
    # replies: 2 prompts × 3 cells generated (the plain run, 1-2 @ 3, 2-3 @ 3); the layer options' two batches
    # report as their tokens come, so the bar moves at least once per cell and never goes back
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {6} and done[-1] == 6
    assert done == sorted(set(done)) and len(calls) >= grid.size


def test_a_grid_runs_at_least_one_prompt(tiny_qwen2):
    grid = SweepGrid(["1-2"], [0.0, 1.0])
    cells = grid.run(tiny_qwen2, make_vector(), 0, max_new_tokens=2)
    assert [c.summary["replies"] for c in cells] == [1, 1]


# ------------------------------------------------------------------------------------------------ results


def cell(layers: list[int], strength: float, **summary) -> SweepCell:
    base = {"marker_share": 0.0, "broken_share": 0.0, "perplexity_ratio": 1.0, "style": 0.0}
    return SweepCell.of(layers, strength, {**base, **summary}, mode="norm_preserving", apply_to="generated")


def test_best_line_names_the_cell_and_its_markers_broken_share_and_perplexity_ratio():
    best = cell([8, 9, 10], 2.0, marker_share=0.5, broken_share=0.25, perplexity_ratio=1.34)
    line = best_line(best)
    assert "layers **8-10** at strength **2**" in line and "norm_preserving, generated" in line
    assert "gal words in 50% of replies" in line and "25% broken" in line
    assert "perplexity 1.34× that of unsteered replies" in line and not has_japanese(line)
    assert "perplexity unknown" in best_line(cell([8], 1.0, perplexity_ratio=None))
    japanese = best_line(best, "ja")
    assert has_japanese(japanese) and "**8-10**" in japanese and "50%" in japanese and "1.34 倍" in japanese
    assert "不明" in best_line(cell([8], 1.0, perplexity_ratio=None), "ja")


def test_best_line_without_a_recommendation_gives_the_limits():
    for lang in ("en", "ja"):
        line = best_line(None, lang)
        assert f"{MAX_BROKEN:.0%}" in line and f"{MAX_PERPLEXITY_RATIO:g}" in line
        assert has_japanese(line) == (lang == "ja")
    assert best_line(None).startswith("No recommendation") and best_line(None, "ja").startswith("おすすめなし")


def test_picks_offer_the_best_else_the_first_steered_cell():
    cells = [cell([1, 2], 0.0), cell([1, 2], 2.0), cell([3], 0.0), cell([3], 2.0)]
    picks = SweepPicks.of(cells, cells[3], "v.pt")
    assert picks.labels == ["1-2 @ 0", "1-2 @ 2", "3 @ 0", "3 @ 2"]
    assert picks.best == "3 @ 2" == picks.default_label()
    assert SweepPicks.of(cells, None, "v.pt").default_label() == "1-2 @ 2"
    assert SweepPicks.of(cells[:1], None, "v.pt").default_label() == "1-2 @ 0"
    assert SweepPicks(None).default_label() is None


def test_picks_map_table_rows_to_labels():
    picks = SweepPicks.of([cell([1], 0.0), cell([1], 2.0)], None, "v.pt")
    assert picks.label_at(1) == "1 @ 2" and picks.label_at([0, 3]) == "1 @ 0" and picks.label_at((1, 0)) == "1 @ 2"
    for nothing in (2, -1, None, [], "0", 1.0):
        assert picks.label_at(nothing) is None


def test_picked_and_best_settings_and_the_other_vector_notice():
    cells = [cell([1], 0.0), cell([1], 2.0)]
    picks = SweepPicks.of(cells, cells[1], "v.pt")
    assert picked_setting(picks, "1 @ 0") == cells[0].setting
    setting = best_setting(picks)
    assert isinstance(setting, Setting) and (setting.layers, setting.strength, setting.mode) == (
        "1",
        2.0,
        "norm_preserving",
    )
    assert picks.notice("v.pt") is None and "different vector" in picks.notice("w.pt")
    assert has_japanese(picks.notice("w.pt").in_lang("ja"))
    with pytest.raises(ValueError, match="unknown sweep cell") as info:
        picked_setting(picks, "9 @ 9")
    assert "9 @ 9" in localized(info.value, "ja") and has_japanese(localized(info.value, "ja"))
    for nothing in (None, SweepPicks("v.pt")):
        with pytest.raises(ValueError, match="Run a sweep first"):
            picked_setting(nothing, "1 @ 0")
        with pytest.raises(ValueError, match="Run a sweep first") as info:
            best_setting(nothing)
        assert has_japanese(localized(info.value, "ja"))
    with pytest.raises(ValueError, match="no recommended cell") as info:
        best_setting(SweepPicks.of(cells, None, "v.pt"))
    assert has_japanese(localized(info.value, "ja")) and not has_japanese(localized(info.value, "en"))


@pytest.mark.parametrize(
    "layer_options", ["0-100000000", "1-2 0-100000000", "-100000000--1", "1,2,0-99999999999999999999"]
)
def test_a_huge_layer_range_is_refused_at_once(layer_options):
    import time

    start = time.perf_counter()
    with pytest.raises(ValueError, match="out of range"):
        sweep_grid(make_vector(), layer_options, "0,1", NUM_LAYERS)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "n_prompts, tokens, penalty, message",
    [
        (float("nan"), 4, 1.0, "prompts must be a whole number"),
        (2, float("nan"), 1.0, "max new tokens must be a whole number"),
        (2, 0, 1.0, "max new tokens must be at least 1"),
        (2, 4, float("nan"), "repetition penalty must be a finite number"),
    ],
)
def test_a_grid_refuses_counts_that_are_not_numbers_before_running(tiny_qwen2, n_prompts, tokens, penalty, message):
    grid = SweepGrid(["1-2"], [0.0, 1.0])
    with pytest.raises(ValueError, match=message) as info:
        grid.run(tiny_qwen2, make_vector(), n_prompts, max_new_tokens=tokens, repetition_penalty=penalty)
    assert has_japanese(localized(info.value, "ja"))
