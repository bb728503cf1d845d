"""gyaru steering studio: a Gradio app over the `steering` library — extract a vector, inspect its layers, and
chat with the plain and the steered model side by side.

This file holds only the layout, the handlers that turn UI values into library calls and library results into
component updates, and the launch; the logic is in `steering` (session: the shared model HOLDER; catalog: the
vector list CATALOG; chat, sweep_tab, vector_view: the tabs' logic; plots, tables; serve: command line, fonts).
Each user's own vectors (uploads and extractions), sweep and chat history live in gr.State, never in globals; what
visitors may do to the shared server (switch the model, save into the shared vectors folder) is RULES, set
from the command line in main().
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from contextlib import closing, contextmanager
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: no phoning home

import gradio as gr

import app_layout
from steering import settings as S  # the choice lists, ranges and defaults
from steering.api import OpenAIApi
from steering.catalog import MAX_UPLOAD_MB, VectorCatalog
from steering.chat import Turn, column_steering, decoding, new_history, stream_turn
from steering.data import DatasetError
from steering.generate import max_message_chars
from steering.pipeline import extract_and_save
from steering.plots import heatmap, layer_figure
from steering.scheduler import Scheduler, SchedulerBusy
from steering.serve import MONO_FONTS, NO_SHARED_SAVES, SYSTEM_FONTS, ApiKeyRequired, ServerRules, server_args
from steering.session import ModelSession, model_status
from steering.settings import STRENGTH_RANGE  # also read by tests/test_bad_inputs.py
from steering.steer import strength_warning
from steering.sweep import recommend
from steering.sweep_tab import SweepPicks, best_line, best_setting, picked_setting, sweep_grid
from steering.tables import stats_frame, sweep_frame
from steering.vector_view import extraction_options, extraction_summary, layer_note, vector_defaults
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
# What visitors may do to the shared server: until main() reads the command line (and when something else launches
# `demo`), only what the environment allows; main() widens it on localhost or when the operator asks.
RULES = ServerRules.from_environ()


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
    """Load a model for everyone; a refusal (a model RULES.policy does not allow) or a failure (e.g. 4-bit without CUDA)
    is shown, never raised. RULES.policy is checked first: a refused spec is never looked up on disk or on the hub."""
    try:
        spec = RULES.policy.check(spec)
        loaded = HOLDER.load(spec, on_status=lambda text: progress(0, desc=text))
    except Exception as exc:  # noqa: BLE001 - any hub model can fail in its own way; show the message
        gr.Warning(str(exc))
        return f"⚠ {exc}\n\n{model_status(HOLDER.loaded)}", gr.skip(), gr.skip()
    return model_status(loaded), *vector_dropdown(loaded, uploads)


def on_page_load(uploads: list[str]):
    """Show the shared model (loading the bundled one if none), the models RULES.policy offers by name, and the vectors
    that fit the model."""
    loaded = HOLDER.get()
    models = gr.Dropdown(choices=RULES.policy.choices, value=loaded.spec, allow_custom_value=True)
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
    sees it; only on servers that allow it (RULES.shared_saves)."""
    if not RULES.shared_saves:
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


demo = app_layout.build_demo(sys.modules[__name__])


def main(argv: list[str] | None = None) -> None:
    global RULES
    args = server_args(argv)
    try:  # /v1 on an address others can reach needs a key (a Space without one serves only the page)
        RULES = ServerRules.from_args(args)
    except ApiKeyRequired as exc:
        raise SystemExit(f"error: {exc}") from None
    API.api_key = RULES.api_key
    LOG.warning(RULES.describe())
    if args.model:
        HOLDER.load(args.model)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(api=RULES.serve_api))


if __name__ == "__main__":
    main()
