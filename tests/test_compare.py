"""The evaluation study and sweep reports end to end on the bundled model, at toy sizes."""

from __future__ import annotations

import json

import pytest

from steering.compare import run_study, save_study, study_markdown
from steering.evaluate import SweepCell
from steering.report import heatmap, write_report


@pytest.mark.slow
def test_study_runs_every_case_and_reports_them(bundled, tmp_path):
    logs = []
    study = run_study(
        bundled,
        "en",
        ["12-14"],
        [3.0],
        dev=2,
        test=2,
        max_new_tokens=6,
        methods=["mean_diff"],
        contrasts=["gyaru-vs-standard"],
        positions=["mean", "last"],
        log=logs.append,
    )
    assert [(r["method"], r["position"]) for r in study.rows] == [("mean_diff", "mean"), ("mean_diff", "last")]
    cases = [b["case"] for b in study.baselines]
    assert cases[:2] == ["plain model", "prompted (system prompt)"]
    assert set(study.dev_prompts).isdisjoint(study.test_prompts)
    text = study_markdown(study, bundled.name)
    assert "### Baselines on the test prompts" in text and "| mean_diff | gyaru-vs-standard | mean |" in text
    saved = json.loads(save_study(study, tmp_path).read_text(encoding="utf-8"))
    assert len(saved["rows"]) == 2 and len(logs) >= 4


def test_report_writes_tables_heatmaps_and_summary(tmp_path):
    cells = [
        SweepCell(
            [8, 9],
            s,
            {
                "style": s,
                "broken_share": 0.0 if s < 3 else 0.5,
                "marker_share": 0.5,
                "replies": 2,
                "distinct_2": 1.0,
                "repeated_ngram_rate": 0.0,
            },
            ["a", "b"],
        )
        for s in (0.0, 2.0, 4.0)
    ]
    fig = heatmap(cells, "style")
    assert fig.layout.height and len(fig.layout.shapes) == 1  # the recommended cell is outlined
    paths = write_report(cells, tmp_path, "sweep_x", "Sweep x", png=False)
    names = {p.name for p in paths}
    assert {"sweep_x.csv", "sweep_x.json", "sweep_x_style.html", "sweep_x_broken_share.html", "sweep_x.md"} <= names
    summary = (tmp_path / "sweep_x.md").read_text(encoding="utf-8")
    assert "layers 8–9, strength 2" in summary
    assert "cdn.plot.ly" not in (tmp_path / "sweep_x_style.html").read_text(encoding="utf-8")[:5000]


def test_save_study_leaves_the_users_own_tmp_file_alone(tmp_path):
    from steering.compare import Study

    own = tmp_path / "evaluation_en.json.tmp"
    own.write_bytes(b"user's own")
    study = Study("en", ["12-14"], [3.0], ["a"], ["b"], rows=[{"method": "mean_diff"}])
    path = save_study(study, tmp_path)
    assert json.loads(path.read_text(encoding="utf-8"))["rows"] == [{"method": "mean_diff"}]
    assert own.read_bytes() == b"user's own"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation_en.json", "evaluation_en.json.tmp"]
