"""steering.plots: the per-layer charts (with and without a sidecar) and the sweep heatmaps — their traces, axes,
titles and marks. Figures are built from hand-made vectors and cells; nothing is generated."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import has_japanese

go = pytest.importorskip("plotly.graph_objects")

from steering import plots, report  # noqa: E402
from steering.sweep import SweepCell  # noqa: E402
from steering.tables import STAT_TEXTS  # noqa: E402
from steering.vectors import SteeringVector  # noqa: E402


def shown_texts(fig) -> list[str]:
    """Every text a reader sees on a figure: title, axis titles, legend names, hover templates, annotations."""
    layout = fig.layout
    texts = [layout.title.text, layout.xaxis.title.text, layout.yaxis.title.text]
    if "yaxis2" in layout:
        texts.append(layout.yaxis2.title.text)
    texts += [a.text for a in layout.annotations]
    texts += [t.name for t in fig.data if t.name] + [t.hovertemplate for t in fig.data]
    return [t for t in texts if t]


def sidecar_vector() -> SteeringVector:
    """Layers 2-5, suggested 4; every stat recorded except held-out AUC."""
    layers = range(2, 6)
    directions = {layer: torch.ones(8) / 8**0.5 for layer in layers}
    stats = {
        layer: {
            "pc1_explained_variance": 0.1 * layer,
            "cos_mean_diff": 0.9,
            "heldout_accuracy": 0.8,
            "mean_diff_norm": float(layer),
            "residual_norm": 10.0 * layer,
        }
        for layer in layers
    }
    return SteeringVector(directions, {"name": "demo", "suggested_layer": 4}, stats)


def bare_vector() -> SteeringVector:
    """A reference-style file: layer 1 and 2 point the same way, layer 3 the opposite way; layer 2 read from a
    file that recorded its original norm."""
    e = torch.zeros(4)
    e[0] = 1.0
    return SteeringVector({1: 2 * e, 2: e, 3: -e}, {}, {2: {"file_norm": 7.0}})


def by_name(fig) -> dict:
    return {trace.name: trace for trace in fig.data}


def test_sidecar_figure_draws_pc1_bars_and_the_chosen_series():
    vector = sidecar_vector()
    chosen = list(plots.SERIES)  # every series; held-out AUC was never recorded and is left out
    fig = plots.sidecar_figure(vector, chosen)
    traces = by_name(fig)
    assert fig.layout.title.text == "demo: how each layer separates gal from plain text"
    pc1 = traces["Share explained by the main direction"]
    assert pc1.type == "bar" and list(pc1.x) == [2, 3, 4, 5] and list(pc1.y) == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert list(pc1.marker.color) == [plots.LIGHT_PINK, plots.LIGHT_PINK, plots.PINK, plots.LIGHT_PINK]
    names = {key: STAT_TEXTS[key].en for key in chosen}
    assert set(traces) == {pc1.name} | {name for key, name in names.items() if key != "heldout_auc"}
    # sizes go on the secondary axis, shares and cosines on the first
    for key, secondary in plots.SERIES.items():
        if names[key] in traces:
            assert traces[names[key]].yaxis == ("y2" if secondary else "y")
    assert [a.text for a in fig.layout.annotations] == ["★ suggested: layer 4"]
    assert fig.layout.shapes[0].x0 == 4 and fig.layout.shapes[0].line.dash == "dash"
    assert fig.layout.xaxis.title.text == "Layer"
    assert traces["Accuracy on unseen pairs"].hovertemplate.startswith("Layer %{x}<br>Accuracy on unseen pairs")


def test_series_choices_keep_their_keys_in_each_language():
    english, japanese = plots.series_choices("en"), plots.series_choices("ja")
    assert [key for _, key in english] == [key for _, key in japanese] == list(plots.SERIES)
    assert not any(has_japanese(name) for name, _ in english) and all(has_japanese(name) for name, _ in japanese)
    fig = plots.sidecar_figure(sidecar_vector(), ["heldout_accuracy", "no-such-series"], ui_lang="ja")
    assert set(by_name(fig)) == {"主方向で説明できる割合", "未使用ペアでの正解率"}  # an unknown key is skipped


def test_every_figure_speaks_one_language_at_a_time():
    figures = {
        lang: [
            plots.layer_figure(sidecar_vector(), list(plots.SERIES), lang),
            plots.layer_figure(bare_vector(), [], lang),
            plots.heatmap(CELLS, "marker_share", lang),
            plots.heatmap(CELLS[2:], "broken_share", lang),
        ]
        for lang in ("en", "ja")
    }
    for fig in figures["en"]:
        assert not any(has_japanese(t) for t in shown_texts(fig)), shown_texts(fig)
    for fig in figures["ja"]:
        texts = shown_texts(fig)
        assert has_japanese(fig.layout.title.text) and has_japanese(fig.layout.xaxis.title.text), texts
        assert all(has_japanese(t) for t in texts if not t.startswith(("demo", "%"))), texts


def test_layers_help_says_how_to_read_the_chart():
    english, japanese = plots.layers_help("en"), plots.layers_help("ja")
    for key in plots.SERIES:
        assert STAT_TEXTS[key].en.lower() in english.lower() and STAT_TEXTS[key].ja in japanese
    assert "★" in english and "last fifth" in english and "Sweep tab" in english
    assert not has_japanese(english) and has_japanese(japanese) and "★" in japanese


def test_sidecar_figure_with_no_series_has_only_the_bars():
    fig = plots.sidecar_figure(sidecar_vector(), [])
    assert [trace.type for trace in fig.data] == ["bar"]


def test_adjacent_cosines_and_direction_norms():
    vector = bare_vector()
    assert plots.adjacent_cosines(vector) == pytest.approx([1.0, -1.0])
    assert plots.direction_norms(vector) == pytest.approx([2.0, 7.0, 1.0])  # the file's own norm where recorded


def test_bare_figure_shows_norms_and_adjacent_cosine():
    vector = bare_vector()
    fig = plots.bare_figure(vector)
    assert "no statistics" in fig.layout.title.text and "neighboring layers" in fig.layout.title.text
    traces = by_name(fig)
    norms, cosine = traces["Direction size"], traces["Similarity to the previous layer (cos)"]
    assert norms.type == "bar" and norms.yaxis == "y2" and list(norms.y) == pytest.approx([2.0, 7.0, 1.0])
    assert cosine.type == "scatter" and list(cosine.x) == [2, 3] and list(cosine.y) == pytest.approx([1.0, -1.0])
    assert tuple(fig.layout.yaxis.range) == (-1.05, 1.05)


def test_layer_figure_picks_the_chart_the_vector_can_fill():
    assert "separates" in plots.layer_figure(sidecar_vector(), []).layout.title.text
    assert "no statistics" in plots.layer_figure(bare_vector(), list(plots.SERIES)).layout.title.text


def cell(layers, strength, markers, broken=0.0) -> SweepCell:
    summary = {"style": markers, "broken_share": broken, "marker_share": markers, "perplexity_ratio": 1.0}
    return SweepCell.of(layers, strength, summary, ["a reply"])


CELLS = [
    cell([8, 9, 10], 0.0, 0.0),
    cell([8, 9, 10], 2.0, 1.5),
    cell([12, 13], 0.0, 0.0),
    cell([12, 13], 2.0, 3.0, broken=0.5),  # the most markers, but broken: not recommended
]


def test_heatmap_lays_out_layers_by_strength_and_outlines_the_recommended_cell():
    fig = plots.heatmap(CELLS, "marker_share")
    (trace,) = fig.data
    assert trace.type == "heatmap"
    assert fig.layout.title.text == "Share of replies with gal words — green box: recommended"
    assert fig.layout.xaxis.title.text == "Strength" and fig.layout.yaxis.title.text == "Layers"
    assert list(trace.x) == ["0", "2"] and list(trace.y) == ["8-10", "12-13"]
    assert [list(row) for row in trace.z] == [[0.0, 1.5], [0.0, 3.0]]
    (outline,) = fig.layout.shapes  # the recommended cell: 8-10 @ 2
    assert (outline.x0, outline.x1, outline.y0, outline.y1) == (0.5, 1.5, -0.5, 0.5)


def test_broken_share_heatmap_and_no_outline_without_a_recommendation():
    fig = plots.heatmap(CELLS[2:], "broken_share")
    greys = go.Heatmap(colorscale="Greys").colorscale
    assert fig.layout.title.text == plots.METRICS["broken_share"].en and fig.data[0].colorscale == greys
    assert fig.data[0].zmin == 0  # an all-zero broken share reads as good (white), not mid-grey
    assert len(fig.layout.shapes) == 0  # 12-13 @ 2 is broken: nothing to outline
    assert plots.heatmap(CELLS[2:], "broken_share", "ja").layout.title.text == "崩れた返答の割合 (厳しめの判定)"


def test_report_draws_with_the_same_heatmap():
    assert report.heatmap is plots.heatmap
