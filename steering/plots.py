"""Every figure the project draws (plotly, the `app` extra): a vector's per-layer chart and a sweep's
layers × strength heatmaps. Titles, axes, legends and hover text are in the page's language (`ui_lang`: "en" or
"ja"; English by default, as the CLI's reports use it)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .messages import Text
from .settings import format_layers
from .sweep import SweepCell, cells_table, recommend
from .tables import STAT_TEXTS, suggested_help
from .vectors import SteeringVector

PC1 = "pc1_explained_variance"  # the bars
# Per-layer chart series: stable key (the stat key in the sidecar) -> drawn on the secondary "size" axis. The key
# is what the app's checkboxes hold; series_choices gives each its name in the page's language.
SERIES = {
    "cos_mean_diff": False,
    "heldout_accuracy": False,
    "heldout_auc": False,
    "mean_diff_norm": True,
    "residual_norm": True,
}
# Sweep heatmaps: metric -> title
METRICS = {
    "marker_share": Text("Share of replies with gal words", "ギャル語を含む返答の割合"),
    "broken_share": Text("Share of broken replies (strict judge)", "崩れた返答の割合 (厳しめの判定)"),
    "gal_readable_share": Text("Share of replies gal and still readable", "ギャル語ありで読める返答の割合"),
    "perplexity_ratio": Text("Perplexity vs. no steering (×)", "操作なしと比べたパープレキシティ (倍)"),
    "style": Text("Gal style (marker words per 100 characters)", "ギャル度 (100文字あたりのギャル語)"),
}
BAD_HIGH = ("broken_share", "perplexity_ratio")  # metrics where more is worse: 0 reads as good, not mid-grey
PINK, LIGHT_PINK, GREEN = "#e75480", "#f4b6c8", "#00a884"

LAYER_AXIS = Text("Layer", "レイヤー")
SHARE_AXIS = Text("Share / agreement / accuracy (0–1)", "割合・一致度・正解率 (0〜1)")
SIZE_AXIS = Text("Size", "大きさ")
SIDECAR_TITLE = Text(
    "{name}: how each layer separates gal from plain text", "{name}: レイヤーごとのギャル文と普通の文の違い"
)
SUGGESTED = Text("★ suggested: layer {layer}", "★ おすすめ: レイヤー {layer}")
BARE_TITLE = Text(
    "{name}: no statistics saved with this file — direction sizes and how alike neighboring layers are",
    "{name}: このファイルには統計がありません — 方向の大きさと、隣のレイヤーとの似かた",
)
DIRECTION_SIZE = Text("Direction size", "方向の大きさ")
NEIGHBOR_COS = Text("Similarity to the previous layer (cos)", "ひとつ前のレイヤーとの類似度 (cos)")
SIMILARITY_AXIS = Text("Similarity (cos, −1 to 1)", "類似度 (cos, −1〜1)")
LAYER_HOVER = Text(
    "Layer %{{x}}<br>{name}: %{{y:.3f}}<extra></extra>", "レイヤー %{{x}}<br>{name}: %{{y:.3f}}<extra></extra>"
)
STRENGTH_AXIS = Text("Strength", "強さ")
LAYERS_AXIS = Text("Layers", "レイヤー")
CELL_HOVER = Text(
    "Layers %{{y}}<br>Strength %{{x}}<br>{metric}: %{{z:.3f}}<extra></extra>",
    "レイヤー %{{y}}<br>強さ %{{x}}<br>{metric}: %{{z:.3f}}<extra></extra>",
)
RECOMMENDED_MARK = Text("green box: recommended", "緑の枠: おすすめ")

LAYERS_HELP = Text(
    en="""**How to read the Layers chart** (x: the model's layers, 0 is the first)

- **Bars — share explained by the main direction** (left axis, 0–1): of the way the gal-minus-plain differences \
vary from pair to pair, the share along one single direction. The dark pink bar is the ★ suggested layer.
- **Agreement with the average difference (cos)** (left axis): 1 when the saved direction points exactly along \
the average difference (always so for the mean_diff method).
- **Accuracy on unseen pairs** and **separation on unseen pairs (AUC)** (left axis): how well the direction tells \
gal from plain on texts held back from extraction; 0.5 is guessing, 1 is perfect.
- **Size of the average difference** and **typical activation size** (right axis): how far apart gal and plain \
sit, and how large the model's internal state usually is, at each layer. Both tend to grow in later layers, so \
compare them with each other rather than across layers.

**A good layer to steer** tells unseen gal and plain texts apart well (accuracy and AUC near 1) and is not in \
the last fifth of the model, where pushing tends to break text; middle layers are the usual start. Whether replies \
really sound gal and stay readable only shows in replies: try the Chat tab, or measure with the Sweep tab.

{suggested}

Files with no saved statistics show only each layer's direction size and how alike neighboring layers' \
directions are (cos near 1: the same direction).""",
    ja="""**レイヤーのグラフの読み方**（横軸はモデルのレイヤー。0 が最初）

- **棒 — 主方向で説明できる割合**（左の軸, 0〜1）: ペアごとの「ギャル文 − 普通の文」の差のばらつきのうち、ひとつの\
方向にそろっている割合。濃いピンクの棒が ★ おすすめのレイヤー。
- **平均差との一致度 (cos)**（左の軸）: 保存した方向が平均の差とぴったり同じ向きなら 1（mean_diff 方式では常に 1）。
- **未使用ペアでの正解率** と **未使用ペアでの分離度 (AUC)**（左の軸）: 抽出に使わず取っておいた文で、方向がギャル文と\
普通の文をどれだけ見分けられたか。0.5 は当てずっぽう、1 は完璧。
- **平均差の大きさ** と **活性の典型的な大きさ**（右の軸）: 各レイヤーでギャル文と普通の文がどれだけ離れているかと、\
モデル内部の状態のふつうの大きさ。どちらも後ろのレイヤーほど大きくなりがちなので、レイヤー同士ではなく互いに比べて見てください。

**動かすのによいレイヤー** は、未使用の文でギャル文と普通の文をよく見分け（正解率と AUC が 1 に近い）、モデルの最後の\
5分の1に入っていないものです（そこを押すと文が崩れやすいため）。まずは真ん中あたりのレイヤーから。返答が本当にギャルっぽく\
読めるかは返答を見ないとわかりません: チャットタブで試すか、スイープタブで測ってください。

{suggested}

統計が保存されていないファイルでは、各レイヤーの方向の大きさと、隣のレイヤーの方向との似かた（cos が 1 に近い = 同じ\
向き）だけを表示します。""",
)


def series_choices(ui_lang: str = "en") -> list[tuple[str, str]]:
    """The Layers chart's series as (name in `ui_lang`, stable key) for a checkbox group."""
    return [(STAT_TEXTS[key].say(ui_lang), key) for key in SERIES]


def layers_help(ui_lang: str = "en") -> str:
    """Markdown on reading the Layers chart: each series, what a good layer looks like, and the ★."""
    return LAYERS_HELP.say(ui_lang, suggested=suggested_help(ui_lang))


def base_figure(title: str, ui_lang: str = "en") -> go.Figure:
    """An empty per-layer figure with a secondary y axis (for sizes)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.update_layout(
        title=title,
        height=440,
        template="plotly_white",
        margin=dict(l=50, r=50, t=60, b=40),
        legend=dict(orientation="h", y=-0.2),
        xaxis_title=LAYER_AXIS.say(ui_lang),
    )
    return fig


def layer_figure(vector: SteeringVector, series: Sequence[str] = (), ui_lang: str = "en") -> go.Figure:
    """The sidecar chart when the vector has recorded stats, else what a bare file still tells."""
    return sidecar_figure(vector, series, ui_lang) if vector.calibrated else bare_figure(vector, ui_lang)


def _hover(name: str, ui_lang: str) -> str:
    return LAYER_HOVER.say(ui_lang, name=name)


def sidecar_figure(vector: SteeringVector, series: Sequence[str] = (), ui_lang: str = "en") -> go.Figure:
    """The main-direction share per layer (bars) plus the chosen SERIES (keys; unknown ones are skipped); sizes on
    the secondary axis."""
    layers, suggested = vector.layers, vector.meta.suggested_layer
    fig = base_figure(SIDECAR_TITLE.say(ui_lang, name=vector.name), ui_lang)
    bars = STAT_TEXTS[PC1].say(ui_lang)
    fig.add_trace(
        go.Bar(
            x=layers,
            y=[vector.stats.get(i, {}).get(PC1) for i in layers],
            name=bars,
            marker_color=[PINK if layer == suggested else LIGHT_PINK for layer in layers],
            hovertemplate=_hover(bars, ui_lang),
        ),
        secondary_y=False,
    )
    for key in series:
        if key not in SERIES:
            continue
        values = [vector.stats.get(i, {}).get(key) for i in layers]
        if any(v is not None for v in values):  # a series the sidecar never recorded is left out
            name = STAT_TEXTS[key].say(ui_lang)
            trace = go.Scatter(x=layers, y=values, name=name, mode="lines+markers", hovertemplate=_hover(name, ui_lang))
            fig.add_trace(trace, secondary_y=SERIES[key])
    if suggested is not None:
        fig.add_vline(
            x=suggested,
            line_dash="dash",
            line_color=PINK,
            annotation_text=SUGGESTED.say(ui_lang, layer=suggested),
            annotation_position="top",
        )
    fig.update_yaxes(title_text=SHARE_AXIS.say(ui_lang), range=[-0.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text=SIZE_AXIS.say(ui_lang), secondary_y=True, showgrid=False)
    return fig


def adjacent_cosines(vector: SteeringVector) -> list[float]:
    """cos(direction of layer L-1, direction of layer L) for each consecutive pair of the vector's layers."""
    dirs = [vector.directions[i].float() for i in vector.layers]
    return [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in zip(dirs, dirs[1:])]


def direction_norms(vector: SteeringVector) -> list[float]:
    """Each layer's direction norm; .safetensors/.gguf readers normalize and keep the file's norm as "file_norm"."""
    return [vector.stats.get(i, {}).get("file_norm", float(vector.directions[i].float().norm())) for i in vector.layers]


def bare_figure(vector: SteeringVector, ui_lang: str = "en") -> go.Figure:
    """What a bare {layer: tensor} file still tells: direction sizes (bars) and adjacent layers' cosine."""
    layers = vector.layers
    fig = base_figure(BARE_TITLE.say(ui_lang, name=vector.name), ui_lang)
    size, cosine = DIRECTION_SIZE.say(ui_lang), NEIGHBOR_COS.say(ui_lang)
    fig.add_trace(
        go.Bar(
            x=layers,
            y=direction_norms(vector),
            name=size,
            marker_color=LIGHT_PINK,
            hovertemplate=_hover(size, ui_lang),
        ),
        secondary_y=True,
    )
    fig.add_trace(
        go.Scatter(
            x=layers[1:],
            y=adjacent_cosines(vector),
            name=cosine,
            mode="lines+markers",
            hovertemplate=_hover(cosine, ui_lang),
        ),
        secondary_y=False,
    )
    fig.update_yaxes(title_text=SIMILARITY_AXIS.say(ui_lang), range=[-1.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text=SIZE_AXIS.say(ui_lang), secondary_y=True, showgrid=False)
    return fig


def metric_title(metric: str, ui_lang: str = "en") -> str:
    """A sweep metric's name in `ui_lang` (an unknown metric as itself)."""
    text = METRICS.get(metric)
    return text.say(ui_lang) if text is not None else metric


def heatmap(cells: Sequence[SweepCell], metric: str = "marker_share", ui_lang: str = "en") -> go.Figure:
    """A layers × strength heatmap of one metric of a sweep; the recommended cell is outlined in green."""
    rows = cells_table(cells)
    layers = list(dict.fromkeys(r["layers"] for r in rows))
    strengths = sorted({r["strength"] for r in rows})
    z = [
        [next((r[metric] for r in rows if r["layers"] == lay and r["strength"] == s), None) for s in strengths]
        for lay in layers
    ]
    title = metric_title(metric, ui_lang)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{s:g}" for s in strengths],
            y=layers,
            colorscale="Greys" if metric in BAD_HIGH else "RdPu",
            zmin=0 if metric in BAD_HIGH else None,
            text=[[f"{v:.2f}" if v is not None else "" for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate=CELL_HOVER.say(ui_lang, metric=title),
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
        title = f"{title} — {RECOMMENDED_MARK.say(ui_lang)}"
    fig.update_layout(
        title=title,
        xaxis_title=STRENGTH_AXIS.say(ui_lang),
        yaxis_title=LAYERS_AXIS.say(ui_lang),
        height=380,
        margin=dict(l=60, r=20, t=50, b=50),
        yaxis_type="category",
        xaxis_type="category",
    )
    return fig
