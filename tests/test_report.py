"""steering.report: every report file is written through a unique temporary, so nothing beside it is touched."""

from __future__ import annotations

import json

from steering.report import write_report
from steering.sweep import SweepCell


def sweep_cells() -> list[SweepCell]:
    summary = {"broken_share": 0.0, "gal_readable_share": 0.5, "median_onset": None, "perplexity_ratio": 1.2}
    return [SweepCell.of([8, 9], s, {"marker_share": s / 4, **summary}, ["a", "b"]) for s in (0.0, 2.0)]


def test_report_leaves_the_users_own_tmp_files_alone(tmp_path):
    stems = ["sweep_x.csv", "sweep_x.json", "sweep_x.md", "sweep_x_marker_share.html", "sweep_x_broken_share.html"]
    own = {tmp_path / f"{name}.tmp": b"user's own" for name in stems}
    for path, data in own.items():
        path.write_bytes(data)
    paths = write_report(sweep_cells(), tmp_path, "sweep_x", "Sweep x", png=False)
    assert {p: p.read_bytes() for p in own} == own
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(stems + [p.name for p in own])
    assert {p.name for p in paths} == set(stems)
    assert json.loads((tmp_path / "sweep_x.json").read_text(encoding="utf-8"))["cells"][1]["strength"] == 2.0
    assert (tmp_path / "sweep_x.csv").read_text(encoding="utf-8").splitlines()[0].startswith("layers,")


def test_summary_names_the_recommended_setting_and_its_limits(tmp_path):
    write_report(sweep_cells(), tmp_path, "sweep_x", "Sweep x", png=False)
    text = (tmp_path / "sweep_x.md").read_text(encoding="utf-8")
    assert "Recommended (highest marker share with broken ≤ 5%, perplexity ≤ 2.5× plain)" in text
    assert "add/all L8-9 s2" in text and "| 8-9 | 2 | 50% | 50% | 0% | – | 1.20 |" in text
