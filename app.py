"""gyaru steering studio: a Gradio app over the `steering` library — extract a vector, inspect its layers, and
chat with the plain and the steered model side by side.

This file holds the layout, the event handlers that turn UI values into library calls and library results into
component updates, and the launch. The logic lives in `steering`: the shared model in steering.session (one
ModelSession, HOLDER, serves every user), the vector list and uploads in steering.catalog (CATALOG, over the
vectors folder: STEERING_VECTOR_DIR or ./vectors), figures in steering.plots and tables in steering.tables.
Each user's uploads, settings, sweep and chat history live in gr.State and the components, never in globals.
"""

from __future__ import annotations

import argparse
import atexit
import html
import logging
import os
from contextlib import closing
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: no phoning home

import gradio as gr  # noqa: E402

from steering.catalog import MAX_UPLOAD_MB, VectorCatalog  # noqa: E402
from steering.data import DatasetError, load_prompts  # noqa: E402
from steering.evaluate import SweepCell, recommend, sweep  # noqa: E402
from steering.generate import GenerationSettings, stream_rows  # noqa: E402
from steering.models import BUNDLED  # noqa: E402
from steering.pipeline import extract_and_save  # noqa: E402
from steering.plots import SERIES, heatmap, layer_figure  # noqa: E402
from steering.session import ModelSession, model_status  # noqa: E402
from steering.settings import (  # noqa: E402
    APPLY_TO,
    CONTRASTS,
    DEFAULT_APPLY_TO,
    DEFAULT_READ_POSITION,
    DEFAULT_STRENGTH,
    MAX_SWEEP_OPTIONS,
    MAX_SWEEP_STRENGTHS,
    METHODS,
    READ_POSITIONS,
    SCALES,
    STRENGTH_RANGE,
    SWEEP_LAYER_OPTIONS,
    SWEEP_STRENGTHS,
    default_lang,
    default_layer_options,
    default_scale,
    format_layers,
    parse_layer_options,
    parse_strengths,
    resolve_setting,
)
from steering.steer import Steering, strength_warning  # noqa: E402
from steering.style import style_score  # noqa: E402
from steering.tables import cell_label, stats_frame, sweep_frame  # noqa: E402
from steering.vector_files import SUFFIXES, unique_path  # noqa: E402
from steering.vectors import SteeringVector, VectorFileError  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:
    gpu = lambda fn: fn  # noqa: E731

LOG = logging.getLogger("gyaru-studio")
ROOT = Path(__file__).resolve().parent
MODEL_CHOICES = [
    ("bundled (SmolLM2-135M-Instruct)", BUNDLED),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
    ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
    ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-14B-Instruct"),
    ("unsloth/Qwen2.5-32B-Instruct-bnb-4bit (4-bit: CUDA のみ / needs CUDA)", "unsloth/Qwen2.5-32B-Instruct-bnb-4bit"),
]
DATASETS = [
    ("同梱 日本語 / bundled ja", "ja"),
    ("同梱 英語 / bundled en", "en"),
    ("アップロード / upload file", "upload"),
]
SIDES = ("plain", "steered")  # chat columns: strength 0 and strength s
SYSTEM_FONTS = [
    "system-ui",
    "-apple-system",
    "Segoe UI",
    "Hiragino Sans",
    "Noto Sans CJK JP",
    "Yu Gothic",
    "Meiryo",
    "IPAPGothic",
    "sans-serif",
]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
# System fonts only: Gradio's default theme would otherwise request web fonts.
THEME = gr.themes.Default(primary_hue="pink", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
CSS = ".score-line p { margin: 0; font-size: 0.9em; }"


# --------------------------------------------------------------------------- the shared model and vectors

HOLDER = ModelSession()  # the one model every user shares
CATALOG = VectorCatalog(os.environ.get("STEERING_VECTOR_DIR") or ROOT / "vectors")
atexit.register(lambda: CATALOG.close())  # upload folders still held at exit


def vector_dropdown(loaded, uploads: list[str], selected: str | None = None):
    """The vector dropdown refreshed for the current model (keeps `selected` when it still fits)."""
    listing = CATALOG.listing(loaded, uploads, selected)
    return gr.Dropdown(choices=listing.choices, value=listing.value), listing.note


def current_model_spec() -> str:
    """The shared model's spec without loading one (a cosmetic event must not wait for a load)."""
    loaded = HOLDER.loaded  # read once: a load in another thread sets it to None for a while
    return loaded.spec if loaded is not None else HOLDER.default


def open_vector(path: str | None, uploads: list[str]) -> SteeringVector:
    """Load the chosen vector; only files in the vectors folder or this user's own uploads are ever opened."""
    try:
        return CATALOG.open(path, uploads)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def strength_slider(scale: str, value: float):
    lo, hi, step = STRENGTH_RANGE.get(scale, STRENGTH_RANGE["calibrated"])
    return gr.Slider(minimum=lo, maximum=hi, step=step, value=min(max(float(value), lo), hi))


# --------------------------------------------------------------------------- handlers: model bar


@gpu
def on_load_model(spec: str, uploads: list[str], progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - the Gradio idiom
    """Load a model for everyone; a failure (e.g. 4-bit without CUDA) is shown, never raised."""
    spec = (spec or "").strip() or BUNDLED
    try:
        loaded = HOLDER.load(spec, on_status=lambda text: progress(0, desc=text))
    except Exception as exc:  # noqa: BLE001 - any hub model can fail in its own way; show the message
        gr.Warning(str(exc))
        return f"⚠ {exc}\n\n{model_status(HOLDER.loaded)}", gr.skip(), gr.skip()
    dropdown, note = vector_dropdown(loaded, uploads)
    return model_status(loaded), dropdown, note


def on_page_load(uploads: list[str]):
    """Show the shared model (loading the bundled one if none) and the vectors that fit it."""
    loaded = HOLDER.get()
    dropdown, note = vector_dropdown(loaded, uploads)
    return model_status(loaded), loaded.spec, dropdown, note


def on_refresh(selected: str | None, uploads: list[str]):
    return vector_dropdown(HOLDER.get(), uploads, selected)


def on_upload_vector(files: list[str] | None, uploads: list[str], selected: str | None):
    """Validate uploaded vector files (a .pt may come with its .json sidecar) and add them to this user's list."""
    if not files:
        return gr.skip(), uploads, gr.skip()
    loaded = HOLDER.get()
    try:
        added, refused = CATALOG.add_uploads(files, loaded)
    except ValueError as exc:  # over the size limit
        raise gr.Error(str(exc)) from None
    for message in refused:
        gr.Warning(message)
    uploads = uploads + added
    dropdown, note = vector_dropdown(loaded, uploads, added[-1] if added else selected)
    return dropdown, uploads, note


# --------------------------------------------------------------------------- handlers: extract


@gpu
def on_extract(
    dataset: str,
    data_file: str | None,
    contrast: str,
    max_pairs: float,
    layers: str,
    method: str,
    position: str,
    name: str,
    uploads: list[str],
    progress=gr.Progress(),  # noqa: B008 - the Gradio idiom
):
    """Extract a vector from a dataset, save it in the vectors folder (never overwriting) and offer it for download."""
    data = data_file if dataset == "upload" else dataset
    if not data:
        raise gr.Error("データセットをアップロードしてね / upload a dataset file first")
    loaded = HOLDER.get()
    out = unique_path(CATALOG.folder, (name or "").strip() or "gyaru")
    try:
        vector, timings = extract_and_save(
            loaded,
            out,
            data=data,
            contrast=contrast,
            layers=(layers or "").strip() or None,
            method=method,
            position=position,
            max_pairs=int(max_pairs) if max_pairs else None,
            progress=lambda done, total: progress((done, total), desc="抽出中 / capturing", unit="texts"),
        )
    except (DatasetError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    meta = vector.meta
    summary = (
        f"saved `{out.name}` — {meta.pairs} pairs, {meta.method}, {meta.lang}, "
        f"layers {format_layers(vector.layers)}, ★ suggested layer **{meta.suggested_layer}** "
        f"({timings['total_s']:.1f} s)"
    )
    dropdown, note = vector_dropdown(loaded, uploads, str(out))
    return (
        summary,
        [str(out), str(out.with_suffix(".json"))],
        stats_frame(vector.stats, meta.suggested_layer),
        dropdown,
        note,
    )


# --------------------------------------------------------------------------- handlers: layers


def _shown(value, missing: str = "?") -> str:
    """A metadata value for a note; `missing` when the file never recorded it."""
    return missing if value is None else str(value)


def on_layers(path: str | None, series: list[str], uploads: list[str]):
    """The per-layer chart of the chosen vector, and a note on what it can and cannot show."""
    if not path:  # an empty vector list (fired by the dropdown clearing) is not an error
        return None, "ベクトルを選んでね / pick a vector to see its layers"
    vector = open_vector(path, uploads)
    if vector.calibrated:
        note = (
            f"{len(vector.layers)} layers from `{_shown(vector.meta.model)}`, "
            f"{_shown(vector.meta.method)}, {_shown(vector.meta.pairs)} pairs; "
            f"★ = suggested layer {_shown(vector.meta.suggested_layer, '—')}"
        )
    else:
        note = (
            "⚠ サイドカー(.json)なし / no sidecar: PC1 explained variance, cos with the mean difference, "
            "held-out accuracy/AUC, mean-difference and residual norms were never recorded, so they cannot be "
            "shown, and the calibrated strength scale is unavailable (chat uses raw). Shown instead: each layer's "
            "direction norm and the cosine between adjacent layers' directions."
        )
    return layer_figure(vector, series or []), note


# --------------------------------------------------------------------------- handlers: chat


def on_vector_selected(path: str | None, uploads: list[str]):
    """Chat defaults and example prompts for the chosen vector (its recommended setting and language), and the
    Sweep tab's layer options, strengths and scale."""
    if not path:
        return (gr.skip(),) * 8
    vector = open_vector(path, uploads)
    setting = resolve_setting(vector)  # the vector's recommended setting, else the library defaults
    prompts = load_prompts(default_lang(vector.meta.lang, current_model_spec()))
    sweep_scale = default_scale(vector)
    return (
        setting.layers,
        strength_slider(setting.scale, setting.strength),
        setting.scale,
        gr.Dropdown(choices=prompts, value=None),
        default_layer_options(vector),
        SWEEP_STRENGTHS[sweep_scale],
        sweep_scale,
        setting.repetition_penalty,
    )


def shown(messages: list[dict]) -> list[dict]:
    """Chatbot messages with text escaped: the Chatbot inserts content as (sanitized) HTML even with
    render_markdown=False, so escaping is what keeps user and model text plain text."""
    return [{"role": m["role"], "content": html.escape(m["content"], quote=False) or "…"} for m in messages]


def score_line(text: str, lang: str, label: str) -> str:
    s = style_score(text, lang)
    markers = ", ".join(s.marker_ids) or "none"
    return f"**{label}** — style {s.score:.1f} / 100 chars — markers: {html.escape(markers)}"


@gpu
def on_chat(
    message: str,
    path: str | None,
    layers: str,
    strength: float,
    scale: str,
    position: str,
    max_new_tokens: float,
    temperature: float,
    seed: float,
    repetition_penalty: float = 1.0,
    history: dict | None = None,
    uploads: list[str] | None = None,
):
    """Stream the plain (strength 0) and steered (strength s) replies from ONE batched generate call."""
    message = (message or "").strip()
    if not message:
        raise gr.Error("メッセージを書いてね / write a message first")
    history = history or {side: [] for side in SIDES}
    vector = open_vector(path, uploads or [])
    loaded = HOLDER.get()
    steering = Steering(vector, (layers or "").strip() or None, float(strength), scale, position)
    try:
        warning = strength_warning(steering)
    except ValueError as exc:  # a non-finite strength
        raise gr.Error(str(exc)) from None
    if warning:
        gr.Warning(warning)
    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        seed=int(seed),
        repetition_penalty=float(repetition_penalty),
    )
    lang = default_lang(vector.meta.lang, loaded.spec)
    user = {"role": "user", "content": message}
    # Each column continues its own conversation (the steered row sees its own earlier replies); both rows still
    # run in one batched generate call.
    contexts = [history[side] + [user] for side in SIDES]

    def outputs(texts: list[str], new_history: dict):
        sides = [history[side] + [user, {"role": "assistant", "content": t}] for side, t in zip(SIDES, texts)]
        return (
            shown(sides[0]),
            shown(sides[1]),
            score_line(texts[0], lang, "ふつう / Plain"),
            score_line(texts[1], lang, "ギャル / Steered"),
            new_history,
            "",
        )

    texts = ["", ""]
    yield outputs(texts, history)
    try:
        # closing(): when the client goes away Gradio closes this generator, and closing the stream at once stops
        # the generate call (and removes its hooks) before the next request gets the model.
        stream = stream_rows(loaded, contexts, [0.0, float(strength)], steering, settings, on_notice=gr.Warning)
        with closing(stream):
            for texts in stream:
                yield outputs(texts, history)
    except (ValueError, VectorFileError) as exc:  # bad layer range, calibrated scale on a bare vector, ...
        raise gr.Error(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - anything inside generate (out of memory, a model bug): tell the user
        LOG.exception("generation failed")
        raise gr.Error(f"生成に失敗しました / generation failed: {type(exc).__name__}: {exc}") from None
    final = {side: history[side] + [user, {"role": "assistant", "content": t}] for side, t in zip(SIDES, texts)}
    yield outputs(texts, final)


# --------------------------------------------------------------------------- handlers: sweep


def sweep_grid(layer_options: str, strengths: str) -> tuple[list[str], list[float]]:
    """The Sweep tab's layer options and strengths, within the app's grid limits; a bad one is a gr.Error."""
    try:
        return (
            parse_layer_options(layer_options, "レイヤー候補 / layer options", max_count=MAX_SWEEP_OPTIONS),
            parse_strengths(strengths, "強さ / strengths", max_count=MAX_SWEEP_STRENGTHS),
        )
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def best_line(best: SweepCell | None) -> str:
    if best is None:
        return (
            "おすすめなし / no recommendation: no non-zero strength added style over the plain replies while "
            "keeping the broken share at or under 5 % (try more tokens, other strengths or other layers)"
        )
    s = best.summary
    return (
        f"★ おすすめ / recommended: layers **{format_layers(best.layers)}** @ strength **{best.strength:g}** — "
        f"style {s['style']:.2f}, marker share {s['marker_share']:.0%}, broken {s['broken_share']:.0%}"
    )


@gpu
def on_sweep(
    path: str | None,
    layer_options: str,
    strengths: str,
    n_prompts: float,
    max_new_tokens: float,
    scale: str,
    repetition_penalty: float = 1.0,
    uploads: list[str] | None = None,
    progress=gr.Progress(),  # noqa: B008 - the Gradio idiom
):
    """Greedy replies over a layers × strength grid on the vector's language prompts: two heatmaps, a table, the
    recommended cell, and the cells to pick from for the Chat tab. Uses the Chat tab's repetition penalty, so a
    picked cell behaves in Chat as it did here."""
    vector = open_vector(path, uploads or [])
    loaded = HOLDER.get()
    options, values = sweep_grid(layer_options, strengths)
    if scale == "calibrated" and not vector.calibrated:
        raise gr.Error("this vector has no recorded mean-difference norms (no sidecar): use the raw scale")
    try:  # resolve every option now (a bad one fails before any generation); equal ones are swept once
        resolved = [Steering(vector, option, 0.0, scale).layer_list(loaded.num_layers) for option in options]
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    layer_lists = [layers for i, layers in enumerate(resolved) if layers not in resolved[:i]]
    warning = strength_warning(Steering(vector, None, values, scale))
    if warning:
        gr.Warning(warning)
    lang = default_lang(vector.meta.lang, loaded.spec)
    prompts = load_prompts(lang)[: max(1, int(n_prompts))]
    progress(0, desc=f"スイープ中 / sweeping {len(layer_lists)} × {len(values)} cells on {len(prompts)} prompts")
    try:
        cells = sweep(
            loaded,
            vector,
            prompts,
            layer_lists,
            values,
            lang,
            scale=scale,
            max_new_tokens=int(max_new_tokens),
            progress=lambda done, total: progress((done, total), desc="スイープ中 / sweeping", unit="layer options"),
            repetition_penalty=float(repetition_penalty),
        )
    except (ValueError, VectorFileError) as exc:
        raise gr.Error(str(exc)) from None
    best = recommend(cells)
    labels = [cell_label(c) for c in cells]
    state = {
        "path": path,
        "scale": scale,
        "cells": {label: [format_layers(c.layers), c.strength] for label, c in zip(labels, cells)},
        "best": cell_label(best) if best else None,
    }
    pick = state["best"] or next((label for label, c in zip(labels, cells) if c.strength != 0), labels[0])
    return (
        heatmap(cells, "style"),
        heatmap(cells, "broken_share"),
        sweep_frame(cells),
        best_line(best),
        gr.Dropdown(choices=labels, value=pick),
        state,
    )


def apply_cell(label: str | None, state: dict | None, current_path: str | None):
    """Set the Chat tab's layers, strength and scale to one sweep cell, and switch to the Chat tab."""
    if not state or not state.get("cells"):
        raise gr.Error("先にスイープしてね / run a sweep first")
    if label not in state["cells"]:
        raise gr.Error(f"unknown sweep cell {label!r}")
    if current_path != state["path"]:
        gr.Warning("the sweep was run on another vector than the one selected now")
    layers, strength = state["cells"][label]
    scale = state["scale"]
    return layers, strength_slider(scale, strength), scale, gr.Tabs(selected="chat")


def on_apply_best(state: dict | None, current_path: str | None):
    if state and state.get("cells") and not state.get("best"):
        raise gr.Error("おすすめなし / the sweep has no recommended cell: pick one from the list")
    return apply_cell((state or {}).get("best"), state, current_path)


def on_pick_row(state: dict | None, evt: gr.SelectData):
    """Clicking a row of the sweep table picks that cell in the dropdown."""
    labels = list((state or {}).get("cells", {}))
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not isinstance(row, int) or not 0 <= row < len(labels):
        return gr.skip()
    return gr.Dropdown(value=labels[row])


# --------------------------------------------------------------------------- layout


def chat_column(label: str, elem_id: str) -> tuple[gr.Chatbot, gr.Markdown]:
    """One side of the comparison: a chatbot that shows text as text, and its style-score line."""
    bot = gr.Chatbot(
        label=label,
        height=360,
        elem_id=elem_id,
        render_markdown=False,
        sanitize_html=True,
        allow_tags=False,
        feedback_options=None,
    )
    return bot, gr.Markdown("", elem_classes="score-line")


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="gyaru steering studio") as demo:
        # this user's uploaded vector files; their temporary folders go when the session's state is deleted
        uploads = gr.State([], delete_callback=lambda files: CATALOG.discard(files))
        history = gr.State({side: [] for side in SIDES})  # this user's raw chat history per column
        gr.Markdown(
            "# ギャル steering studio\nギャル口調ベクトルを抽出して、ふつうの返事と並べて比べよう。 / "
            "Extract a gyaru-style steering vector and compare plain and steered replies side by side."
        )
        with gr.Row():
            model_dd = gr.Dropdown(
                MODEL_CHOICES,
                value=BUNDLED,
                allow_custom_value=True,
                scale=3,
                label="モデル / Model (hub id or local path; the 4-bit model needs CUDA)",
            )
            load_btn = gr.Button("読み込む / Load", variant="secondary", scale=1)
        model_md = gr.Markdown(model_status(None))
        with gr.Row():
            vector_dd = gr.Dropdown([], label="ベクトル / Vector (fits the loaded model)", scale=3, elem_id="vector-dd")
            refresh_btn = gr.Button("↻", scale=0, min_width=60)
            vector_up = gr.File(
                label="ベクトルを追加 / Upload vector (.pt [+ .json], .safetensors, .gguf)",
                file_types=[*SUFFIXES, ".json"],
                file_count="multiple",
                scale=2,
                height=130,
            )
        vector_md = gr.Markdown("")

        with gr.Tabs() as tabs:
            with gr.Tab("抽出 / Extract", id="extract"):
                with gr.Row():
                    dataset = gr.Radio(DATASETS, value="ja", label="データセット / Dataset")
                    data_file = gr.File(
                        label="データファイル / Dataset file (.jsonl, .json, .csv)",
                        file_types=[".jsonl", ".json", ".csv", ".tsv"],
                        height=130,
                    )
                with gr.Row():
                    contrast = gr.Radio(list(CONTRASTS), value=CONTRASTS[0], label="対比 / Contrast")
                    method = gr.Radio(list(METHODS), value=METHODS[0], label="手法 / Method")
                    position = gr.Radio(
                        list(READ_POSITIONS), value=DEFAULT_READ_POSITION, label="読む位置 / Read position"
                    )
                with gr.Row():
                    max_pairs = gr.Number(50, minimum=1, precision=0, label="ペア数 / Max pairs", elem_id="max-pairs")
                    layer_range = gr.Textbox(
                        "",
                        label="レイヤー / Layers",
                        placeholder="8-20 (empty = middle band)",
                        elem_id="extract-layers",
                    )
                    name = gr.Textbox("gyaru", label="名前 / Name", elem_id="extract-name")
                extract_btn = gr.Button("抽出 / Extract", variant="primary", elem_id="extract-btn")
                extract_md = gr.Markdown("", elem_id="extract-status")
                download = gr.File(label="ダウンロード / Download", file_count="multiple", interactive=False)
                table = gr.Dataframe(
                    label="レイヤー別 / Per layer (★ = suggested)", interactive=False, elem_id="extract-table"
                )

            with gr.Tab("レイヤー / Layers", id="layers"):
                series = gr.CheckboxGroup(list(SERIES), value=list(SERIES)[:3], label="系列 / Series")
                plot = gr.Plot(label="レイヤー別 / Per layer", elem_id="layers-plot")
                layers_md = gr.Markdown("")

            with gr.Tab("チャット / Chat", id="chat"):
                with gr.Row():
                    chat_layers = gr.Textbox(
                        "", label="レイヤー / Layers", placeholder="e.g. 10-14", elem_id="chat-layers"
                    )
                    lo, hi, step = STRENGTH_RANGE["calibrated"]
                    strength = gr.Slider(
                        lo,
                        hi,
                        value=DEFAULT_STRENGTH["calibrated"],
                        step=step,
                        label="ギャル度 / Gyaru strength",
                        elem_id="strength",
                    )
                    scale = gr.Radio(list(SCALES), value="calibrated", label="スケール / Scale")
                    chat_position = gr.Radio(list(APPLY_TO), value=DEFAULT_APPLY_TO, label="位置 / Position")
                with gr.Row():
                    max_new = gr.Slider(
                        1, 512, value=64, step=1, label="最大トークン / Max new tokens", elem_id="max-new"
                    )
                    temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="温度 / Temperature (0 = greedy)")
                    seed = gr.Number(0, precision=0, label="シード / Seed")
                    penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="繰り返しペナルティ / Repetition penalty")
                with gr.Row():
                    with gr.Column():
                        plain_bot, plain_md = chat_column("ふつう / Plain", "plain-bot")
                    with gr.Column():
                        steered_bot, steered_md = chat_column("ギャル / Steered", "steered-bot")
                with gr.Row():
                    msg = gr.Textbox(label="メッセージ / Message", scale=4, lines=1, elem_id="chat-msg")
                    send_btn = gr.Button("送信 / Send", variant="primary", scale=1, elem_id="send-btn")
                with gr.Row():
                    examples = gr.Dropdown(load_prompts("ja"), value=None, label="例 / Example prompts", scale=4)
                    clear_btn = gr.Button("クリア / Clear", scale=1)

            with gr.Tab("スイープ / Sweep", id="sweep"):
                gr.Markdown(
                    "レイヤー候補 × 強さ の表を、ベクトルの言語の質問で試す(greedy)。 / Try every layer option × "
                    "strength on the vector's language prompts (greedy): style and broken share per cell."
                )
                with gr.Row():
                    sweep_layers = gr.Textbox(
                        SWEEP_LAYER_OPTIONS,
                        label="レイヤー候補 / Layer options (space-separated)",
                        elem_id="sweep-layers",
                    )
                    sweep_strengths = gr.Textbox(
                        SWEEP_STRENGTHS["calibrated"],
                        label="強さ / Strengths (comma-separated)",
                        elem_id="sweep-strengths",
                    )
                    sweep_scale = gr.Radio(list(SCALES), value="calibrated", label="スケール / Scale")
                with gr.Row():
                    sweep_prompts = gr.Slider(2, 32, value=4, step=1, label="質問数 / Prompts", elem_id="sweep-prompts")
                    sweep_tokens = gr.Slider(
                        4, 128, value=32, step=1, label="最大トークン / Max new tokens", elem_id="sweep-tokens"
                    )
                sweep_btn = gr.Button("スイープ / Run sweep", variant="primary", elem_id="sweep-btn")
                sweep_md = gr.Markdown("", elem_id="sweep-best")
                with gr.Row():
                    style_plot = gr.Plot(label="スタイル / Style", elem_id="sweep-style")
                    broken_plot = gr.Plot(label="崩れ / Broken share", elem_id="sweep-broken")
                sweep_table = gr.Dataframe(
                    label="セル / Cells (click a row to pick it)", interactive=False, elem_id="sweep-table"
                )
                with gr.Row():
                    sweep_pick = gr.Dropdown([], label="セル / Cell (layers @ strength)", scale=3)
                    apply_pick_btn = gr.Button("チャットへ / Use in Chat", scale=1, elem_id="apply-pick-btn")
                    apply_best_btn = gr.Button(
                        "おすすめをチャットへ / Apply best to Chat",
                        variant="primary",
                        scale=1,
                        elem_id="apply-best-btn",
                    )
                sweep_state = gr.State(None)  # this user's last sweep: cells by label, scale, best

        # Model work shares one queue slot (concurrency_id "model"): one generation or load at a time.
        model_work = dict(concurrency_limit=1, concurrency_id="model")
        load_btn.click(
            on_load_model, [model_dd, uploads], [model_md, vector_dd, vector_md], api_name="load_model", **model_work
        )
        demo.load(on_page_load, [uploads], [model_md, model_dd, vector_dd, vector_md], api_name="startup")
        refresh_btn.click(on_refresh, [vector_dd, uploads], [vector_dd, vector_md], api_name="list_vectors")
        vector_up.upload(
            on_upload_vector, [vector_up, uploads, vector_dd], [vector_dd, uploads, vector_md], api_name="upload_vector"
        )
        extract_btn.click(
            on_extract,
            [dataset, data_file, contrast, max_pairs, layer_range, method, position, name, uploads],
            [extract_md, download, table, vector_dd, vector_md],
            api_name="extract",
            **model_work,
        )
        gr.on(
            [vector_dd.change, series.change],
            on_layers,
            [vector_dd, series, uploads],
            [plot, layers_md],
            api_name="layers",
        )
        vector_dd.change(
            on_vector_selected,
            [vector_dd, uploads],
            [chat_layers, strength, scale, examples, sweep_layers, sweep_strengths, sweep_scale, penalty],
            api_name="vector_defaults",
        )
        gr.on(
            [send_btn.click, msg.submit],
            on_chat,
            [
                msg,
                vector_dd,
                chat_layers,
                strength,
                scale,
                chat_position,
                max_new,
                temperature,
                seed,
                penalty,
                history,
                uploads,
            ],
            [plain_bot, steered_bot, plain_md, steered_md, history, msg],
            api_name="chat",
            **model_work,
        )
        sweep_btn.click(
            on_sweep,
            [vector_dd, sweep_layers, sweep_strengths, sweep_prompts, sweep_tokens, sweep_scale, penalty, uploads],
            [style_plot, broken_plot, sweep_table, sweep_md, sweep_pick, sweep_state],
            api_name="sweep",
            **model_work,
        )
        to_chat = [chat_layers, strength, scale, tabs]
        apply_best_btn.click(on_apply_best, [sweep_state, vector_dd], to_chat, api_name="apply_best")
        apply_pick_btn.click(apply_cell, [sweep_pick, sweep_state, vector_dd], to_chat, api_name="apply_cell")
        # Cosmetic events: no model work, not part of the API.
        cosmetic = dict(api_visibility="private", queue=False)
        scale.input(strength_slider, [scale, strength], strength, **cosmetic)
        sweep_scale.input(lambda s: SWEEP_STRENGTHS[s], sweep_scale, sweep_strengths, **cosmetic)
        sweep_table.select(on_pick_row, sweep_state, sweep_pick, **cosmetic)
        examples.input(lambda text: text, examples, msg, **cosmetic)
        clear_btn.click(
            lambda: ([], [], "", "", {side: [] for side in SIDES}),
            None,
            [plain_bot, steered_bot, plain_md, steered_md, history],
            **cosmetic,
        )
    demo.queue(default_concurrency_limit=1)
    return demo


def launch_kwargs() -> dict:
    """What every launch needs (the tests use it too): offline theme, upload limit, downloads from CATALOG's folder."""
    return dict(
        theme=THEME,
        css=CSS,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        allowed_paths=[str(CATALOG.folder)],
        footer_links=["api", "settings"],
    )


demo = build_demo()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="gyaru steering studio (Gradio)")
    parser.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME, 0.0.0.0 on Spaces, else 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--model", default=os.environ.get("STEERING_MODEL"), help="preload this model at start")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args(argv)
    host = (
        args.host or os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    )
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    if args.model:
        HOLDER.load(args.model)
    demo.launch(server_name=host, server_port=port, share=args.share, **launch_kwargs())


if __name__ == "__main__":
    main()
