"""steering.tables: the per-layer stats as terminal text and as a DataFrame, and a sweep's cells as a
DataFrame — headers in plain words in the page's language, and the help that explains them."""

from __future__ import annotations

import pytest

from steering.sweep import SweepCell
from steering.tables import (
    SHORT_TEXTS,
    STAT_KEYS,
    STAT_TEXTS,
    cell_label,
    layer_table,
    stats_frame,
    stats_help,
    sweep_frame,
)
from tests.helpers import has_japanese

STATS = {
    9: {"pc1_explained_variance": 0.12345, "mean_diff_norm": 3.0},
    8: {"pc1_explained_variance": 0.5, "cos_mean_diff": 0.98765, "heldout_auc": 1.0},
}


def test_layer_table_aligns_columns_and_marks_the_suggested_layer():
    lines = layer_table(STATS, suggested=9).splitlines()
    assert lines[0].split() == ["Layer"] + [SHORT_TEXTS[key].en for key in STAT_KEYS]
    assert lines[1].split() == ["8", "0.500", "0.988", "-", "-", "-", "1.000"]
    assert lines[2].split() == ["9*", "0.123", "-", "3.000", "-", "-", "-"]
    assert len({len(line) for line in lines}) == 1  # right-aligned to equal widths


def test_layer_table_in_japanese_aligns_by_display_width():
    lines = layer_table(STATS, suggested=9, ui_lang="ja").splitlines()
    assert lines[0].split() == ["レイヤー"] + [SHORT_TEXTS[key].ja for key in STAT_KEYS]
    wide = lambda text: sum(2 if "\u3000" <= c <= "\u9fff" else 1 for c in text)  # noqa: E731
    assert len({wide(line) for line in lines}) == 1


def test_stats_frame_rounds_and_stars_the_suggested_layer():
    pytest.importorskip("pandas")
    frame = stats_frame(STATS, suggested=8)
    assert list(frame.columns) == ["Layer"] + [STAT_TEXTS[key].en for key in STAT_KEYS]
    assert list(frame["Layer"]) == ["8 ★", "9"]
    assert frame.loc[1, "Share explained by the main direction"] == 0.123
    assert frame.loc[0, "Agreement with the average difference (cos)"] == 0.988
    assert frame["Size of the average difference"].isna().tolist() == [True, False]  # never recorded: empty
    assert "Accuracy on unseen pairs" in frame.columns and "pc1_var" not in frame.columns


def test_stats_frame_headers_in_one_language_at_a_time():
    pytest.importorskip("pandas")
    english, japanese = stats_frame(STATS, 8, "en"), stats_frame(STATS, 8, "ja")
    assert not any(has_japanese(c) for c in english.columns)
    assert all(has_japanese(c) for c in japanese.columns)
    assert "未使用ペアでの正解率" in japanese.columns
    assert japanese.iloc[:, 1:].equals(english.iloc[:, 1:].set_axis(japanese.columns[1:], axis=1))


def test_stats_help_explains_every_column_and_the_suggested_layer():
    english, japanese = stats_help("en"), stats_help("ja")
    for key in STAT_KEYS:
        assert f"**{STAT_TEXTS[key].en}**" in english and f"**{STAT_TEXTS[key].ja}**" in japanese
    assert "★" in english and "last fifth" in english and "40 %" in english and "± 2" in english
    assert not has_japanese(english) and has_japanese(japanese) and "★" in japanese


def sweep_cells():
    summary = {"style": 1.23456, "broken_share": 0.0, "marker_share": 0.5}
    return [
        SweepCell.of([8, 9, 10], 2.0, summary, ["x" * 200, "second"]),
        SweepCell.of([3, 5], 0.5, summary, []),
    ]


def test_sweep_frame_labels_cells_and_samples_a_reply():
    pytest.importorskip("pandas")
    cells = sweep_cells()
    assert [cell_label(c) for c in cells] == ["8-10 @ 2", "3,5 @ 0.5"]
    frame = sweep_frame(cells)
    assert list(frame.columns) == [
        "Cell (layers @ strength)",
        "Layers",
        "Strength",
        "Mode",
        "Gal style (marker words per 100 characters)",
        "Broken replies",
        "Replies with gal words",
        "Sample reply",
    ]
    assert list(frame["Cell (layers @ strength)"]) == ["8-10 @ 2", "3,5 @ 0.5"]
    assert frame.loc[0, "Gal style (marker words per 100 characters)"] == 1.235
    assert frame.loc[0, "Sample reply"] == "x" * 120 and frame.loc[1, "Sample reply"] == ""


def test_sweep_frame_in_japanese():
    pytest.importorskip("pandas")
    japanese, english = sweep_frame(sweep_cells(), "ja"), sweep_frame(sweep_cells(), "en")
    assert all(has_japanese(c) for c in japanese.columns)
    assert not any(has_japanese(c) for c in english.columns)
    assert "崩れた返答の割合" in japanese.columns and list(japanese.iloc[:, 0]) == ["8-10 @ 2", "3,5 @ 0.5"]
