"""Tables of a vector's per-layer stats and of a sweep's cells: aligned text for the terminal, pandas DataFrames for
the app (pandas is imported only when a frame is built; it comes with gradio)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .settings import format_layers

if TYPE_CHECKING:  # sweep pulls in torch: the CLI imports this module at start and stays quick
    from .sweep import SweepCell

# Sidecar stat key -> short column name, in table order
STAT_COLUMNS = [
    ("pc1_explained_variance", "pc1_var"),
    ("cos_mean_diff", "cos_mean"),
    ("mean_diff_norm", "mean_norm"),
    ("residual_norm", "resid_norm"),
    ("heldout_accuracy", "ho_acc"),
    ("heldout_auc", "ho_auc"),
]


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def layer_table(stats: dict[int, dict], suggested: int | None = None) -> str:
    """Per-layer stats as an aligned text table (the suggested layer marked with *)."""
    header = ["layer"] + [short for _, short in STAT_COLUMNS]
    rows = [header]
    for layer in sorted(stats):
        mark = "*" if layer == suggested else ""
        rows.append([f"{layer}{mark}"] + [_fmt(stats[layer].get(key)) for key, _ in STAT_COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def stats_frame(stats: dict[int, dict], suggested: int | None = None):
    """Per-layer stats as a DataFrame (rounded to 3 places; a stat never recorded is empty); ★ marks the suggested
    layer."""
    import pandas as pd

    rows = [
        [f"{layer}{' ★' if layer == suggested else ''}"]
        + [round(stats[layer][key], 3) if key in stats[layer] else None for key, _ in STAT_COLUMNS]
        for layer in sorted(stats)
    ]
    return pd.DataFrame(rows, columns=["layer"] + [short for _, short in STAT_COLUMNS])


def cell_label(cell: SweepCell) -> str:
    """'8-12 @ 2': a sweep cell's layers (as the layer spec that reads them back) and strength."""
    return f"{format_layers(cell.layers)} @ {cell.strength:g}"


def sweep_frame(cells: Sequence[SweepCell]):
    """cells_table as a DataFrame (floats rounded), labelled by cell_label, plus the first reply of each cell as a
    sample."""
    import pandas as pd

    from .sweep import cells_table

    frame = pd.DataFrame(cells_table(cells)).round(3)
    frame.insert(0, "cell", [cell_label(c) for c in cells])
    frame["sample reply"] = [(c.replies[0] if c.replies else "")[:120] for c in cells]
    return frame
