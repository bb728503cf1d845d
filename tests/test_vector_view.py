"""steering.vector_view: the Extract tab's request and summary, the Layers tab's note, and the Chat and Sweep tabs'
defaults for a vector (its recommended setting, else the library defaults)."""

from __future__ import annotations

import pytest
import torch

from steering import settings as S
from steering.data import load_prompts
from steering.messages import localized
from steering.metadata import VectorMeta
from steering.models import BUNDLED
from steering.settings import SteerSetting
from steering.sweep import MAX_BROKEN, SweepCell
from steering.vector_view import (
    BARE_NOTE,
    DATASET_CHOICES,
    EVIDENCE_KEY,
    break_point,
    dataset_choices,
    defaults_notice,
    evidence_of,
    extraction_options,
    extraction_summary,
    layer_note,
    record_evidence,
    setting_choices,
    strength_note,
    vector_defaults,
)
from steering.vectors import SteeringVector
from tests.helpers import has_japanese


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
    with pytest.raises(ValueError, match="upload a dataset file first") as info:
        extraction_options("upload", None, "gyaru-vs-standard", 10, "", "mean_diff", "mean")
    assert has_japanese(localized(info.value, "ja")) and not has_japanese(str(info.value))


def test_dataset_choices_cover_both_bundled_sets_and_the_upload():
    assert [value for _, value in DATASET_CHOICES] == ["ja", "en", "upload"]
    english, japanese = dataset_choices("en"), dataset_choices("ja")
    assert [key for _, key in english] == [key for _, key in japanese] == ["ja", "en", "upload"]
    assert not any(has_japanese(name) for name, _ in english) and all(has_japanese(name) for name, _ in japanese)


def test_extraction_summary_line():
    line = extraction_summary("gal.pt", make_vector(), {"total_s": 3.14})
    assert line.startswith("Saved `gal.pt` — 40 pairs, mean_diff, language en, layers 6-14")
    assert "suggested layer **10**" in line and "(3.1 s)" in line and not has_japanese(line)
    japanese = extraction_summary("gal.pt", make_vector(), {"total_s": 3.14}, "ja")
    assert has_japanese(japanese) and "**10**" in japanese and "3.1 秒" in japanese


def test_layer_note_with_and_without_a_sidecar():
    note = layer_note(make_vector({"suggested_layer": None, "pairs": None}))
    assert note == "9 layers, taken from `bundled` with mean_diff on ? pairs; ★ marks the suggested layer (—)"
    bare = layer_note(make_vector(calibrated=False))
    assert bare == BARE_NOTE.en and "no statistics" in bare and not has_japanese(bare)
    assert has_japanese(layer_note(make_vector(), "ja")) and "`bundled`" in layer_note(make_vector(), "ja")
    assert layer_note(make_vector(calibrated=False), "ja") == BARE_NOTE.ja


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
    with pytest.raises(ValueError, match="max pairs must be") as info:
        extraction_options("ja", None, "gyaru-vs-standard", bad, "", "mean_diff", "mean")
    assert has_japanese(localized(info.value, "ja"))


# ------------------------------------------------------------------------------------- the vector's evaluation


def judged(strength: float, broken: float, mode: str = "add", tokens: int = 128, **setting) -> dict:
    """A row as record_evidence saves it."""
    return {
        "layers": "8-12",
        "strength": strength,
        "scale": "calibrated",
        "mode": mode,
        "apply_to": "all",
        "repetition_penalty": 1.0,
        "half_life": None,
        "tokens": tokens,
        "replies": 8,
        "broken_share": broken,
        "marker_share": 0.5,
        "perplexity_ratio": 1.2,
        **setting,
    }


EVIDENCE = [judged(0.0, 0.0), judged(2.0, 0.0), judged(4.0, 0.05), judged(6.0, 0.625), judged(8.0, 1.0)]


def evaluated_vector(rows=EVIDENCE, **meta) -> SteeringVector:
    return make_vector({EVIDENCE_KEY: list(rows), **meta})


def test_break_strength_is_the_smallest_strength_whose_replies_broke():
    defaults = vector_defaults(evaluated_vector(), BUNDLED)
    assert defaults.evidence_cells == tuple(EVIDENCE)
    assert defaults.break_strength == 6.0  # 4 breaks exactly the allowed share, no more
    found = defaults.break_at
    assert (found.broken_share, found.tokens, found.plain_share) == (0.625, 128, 0.0)
    assert break_point(EVIDENCE, mode="clamp") is None  # strengths of another mode mean something else
    assert break_point(EVIDENCE, scale="raw") is None


def test_nothing_recorded_means_no_break_strength_and_no_note():
    defaults = vector_defaults(make_vector(), BUNDLED)
    assert defaults.evidence_cells == () and defaults.break_strength is None
    assert strength_note(defaults, 7.0) == "" and strength_note(make_vector(), 7.0, "ja") == ""
    assert vector_defaults(evaluated_vector([{"strength": "x"}, 3]), BUNDLED).break_strength is None  # malformed


def test_broken_replies_count_only_beyond_the_unsteered_ones():
    """The unsteered replies at the same length already break 30 %: 40 % at strength 3 is breakage, 20 % is not."""
    rows = [
        judged(0.0, 0.3),
        judged(2.0, 0.2),
        judged(3.0, 0.4),
        judged(0.0, 0.0, tokens=64),
        judged(1.0, 0.1, tokens=64),
    ]
    found = break_point(rows)
    assert found.strength == 1.0 and found.plain_share == 0.0  # at 64 tokens 10 % is over the 5 % limit
    assert break_point(rows[:3]).strength == 3.0 and break_point(rows[:3]).plain_share == 0.3
    assert break_point([judged(2.0, MAX_BROKEN + 0.01)]).plain_share is None  # no unsteered replies recorded


def test_strength_note_warns_at_and_above_the_break_strength():
    defaults = vector_defaults(evaluated_vector(), BUNDLED)
    warning = strength_note(defaults, 6.0)
    assert (
        warning
        == "⚠ From strength 6 on, replies broke in this vector's evaluation (62% broken at 128 tokens; 0% without steering)."
    )
    assert strength_note(defaults, 7.5) == warning == strength_note(evaluated_vector(), 6, "en")
    japanese = strength_note(defaults, 6.0, "ja")
    assert japanese.startswith("⚠") and has_japanese(japanese) and "62%" in japanese and "128" in japanese
    hint = strength_note(defaults, 4.0)
    assert not hint.startswith("⚠") and "6" in hint and not has_japanese(hint)
    assert has_japanese(strength_note(defaults, 4.0, "ja"))
    assert strength_note(defaults, 0.0) == strength_note(defaults, -3.0) == strength_note(defaults, float("nan")) == ""
    assert strength_note(defaults, 7.0, mode="clamp") == ""  # nothing recorded for clamp


def test_strength_note_without_breakage_names_what_was_tried():
    vector = evaluated_vector(EVIDENCE[:3])
    assert "up to strength 4" in strength_note(vector, 3.0) and "highest" in strength_note(vector, 3.0)
    above = strength_note(vector, 5.0)
    assert "above anything" in above and "up to 4" in above
    assert has_japanese(strength_note(vector, 5.0, "ja")) and has_japanese(strength_note(vector, 3.0, "ja"))


def test_record_evidence_saves_judged_cells_that_read_back(tmp_path):
    from steering.vector_files import load_vector, save_vector

    def cell(strength, broken):
        summary = {"replies": 4, "broken_share": broken, "marker_share": 0.25, "perplexity_ratio": 1.5, "style": 1.0}
        return SweepCell.of([8, 9], strength, summary, mode="clamp", apply_to="generated")

    vector = evaluated_vector([judged(0.0, 0.0)])
    record_evidence(vector, [cell(0.0, 0.0), cell(1.0, 0.0), cell(2.0, 0.5)], max_new_tokens=64)
    rows = evidence_of(vector)
    assert len(rows) == 4 and rows[0] == judged(0.0, 0.0)  # rows judged another way are kept
    assert rows[-1]["strength"] == 2.0 and rows[-1]["tokens"] == 64 and rows[-1]["mode"] == "clamp"
    record_evidence(vector, [cell(2.0, 0.75)], max_new_tokens=64)  # the same setting and length: replaced
    assert len(evidence_of(vector)) == 4 and evidence_of(vector)[-1]["broken_share"] == 0.75
    path = save_vector(vector, tmp_path / "v.pt")
    again = load_vector(path)
    assert evidence_of(again) == evidence_of(vector)
    assert break_point(evidence_of(again), "calibrated", "clamp").strength == 2.0
    assert VectorMeta.from_dict(again.meta.to_dict()).extra[EVIDENCE_KEY] == list(evidence_of(vector))


# ------------------------------------------------------------------------------------- the Chat tab's notice


RECOMMENDED = {
    "layers": "9-11",
    "strength": 3.5,
    "scale": "calibrated",
    "mode": "clamp",
    "apply_to": "generated",
    "repetition_penalty": 1.3,
    "half_life": 24,
}


def test_defaults_notice_lists_the_whole_setting():
    defaults = vector_defaults(make_vector({"recommended": RECOMMENDED}), BUNDLED)
    assert defaults.recommended
    notice = defaults_notice(defaults)
    assert notice == (
        "Chat tab set to this vector's recommended setting: layers 9-11, strength 3.5, scale calibrated, mode clamp, "
        "apply to reply tokens, half-life 24 tokens, repetition penalty 1.3."
    )  # (choices by their names on the page, not their values)
    japanese = defaults_notice(defaults, "ja")
    assert has_japanese(japanese) and "9-11" in japanese and "24 トークン" in japanese and "方式 固定" in japanese


def test_defaults_notice_lists_only_what_changed():
    defaults = vector_defaults(make_vector({"recommended": RECOMMENDED}), BUNDLED)
    before = ["8-12", 3.5, "calibrated", "add", "generated", 24.0, 1.3]  # the Chat tab's fields, in order
    assert defaults_notice(defaults, previous=before) == (
        "Chat tab set to this vector's recommended setting: layers 8-12 → 9-11, mode add → clamp."
    )
    assert defaults_notice(defaults, previous=defaults.setting) == (
        "The Chat tab already has this vector's recommended setting."
    )
    constant = SteerSetting("9-11", 3.5, "calibrated", "clamp", "generated", 1.3, None)
    assert "half-life constant → 24 tokens" in defaults_notice(defaults, previous=constant)
    assert "半減期 一定 → 24 トークン" in defaults_notice(defaults, "ja", previous=constant)
    everywhere = SteerSetting("9-11", 3.5, "calibrated", "clamp", "all", 1.3, 24)
    assert "apply to every token → reply tokens" in defaults_notice(defaults, previous=everywhere)


def test_the_chat_choices_are_named_for_every_value_in_both_languages():
    for field, values in (("scale", S.SCALES), ("apply_to", S.APPLY_TO), ("mode", S.MODES)):
        english, japanese = setting_choices(field), setting_choices(field, "ja")
        assert [v for _, v in english] == [v for _, v in japanese] == list(values)
        assert all(has_japanese(name) for name, _ in japanese) and not any(has_japanese(n) for n, _ in english)


def test_defaults_notice_for_a_vector_without_a_recommended_setting():
    defaults = vector_defaults(make_vector(), BUNDLED)
    assert not defaults.recommended
    notice = defaults_notice(defaults)
    assert notice.startswith("This vector has no recommended setting") and "half-life constant" in notice
    assert "defaults" in defaults_notice(defaults, previous=defaults.setting)
    assert not has_japanese(notice) and has_japanese(defaults_notice(defaults, "ja"))
