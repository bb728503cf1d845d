"""The studio page's layout: each tab's components and the events that wire them to app.py's handlers.

Split from app.py so that file holds the handlers and the launch; `build_demo(h)` takes app.py's module as `h`, so
every event calls the handler app.py defines and reads its current globals (RULES, CATALOG, ...). Every label is
an app_text key (`t`), shown in the page's language; handlers that write text get the language (`ui.lang`).
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import gradio as gr

import app_widgets as w
from app_text import INITIAL_LANG_JS, SWITCH_JS, choices, t
from steering import settings as S  # the choice lists, ranges and defaults
from steering.catalog import SESSION_TTL_S
from steering.chat import new_history
from steering.data import load_prompts
from steering.models import BUNDLED, SUGGESTED_MODELS
from steering.sweep import DEFAULT_SWEEP_TOKENS
from steering.vector_files import SUFFIXES

# --------------------------------------------------------------------------- layout and events
# Each part builds its components and wires their events; components other parts need go on `ui`. Named events are
# the app's HTTP API; model work shares one queue slot (w.MODEL_WORK) except chat (w.CHAT_WORK: batched by
# h.SCHEDULER); cosmetic events are private and unqueued; w.UI_WORK is private but queued (it may show a toast).


def chat_column(key: str, elem_id: str) -> tuple[gr.Chatbot, gr.Markdown]:
    """One side of the comparison: a chatbot that shows text as text, and its score line."""
    bot = gr.Chatbot(
        label=t(key),
        height=340,
        elem_id=elem_id,
        render_markdown=False,
        sanitize_html=True,
        allow_tags=False,
        feedback_options=None,
    )
    return bot, gr.Markdown("", elem_classes="score-line", elem_id=f"{elem_id}-score")


def header(ui: SimpleNamespace) -> None:
    with gr.Row(equal_height=True):
        with gr.Column(scale=4):
            gr.Markdown(t("title"), elem_id="title")
            gr.Markdown(t("intro"))
        ui.lang = gr.Radio(
            [("English", "en"), ("日本語", "ja")], value="en", label=t("language"), elem_id="lang", scale=1
        )


def model_bar(ui: SimpleNamespace) -> None:
    with gr.Row(equal_height=True):
        # custom values reach h.on_load_model, where h.RULES.policy decides (the command line is read after this is built)
        model = gr.Dropdown(
            SUGGESTED_MODELS, value=BUNDLED, allow_custom_value=True, scale=3, label=t("model"), info=t("model_info")
        )
        ui.model = model
        ui.load = gr.Button(t("load"), variant="secondary", scale=1, elem_id="load-btn")
    ui.status = gr.Markdown("", elem_id="model-status")
    with gr.Row(equal_height=True):
        # Choices arrive with the page load (/startup); an API client may name a vector without it: any value is
        # accepted here and h.CATALOG.open lets through only the shared folder's files and this session's own.
        ui.vector = gr.Dropdown([], label=t("vector"), scale=4, elem_id="vector-dd", allow_custom_value=True)
        ui.refresh = gr.Button(t("refresh"), scale=0, min_width=50, elem_id="refresh-btn")
        ui.upload = gr.UploadButton(
            t("upload"), file_types=[*SUFFIXES, ".json"], file_count="multiple", scale=1, elem_id="upload-btn"
        )
    ui.vector_md = gr.Markdown("", elem_id="vector-note")


def model_bar_events(demo: gr.Blocks, ui: SimpleNamespace, h) -> None:
    model, load, refresh, upload = ui.model, ui.load, ui.refresh, ui.upload
    listing = [ui.vector, ui.vector_md]
    model_out = [ui.status, *listing, ui.dataset, *ui.layer_sliders]
    load.click(
        h.on_load_model, [model, ui.uploads, ui.lang], model_out, api_name="load_model",
        show_progress_on=[ui.status], **w.MODEL_WORK,
    )  # fmt: skip
    startup_out = [ui.status, model, *listing, ui.dataset, *ui.layer_sliders]
    # the page's language first (the browser's, or the one chosen here before), then what the server writes in it
    first = demo.load(None, None, ui.lang, js=INITIAL_LANG_JS, **w.COSMETIC)
    first.then(h.on_page_load, [ui.uploads, ui.lang], startup_out, api_name="startup", show_progress_on=[ui.status])
    refresh.click(h.on_refresh, [ui.vector, ui.uploads, ui.lang], listing, api_name="list_vectors")
    upload_out = [ui.vector, ui.uploads, ui.vector_md]
    upload.upload(
        h.on_upload_vector, [upload, ui.uploads, ui.vector, ui.lang], upload_out, api_name="upload_vector",
        **w.UI_WORK,
    )  # fmt: skip


def extract_tab(ui: SimpleNamespace, h) -> None:
    with gr.Row():
        ui.dataset = gr.Radio(
            choices("dataset", h.DATASET_KEYS), value="en", label=t("dataset"), info=t("dataset_info")
        )
        types = [".jsonl", ".json", ".csv", ".tsv"]
        data_file = gr.File(label=t("data_file"), file_types=types, height=110, elem_id="data-file")
    with gr.Row():
        contrast = gr.Radio(
            choices("contrast", S.CONTRASTS), value=S.CONTRASTS[0], label=t("contrast"), info=t("contrast_info")
        )
        method = gr.Radio(choices("method", S.METHODS), value=S.METHODS[0], label=t("method"), info=t("method_info"))
        read_position = gr.Radio(
            choices("read_position", S.READ_POSITIONS),
            value=S.DEFAULT_READ_POSITION,
            label=t("read_position"),
            info=t("read_position_info"),
        )
    with gr.Row():
        max_pairs = gr.Number(50, minimum=1, precision=0, label=t("max_pairs"), elem_id="max-pairs")
        layers = gr.Textbox("", label=t("extract_layers"), placeholder=t("extract_layers_ph"), elem_id="extract-layers")
        name = gr.Textbox("gyaru", label=t("name"), elem_id="extract-name")
    with gr.Row(equal_height=True):
        button = gr.Button(t("extract_btn"), variant="primary", elem_id="extract-btn", scale=1)
        summary = gr.Markdown("", elem_id="extract-status")
    download = gr.File(label=t("download"), file_count="multiple", interactive=False, visible=False)
    gr.Markdown(t("extract_lifetime"), elem_id="extract-lifetime")
    save = gr.Button(t("save_shared"), visible=False, elem_id="save-shared-btn")  # shown by the page load where allowed
    table = gr.Dataframe(label=t("extract_table"), interactive=False, elem_id="extract-table", visible=False)
    table_help = gr.Markdown(t("stats_help"), visible=False, elem_id="extract-table-help")
    inputs = [ui.dataset, data_file, contrast, max_pairs, layers, method, read_position, name, ui.uploads, ui.lang]
    outputs = [summary, download, table, ui.vector, ui.vector_md, ui.uploads, table_help]
    button.click(
        h.on_extract, inputs, outputs, api_name="extract", show_progress_on=[summary], **w.MODEL_WORK
    )  # fmt: skip
    save.click(h.on_save_shared, [ui.vector, ui.uploads, ui.lang], [ui.vector, ui.vector_md], api_name="save_to_shared")
    ui.demo.load(lambda: gr.Button(visible=h.RULES.shared_saves), None, save, **w.COSMETIC)


def layers_tab(ui: SimpleNamespace, h) -> None:
    keys = h.SERIES_KEYS
    series = gr.CheckboxGroup(choices("series", keys), value=keys[:3], label=t("series"), elem_id="series")
    ui.layers_plot = gr.Plot(label=t("layers_plot"), elem_id="layers-plot")
    ui.layers_note = gr.Markdown("", elem_id="layers-note")
    gr.Markdown(t("layers_help"), elem_id="layers-help")
    triggers = [ui.vector.change, series.change, ui.lang.change]
    out = [ui.layers_plot, ui.layers_note]
    gr.on(triggers, h.on_layers, [ui.vector, series, ui.uploads, ui.lang], out, api_name="layers")


def chat_settings(ui: SimpleNamespace, h) -> list:
    """The steering controls under the chat: layer sliders and strength up front, the rest in an accordion."""
    with gr.Row():
        ui.layer_start = gr.Slider(0, 29, value=10, step=1, label=t("layer_start"), elem_id="layer-start")
        ui.layer_width = gr.Slider(1, 30, value=5, step=1, label=t("layer_width"), elem_id="layer-width")
        with gr.Column():
            ui.strength = w.strength_slider(
                "calibrated", S.DEFAULT_STRENGTH["calibrated"], label=t("strength"), elem_id="strength"
            )
            ui.strength_note = gr.Markdown("", elem_id="strength-note")
    with gr.Accordion(t("advanced"), open=False, elem_id="chat-advanced"):
        with gr.Row():
            ui.layers = gr.Textbox("", label=t("chat_layers"), placeholder=t("chat_layers_ph"), elem_id="chat-layers")
            ui.scale = gr.Radio(choices("scale", S.SCALES), value="calibrated", label=t("scale"), info=t("scale_info"))
        with gr.Row():
            ui.apply_to = gr.Radio(
                choices("apply_to", S.APPLY_TO), value=S.DEFAULT_APPLY_TO, label=t("apply_to"), info=t("apply_to_info")
            )
            ui.mode = gr.Radio(choices("mode", S.MODES), value=S.DEFAULT_MODE, label=t("mode"), info=t("mode_info"))
            ui.half_life = gr.Number(0, minimum=0, label=t("half_life"), info=t("half_life_info"))
        with gr.Row():
            max_new = gr.Slider(1, 512, value=128, step=1, label=t("max_new"), elem_id="max-new")
            temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label=t("temperature"))
            seed = gr.Number(0, precision=0, label=t("seed"))
            ui.penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label=t("penalty"))
    ui.layer_sliders = [ui.layer_start, ui.layer_width]
    return [max_new, temperature, seed, ui.penalty]


def chat_tab(ui: SimpleNamespace, h) -> None:
    with gr.Row():
        with gr.Column():
            plain_bot, plain_md = chat_column("plain", "plain-bot")
        with gr.Column():
            steered_bot, steered_md = chat_column("steered", "steered-bot")
            meter_html = gr.HTML("", elem_id="meter", visible=False)
    with gr.Row(equal_height=True):
        msg = gr.Textbox(label=t("message"), placeholder=t("message_ph"), scale=5, lines=1, elem_id="chat-msg")
        send = gr.Button(t("send"), variant="primary", scale=1, elem_id="send-btn")
        stop = gr.Button(t("stop"), variant="stop", scale=1, visible=False, elem_id="stop-btn")
        clear = gr.Button(t("clear"), scale=1, elem_id="clear-btn")
    with gr.Row(equal_height=True):
        ui.examples = gr.Dropdown(load_prompts("en"), value=None, label=t("examples"), scale=4, elem_id="examples")
        meter = gr.Checkbox(
            False, label=t("meter"), info=t("meter_info"), scale=2, min_width=240, elem_id="meter-toggle"
        )
    decoding_in = chat_settings(ui, h)
    ui.chat_setting = [ui.layers, ui.strength, ui.scale, ui.mode, ui.apply_to, ui.half_life, ui.penalty]
    steering = [ui.layers, ui.strength, ui.scale, ui.apply_to]
    columns = [plain_bot, steered_bot, plain_md, steered_md, ui.history, meter_html]
    busy = gr.State(False)  # this page has a reply streaming
    pending = gr.State(None)  # the message on its way to h.on_page_chat (the box is free again at once)
    # The streaming step for HTTP clients: the message as its first input (the page goes through `pending`).
    chat_in = [*steering, *decoding_in, ui.history, ui.uploads, ui.mode, ui.half_life, ui.lang, meter]
    api_chat = gr.Button(visible=False, elem_id="api-chat")
    api_chat.click(h.on_chat, [msg, ui.vector, *chat_in], columns, api_name="chat", **w.CHAT_WORK)
    # The page: take the message (refusing a blank one or a second while streaming, text kept), then stream.
    take = gr.on(
        [send.click, msg.submit],
        h.on_send,
        [msg, busy, ui.vector, *chat_in],
        [msg, pending, busy, send, stop],
        api_visibility="private",
        **w.UI_WORK,
    )
    page = gr.State(lambda: uuid.uuid4().hex)  # this page's id: Stop and Clear reach its stream through it
    stream = take.then(
        h.on_page_chat, [pending, page, ui.vector, *chat_in], [*columns, busy], **w.CHAT_WORK, api_visibility="private"
    )  # then Send is back (Stop and Clear bring it back themselves)
    stream.then(w.on_buttons_back, busy, [send, stop], **w.COSMETIC)
    stop.click(w.on_stop, page, [busy, send, stop], cancels=[stream], **w.COSMETIC)
    clear.click(w.on_clear_page, page, [*columns, busy, send, stop], cancels=[stream], **w.COSMETIC)
    plain_bot.clear(w.on_clear_column("plain"), ui.history, [plain_md, ui.history], **w.COSMETIC)
    steered_bot.clear(w.on_clear_column("steered"), ui.history, [steered_md, ui.history, meter_html], **w.COSMETIC)
    meter.change(lambda on: gr.HTML(visible=on), meter, meter_html, **w.COSMETIC)
    # layer sliders write the layers text (what is sent); the strength note warns past where text broke
    sliders = [ui.layer_start, ui.layer_width]
    gr.on([s.input for s in sliders], h.on_layer_slider, [*sliders, ui.vector, ui.uploads], ui.layers, **w.COSMETIC)
    note_in = [ui.vector, ui.strength, ui.scale, ui.mode, ui.apply_to, ui.penalty, ui.uploads, ui.lang]
    note_on = [ui.strength.change, ui.mode.change, ui.apply_to.change, ui.penalty.change, ui.lang.change]
    gr.on(note_on, h.on_strength_note, note_in, ui.strength_note, show_progress="hidden", **w.NOTE_WORK)
    ui.scale.input(w.strength_slider, [ui.scale, ui.strength], ui.strength, **w.COSMETIC)
    ui.examples.input(lambda text: text, ui.examples, msg, **w.COSMETIC)


def sweep_tab(ui: SimpleNamespace, h) -> None:
    gr.Markdown(t("sweep_intro"))
    with gr.Row():
        ui.sweep_layers = gr.Textbox(S.SWEEP_LAYER_OPTIONS, label=t("sweep_layers"), elem_id="sweep-layers")
        strengths = S.SWEEP_STRENGTHS["calibrated"]
        ui.sweep_strengths = gr.Textbox(strengths, label=t("sweep_strengths"), elem_id="sweep-strengths")
        ui.sweep_scale = gr.Radio(choices("scale", S.SCALES), value="calibrated", label=t("scale"))
        ui.sweep_mode = gr.Radio(choices("mode", S.MODES), value=S.DEFAULT_MODE, label=t("mode"))
    with gr.Row():
        prompts = gr.Slider(2, 32, value=4, step=1, label=t("sweep_prompts"), elem_id="sweep-prompts")
        tokens = gr.Slider(4, 256, value=DEFAULT_SWEEP_TOKENS, step=1, label=t("max_new"), elem_id="sweep-tokens")
    with gr.Row(equal_height=True):
        button = gr.Button(t("sweep_btn"), variant="primary", elem_id="sweep-btn", scale=1)
        best = gr.Markdown("", elem_id="sweep-best")
    with gr.Row():
        markers = gr.Plot(label=t("sweep_markers"), elem_id="sweep-markers")
        broken = gr.Plot(label=t("sweep_broken"), elem_id="sweep-broken")
    table = gr.Dataframe(label=t("sweep_table"), interactive=False, elem_id="sweep-table")
    with gr.Row():
        pick = gr.Dropdown([], label=t("sweep_pick"), scale=3)
        apply_pick = gr.Button(t("use_in_chat"), scale=1, elem_id="apply-pick-btn")
        apply_best = gr.Button(t("apply_best"), variant="primary", scale=1)
    picks = gr.State(None)  # this user's last sweep (a SweepPicks)
    grid = [ui.sweep_layers, ui.sweep_strengths, prompts, tokens, ui.sweep_scale]
    inputs = [ui.vector, *grid, ui.penalty, ui.sweep_mode, ui.apply_to, ui.uploads, ui.lang]
    outputs = [markers, broken, table, best, pick, picks]
    button.click(h.on_sweep, inputs, outputs, api_name="sweep", show_progress_on=[best], **w.MODEL_WORK)
    to_chat_out = [*ui.chat_setting, *ui.layer_sliders, ui.tabs]
    apply_best.click(h.on_apply_best, [picks, ui.vector, ui.lang], to_chat_out, api_name="apply_best")
    apply_pick.click(h.on_apply_cell, [pick, picks, ui.vector, ui.lang], to_chat_out, api_name="apply_cell")
    ui.sweep_scale.input(lambda s: S.SWEEP_STRENGTHS[s], ui.sweep_scale, ui.sweep_strengths, **w.COSMETIC)
    table.select(h.on_pick_row, picks, pick, **w.COSMETIC)


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
        header(ui)
        model_bar(ui)
        with gr.Tabs(elem_id="tabs") as ui.tabs:
            with gr.Tab(t("tab_chat"), id="chat"):
                chat_tab(ui, h)
            with gr.Tab(t("tab_extract"), id="extract"):
                extract_tab(ui, h)
            with gr.Tab(t("tab_layers"), id="layers"):
                layers_tab(ui, h)
            with gr.Tab(t("tab_sweep"), id="sweep"):
                sweep_tab(ui, h)
        model_bar_events(demo, ui, h)  # they set components of the tabs too
        sweep = [ui.sweep_layers, ui.sweep_strengths, ui.sweep_scale, ui.sweep_mode]
        current = [*ui.chat_setting, ui.lang]
        defaults = [*ui.chat_setting, *ui.layer_sliders, ui.examples, *sweep]
        ui.vector.change(
            h.on_vector_selected, [ui.vector, ui.uploads, *current], defaults, api_name="vector_defaults", **w.UI_WORK
        )
        ui.lang.change(None, ui.lang, ui.lang, js=SWITCH_JS, **w.COSMETIC)
        lang_out = [ui.status, ui.model, ui.vector, ui.vector_md]
        ui.lang.change(h.on_language, [ui.vector, ui.uploads, ui.lang], lang_out, show_progress="hidden", **w.COSMETIC)
    demo.queue(default_concurrency_limit=1)
    w.calm_queue(demo)
    return demo
