"""Numbers that describe a contrast-pair dataset (size, topics, あーし rate, style markers, lengths) and their
plain-text table for the CLI's `stats`."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .data import AASHI, TEXT_COLUMNS, Dataset
from .readers import shown_path
from .style import normalize, style_score


def _length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Mean, median, min and max length in characters."""
    lengths = [len(t) for t in texts]
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    return {
        "mean": round(statistics.fmean(lengths), 2),
        "median": float(statistics.median(lengths)),
        "min": min(lengths),
        "max": max(lengths),
    }


def _share(flags: Sequence[bool]) -> float:
    """The share of true flags, 0.0 for none."""
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def _column_texts(dataset: Dataset, column: str) -> list[str]:
    """The non-missing texts of one column."""
    return [t for t in (getattr(e, column) for e in dataset.entries) if t is not None]


def dataset_stats(dataset: Dataset) -> dict[str, Any]:
    """JSON-ready numbers describing a dataset: size, topics, あーし rate, marker rates, scores, lengths."""
    topics = Counter(e.topic if e.topic is not None else "(none)" for e in dataset.entries)
    marker_rate: dict[str, float] = {}
    mean_score: dict[str, float] = {}
    length: dict[str, dict[str, float]] = {}
    for column in TEXT_COLUMNS:
        texts = _column_texts(dataset, column)
        if not texts:
            continue
        scores = [style_score(t, dataset.lang) for t in texts]
        marker_rate[column] = _share([bool(s.matches) for s in scores])
        mean_score[column] = round(statistics.fmean(s.score for s in scores), 3)
        length[column] = _length_stats(texts)
    gyaru = _column_texts(dataset, "gyaru")
    return {
        "name": dataset.name,
        "path": shown_path(dataset.path),
        "entries": len(dataset.entries),
        "lang": dataset.lang,
        "sha256": dataset.sha256,
        "columns": list(dataset.columns),
        "topics": dict(sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))),
        "aashi_rate": _share([AASHI in normalize(t, "ja") for t in gyaru]),
        "marker_rate": marker_rate,
        "mean_score": mean_score,
        "length": length,
    }


def format_stats_table(stats: dict[str, Any]) -> str:
    """A plain-text table of dataset_stats() output, for the CLI."""
    lines = [
        f"dataset   {stats['name']}  ({stats['path']})",
        f"entries   {stats['entries']}    lang {stats['lang']}    columns {', '.join(stats['columns'])}",
        f"sha256    {stats['sha256']}",
        f"あーし    {stats['aashi_rate'] * 100:.1f}% of gyaru lines",
        "topics    " + ", ".join(f"{name} {count}" for name, count in stats["topics"].items()),
        "",
        f"{'column':<10}{'markers':>9}{'score':>9}{'len mean':>10}{'median':>8}{'min':>6}{'max':>6}",
    ]
    for column, lengths in stats["length"].items():
        lines.append(
            f"{column:<10}{stats['marker_rate'][column] * 100:>8.1f}%{stats['mean_score'][column]:>9.2f}"
            f"{lengths['mean']:>10.1f}{lengths['median']:>8.1f}{lengths['min']:>6}{lengths['max']:>6}"
        )
    lines.append("")
    lines.append("markers = share of lines with at least one style marker; score = markers per 100 characters")
    return "\n".join(lines)
