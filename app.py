"""gyaru steering studio: a Gradio app over the `steering` library — extract a vector, inspect its layers, and
chat with the plain and the steered model side by side.

This file holds only the layout, the handlers that turn UI values into library calls and library results into
component updates, and the launch; the logic is in `steering` (session: the shared model HOLDER; catalog: the
vector list CATALOG; chat, sweep_tab, vector_view: the tabs' logic; plots, tables; serve: command line, fonts).
Each user's own vectors (uploads and extractions), sweep and chat history live in gr.State, never in globals; what
visitors may do to the shared server (switch the model, save into the shared vectors folder) is POLICY and
SHARED_SAVES, set from the command line in main().
"""

from __future__ import annotations

import atexit
import logging
import os
from contextlib import closing, contextmanager
from pathlib import Path
from types import SimpleNamespace

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: no phoning home

import gradio as gr

from steering import settings as S  # the choice lists, ranges and defaults
from steering.api import ApiKeyRequired, OpenAIApi, api_key_policy
from steering.catalog import MAX_UPLOAD_MB, SESSION_TTL_S, VectorCatalog
from steering.chat import LABELS, Turn, column_steering, decoding, new_history, stream_turn
from steering.data import DatasetError, load_prompts
from steering.generate import max_message_chars
from steering.models import BUNDLED, SUGGESTED_MODELS
from steering.pipeline import extract_and_save
from steering.plots import SERIES, heatmap, layer_figure
from steering.scheduler import Scheduler, SchedulerBusy
from steering.serve import MONO_FONTS, SYSTEM_FONTS, env_flag, server_args
from steering.session import ModelPolicy, ModelSession, model_status
from steering.settings import STRENGTH_RANGE  # also read by tests/test_bad_inputs.py
from steering.steer import strength_warning
from steering.sweep import DEFAULT_SWEEP_TOKENS, recommend
from steering.sweep_tab import SweepPicks, best_line, best_setting, picked_setting, sweep_grid
from steering.tables import stats_frame, sweep_frame
from steering.vector_files import SUFFIXES
from steering.vector_view import DATASET_CHOICES, extraction_options, extraction_summary, layer_note, vector_defaults
from steering.vectors import SteeringVector, VectorFileError

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:
    gpu = lambda fn: fn  # noqa: E731

LOG = logging.getLogger("gyaru-studio")
THEME = gr.themes.Default(primary_hue="pink", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
CSS = ".score-line p { margin: 0; font-size: 0.9em; }"
MODEL_WORK = dict(concurrency_limit=1, concurrency_id="model")  # one generation or load at a time, in one queue slot
COSMETIC = dict(api_visibility="private", queue=False)  # no model work, not part of the API
# Chats do not take the model's slot: up to 16 at once (32 rows, SCHEDULER's batch) join SCHEDULER's batches.
CHAT_WORK = dict(concurrency_limit=16, concurrency_id="chat")


# --------------------------------------------------------------------------- the shared model and vectors

HOLDER = ModelSession()  # the one model every user shares
CATALOG = VectorCatalog(os.environ.get("STEERING_VECTOR_DIR") or Path(__file__).resolve().parent / "vectors")
atexit.register(lambda: CATALOG.close())  # upload and extraction folders still held at exit
# Every chat, from the page and from the OpenAI-compatible API at /v1 (API, served beside the page), runs in
# SCHEDULER's batched generations on one worker thread. main() sets API's key.
SCHEDULER = Scheduler(max_batch_rows=32, max_queue=64)
API = OpenAIApi(HOLDER.get, CATALOG.folder, SCHEDULER)
# What visitors may do to the shared server. Until main() reads the command line (and when something else
# launches `demo`), only what the environment allows: the listed models and no shared saves. main() widens both
# on a server only this machine can reach (steering.serve.trusted_host) or when the operator asks for it.
POLICY = ModelPolicy(env_flag(os.environ, "STEERING_ALLOW_ANY_MODEL"), os.environ.get("STEERING_MODEL") or None)
SHARED_SAVES = env_flag(os.environ, "STEERING_ALLOW_SHARED_SAVES")
NO_SHARED_SAVES = (
    "このサーバーでは共有フォルダに保存できません / this server does not save into the shared vectors folder: "
    "your vectors stay in your session (download them instead). Its operator can allow it with "
    "`python app.py --allow-shared-saves` (always allowed on localhost)."
)


@contextmanager
def user_errors(*kinds: type[Exception]):
    """A library ValueError (bad layers, a clamp the vector cannot do, ...) or one of `kinds`, shown as a toast."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, *kinds) as exc:
        raise gr.Error(str(exc)) from None


def vector_dropdown(loaded, uploads: list[str], selected: str | None = None):
    """The vector dropdown refreshed for the current model (keeps `selected` when it still fits)."""
    listing = CATALOG.listing(loaded, uploads, selected)
    return gr.Dropdown(choices=listing.choices, value=listing.value), listing.note


def open_vector(path: str | None, uploads: list[str] | None) -> SteeringVector:
    """Load the chosen vector; only files in the vectors folder or this user's own uploads are ever opened."""
    with user_errors():
        return CATALOG.open(path, uploads or [])


def warn(message: str | None) -> None:
    """A library warning (None: nothing to say) as a toast."""
    if message:
        gr.Warning(message)


def strength_slider(scale: str, value: float, **props):
    """The strength slider's range for `scale`, holding `value` (clamped to it); `props` when building it."""
    lo, hi, step = STRENGTH_RANGE.get(scale, STRENGTH_RANGE["calibrated"])
    return gr.Slider(minimum=lo, maximum=hi, step=step, value=min(max(float(value), lo), hi), **props)


# --------------------------------------------------------------------------- handlers: model bar, extract, layers


@gpu
def on_load_model(spec: str, uploads: list[str], progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - the Gradio idiom
    """Load a model for everyone; a refusal (a model POLICY does not allow) or a failure (e.g. 4-bit without CUDA)
    is shown, never raised. POLICY is checked first: a refused spec is never looked up on disk or on the hub."""
    try:
        spec = POLICY.check(spec)
        loaded = HOLDER.load(spec, on_status=lambda text: progress(0, desc=text))
    except Exception as exc:  # noqa: BLE001 - any hub model can fail in its own way; show the message
        gr.Warning(str(exc))
        return f"⚠ {exc}\n\n{model_status(HOLDER.loaded)}", gr.skip(), gr.skip()
    return model_status(loaded), *vector_dropdown(loaded, uploads)


def on_page_load(uploads: list[str]):
    """Show the shared model (loading the bundled one if none), the models POLICY offers by name, and the vectors
    that fit the model."""
    loaded = HOLDER.get()
    models = gr.Dropdown(choices=POLICY.choices, value=loaded.spec, allow_custom_value=True)
    return model_status(loaded), models, *vector_dropdown(loaded, uploads)


def on_refresh(selected: str | None, uploads: list[str]):
    return vector_dropdown(HOLDER.get(), uploads, selected)


def on_upload_vector(files: list[str] | None, uploads: list[str], selected: str | None):
    """Validate uploaded vector files (a .pt may come with its .json sidecar) and add them to this user's list."""
    if not files:
        return gr.skip(), uploads, gr.skip()
    loaded = HOLDER.get()
    with user_errors():  # over the size limit
        added, refused = CATALOG.add_uploads(files, loaded)
    for message in refused:
        gr.Warning(message)
    dropdown, note = vector_dropdown(loaded, uploads + added, added[-1] if added else selected)
    return dropdown, uploads + added, note


@gpu
def on_extract(
    dataset: str,
    data_file: str | None,
    contrast: str,
    max_pairs: float,
    layers: str,
    method: str,
    read_position: str,
    name: str,
    uploads: list[str],
    progress=gr.Progress(),  # noqa: B008 - the Gradio idiom
):
    """Extract a vector from a dataset into this session's own files (listed to this session only, removed when it
    ends; see steering.catalog) and offer it for download. Every field, the layers' range included, is checked
    before any data is read."""
    loaded = HOLDER.get()
    with user_errors():
        options = extraction_options(
            dataset, data_file, contrast, max_pairs, layers, method, read_position, loaded.num_layers
        )
    out = CATALOG.extraction_path(str(name or "").strip() or "gyaru")
    report = lambda done, total: progress((done, total), desc="抽出中 / capturing", unit="texts")  # noqa: E731
    try:
        with user_errors(DatasetError):
            vector, timings = extract_and_save(loaded, out, progress=report, **options)
    except BaseException:
        CATALOG.discard([str(out)])  # a failed extraction leaves no folder behind
        raise
    own = [*(uploads or []), str(out)]
    files = [str(out), str(out.with_suffix(".json"))]
    table = stats_frame(vector.stats, vector.meta.suggested_layer)
    summary = extraction_summary(out.name, vector, timings)
    return summary, files, table, *vector_dropdown(loaded, own, str(out)), own


def on_save_shared(path: str | None, uploads: list[str]):
    """Copy the selected vector (one of this session's own) into the shared vectors folder, where every visitor
    sees it; only on servers that allow it (SHARED_SAVES)."""
    if not SHARED_SAVES:
        raise gr.Error(NO_SHARED_SAVES)
    with user_errors():
        target = CATALOG.publish(path, uploads or [])
    gr.Info(f"共有フォルダに保存 / saved to the shared vectors folder as {target.name}")
    return vector_dropdown(HOLDER.get(), uploads or [], str(target))


def on_layers(path: str | None, series: list[str], uploads: list[str]):
    """The per-layer chart of the chosen vector, and a note on what it can and cannot show."""
    if not path:  # an empty vector list (fired by the dropdown clearing) is not an error
        return None, "ベクトルを選んでね / pick a vector to see its layers"
    vector = open_vector(path, uploads)
    return layer_figure(vector, series or []), layer_note(vector)


# --------------------------------------------------------------------------- handlers: chat


def chat_setting(setting) -> tuple:
    """The Chat tab's setting controls (layers, strength, scale, mode, apply to, half-life, penalty) showing a
    SteerSetting or a sweep's Setting."""
    slider = strength_slider(setting.scale, setting.strength)
    rest = (setting.mode, setting.apply_to, setting.half_life or 0, setting.repetition_penalty)
    return setting.layers, slider, setting.scale, *rest


def on_vector_selected(path: str | None, uploads: list[str]):
    """The Chat tab's setting (the vector's recommended one, else the defaults) and example prompts, and the Sweep
    tab's layer options, strengths, scale and mode for the chosen vector."""
    if not path:
        return (gr.skip(),) * 12
    defaults = vector_defaults(open_vector(path, uploads), HOLDER.spec)
    sweep = (defaults.sweep_layers, defaults.sweep_strengths, defaults.sweep_scale, defaults.setting.mode)
    return *chat_setting(defaults.setting), gr.Dropdown(choices=defaults.prompts, value=None), *sweep


@gpu
def on_chat(
    message: str,
    path: str | None,
    layers: str,
    strength: float,
    scale: str,
    apply_to: str,
    max_new_tokens: float,
    temperature: float,
    seed: float,
    repetition_penalty: float = 1.0,
    history: dict | None = None,
    uploads: list[str] | None = None,
    mode: str = S.DEFAULT_MODE,
    half_life: float | None = None,
):
    """Stream the plain (strength 0) and steered (strength s) replies from ONE batched generate call; each column
    continues its own conversation."""
    loaded = HOLDER.get()
    with user_errors():
        turn = Turn.start(history, message, max_message_chars(loaded))  # a 3 MB message is refused untokenized
    vector = open_vector(path, uploads)
    with user_errors():
        steering = column_steering(vector, loaded.num_layers, layers, strength, scale, apply_to, mode, half_life)
        settings = decoding(max_new_tokens, temperature, seed, repetition_penalty)
        warning = strength_warning(steering)  # a non-finite strength is refused here
    warn(warning)
    lang = S.default_lang(vector.meta.lang, loaded.spec)
    try:  # closing(): when the client goes away, its rows leave SCHEDULER's batch at the next token
        turns = stream_turn(loaded, turn, steering, settings, lang, on_notice=gr.Warning, scheduler=SCHEDULER)
        with closing(turns) as views:
            for view in views:
                yield *view, ""
    except (ValueError, VectorFileError) as exc:
        raise gr.Error(str(exc)) from None
    except SchedulerBusy:
        raise gr.Error("混雑中です / the server is busy, try again in a moment") from None
    except Exception as exc:  # noqa: BLE001 - anything inside generate (out of memory, a model bug): tell the user
        LOG.exception("generation failed")
        raise gr.Error(f"生成に失敗しました / generation failed: {type(exc).__name__}: {exc}") from None


def on_clear():
    """Empty both columns, their score lines and this user's chat history."""
    return [], [], "", "", new_history()


# --------------------------------------------------------------------------- handlers: sweep


@gpu
def on_sweep(
    path: str | None,
    layer_options: str,
    strengths: str,
    n_prompts: float,
    max_new_tokens: float,
    scale: str,
    repetition_penalty: float = 1.0,
    mode: str = S.DEFAULT_MODE,
    apply_to: str = S.DEFAULT_APPLY_TO,
    uploads: list[str] | None = None,
    progress=gr.Progress(),  # noqa: B008 - the Gradio idiom
):
    """Greedy replies over a layers × strength grid on the vector's language prompts: marker and broken share
    heatmaps, a table, the recommended cell, and the cells to pick from for the Chat tab. Uses the Chat tab's
    apply-to and repetition penalty, so a picked cell behaves in Chat as it did here."""
    vector = open_vector(path, uploads)
    loaded = HOLDER.get()
    with user_errors():
        grid = sweep_grid(vector, layer_options, strengths, loaded.num_layers, scale, mode, apply_to)
    warn(grid.warning)
    progress(0, desc=f"スイープ中 / sweeping {grid.size} cells")
    report = lambda done, total: progress((done, total), desc="スイープ中 / sweeping", unit="replies")  # noqa: E731
    with user_errors(VectorFileError):
        cells = grid.run(loaded, vector, n_prompts, max_new_tokens, repetition_penalty, progress=report)
    best = recommend(cells)
    picks = SweepPicks.of(cells, best, path)
    heatmaps = heatmap(cells, "marker_share"), heatmap(cells, "broken_share")
    cell_list = gr.Dropdown(choices=picks.labels, value=picks.default_label())
    return *heatmaps, sweep_frame(cells), best_line(best), cell_list, picks


def on_apply_cell(label: str | None, picks: SweepPicks | None, current_path: str | None):
    """The Chat tab set to a swept cell's setting (layers, strength, scale, mode, apply-to, ...), and shown."""
    with user_errors():
        setting = picked_setting(picks, label)
    warn(picks.notice(current_path))
    return *chat_setting(setting), gr.Tabs(selected="chat")


def on_apply_best(picks: SweepPicks | None, current_path: str | None):
    """The Chat tab set to the recommended cell's setting, and shown."""
    with user_errors():
        best_setting(picks)  # refuses when there is no sweep, or it recommended nothing
    return on_apply_cell(picks.best, picks, current_path)


def on_pick_row(picks: SweepPicks | None, evt: gr.SelectData):
    """Clicking a row of the sweep table picks that cell in the dropdown."""
    label = picks.label_at(evt.index) if picks is not None else None
    return gr.Dropdown(value=label) if label is not None else gr.skip()


# --------------------------------------------------------------------------- layout and events
# Each part builds its components and wires their events; components other parts need go on `ui`. Named events are
# the app's HTTP API; model work shares one queue slot (MODEL_WORK) except chat (CHAT_WORK: batched by SCHEDULER);
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


def model_bar(demo: gr.Blocks, ui: SimpleNamespace) -> None:
    with gr.Row():
        label = "モデル / Model (listed ones; any hub id or path where the server allows it; 4-bit needs CUDA)"
        # custom values reach on_load_model, where POLICY decides (the command line is read after this is built)
        model = gr.Dropdown(SUGGESTED_MODELS, value=BUNDLED, allow_custom_value=True, scale=3, label=label)
        load = gr.Button("読み込む / Load", variant="secondary", scale=1)
    status = gr.Markdown(model_status(None))
    with gr.Row():
        # Choices arrive with the page load (/startup); an API client may name a vector without it: any value is
        # accepted here and CATALOG.open lets through only the shared folder's files and this session's own.
        label = "ベクトル / Vector (fits the loaded model)"
        ui.vector = gr.Dropdown([], label=label, scale=3, elem_id="vector-dd", allow_custom_value=True)
        refresh = gr.Button("↻", scale=0, min_width=60)
        label = "ベクトルを追加 / Upload vector (.pt [+ .json], .safetensors, .gguf)"
        upload = gr.File(label=label, file_types=[*SUFFIXES, ".json"], file_count="multiple", scale=2, height=130)
    ui.vector_md = gr.Markdown("")
    listing = [ui.vector, ui.vector_md]
    load.click(on_load_model, [model, ui.uploads], [status, *listing], api_name="load_model", **MODEL_WORK)
    demo.load(on_page_load, [ui.uploads], [status, model, *listing], api_name="startup")
    refresh.click(on_refresh, [ui.vector, ui.uploads], listing, api_name="list_vectors")
    upload_out = [ui.vector, ui.uploads, ui.vector_md]
    upload.upload(on_upload_vector, [upload, ui.uploads, ui.vector], upload_out, api_name="upload_vector")


def extract_tab(ui: SimpleNamespace) -> None:
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
    button.click(on_extract, inputs, outputs, api_name="extract", **MODEL_WORK)
    save.click(on_save_shared, [ui.vector, ui.uploads], [ui.vector, ui.vector_md], api_name="save_to_shared")
    ui.demo.load(lambda: gr.Button(visible=SHARED_SAVES), None, save, **COSMETIC)


def layers_tab(ui: SimpleNamespace) -> None:
    series = gr.CheckboxGroup(list(SERIES), value=list(SERIES)[:3], label="系列 / Series")
    plot = gr.Plot(label="レイヤー別 / Per layer", elem_id="layers-plot")
    note = gr.Markdown("")
    triggers = [ui.vector.change, series.change]
    gr.on(triggers, on_layers, [ui.vector, series, ui.uploads], [plot, note], api_name="layers")


def chat_tab(ui: SimpleNamespace) -> None:
    with gr.Row():
        ui.layers = gr.Textbox("", label="レイヤー / Layers", placeholder="e.g. 10-14", elem_id="chat-layers")
        label = "ギャル度 / Gyaru strength"
        ui.strength = strength_slider("calibrated", S.DEFAULT_STRENGTH["calibrated"], label=label, elem_id="strength")
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
    # the setting a vector's defaults and a sweep cell fill in (chat_setting's order)
    ui.chat_setting = [ui.layers, ui.strength, ui.scale, ui.mode, ui.apply_to, ui.half_life, ui.penalty]
    steering = [ui.layers, ui.strength, ui.scale, ui.apply_to]
    decoding_in = [max_new, temperature, seed, ui.penalty]
    # mode and half-life come last: positional callers of on_chat from before they existed still work
    inputs = [msg, ui.vector, *steering, *decoding_in, ui.history, ui.uploads, ui.mode, ui.half_life]
    columns = [plain_bot, steered_bot, plain_md, steered_md, ui.history]
    gr.on([send.click, msg.submit], on_chat, inputs, [*columns, msg], api_name="chat", **CHAT_WORK)
    ui.scale.input(strength_slider, [ui.scale, ui.strength], ui.strength, **COSMETIC)
    ui.examples.input(lambda text: text, ui.examples, msg, **COSMETIC)
    clear.click(on_clear, None, columns, **COSMETIC)


def sweep_tab(ui: SimpleNamespace) -> None:
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
    button.click(on_sweep, inputs, outputs, api_name="sweep", **MODEL_WORK)
    to_chat_out = [*ui.chat_setting, ui.tabs]
    apply_best.click(on_apply_best, [picks, ui.vector], to_chat_out, api_name="apply_best")
    apply_pick.click(on_apply_cell, [pick, picks, ui.vector], to_chat_out, api_name="apply_cell")
    ui.sweep_scale.input(lambda s: S.SWEEP_STRENGTHS[s], ui.sweep_scale, ui.sweep_strengths, **COSMETIC)
    table.select(on_pick_row, picks, pick, **COSMETIC)


def build_demo() -> gr.Blocks:
    ui = SimpleNamespace()  # the components more than one part uses
    # delete_cache: Gradio's own copies of uploads and downloads go too, checked hourly, SESSION_TTL_S after they came
    with gr.Blocks(title="gyaru steering studio", delete_cache=(3600, SESSION_TTL_S)) as demo:
        ui.demo = demo
        # this user's own vector files (uploads and extractions); their temporary folders go when Gradio deletes the
        # session's state (an hour after the page closes, or SESSION_TTL_S after the last change) or when the
        # catalog expires them (SESSION_TTL_S after they were made), whichever comes first
        ui.uploads = gr.State([], time_to_live=SESSION_TTL_S, delete_callback=lambda files: CATALOG.discard(files))
        ui.history = gr.State(new_history())  # this user's raw chat history per column
        gr.Markdown(
            "# ギャル steering studio\nギャル口調ベクトルを抽出して、ふつうの返事と並べて比べよう。 / "
            "Extract a gyaru-style steering vector and compare plain and steered replies side by side."
        )
        model_bar(demo, ui)
        with gr.Tabs() as ui.tabs:
            with gr.Tab("抽出 / Extract", id="extract"):
                extract_tab(ui)
            with gr.Tab("レイヤー / Layers", id="layers"):
                layers_tab(ui)
            with gr.Tab("チャット / Chat", id="chat"):
                chat_tab(ui)
            with gr.Tab("スイープ / Sweep", id="sweep"):
                sweep_tab(ui)
        sweep = [ui.sweep_layers, ui.sweep_strengths, ui.sweep_scale, ui.sweep_mode]
        defaults = [*ui.chat_setting, ui.examples, *sweep]
        ui.vector.change(on_vector_selected, [ui.vector, ui.uploads], defaults, api_name="vector_defaults")
    demo.queue(default_concurrency_limit=1)
    return demo


def launch_kwargs(api: bool = True) -> dict:
    """What every launch needs (the tests use it too): offline theme, upload limit, downloads from CATALOG's folder,
    and (api) the OpenAI-compatible routes at /v1 on the same server and port, ahead of gradio's own."""
    return dict(
        theme=THEME,
        css=CSS,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        allowed_paths=[str(CATALOG.folder)],
        footer_links=["api", "settings"],
        app_kwargs={"routes": API.routes} if api else None,
    )


demo = build_demo()


def main(argv: list[str] | None = None) -> None:
    global POLICY, SHARED_SAVES
    args = server_args(argv)
    try:  # /v1 on an address others can reach needs a key (a Space without one serves only the page)
        serve_api, api_key = api_key_policy(args.host, args.share, args.api_key, not args.no_api, args.on_space)
    except ApiKeyRequired as exc:
        raise SystemExit(f"error: {exc}") from None
    API.api_key = api_key
    POLICY = ModelPolicy(args.allow_any_model, args.model)
    SHARED_SAVES = args.allow_shared_saves
    LOG.warning(
        "visitors may load %s; saves into the shared vectors folder are %s",
        "any model" if POLICY.allow_any else "only " + ", ".join(POLICY.allowed),
        "on" if SHARED_SAVES else "off",
    )
    LOG.warning("OpenAI-compatible API at /v1: %s", ("key required" if API.api_key else "open") if serve_api else "off")
    if args.model:
        HOLDER.load(args.model)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(api=serve_api))


if __name__ == "__main__":
    main()
