"""The studio page's layout: each tab's components and the events that wire them to app.py's handlers.

Split from app.py so that file holds the handlers and the launch; `build_demo(h)` takes app.py's module as `h`, so
every event calls the handler app.py defines and reads its current globals (RULES, CATALOG, ...)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from steering import settings as S  # the choice lists, ranges and defaults
from steering.catalog import SESSION_TTL_S
from steering.chat import LABELS, new_history
from steering.data import load_prompts
from steering.models import BUNDLED, SUGGESTED_MODELS
from steering.plots import SERIES
from steering.session import model_status
from steering.sweep import DEFAULT_SWEEP_TOKENS
from steering.vector_files import SUFFIXES
from steering.vector_view import DATASET_CHOICES

# --------------------------------------------------------------------------- layout and events
# Each part builds its components and wires their events; components other parts need go on `ui`. Named events are
# the app's HTTP h.API; model work shares one queue slot (h.MODEL_WORK) except chat (h.CHAT_WORK: batched by h.SCHEDULER);
# cosmetic events are private and unqueued.


def chat_column(label: str, elem_id: str) -> tuple[gr.Chatbot, gr.Markdown]:
    """One side of the comparison: a chatbot that shows text as text, and its score line."""
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


def model_bar(demo: gr.Blocks, ui: SimpleNamespace, h) -> None:
    with gr.Row():
        label = "モデル / Model (listed ones; any hub id or path where the server allows it; 4-bit needs CUDA)"
        # custom values reach h.on_load_model, where h.RULES.policy decides (the command line is read after this is built)
        model = gr.Dropdown(SUGGESTED_MODELS, value=BUNDLED, allow_custom_value=True, scale=3, label=label)
        load = gr.Button("読み込む / Load", variant="secondary", scale=1)
    status = gr.Markdown(model_status(None))
    with gr.Row():
        # Choices arrive with the page load (/startup); an h.API client may name a vector without it: any value is
        # accepted here and h.CATALOG.open lets through only the shared folder's files and this session's own.
        label = "ベクトル / Vector (fits the loaded model)"
        ui.vector = gr.Dropdown([], label=label, scale=3, elem_id="vector-dd", allow_custom_value=True)
        refresh = gr.Button("↻", scale=0, min_width=60)
        label = "ベクトルを追加 / Upload vector (.pt [+ .json], .safetensors, .gguf)"
        upload = gr.File(label=label, file_types=[*SUFFIXES, ".json"], file_count="multiple", scale=2, height=130)
    ui.vector_md = gr.Markdown("")
    listing = [ui.vector, ui.vector_md]
    load.click(h.on_load_model, [model, ui.uploads], [status, *listing], api_name="load_model", **h.MODEL_WORK)
    demo.load(h.on_page_load, [ui.uploads], [status, model, *listing], api_name="startup")
    refresh.click(h.on_refresh, [ui.vector, ui.uploads], listing, api_name="list_vectors")
    upload_out = [ui.vector, ui.uploads, ui.vector_md]
    upload.upload(h.on_upload_vector, [upload, ui.uploads, ui.vector], upload_out, api_name="upload_vector")


def extract_tab(ui: SimpleNamespace, h) -> None:
    with gr.Row():
        dataset = gr.Radio(DATASET_CHOICES, value="ja", label="データセット / Dataset")
        types = [".jsonl", ".json", ".csv", ".tsv"]
        data_file = gr.File(label="データファイル / Dataset file (.jsonl, .json, .csv)", file_types=types, height=130)
    with gr.Row():
        contrast = gr.Radio(list(S.CONTRASTS), value=S.CONTRASTS[0], label="対比 / Contrast")
        method = gr.Radio(list(S.METHODS), value=S.METHODS[0], label="手法 / Method")
        label = "読む位置 / Read position (which reply tokens extraction averages)"
        read_position = gr.Radio(list(S.READ_POSITIONS), value=S.DEFAULT_READ_POSITION, label=label)
    with gr.Row():
        max_pairs = gr.Number(50, minimum=1, precision=0, label="ペア数 / Max pairs", elem_id="max-pairs")
        hint = "8-20 (empty = middle band)"
        layers = gr.Textbox("", label="レイヤー / Layers", placeholder=hint, elem_id="extract-layers")
        name = gr.Textbox("gyaru", label="名前 / Name", elem_id="extract-name")
    button = gr.Button("抽出 / Extract", variant="primary", elem_id="extract-btn")
    summary = gr.Markdown("", elem_id="extract-status")
    download = gr.File(label="ダウンロード / Download", file_count="multiple", interactive=False)
    gr.Markdown(
        "抽出したベクトルはこのセッションだけのもの(閉じると消えます)。 / Your extracted vectors and uploads are "
        f"listed only to you and removed when your session ends (at most {SESSION_TTL_S // 3600} h): download what "
        "you want to keep.",
        elem_id="extract-lifetime",
    )
    label = "共有フォルダに保存 / Save the selected vector to the shared vectors folder"
    save = gr.Button(label, visible=False, elem_id="save-shared-btn")  # shown by the page load where allowed
    table = gr.Dataframe(label="レイヤー別 / Per layer (★ = suggested)", interactive=False, elem_id="extract-table")
    inputs = [dataset, data_file, contrast, max_pairs, layers, method, read_position, name, ui.uploads]
    outputs = [summary, download, table, ui.vector, ui.vector_md, ui.uploads]
    button.click(h.on_extract, inputs, outputs, api_name="extract", **h.MODEL_WORK)
    save.click(h.on_save_shared, [ui.vector, ui.uploads], [ui.vector, ui.vector_md], api_name="save_to_shared")
    ui.demo.load(lambda: gr.Button(visible=h.RULES.shared_saves), None, save, **h.COSMETIC)


def layers_tab(ui: SimpleNamespace, h) -> None:
    series = gr.CheckboxGroup(list(SERIES), value=list(SERIES)[:3], label="系列 / Series")
    plot = gr.Plot(label="レイヤー別 / Per layer", elem_id="layers-plot")
    note = gr.Markdown("")
    triggers = [ui.vector.change, series.change]
    gr.on(triggers, h.on_layers, [ui.vector, series, ui.uploads], [plot, note], api_name="layers")


def chat_tab(ui: SimpleNamespace, h) -> None:
    with gr.Row():
        ui.layers = gr.Textbox("", label="レイヤー / Layers", placeholder="e.g. 10-14", elem_id="chat-layers")
        label = "ギャル度 / Gyaru strength"
        ui.strength = h.strength_slider("calibrated", S.DEFAULT_STRENGTH["calibrated"], label=label, elem_id="strength")
        ui.scale = gr.Radio(list(S.SCALES), value="calibrated", label="スケール / Scale")
    with gr.Row():
        label = "適用先 / Apply to (where the push is added while generating)"
        ui.apply_to = gr.Radio(list(S.APPLY_TO), value=S.DEFAULT_APPLY_TO, label=label)
        ui.mode = gr.Radio(list(S.MODES), value=S.DEFAULT_MODE, label="方式 / Mode")
        label = "半減期 / Half-life (tokens over which the strength halves; 0 = constant)"
        ui.half_life = gr.Number(0, minimum=0, label=label)
    with gr.Row():
        max_new = gr.Slider(1, 512, value=64, step=1, label="最大トークン / Max new tokens", elem_id="max-new")
        temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="温度 / Temperature (0 = greedy)")
        seed = gr.Number(0, precision=0, label="シード / Seed")
        ui.penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="繰り返しペナルティ / Repetition penalty")
    with gr.Row():
        with gr.Column():
            plain_bot, plain_md = chat_column(LABELS["plain"], "plain-bot")
        with gr.Column():
            steered_bot, steered_md = chat_column(LABELS["steered"], "steered-bot")
    with gr.Row():
        msg = gr.Textbox(label="メッセージ / Message", scale=4, lines=1, elem_id="chat-msg")
        send = gr.Button("送信 / Send", variant="primary", scale=1, elem_id="send-btn")
    with gr.Row():
        ui.examples = gr.Dropdown(load_prompts("ja"), value=None, label="例 / Example prompts", scale=4)
        clear = gr.Button("クリア / Clear", scale=1)
    # the setting a vector's defaults and a sweep cell fill in (h.chat_setting's order)
    ui.chat_setting = [ui.layers, ui.strength, ui.scale, ui.mode, ui.apply_to, ui.half_life, ui.penalty]
    steering = [ui.layers, ui.strength, ui.scale, ui.apply_to]
    decoding_in = [max_new, temperature, seed, ui.penalty]
    # mode and half-life come last: positional callers of h.on_chat from before they existed still work
    inputs = [msg, ui.vector, *steering, *decoding_in, ui.history, ui.uploads, ui.mode, ui.half_life]
    columns = [plain_bot, steered_bot, plain_md, steered_md, ui.history]
    gr.on([send.click, msg.submit], h.on_chat, inputs, [*columns, msg], api_name="chat", **h.CHAT_WORK)
    ui.scale.input(h.strength_slider, [ui.scale, ui.strength], ui.strength, **h.COSMETIC)
    ui.examples.input(lambda text: text, ui.examples, msg, **h.COSMETIC)
    clear.click(h.on_clear, None, columns, **h.COSMETIC)


def sweep_tab(ui: SimpleNamespace, h) -> None:
    gr.Markdown(
        "レイヤー候補 × 強さ の表を、ベクトルの言語の質問で試す(greedy)。 / Try every layer option × strength on the "
        "vector's language prompts (greedy): marker share, broken share and perplexity per cell, with the Chat tab's "
        "apply-to and repetition penalty."
    )
    with gr.Row():
        label = "レイヤー候補 / Layer options (space-separated)"
        ui.sweep_layers = gr.Textbox(S.SWEEP_LAYER_OPTIONS, label=label, elem_id="sweep-layers")
        label = "強さ / Strengths (comma-separated)"
        ui.sweep_strengths = gr.Textbox(S.SWEEP_STRENGTHS["calibrated"], label=label, elem_id="sweep-strengths")
        ui.sweep_scale = gr.Radio(list(S.SCALES), value="calibrated", label="スケール / Scale")
        ui.sweep_mode = gr.Radio(list(S.MODES), value=S.DEFAULT_MODE, label="方式 / Mode")
    with gr.Row():
        prompts = gr.Slider(2, 32, value=4, step=1, label="質問数 / Prompts", elem_id="sweep-prompts")
        label = "最大トークン / Max new tokens"
        tokens = gr.Slider(4, 256, value=DEFAULT_SWEEP_TOKENS, step=1, label=label, elem_id="sweep-tokens")
    button = gr.Button("スイープ / Run sweep", variant="primary", elem_id="sweep-btn")
    best = gr.Markdown("", elem_id="sweep-best")
    with gr.Row():
        markers = gr.Plot(label="ギャル率 / Marker share", elem_id="sweep-markers")
        broken = gr.Plot(label="崩れ / Broken share", elem_id="sweep-broken")
    table = gr.Dataframe(label="セル / Cells (click a row to pick it)", interactive=False, elem_id="sweep-table")
    with gr.Row():
        pick = gr.Dropdown([], label="セル / Cell (layers @ strength)", scale=3)
        apply_pick = gr.Button("チャットへ / Use in Chat", scale=1, elem_id="apply-pick-btn")
        apply_best = gr.Button("おすすめをチャットへ / Apply best to Chat", variant="primary", scale=1)
    picks = gr.State(None)  # this user's last sweep (a SweepPicks)
    grid = [ui.sweep_layers, ui.sweep_strengths, prompts, tokens, ui.sweep_scale]
    inputs = [ui.vector, *grid, ui.penalty, ui.sweep_mode, ui.apply_to, ui.uploads]
    outputs = [markers, broken, table, best, pick, picks]
    button.click(h.on_sweep, inputs, outputs, api_name="sweep", **h.MODEL_WORK)
    to_chat_out = [*ui.chat_setting, ui.tabs]
    apply_best.click(h.on_apply_best, [picks, ui.vector], to_chat_out, api_name="apply_best")
    apply_pick.click(h.on_apply_cell, [pick, picks, ui.vector], to_chat_out, api_name="apply_cell")
    ui.sweep_scale.input(lambda s: S.SWEEP_STRENGTHS[s], ui.sweep_scale, ui.sweep_strengths, **h.COSMETIC)
    table.select(h.on_pick_row, picks, pick, **h.COSMETIC)


def build_demo(h) -> gr.Blocks:
    """The page, its handlers taken from `h` (app.py's module, so they read its current globals)."""
    ui = SimpleNamespace()  # the components more than one part uses
    # delete_cache: Gradio's own copies of uploads and downloads go too, checked hourly, SESSION_TTL_S after they came
    with gr.Blocks(title="gyaru steering studio", delete_cache=(3600, SESSION_TTL_S)) as demo:
        ui.demo = demo
        # this user's own vector files (uploads and extractions); their temporary folders go when Gradio deletes the
        # session's state (an hour after the page closes, or SESSION_TTL_S after the last change) or when the
        # catalog expires them (SESSION_TTL_S after they were made), whichever comes first
        ui.uploads = gr.State([], time_to_live=SESSION_TTL_S, delete_callback=lambda files: h.CATALOG.discard(files))
        ui.history = gr.State(new_history())  # this user's raw chat history per column
        gr.Markdown(
            "# ギャル steering studio\nギャル口調ベクトルを抽出して、ふつうの返事と並べて比べよう。 / "
            "Extract a gyaru-style steering vector and compare plain and steered replies side by side."
        )
        model_bar(demo, ui, h)
        with gr.Tabs() as ui.tabs:
            with gr.Tab("抽出 / Extract", id="extract"):
                extract_tab(ui, h)
            with gr.Tab("レイヤー / Layers", id="layers"):
                layers_tab(ui, h)
            with gr.Tab("チャット / Chat", id="chat"):
                chat_tab(ui, h)
            with gr.Tab("スイープ / Sweep", id="sweep"):
                sweep_tab(ui, h)
        sweep = [ui.sweep_layers, ui.sweep_strengths, ui.sweep_scale, ui.sweep_mode]
        defaults = [*ui.chat_setting, ui.examples, *sweep]
        ui.vector.change(h.on_vector_selected, [ui.vector, ui.uploads], defaults, api_name="vector_defaults")
    demo.queue(default_concurrency_limit=1)
    return demo
