"""steering.vector_view: the Extract tab's request and summary, the Layers tab's note, and the Chat and Sweep tabs'
defaults for a vector (its recommended setting, else the library defaults)."""

from __future__ import annotations

import pytest
import torch

from steering.data import load_prompts
from steering.models import BUNDLED
from steering.vector_view import (
    BARE_NOTE,
    DATASET_CHOICES,
    extraction_options,
    extraction_summary,
    layer_note,
    vector_defaults,
)
from steering.vectors import SteeringVector


def make_vector(meta: dict | None = None, calibrated: bool = True) -> SteeringVector:
    directions = {layer: torch.nn.functional.normalize(torch.ones(64), dim=0) for layer in range(6, 15)}
    stats = {layer: {"mean_diff_norm": 3.0} for layer in directions} if calibrated else {}
    meta = {"model": "bundled", "method": "mean_diff", "pairs": 40, "suggested_layer": 10, "lang": "en", **(meta or {})}
    return SteeringVector(directions, meta if calibrated else {}, stats)


def test_extraction_options_from_the_tabs_fields():
    options = extraction_options("ja", None, "gyaru-vs-casual", 12.0, "  8-12 ", "pca_diff", "last")
    assert options == {
        "data": "ja",
        "contrast": "gyaru-vs-casual",
        "layers": "8-12",
        "method": "pca_diff",
        "read_position": "last",
        "max_pairs": 12,
    }
    blank = extraction_options("upload", "/tmp/pairs.jsonl", "gyaru-vs-standard", 0, "   ", "mean_diff", "mean")
    assert blank["data"] == "/tmp/pairs.jsonl" and blank["layers"] is None and blank["max_pairs"] is None
    assert (
        extraction_options("en", "/tmp/ignored.jsonl", "gyaru-vs-standard", None, None, "mean_diff", "mean")["data"]
        == "en"
    )  # a bundled set ignores a file left in the upload box


def test_extraction_options_without_an_uploaded_file():
    with pytest.raises(ValueError, match="upload a dataset file first"):
        extraction_options("upload", None, "gyaru-vs-standard", 10, "", "mean_diff", "mean")


def test_dataset_choices_cover_both_bundled_sets_and_the_upload():
    assert [value for _, value in DATASET_CHOICES] == ["ja", "en", "upload"]


def test_extraction_summary_line():
    line = extraction_summary("gal.pt", make_vector(), {"total_s": 3.14})
    assert line.startswith("saved `gal.pt` — 40 pairs, mean_diff, en, layers 6-14")
    assert "suggested layer **10**" in line and "(3.1 s)" in line


def test_layer_note_with_and_without_a_sidecar():
    note = layer_note(make_vector({"suggested_layer": None, "pairs": None}))
    assert note == "9 layers from `bundled`, mean_diff, ? pairs; ★ = suggested layer —"
    assert layer_note(make_vector(calibrated=False)) == BARE_NOTE and "no sidecar" in BARE_NOTE


def test_defaults_without_a_recommended_setting():
    defaults = vector_defaults(make_vector(), BUNDLED)
    setting = defaults.setting
    assert (setting.layers, setting.strength, setting.scale, setting.mode) == ("8-12", 2.0, "calibrated", "add")
    assert defaults.half_life == 0  # a constant strength, as the number field shows it
    assert defaults.prompts == load_prompts("en")
    assert (defaults.sweep_layers, defaults.sweep_strengths, defaults.sweep_scale) == (
        "6-8 8-12 12-14",
        "0,1,2,3,4",
        "calibrated",
    )


def test_defaults_follow_the_recommended_setting():
    recommended = {
        "layers": "9-11",
        "strength": 3.5,
        "scale": "calibrated",
        "mode": "clamp",
        "apply_to": "generated",
        "repetition_penalty": 1.3,
        "half_life": 24,
    }
    defaults = vector_defaults(make_vector({"recommended": recommended, "lang": "ja"}), BUNDLED)
    s = defaults.setting
    assert (s.layers, s.strength, s.mode, s.apply_to, s.repetition_penalty) == ("9-11", 3.5, "clamp", "generated", 1.3)
    assert defaults.half_life == 24
    assert defaults.prompts == load_prompts("ja")  # the vector's language, not the bundled model's


def test_defaults_for_a_bare_vector_use_the_raw_scale_and_the_models_language():
    defaults = vector_defaults(make_vector(calibrated=False), "Qwen/Qwen2.5-7B-Instruct")
    assert (
        defaults.setting.scale == "raw" and defaults.sweep_scale == "raw" and defaults.sweep_strengths == "0,4,8,12,16"
    )
    assert defaults.prompts == load_prompts("ja")


def test_extraction_options_check_the_layer_range_before_anything_is_read():
    """'0-100000000' is refused from its ends, at once: no list of a hundred million layers is ever built."""
    import time

    start = time.perf_counter()
    with pytest.raises(ValueError, match="layer 100000000 is out of range: the model has 30 layers"):
        extraction_options(
            "upload", "/no/such/file.jsonl", "gyaru-vs-standard", 10, "0-100000000", "mean_diff", "mean", 30
        )
    assert time.perf_counter() - start < 0.5
    assert (
        extraction_options("ja", None, "gyaru-vs-standard", 10, "-3--1", "mean_diff", "mean", 30)["layers"] == "-3--1"
    )


@pytest.mark.parametrize("bad", [float("nan"), 2.5, float("inf"), -4])
def test_extraction_options_refuse_a_max_pairs_that_is_not_a_count(bad):
    with pytest.raises(ValueError, match="max pairs must be"):
        extraction_options("ja", None, "gyaru-vs-standard", bad, "", "mean_diff", "mean")
