"""steering.tables: the per-layer stats as terminal text and as a DataFrame, and a sweep's cells as a
DataFrame."""

from __future__ import annotations

import pytest

from steering.sweep import SweepCell
from steering.tables import STAT_COLUMNS, cell_label, layer_table, stats_frame, sweep_frame

STATS = {
    9: {"pc1_explained_variance": 0.12345, "mean_diff_norm": 3.0},
    8: {"pc1_explained_variance": 0.5, "cos_mean_diff": 0.98765, "heldout_auc": 1.0},
}


def test_layer_table_aligns_columns_and_marks_the_suggested_layer():
    lines = layer_table(STATS, suggested=9).splitlines()
    assert lines[0].split() == ["layer"] + [short for _, short in STAT_COLUMNS]
    assert lines[1].split() == ["8", "0.500", "0.988", "-", "-", "-", "1.000"]
    assert lines[2].split() == ["9*", "0.123", "-", "3.000", "-", "-", "-"]
    assert len({len(line) for line in lines}) == 1  # right-aligned to equal widths


def test_stats_frame_rounds_and_stars_the_suggested_layer():
    pytest.importorskip("pandas")
    frame = stats_frame(STATS, suggested=8)
    assert list(frame.columns) == ["layer"] + [short for _, short in STAT_COLUMNS]
    assert list(frame["layer"]) == ["8 ★", "9"]
    assert frame.loc[1, "pc1_var"] == 0.123 and frame.loc[0, "cos_mean"] == 0.988
    assert frame["mean_norm"].isna().tolist() == [True, False]  # never recorded: empty


def test_sweep_frame_labels_cells_and_samples_a_reply():
    pytest.importorskip("pandas")
    summary = {"style": 1.23456, "broken_share": 0.0, "marker_share": 0.5}
    cells = [
        SweepCell.of([8, 9, 10], 2.0, summary, ["x" * 200, "second"]),
        SweepCell.of([3, 5], 0.5, summary, []),
    ]
    assert [cell_label(c) for c in cells] == ["8-10 @ 2", "3,5 @ 0.5"]
    frame = sweep_frame(cells)
    assert list(frame.columns) == [
        "cell",
        "layers",
        "strength",
        "mode",
        "style",
        "broken_share",
        "marker_share",
        "sample reply",
    ]
    assert list(frame["cell"]) == ["8-10 @ 2", "3,5 @ 0.5"]
    assert frame.loc[0, "style"] == 1.235 and frame.loc[0, "sample reply"] == "x" * 120
    assert frame.loc[1, "sample reply"] == ""
