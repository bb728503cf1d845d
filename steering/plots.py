"""Every figure the project draws (plotly, the `app` extra): a vector's per-layer chart and a sweep's
layers × strength heatmaps."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .settings import format_layers
from .sweep import SweepCell, cells_table, recommend
from .vectors import SteeringVector

# Per-layer chart series: label -> (stat key in the sidecar, drawn on the secondary "norm" axis)
SERIES = {
    "cos(方向, 平均差) / cos(direction, mean diff)": ("cos_mean_diff", False),
    "検証 正解率 / held-out accuracy": ("heldout_accuracy", False),
    "検証 AUC / held-out AUC": ("heldout_auc", False),
    "平均差ノルム / mean-diff norm": ("mean_diff_norm", True),
    "残差ノルム / residual norm": ("residual_norm", True),
}
# Sweep heatmaps: metric -> title
METRICS = {
    "marker_share": "Share of replies with a gal marker",
    "broken_share": "Broken share (strict fluency judge)",
    "gal_readable_share": "Gal and readable",
    "perplexity_ratio": "Perplexity × plain",
    "style": "Style score (markers / 100 chars)",
}
BAD_HIGH = ("broken_share", "perplexity_ratio")  # metrics where more is worse: 0 reads as good, not mid-grey
PINK, LIGHT_PINK, GREEN = "#e75480", "#f4b6c8", "#00a884"


def base_figure(title: str) -> go.Figure:
    """An empty per-layer figure with a secondary y axis (for norms)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.update_layout(
        title=title,
        height=440,
        template="plotly_white",
        margin=dict(l=50, r=50, t=60, b=40),
        legend=dict(orientation="h", y=-0.2),
        xaxis_title="layer",
    )
    return fig


def layer_figure(vector: SteeringVector, series: Sequence[str] = ()) -> go.Figure:
    """The sidecar chart when the vector has recorded stats, else what a bare file still tells."""
    return sidecar_figure(vector, series) if vector.calibrated else bare_figure(vector)


def sidecar_figure(vector: SteeringVector, series: Sequence[str] = ()) -> go.Figure:
    """PC1 explained variance per layer (bars) plus the chosen SERIES; norms on the secondary axis."""
    layers, suggested = vector.layers, vector.meta.suggested_layer
    fig = base_figure(f"{vector.name}: PC1 explained variance per layer")
    fig.add_trace(
        go.Bar(
            x=layers,
            y=[vector.stats.get(i, {}).get("pc1_explained_variance") for i in layers],
            name="PC1 分散 / PC1 explained variance",
            marker_color=[PINK if layer == suggested else LIGHT_PINK for layer in layers],
        ),
        secondary_y=False,
    )
    for label in series:
        key, secondary = SERIES[label]
        values = [vector.stats.get(i, {}).get(key) for i in layers]
        if any(v is not None for v in values):  # a series the sidecar never recorded is left out
            fig.add_trace(go.Scatter(x=layers, y=values, name=label, mode="lines+markers"), secondary_y=secondary)
    if suggested is not None:
        fig.add_vline(
            x=suggested,
            line_dash="dash",
            line_color=PINK,
            annotation_text=f"★ suggested {suggested}",
            annotation_position="top",
        )
    fig.update_yaxes(title_text="share / cos / accuracy", range=[-0.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="norm", secondary_y=True, showgrid=False)
    return fig


def adjacent_cosines(vector: SteeringVector) -> list[float]:
    """cos(direction of layer L-1, direction of layer L) for each consecutive pair of the vector's layers."""
    dirs = [vector.directions[i].float() for i in vector.layers]
    return [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in zip(dirs, dirs[1:])]


def direction_norms(vector: SteeringVector) -> list[float]:
    """Each layer's direction norm; .safetensors/.gguf readers normalize and keep the file's norm as "file_norm"."""
    return [vector.stats.get(i, {}).get("file_norm", float(vector.directions[i].float().norm())) for i in vector.layers]


def bare_figure(vector: SteeringVector) -> go.Figure:
    """What a bare {layer: tensor} file still tells: direction norms (bars) and adjacent layers' cosine."""
    layers = vector.layers
    fig = base_figure(f"{vector.name}: no sidecar — direction norms and adjacent-layer cosine")
    fig.add_trace(
        go.Bar(x=layers, y=direction_norms(vector), name="方向ノルム / direction norm", marker_color=LIGHT_PINK),
        secondary_y=True,
    )
    fig.add_trace(
        go.Scatter(
            x=layers[1:], y=adjacent_cosines(vector), name="cos(L-1, L) / adjacent-layer cosine", mode="lines+markers"
        ),
        secondary_y=False,
    )
    fig.update_yaxes(title_text="cosine", range=[-1.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="norm", secondary_y=True, showgrid=False)
    return fig


def heatmap(cells: Sequence[SweepCell], metric: str = "marker_share") -> go.Figure:
    """A layers × strength heatmap of one metric of a sweep; the recommended cell is outlined."""
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
            colorscale="Greys" if metric in BAD_HIGH else "RdPu",
            zmin=0 if metric in BAD_HIGH else None,
            text=[[f"{v:.2f}" if v is not None else "" for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate="layers %{y}<br>strength %{x}<br>%{z:.3f}<extra></extra>",
        )
    )
    best = recommend(cells)
    if best is not None:
        label = format_layers(best.layers)
        fig.add_shape(
            type="rect",
            x0=strengths.index(best.strength) - 0.5,
            x1=strengths.index(best.strength) + 0.5,
            y0=layers.index(label) - 0.5,
            y1=layers.index(label) + 0.5,
            line=dict(color=GREEN, width=3),
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
