"""Sweep reports: heatmaps (plotly), CSV/JSON tables and a markdown summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .evaluate import SweepCell, cells_table, layers_label, recommend

METRICS = {
    "style": "Style score (markers / 100 chars)",
    "broken_share": "Broken share",
    "marker_share": "Share of replies with a marker",
}


def heatmap(cells: Sequence[SweepCell], metric: str = "style"):
    """A layers × strength heatmap of one metric; the recommended cell is outlined."""
    import plotly.graph_objects as go

    rows = cells_table(cells)
    layers = list(dict.fromkeys(r["layers"] for r in rows))
    strengths = sorted({r["strength"] for r in rows})
    z = [
        [next((r[metric] for r in rows if r["layers"] == lay and r["strength"] == s), None) for s in strengths]
        for lay in layers
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{s:g}" for s in strengths],
            y=layers,
            colorscale="RdPu" if metric != "broken_share" else "Greys",
            text=[[f"{v:.2f}" if v is not None else "" for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate="layers %{y}<br>strength %{x}<br>%{z:.3f}<extra></extra>",
        )
    )
    best = recommend(cells)
    if best is not None:
        label = layers_label(best.layers)
        fig.add_shape(
            type="rect",
            x0=strengths.index(best.strength) - 0.5,
            x1=strengths.index(best.strength) + 0.5,
            y0=layers.index(label) - 0.5,
            y1=layers.index(label) + 0.5,
            line=dict(color="#00a884", width=3),
        )
    fig.update_layout(
        title=METRICS.get(metric, metric),
        xaxis_title="strength",
        yaxis_title="layers",
        height=380,
        margin=dict(l=60, r=20, t=50, b=50),
        yaxis_type="category",
        xaxis_type="category",
    )
    return fig


def write_table(cells: Sequence[SweepCell], out_dir: Path, stem: str) -> list[Path]:
    rows = cells_table(cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(
        json.dumps(
            {
                "cells": rows,
                "replies": [{"layers": c.layers, "strength": c.strength, "replies": c.replies} for c in cells],
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    return [csv_path, json_path]


def write_heatmaps(cells: Sequence[SweepCell], out_dir: Path, stem: str, png: bool = True) -> list[Path]:
    paths = []
    for metric in ("style", "broken_share"):
        fig = heatmap(cells, metric)
        html = out_dir / f"{stem}_{metric}.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True)  # self-contained: no CDN
        paths.append(html)
        if png:
            try:
                fig.write_image(out_dir / f"{stem}_{metric}.png", width=700, height=380)
                paths.append(out_dir / f"{stem}_{metric}.png")
            except Exception as exc:  # noqa: BLE001 - kaleido needs a Chromium; the HTML is enough without it
                print(f"[steering] PNG export skipped ({type(exc).__name__}: {exc})")
    return paths


def summary_markdown(cells: Sequence[SweepCell], title: str, stem: str) -> str:
    rows = cells_table(cells)
    best = recommend(cells)
    lines = [f"## {title}", ""]
    if best:
        lines.append(
            f"Recommended (highest style with broken share ≤ 5 %): layers {best.layers[0]}–{best.layers[-1]}, "
            f"strength {best.strength:g} — style {best.summary['style']:.2f}, "
            f"marker share {best.summary['marker_share']:.0%}, broken {best.summary['broken_share']:.0%}."
        )
    else:
        lines.append("No setting kept the broken share at or under 5 %.")
    lines += [
        "",
        f"![style]({stem}_style.png) ![broken]({stem}_broken_share.png)",
        "",
        "| layers | strength | style | marker share | broken share | distinct-2 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['layers']} | {r['strength']:g} | {r['style']:.2f} | {r['marker_share']:.0%} | "
        f"{r['broken_share']:.0%} | {r['distinct_2']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_report(
    cells: Sequence[SweepCell], out_dir: str | Path, stem: str, title: str, png: bool = True
) -> list[Path]:
    """CSV + JSON table, style and broken-share heatmaps (HTML, PNG) and a markdown summary."""
    out_dir = Path(out_dir)
    paths = write_table(cells, out_dir, stem) + write_heatmaps(cells, out_dir, stem, png)
    md = out_dir / f"{stem}.md"
    md.write_text(summary_markdown(cells, title, stem), encoding="utf-8")
    return paths + [md]
