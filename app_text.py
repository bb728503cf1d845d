"""Every string the studio page shows, in English and Japanese, in one place.

`I18N` is the page's gr.I18n: labels, buttons, help and choice names by key, translated in the browser (the page
follows the browser's language; the switch at the top overrides it, see SWITCH_JS). Texts a handler builds at run
time (toasts, status lines) are messages.Text constants here or in the library, said in the page language the
handler receives. The library's own wording (tables, charts, notes) comes from its functions with `ui_lang`.
"""

from __future__ import annotations

import gradio as gr

from steering.catalog import SESSION_TTL_S
from steering.messages import LANGS, Text

# key -> (English, Japanese)
LABELS: dict[str, tuple[str, str]] = {
    # header and model bar
    "title": ("# Gyaru steering studio", "# ギャル steering studio"),
    "intro": (
        "Extract a gyaru-style steering vector and compare the plain and the steered reply side by side.",
        "ギャル口調のステアリングベクトルを抽出して、ふつうの返事とギャル化した返事を並べて比べよう。",
    ),
    "language": ("Language", "言語"),
    "model": ("Model", "モデル"),
    "model_info": (
        "A listed model, or any hub id or local path where this server allows it (4-bit needs a CUDA GPU).",
        "一覧のモデル、またはサーバーが許すならハブIDやローカルパス(4bitはCUDA GPUが必要)。",
    ),
    "load": ("Load", "読み込む"),
    "vector": ("Steering vector (those that fit the loaded model)", "ステアリングベクトル(読み込んだモデルに合うもの)"),
    "refresh": ("↻", "↻"),
    "upload": ("Upload vector", "ベクトルを追加"),
    "upload_hint": (
        "Upload: .pt (with its .json), .safetensors or .gguf.",
        "追加できる形式: .pt(.jsonと一緒に)、.safetensors、.gguf。",
    ),
    # tabs
    "tab_extract": ("Extract", "抽出"),
    "tab_layers": ("Layers", "レイヤー"),
    "tab_chat": ("Chat", "チャット"),
    "tab_sweep": ("Sweep", "スイープ"),
    # extract
    "dataset": ("Dataset", "データセット"),
    "dataset_info": (
        "Pairs of the same reply in plain and in gyaru style. It starts on the loaded model's language.",
        "同じ内容のふつうの返事とギャル口調の返事のペア。最初は読み込んだモデルの言語になります。",
    ),
    "data_file": ("Your dataset file (.jsonl, .json, .csv, .tsv)", "データファイル(.jsonl, .json, .csv, .tsv)"),
    "contrast": ("Contrast", "対比"),
    "contrast_info": (
        "What the gyaru side is compared with: the standard (polite) or the casual column.",
        "ギャル側を何と比べるか: ふつう(丁寧)の列か、くだけた列か。",
    ),
    "contrast_gyaru-vs-standard": ("gyaru vs standard", "ギャル vs ふつう"),
    "contrast_gyaru-vs-casual": ("gyaru vs casual", "ギャル vs くだけた"),
    "method": ("Method", "手法"),
    "method_info": (
        "How the direction is fitted from the differences: mean difference (usually best) or principal components.",
        "差分から方向を求める方法: 平均差(たいてい最良)か主成分。",
    ),
    "method_mean_diff": ("mean difference", "平均差"),
    "method_pca_diff": ("PCA of differences", "差分のPCA"),
    "method_pca_center": ("PCA, centred", "PCA(中心化)"),
    "read_position": ("Read position", "読む位置"),
    "read_position_info": (
        "Which reply tokens extraction reads: the mean over the reply, or its last token.",
        "抽出で読むトークン: 返事全体の平均か、最後のトークンか。",
    ),
    "read_position_mean": ("mean of the reply", "返事の平均"),
    "read_position_last": ("last token", "最後のトークン"),
    "max_pairs": ("Max pairs", "ペア数"),
    "extract_layers": ("Layers (advanced)", "レイヤー(上級)"),
    "extract_layers_ph": ("e.g. 8-20; empty = the middle band", "例 8-20、空欄 = 中央の帯"),
    "name": ("Name", "名前"),
    "extract_btn": ("Extract", "抽出"),
    "download": ("Download", "ダウンロード"),
    "extract_lifetime": (
        "Your extracted vectors and uploads are listed only to you and removed when your session ends (at most "
        "{hours} h): download what you want to keep.",
        "抽出したベクトルとアップロードはあなたにだけ表示され、セッションが終わると消えます(最長 {hours} 時間)。"
        "残したいものはダウンロードしてね。",
    ),
    "save_shared": ("Save the selected vector to the shared folder", "選んだベクトルを共有フォルダに保存"),
    "extract_table": ("Per layer (★ = suggested)", "レイヤー別(★ = おすすめ)"),
    # layers
    "series": ("Series", "系列"),
    "layers_plot": ("Per layer", "レイヤー別"),
    # chat
    "layer_start": ("First steered layer", "最初のレイヤー"),
    "layer_width": ("Number of layers", "レイヤー数"),
    "chat_layers": ("Layers as text (overrides the sliders)", "レイヤー(テキスト、スライダーより優先)"),
    "chat_layers_ph": ("e.g. 10-14 or 3,5,9", "例 10-14 または 3,5,9"),
    "strength": ("Gyaru strength", "ギャル度"),
    "scale": ("Scale", "スケール"),
    "scale_info": (
        "calibrated: 1 = the typical gap between plain and gyaru text at each layer; raw: the push's length itself.",
        "calibrated: 1 = 各レイヤーでのふつうとギャルの典型的な差。raw: 押す量そのもの。",
    ),
    "advanced": ("Advanced settings", "詳細設定"),
    "apply_to": ("Apply to", "適用先"),
    "apply_to_info": (
        "Where the push is added while generating: every token, only the reply's tokens, or only the newest one.",
        "生成中にどこへ足すか: 全トークン、返事のトークンだけ、最新のトークンだけ。",
    ),
    "mode": ("Mode", "方式"),
    "mode_info": (
        "add: add the push; norm-preserving: add it and keep the hidden state's length; clamp: set the projection.",
        "add: 足す。norm_preserving: 足して長さを保つ。clamp: 射影を固定する。",
    ),
    "half_life": ("Half-life (tokens)", "半減期(トークン)"),
    "half_life_info": (
        "The strength halves every this many reply tokens; 0 = constant.",
        "返事のこのトークン数ごとに強さが半分に。0 = 一定。",
    ),
    "max_new": ("Max new tokens", "最大トークン数"),
    "temperature": ("Temperature (0 = greedy)", "温度(0 = 貪欲)"),
    "seed": ("Seed", "シード"),
    "penalty": ("Repetition penalty", "繰り返しペナルティ"),
    "plain": ("Plain", "ふつう"),
    "steered": ("Steered", "ギャル"),
    "message": ("Message", "メッセージ"),
    "message_ph": ("Write a message and press Enter", "メッセージを書いて Enter"),
    "send": ("Send", "送信"),
    "stop": ("Stop", "止める"),
    "clear": ("Clear", "クリア"),
    "examples": ("Example prompts", "例文"),
    "meter": ("Gyaru meter", "ギャルメーター"),
    "meter_info": ("Colour the steered reply token by token", "ギャル側の返事をトークンごとに色分け"),
    # sweep
    "sweep_intro": (
        "Try every layer option × strength on prompts in the vector's language (greedy): the share of replies with "
        "gyaru markers, the share that breaks, and perplexity per cell, with the Chat tab's apply-to and repetition "
        "penalty.",
        "レイヤー候補 × 強さ の全組み合わせを、ベクトルの言語の質問で試す(貪欲)。セルごとにギャル語の出た割合、"
        "崩れた割合、パープレキシティ。チャットタブの適用先と繰り返しペナルティを使います。",
    ),
    "sweep_layers": ("Layer options (space-separated)", "レイヤー候補(スペース区切り)"),
    "sweep_strengths": ("Strengths (comma-separated)", "強さ(カンマ区切り)"),
    "sweep_prompts": ("Prompts", "質問数"),
    "sweep_btn": ("Run sweep", "スイープ実行"),
    "sweep_markers": ("Share with gyaru markers", "ギャル語の割合"),
    "sweep_broken": ("Share broken", "崩れた割合"),
    "sweep_table": ("Cells (click a row to pick it)", "セル(行をクリックで選択)"),
    "sweep_pick": ("Cell (layers @ strength)", "セル(レイヤー @ 強さ)"),
    "use_in_chat": ("Use in Chat", "チャットで使う"),
    "apply_best": ("Apply best to Chat", "おすすめをチャットへ"),
}


def _library_labels() -> dict[str, tuple[str, str]]:
    """Labels whose wording the library owns (it also writes them into tables, charts and notices): the Layers
    chart's series, the Extract datasets, the Chat tab's scale, apply-to and mode choices, and the help under the
    Layers chart and the Extract table."""
    from functools import partial

    from steering.plots import layers_help, series_choices
    from steering.tables import stats_help
    from steering.vector_view import dataset_choices, setting_choices

    labels = {"stats_help": (stats_help("en"), stats_help("ja")), "layers_help": (layers_help("en"), layers_help("ja"))}
    listings = [("series", series_choices), ("dataset", dataset_choices)]
    listings += [(field, partial(setting_choices, field)) for field in ("scale", "apply_to", "mode")]
    for prefix, listing in listings:
        for (en, key), (ja, _) in zip(listing("en"), listing("ja")):
            labels[f"{prefix}_{key}"] = (en, ja)
    return labels


LABELS.update(_library_labels())


def _catalog(lang_index: int) -> dict[str, str]:
    fill = {"hours": SESSION_TTL_S // 3600}  # the one label with a number in it
    return {
        key: pair[lang_index].format(**fill) if "{" in pair[lang_index] else pair[lang_index]
        for key, pair in LABELS.items()
    }


I18N = gr.I18n(**{lang: _catalog(i) for i, lang in enumerate(LANGS)})


def t(key: str):
    """A label by key, translated in the browser (a KeyError here is a typo in the layout)."""
    LABELS[key]  # noqa: B018 - fail at build time, not as a raw key on the page
    return I18N(key)


def say(key: str, lang: str | None, **params) -> str:
    """A label in `lang`, for text a handler builds (the browser translates only the page's own labels)."""
    return Text(*LABELS[key]).say(lang, **params)


def choices(prefix: str, values) -> list[tuple]:
    """Radio/dropdown choices shown by their translated names (key `prefix_value`), keeping the values."""
    return [(t(f"{prefix}_{value}"), value) for value in values]


# Switch the page's language without reloading it: Gradio's own locale store (the one its footer Settings panel
# sets) lives in the frontend's core module; importing it again by its URL gives the same module. The choice is
# remembered in this browser. A frontend without that module still switches everything the handlers write.
SWITCH_JS = """
async (lang) => {
  try { localStorage.setItem("gyaru-studio-lang", lang); } catch (e) {}
  const core = performance.getEntriesByType("resource").map((e) => e.name)
    .find((name) => /\\/assets\\/core-[^/]+\\.js$/.test(name));
  if (core) { try { (await import(core)).changeLocale(lang); } catch (e) {} }
  return lang;
}
"""
# The page's first language: the one chosen here before, else the browser's (Japanese for ja, English otherwise).
INITIAL_LANG_JS = """
() => {
  let saved = null;
  try { saved = localStorage.getItem("gyaru-studio-lang"); } catch (e) {}
  if (saved === "en" || saved === "ja") return saved;
  return (navigator.language || "en").toLowerCase().startsWith("ja") ? "ja" : "en";
}
"""

# Toasts and lines the handlers write.
TOAST_TITLE = {
    "error": Text("Error", "エラー"),
    "warning": Text("Warning", "注意"),
    "info": Text("Note", "お知らせ"),
}
BUSY = Text("The server is busy; try again in a moment.", "混雑しています。少し待ってからもう一度どうぞ。")
GENERATION_FAILED = Text("Generation failed: {error}", "生成に失敗しました: {error}")
STILL_REPLYING = Text(
    "Still replying: wait for the reply or press Stop. Your message stays in the box.",
    "まだ返事を書いています。終わるまで待つか「止める」を押してね。メッセージは入力欄に残っています。",
)
SAVED_SHARED = Text("Saved to the shared vectors folder as {name}.", "共有フォルダに {name} として保存しました。")
PICK_VECTOR = Text("Pick a vector to see its layers.", "ベクトルを選ぶとレイヤーが見られます。")
CAPTURING = Text("Reading the dataset's texts", "データセットの文を読んでいます")
SWEEPING = Text("Sweeping {cells} cells", "{cells} セルをスイープ中")
LOADING_MODEL = Text("Loading the model (the first visit downloads it)", "モデルを読み込み中(初回はダウンロードします)")
