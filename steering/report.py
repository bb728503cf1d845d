"""Sweep reports: heatmaps (drawn by steering.plots), CSV/JSON tables and a markdown summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .files import atomic_write, atomic_write_text
from .plots import METRICS, heatmap  # noqa: F401 - re-exported: report.heatmap is public
from .sweep import MAX_BROKEN, MAX_PERPLEXITY_RATIO, SweepCell, cells_table, recommend

HEATMAPS = ("marker_share", "broken_share")


def write_table(cells: Sequence[SweepCell], out_dir: Path, stem: str) -> list[Path]:
    rows = cells_table(cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    atomic_write(csv_path, lambda tmp: _write_csv(tmp, rows))
    atomic_write_text(
        json_path,
        json.dumps(
            {
                "cells": rows,
                "replies": [{"layers": c.layers, "strength": c.strength, "replies": c.replies} for c in cells],
            },
            ensure_ascii=False,
            indent=1,
        ),
    )
    return [csv_path, json_path]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_heatmaps(cells: Sequence[SweepCell], out_dir: Path, stem: str, png: bool = True) -> list[Path]:
    paths = []
    for metric in HEATMAPS:
        fig = heatmap(cells, metric)
        html = out_dir / f"{stem}_{metric}.html"
        atomic_write(html, lambda tmp, fig=fig: fig.write_html(tmp, include_plotlyjs=True, full_html=True))  # no CDN
        paths.append(html)
        if png:
            try:
                png_path = out_dir / f"{stem}_{metric}.png"
                # format named: the temporary's .tmp suffix says nothing about it
                atomic_write(png_path, lambda tmp, fig=fig: fig.write_image(tmp, format="png", width=700, height=380))
                paths.append(png_path)
            except Exception as exc:  # noqa: BLE001 - kaleido needs a Chromium; the HTML is enough without it
                print(f"[steering] PNG export skipped ({type(exc).__name__}: {exc})")
    return paths


def summary_markdown(cells: Sequence[SweepCell], title: str, stem: str) -> str:
    rows = cells_table(cells)
    best = recommend(cells)
    lines = [f"## {title}", ""]
    limits = f"broken ≤ {MAX_BROKEN:.0%}, perplexity ≤ {MAX_PERPLEXITY_RATIO:g}× plain"
    if best:
        lines.append(
            f"Recommended (highest marker share with {limits}): {best.setting.label()} — markers "
            f"{best.summary['marker_share']:.0%}, broken {best.summary['broken_share']:.0%}, perplexity "
            f"{best.summary['perplexity_ratio']:.2f}× plain."
        )
    else:
        lines.append(f"No setting was more gal than plain with {limits}.")
    lines += [
        "",
        " ".join(f"![{m}]({stem}_{m}.png)" for m in HEATMAPS),
        "",
        "| layers | strength | markers | gal & readable | broken | onset (tokens) | ppl × plain |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['layers']} | {r['strength']:g} | {r['marker_share']:.0%} | {r['gal_readable_share']:.0%} | "
        f"{r['broken_share']:.0%} | {_num(r['median_onset'], 0)} | {_num(r['perplexity_ratio'], 2)} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def _num(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_report(
    cells: Sequence[SweepCell], out_dir: str | Path, stem: str, title: str, png: bool = True
) -> list[Path]:
    """CSV + JSON table, marker- and broken-share heatmaps (HTML, PNG) and a markdown summary."""
    out_dir = Path(out_dir)
    paths = write_table(cells, out_dir, stem) + write_heatmaps(cells, out_dir, stem, png)
    md = out_dir / f"{stem}.md"
    atomic_write_text(md, summary_markdown(cells, title, stem))
    return paths + [md]
