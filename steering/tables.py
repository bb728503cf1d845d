"""Tables of a vector's per-layer stats and of a sweep's cells: aligned text for the terminal, pandas DataFrames for
the app (pandas is imported only when a frame is built; it comes with gradio). Column headers are plain words in
the page's language (`ui_lang`: "en" or "ja"); `stats_help` says what each stats column means."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .messages import Text
from .settings import BAND_HALF_WIDTH, format_layers

if TYPE_CHECKING:  # sweep pulls in torch: the CLI imports this module at start and stays quick
    from .sweep import SweepCell

LAYER = Text("Layer", "レイヤー")
# Sidecar stat key -> its column header, in table order (the Layers chart names its series the same way)
STAT_TEXTS = {
    "pc1_explained_variance": Text("Share explained by the main direction", "主方向で説明できる割合"),
    "cos_mean_diff": Text("Agreement with the average difference (cos)", "平均差との一致度 (cos)"),
    "mean_diff_norm": Text("Size of the average difference", "平均差の大きさ"),
    "residual_norm": Text("Typical activation size", "活性の典型的な大きさ"),
    "heldout_accuracy": Text("Accuracy on unseen pairs", "未使用ペアでの正解率"),
    "heldout_auc": Text("Separation on unseen pairs (AUC)", "未使用ペアでの分離度 (AUC)"),
}
# The terminal table's narrower headers, same order
SHORT_TEXTS = {
    "pc1_explained_variance": Text("main_share", "主方向割合"),
    "cos_mean_diff": Text("agree_cos", "一致度"),
    "mean_diff_norm": Text("avg_gap", "平均差"),
    "residual_norm": Text("act_size", "活性"),
    "heldout_accuracy": Text("unseen_acc", "正解率"),
    "heldout_auc": Text("unseen_auc", "分離度"),
}
STAT_KEYS = list(STAT_TEXTS)

STATS_HELP = Text(
    en="""**How to read the per-layer table** (one row per layer of the model the vector was taken from; 0 is the \
first layer)

- **Share explained by the main direction**: of the way the gal-minus-plain differences vary from pair to pair, \
the share that lies along one single direction (0–1). High means they vary mostly in one way; on its own it does \
not say the layer steers well.
- **Agreement with the average difference (cos)**: how closely the saved direction points the same way as the \
plain average difference (1 = the same; always 1 for the mean_diff method).
- **Size of the average difference**: how far apart gal and plain texts sit at this layer. Strength 1 on the \
calibrated scale pushes by exactly this much.
- **Typical activation size**: the typical size of the model's internal state at this layer (often larger in \
later layers), to compare the difference against.
- **Accuracy on unseen pairs**: of the texts held back from extraction, the share the direction sorts correctly \
into gal or plain (0.5 = guessing, 1 = all).
- **Separation on unseen pairs (AUC)**: the chance that a held-back gal text scores above a held-back plain one \
(0.5 = guessing, 1 = perfect). Empty when there were too few pairs to hold any back.""",
    ja="""**レイヤーごとの表の読み方**（行はベクトルを取り出したモデルのレイヤー。0 が最初のレイヤー）

- **主方向で説明できる割合**: ペアごとの「ギャル文 − 普通の文」の差のばらつきのうち、ひとつの方向にそろっている割合\
（0〜1）。高いほどばらつきが一方向にまとまっています。これだけでは、そのレイヤーでうまく動かせるかはわかりません。
- **平均差との一致度 (cos)**: 保存した方向が、単純な平均の差とどれだけ同じ向きか（1 = 同じ。mean_diff 方式では\
常に 1）。
- **平均差の大きさ**: このレイヤーでギャル文と普通の文がどれだけ離れているか。calibrated スケールの強さ 1 は、\
ちょうどこの大きさだけ押します。
- **活性の典型的な大きさ**: このレイヤーでのモデル内部の状態のふつうの大きさ（たいてい深いほど大きい）。差の大きさと\
比べるための目安。
- **未使用ペアでの正解率**: 抽出に使わずに取っておいた文のうち、方向でギャル文か普通の文かを正しく見分けられた割合\
（0.5 = 当てずっぽう、1 = 全部）。
- **未使用ペアでの分離度 (AUC)**: 取っておいたギャル文が普通の文より高く出る確率（0.5 = 当てずっぽう、1 = 完璧）。\
ペアが少なすぎて取っておけなかったときは空欄。""",
)

SUGGESTED_HELP = Text(
    en="""**★ suggested layer**: the layer with the best separation on unseen pairs (AUC, to 3 decimals), not \
counting the last fifth of the model, where steering tends to break text; ties go to the layer nearest 40 % of \
the model's depth. Without unseen pairs, the largest average difference relative to the typical activation size counts \
instead. It is a starting point, not a measurement of replies: a new vector's Chat layers are the ★ layer ± {band}.""",
    ja="""**★ おすすめのレイヤー**: 未使用ペアでの分離度 (AUC、小数3桁) がいちばん高いレイヤー。ただしモデルの\
最後の5分の1は除きます（そこを動かすと文が崩れやすいため）。同点ならモデルの深さ 40 % に近いほう。未使用ペアがないときは、\
平均差の大きさを活性の典型的な大きさで割った値で選びます。返答を測った結果ではなく出発点です: 新しいベクトルのチャットの\
レイヤーは ★ ± {band} です。""",
)


def stats_help(ui_lang: str = "en") -> str:
    """Markdown: one line per stats column, and how the ★ suggested layer is chosen (extract.suggest_layer)."""
    return f"{STATS_HELP.say(ui_lang)}\n\n{suggested_help(ui_lang)}"


def suggested_help(ui_lang: str = "en") -> str:
    """Markdown: how the ★ suggested layer is chosen (extract.suggest_layer) and what it is for."""
    return SUGGESTED_HELP.say(ui_lang, band=BAND_HALF_WIDTH)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _width(text: str) -> int:
    """Columns a string takes in a terminal: wide (CJK) characters count two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def layer_table(stats: dict[int, dict], suggested: int | None = None, ui_lang: str = "en") -> str:
    """Per-layer stats as an aligned text table (the suggested layer marked with *); short headers in `ui_lang`."""
    header = [LAYER.say(ui_lang)] + [SHORT_TEXTS[key].say(ui_lang) for key in STAT_KEYS]
    rows = [header]
    for layer in sorted(stats):
        mark = "*" if layer == suggested else ""
        rows.append([f"{layer}{mark}"] + [_fmt(stats[layer].get(key)) for key in STAT_KEYS])
    widths = [max(_width(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(" " * (w - _width(c)) + c for c, w in zip(r, widths)) for r in rows)


def stats_frame(stats: dict[int, dict], suggested: int | None = None, ui_lang: str = "en"):
    """Per-layer stats as a DataFrame with plain-language headers in `ui_lang` (rounded to 3 places; a stat never
    recorded is empty); ★ marks the suggested layer."""
    import pandas as pd

    rows = [
        [f"{layer}{' ★' if layer == suggested else ''}"]
        + [round(stats[layer][key], 3) if key in stats[layer] else None for key in STAT_KEYS]
        for layer in sorted(stats)
    ]
    return pd.DataFrame(rows, columns=[LAYER.say(ui_lang)] + [STAT_TEXTS[key].say(ui_lang) for key in STAT_KEYS])


def cell_label(cell: SweepCell) -> str:
    """'8-12 @ 2': a sweep cell's layers (as the layer spec that reads them back) and strength."""
    return f"{format_layers(cell.layers)} @ {cell.strength:g}"


# cells_table key (plus the frame's own "cell" and "sample reply") -> its column header
SWEEP_TEXTS = {
    "cell": Text("Cell (layers @ strength)", "セル (レイヤー @ 強さ)"),
    "layers": Text("Layers", "レイヤー"),
    "strength": Text("Strength", "強さ"),
    "mode": Text("Mode", "方式"),
    "replies": Text("Replies", "返答数"),
    "style": Text("Gal style (marker words per 100 characters)", "ギャル度 (100文字あたりのギャル語)"),
    "marker_share": Text("Replies with gal words", "ギャル語を含む返答の割合"),
    "broken_share": Text("Broken replies", "崩れた返答の割合"),
    "gal_readable_share": Text("Gal and still readable", "ギャル語ありで読める返答の割合"),
    "median_onset": Text("Where broken replies break (median token)", "崩れ始める位置 (トークン、中央値)"),
    "perplexity": Text("Perplexity (lower reads more natural)", "パープレキシティ (低いほど自然)"),
    "perplexity_ratio": Text("Perplexity vs. no steering (×)", "操作なしと比べたパープレキシティ (倍)"),
    "aashi_rate": Text("Replies with あーし", "「あーし」を含む返答の割合"),
    "sample reply": Text("Sample reply", "返答の例"),
}


def sweep_header(key: str, ui_lang: str = "en") -> str:
    """The sweep table's header for a cells_table key in `ui_lang` (an unknown key as itself)."""
    text = SWEEP_TEXTS.get(key)
    return text.say(ui_lang) if text is not None else key


def sweep_frame(cells: Sequence[SweepCell], ui_lang: str = "en"):
    """cells_table as a DataFrame (floats rounded), labelled by cell_label, plus the first reply of each cell as a
    sample; headers in plain words in `ui_lang`."""
    import pandas as pd

    from .sweep import cells_table

    frame = pd.DataFrame(cells_table(cells)).round(3)
    frame.insert(0, "cell", [cell_label(c) for c in cells])
    frame["sample reply"] = [(c.replies[0] if c.replies else "")[:120] for c in cells]
    return frame.rename(columns={key: sweep_header(key, ui_lang) for key in frame.columns})
