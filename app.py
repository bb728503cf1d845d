"""gyaru steering studio: a Gradio app over the `steering` library — extract a vector, inspect its layers, chat
with the plain and the steered model side by side. This file: the handlers (UI values → library calls → component
updates), the shared HOLDER, CATALOG, SCHEDULER and RULES (set from the command line in main()), and the launch.
The page is app_layout.py, its words app_text.py, its small shared parts app_widgets.py. Each user's own vectors,
sweep and chat history live in gr.State, never in globals.
"""

from __future__ import annotations

import atexit
import html
import importlib.util
import logging
import os
import sys
from contextlib import closing
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: no phoning home
# Gradio's queue rebuilds a pandas summary of its last 10,000 events after EVERY event (O(n) under the GIL): a busy
# page slowed down as events piled up. Summarise every 1,000 events instead (nothing here reads the summary).
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
# Gradio imports matplotlib before and after EVERY event and streamed update (to switch its backend). This app draws
# no matplotlib plots and does not install it, and each failed import searches sys.path again: say once it is absent.
if importlib.util.find_spec("matplotlib") is None:
    sys.modules["matplotlib"] = None  # type: ignore[assignment]

import gradio as gr

import app_layout
import app_text as T
from app_widgets import (
    CSS,
    THEME,
    chat_failure,
    layer_sliders,
    on_clear,
    stops,
    strength_slider,
    toast,
    user_errors,
)
from steering import settings as S  # the choice lists, ranges and defaults
from steering.api import OpenAIApi
from steering.catalog import MAX_UPLOAD_MB, VectorCatalog
from steering.chat import ChatRequest, language_notice, stream_turn
from steering.data import DatasetError
from steering.judge import prepare as prepare_judge
from steering.layer_band import band_of, band_spec
from steering.messages import localized
from steering.meter import default_meter_layer
from steering.pipeline import extract_and_save
from steering.plots import SERIES, heatmap, layer_figure
from steering.serve import NO_SHARED_SAVES, ApiKeyRequired, ServerRules, chat_scheduler, server_args
from steering.session import ModelSession, model_status
from steering.settings import STRENGTH_RANGE, model_lang  # noqa: F401 - RANGE: read by tests/test_bad_inputs.py
from steering.steer import strength_warning
from steering.sweep import recommend
from steering.sweep_tab import SweepPicks, best_line, best_setting, picked_setting, sweep_grid
from steering.tables import stats_frame, sweep_frame
from steering.vector_view import (
    defaults_notice,
    extraction_options,
    extraction_summary,
    layer_note,
    strength_note,
    vector_defaults,
)
from steering.vectors import SteeringVector, VectorFileError

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:
    gpu = lambda fn: fn  # noqa: E731

LOG = logging.getLogger("gyaru-studio")


# --------------------------------------------------------------------------- the shared model and vectors
HOLDER = ModelSession()  # the one model every user shares
CATALOG = VectorCatalog(os.environ.get("STEERING_VECTOR_DIR") or Path(__file__).resolve().parent / "vectors")
atexit.register(lambda: CATALOG.close())  # upload and extraction folders still held at exit
# Every chat, from the page and from the OpenAI-compatible API at /v1 (API, beside the page; main() sets its key),
# runs in SCHEDULER's live batch on one worker thread (serve.chat_scheduler). Ended rows' keys and values, kept for a
# chat's next turn, go when another model is loaded.
SCHEDULER = chat_scheduler()
HOLDER.on_release.append(SCHEDULER.prefix_cache.clear)
API = OpenAIApi(HOLDER.get, CATALOG.folder, SCHEDULER)
# What visitors may do to the shared server: until main() reads the command line (and when something else launches
# `demo`), only what the environment allows; main() widens it on localhost or when the operator asks.
RULES = ServerRules.from_environ()
SERIES_KEYS = list(SERIES)  # the Layers chart's series (app_text names them)
DATASET_KEYS = ["ja", "en", "upload"]  # the Extract tab's bundled datasets by language, or an uploaded file


def vector_dropdown(loaded, uploads: list[str], selected: str | None = None, lang: str | None = None):
    """The vector dropdown refreshed for the current model (keeps `selected` when it still fits), and its note."""
    listing = CATALOG.listing(loaded, uploads, selected, lang)
    return gr.Dropdown(choices=listing.choices, value=listing.value), localized(listing.note, lang)


def open_vector(path: str | None, uploads: list[str] | None, lang: str | None = None) -> SteeringVector:
    """Load the chosen vector; only files in the vectors folder or this user's own uploads are ever opened."""
    with user_errors(lang):
        return CATALOG.open(path, uploads or [])


# --------------------------------------------------------------------------- handlers: model bar, extract, layers


def shared_model(lang: str | None, progress) -> object:
    """The shared model; the first visit loads (and downloads) the bundled one with progress shown in the page."""
    if HOLDER.loaded is None:
        progress(0, desc=T.LOADING_MODEL.say(lang))
    return HOLDER.get()


def model_fields(loaded, uploads: list[str], lang: str | None, selected: str | None = None) -> tuple:
    """What a model change updates: the status, the vector list and note, the Extract tab's dataset (the model's
    language) and the layer sliders' range."""
    dataset = gr.Radio(value=model_lang(loaded.spec))
    return (
        model_status(loaded, lang),
        *vector_dropdown(loaded, uploads, selected, lang),
        dataset,
        *layer_sliders(0, loaded.num_layers - 1),
    )


@gpu
def on_load_model(spec: str, uploads: list[str], lang: str = "en", progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - the Gradio idiom
    """Load a model for everyone; a refusal (a model RULES.policy does not allow) or a failure (e.g. 4-bit without CUDA)
    is shown, never raised. RULES.policy is checked first: a refused spec is never looked up on disk or on the hub."""
    try:
        spec = RULES.policy.check(spec)
        loaded = HOLDER.load(spec, on_status=lambda text: progress(0, desc=text))
    except Exception as exc:  # noqa: BLE001 - any hub model can fail in its own way; show the message
        toast("error", exc, lang)
        return f"⚠ {html.escape(localized(exc, lang), quote=False)}\n\n{model_status(HOLDER.loaded, lang)}", *(
            gr.skip(),
        ) * 5
    return model_fields(loaded, uploads, lang)


def on_page_load(uploads: list[str], lang: str = "en", progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Show the shared model (loading the bundled one if none, with progress), the models RULES.policy offers by
    name, the vectors that fit the model, the Extract dataset in the model's language and the layer sliders."""
    loaded = shared_model(lang, progress)
    models = gr.Dropdown(choices=RULES.policy.choices_in(lang), value=loaded.spec, allow_custom_value=True)
    status, *rest = model_fields(loaded, uploads, lang)
    return status, models, *rest


def on_language(path: str | None, uploads: list[str], lang: str):
    """The texts the server wrote, again in the newly chosen language (the page's own labels switch in the browser):
    the status, the model and vector lists' labels and the vector note."""
    loaded = HOLDER.loaded
    models = gr.Dropdown(choices=RULES.policy.choices_in(lang))
    if loaded is None:
        return model_status(None, lang), models, gr.skip(), ""
    listing = CATALOG.listing(loaded, uploads, path, lang)
    return model_status(loaded, lang), models, gr.Dropdown(choices=listing.choices), localized(listing.note, lang)


def on_refresh(selected: str | None, uploads: list[str], lang: str = "en"):
    return vector_dropdown(HOLDER.get(), uploads, selected, lang)


def on_upload_vector(files: list[str] | None, uploads: list[str], selected: str | None, lang: str = "en"):
    """Validate uploaded vector files (a .pt may come with its .json sidecar) and add them to this user's list."""
    if not files:
        return gr.skip(), uploads, gr.skip()
    loaded = HOLDER.get()
    with user_errors(lang):  # over the size limit
        added, refused = CATALOG.add_uploads(files, loaded)
    for message in refused:
        toast("warning", message, lang)
    dropdown, note = vector_dropdown(loaded, uploads + added, added[-1] if added else selected, lang)
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
    lang: str = "en",
    progress=gr.Progress(),  # noqa: B008 - the Gradio idiom
):
    """Extract a vector from a dataset into this session's own files (listed to this session only, removed when it
    ends; see steering.catalog) and offer it for download. Every field, the layers' range included, is checked
    before any data is read."""
    loaded = HOLDER.get()
    with user_errors(lang):
        options = extraction_options(
            dataset, data_file, contrast, max_pairs, layers, method, read_position, loaded.num_layers
        )
    out = CATALOG.extraction_path(str(name or "").strip() or "gyaru")
    desc = T.CAPTURING.say(lang)
    report = lambda done, total: progress((done, total), desc=desc, unit="texts")  # noqa: E731
    try:
        with user_errors(lang, DatasetError):
            vector, timings = extract_and_save(loaded, out, progress=report, **options)
    except BaseException:
        CATALOG.discard([str(out)])  # a failed extraction leaves no folder behind
        raise
    own = [*(uploads or []), str(out)]
    files = gr.File([str(out), str(out.with_suffix(".json"))], visible=True)
    table = gr.Dataframe(stats_frame(vector.stats, vector.meta.suggested_layer, lang), visible=True)
    summary = extraction_summary(out.name, vector, timings, lang)
    dropdown, note = vector_dropdown(loaded, own, str(out), lang)
    return summary, files, table, dropdown, note, own, gr.Markdown(visible=True)


def on_save_shared(path: str | None, uploads: list[str], lang: str = "en"):
    """Copy the selected vector (one of this session's own) into the shared vectors folder, where every visitor
    sees it; only on servers that allow it (RULES.shared_saves)."""
    if not RULES.shared_saves:
        raise gr.Error(html.escape(localized(NO_SHARED_SAVES, lang)))
    with user_errors(lang):
        target = CATALOG.publish(path, uploads or [])
    toast("info", T.SAVED_SHARED(name=target.name), lang)
    return vector_dropdown(HOLDER.get(), uploads or [], str(target), lang)


def on_layers(path: str | None, series: list[str], uploads: list[str], lang: str = "en"):
    """The per-layer chart of the chosen vector, and a note on what it can and cannot show."""
    if not path:  # an empty vector list (fired by the dropdown clearing) is not an error
        return None, T.PICK_VECTOR.say(lang)
    vector = open_vector(path, uploads, lang)
    return layer_figure(vector, series or [], lang), layer_note(vector, lang)


# --------------------------------------------------------------------------- handlers: chat


def chat_setting(setting, span: tuple[int, int] | None = None) -> tuple:
    """The Chat tab's setting controls (layers, strength, scale, mode, apply to, half-life, penalty) showing a
    SteerSetting or a sweep's Setting, then the layer sliders (spanning `span`, the vector's layers, when given)."""
    slider = strength_slider(setting.scale, setting.strength)
    rest = (setting.mode, setting.apply_to, setting.half_life or 0, setting.repetition_penalty)
    loaded = HOLDER.loaded
    band = band_of(setting.layers, loaded.num_layers) if loaded is not None else None
    if span is not None:
        sliders = layer_sliders(*span, setting.layers, loaded.num_layers if loaded is not None else None)
    elif band:
        sliders = gr.Slider(value=band[0]), gr.Slider(value=band[1])
    else:
        sliders = gr.skip(), gr.skip()
    return setting.layers, slider, setting.scale, *rest, *sliders


def on_vector_selected(
    path: str | None,
    uploads: list[str],
    layers: str = "",
    strength: float = 0.0,
    scale: str = "calibrated",
    mode: str = S.DEFAULT_MODE,
    apply_to: str = S.DEFAULT_APPLY_TO,
    half_life: float = 0,
    penalty: float = 1.0,
    lang: str = "en",
):
    """The Chat tab's setting (the vector's recommended one, else the defaults) and example prompts, and the Sweep
    tab's layer options, strengths, scale and mode for the chosen vector; a toast says what changed in Chat."""
    if not path:
        return (gr.skip(),) * 14
    vector = open_vector(path, uploads, lang)
    defaults = vector_defaults(vector, HOLDER.spec)
    current = (layers, strength, scale, mode, apply_to, half_life, penalty)
    notice = defaults_notice(defaults, lang, previous=current)
    if notice:
        toast("info", notice, lang)
    sweep = (defaults.sweep_layers, defaults.sweep_strengths, defaults.sweep_scale, defaults.setting.mode)
    examples = gr.Dropdown(choices=defaults.prompts, value=None)
    span = min(vector.layers), max(vector.layers)  # the sliders offer the layers the vector has
    return *chat_setting(defaults.setting, span), examples, *sweep


def on_layer_slider(start: float, width: float, path: str | None, uploads: list[str]):
    """The layers text for the sliders' band (what Chat sends), cut at the vector's (else the model's) last layer."""
    try:
        last = max(CATALOG.open(path, uploads or []).layers)
    except (ValueError, TypeError):
        last = HOLDER.loaded.num_layers - 1 if HOLDER.loaded is not None else int(start) + int(width) - 1
    return band_spec(start, width, last)


def on_strength_note(path, strength: float, scale: str, mode: str, apply_to: str, penalty: float, uploads, lang="en"):
    """Under the strength slider: where this vector's own evaluation saw text break, and whether `strength` is past it."""
    if not path:
        return ""
    try:
        vector = CATALOG.open(path, uploads or [])
    except ValueError:
        return ""
    like = dict(apply_to=apply_to, repetition_penalty=penalty)
    return strength_note(vector, strength, lang, scale=scale, mode=mode, **like)


def chat_request(message, path, layers, strength, scale, apply_to, max_new_tokens, temperature, seed,
                 repetition_penalty, history, uploads, mode, half_life) -> ChatRequest:  # fmt: skip
    """The Chat tab's fields as a checked ChatRequest on the shared model and this user's vectors."""
    loaded, vector = HOLDER.get(), CATALOG.open(path, uploads or [])
    steering = (layers, strength, scale, apply_to, mode, half_life)
    return ChatRequest.check(
        loaded, vector, message, history, steering, max_new_tokens, temperature, seed, repetition_penalty
    )


def chat_views(*fields, lang: str = "en", meter: bool = False):
    """The plain and steered replies of one turn (chat_request's fields) as views (see chat.stream_turn);
    library errors come out raised."""
    with SCHEDULER.incoming():  # turns sent together share one prefill, however long each takes to check
        r = chat_request(*fields)
        warning = strength_warning(r.steering)  # a non-finite strength is refused here
        if warning:
            toast("warning", warning, lang)
        notice = language_notice(r.turn.message, model_lang(r.loaded.spec))
        if notice:
            toast("info", notice, lang)
        reply_lang = S.default_lang(r.vector.meta.lang, r.loaded.spec)
        on_notice = lambda text: toast("info", text, lang)  # noqa: E731
        meter_layer = default_meter_layer(r.steering, r.loaded.num_layers) if meter else None
        turns = stream_turn(
            r.loaded, r.turn, r.steering, r.settings, reply_lang, on_notice=on_notice, scheduler=SCHEDULER,
            meter_layer=meter_layer, ui_lang=lang,
        )  # fmt: skip
        first = next(turns)  # (its rows are submitted)
    with closing(turns) as views:  # when the client goes away, its rows leave SCHEDULER's batch at the next token
        yield first
        yield from views


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
    lang: str = "en",
    meter: bool = False,
):
    """Stream the plain (strength 0) and steered (strength s) replies from ONE batched generation; each column
    continues its own conversation. For HTTP clients: a problem is raised as an error."""
    args = (message, path, layers, strength, scale, apply_to, max_new_tokens, temperature, seed, repetition_penalty)
    try:
        yield from chat_views(*args, history, uploads, mode, half_life, lang=lang, meter=meter)
    except Exception as exc:  # noqa: BLE001 - every failure reaches the client as a message
        raise gr.Error(html.escape(chat_failure(exc, lang), quote=False)) from None


@gpu
def on_page_chat(message: str | None, page: str, *rest):
    """The page's stream (after on_send took the message): as on_chat, but a problem is a toast and the chat, the box
    and the settings stay as they were; its last update clears `busy` (then on_buttons_back brings Send back; no
    button is an output: a skipped one costs gradio a new component per update). Stop and Clear end it through
    STOPPED as well as through Gradio's cancel (which may reach a later, refused run instead)."""
    unchanged = (gr.skip(),) * 6  # a stream that ends without a view would blank the chat
    if message is None:  # on_send refused it (and said why); another reply may be streaming: leave busy alone
        yield *unchanged, gr.skip()
        return
    *fields, lang, meter = rest
    since = stops(page)
    try:
        with closing(chat_views(message, *fields, lang=lang, meter=meter)) as views:
            for view in views:
                if stops(page) != since:  # Stop or Clear was pressed: this reply's rows stop now
                    if stops(page)[1] == "clear":  # after any update still on its way: the columns end empty
                        yield on_clear()[:7]
                    return
                yield *view, gr.skip()
    except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a toast
        toast("error", chat_failure(exc, lang), lang)
    yield *unchanged, False


def on_send(message: str, busy: bool, *fields):
    """Take the typed message for the stream and empty the box, showing Stop in place of Send. While a reply
    streams, or when a field is wrong (a blank message, bad layers, ...), say so and leave everything as it is.
    `fields`: the chat's inputs after the message (as on_page_chat gets them)."""
    *fields, lang, _meter = fields
    refused = gr.skip(), None, gr.skip(), gr.skip(), gr.skip()  # no pending message: the stream step does nothing
    if busy:
        toast("warning", T.STILL_REPLYING, lang)
        return refused
    try:
        chat_request(message, *fields)
    except (ValueError, VectorFileError) as exc:
        toast("error", exc, lang)
        return refused
    return "", message, True, gr.Button(visible=False), gr.Button(visible=True)


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
    lang: str = "en",
    progress=gr.Progress(),  # noqa: B008 - the Gradio idiom
):
    """Greedy replies over a layers × strength grid on the vector's language prompts: marker and broken share
    heatmaps, a table, the recommended cell, and the cells to pick from for the Chat tab. Uses the Chat tab's
    apply-to and repetition penalty, so a picked cell behaves in Chat as it did here."""
    vector = open_vector(path, uploads, lang)
    loaded = HOLDER.get()
    with user_errors(lang):
        grid = sweep_grid(vector, layer_options, strengths, loaded.num_layers, scale, mode, apply_to)
    if grid.warning:
        toast("warning", grid.warning, lang)
    desc = T.SWEEPING.say(lang, cells=grid.size)
    progress(0, desc=desc)
    report = lambda done, total: progress((done, total), desc=desc, unit="cells")  # noqa: E731
    with user_errors(lang, VectorFileError):
        cells = grid.run(loaded, vector, n_prompts, max_new_tokens, repetition_penalty, progress=report)
    best = recommend(cells)
    picks = SweepPicks.of(cells, best, path)
    heatmaps = heatmap(cells, "marker_share", lang), heatmap(cells, "broken_share", lang)
    cell_list = gr.Dropdown(choices=picks.labels, value=picks.default_label())
    return *heatmaps, sweep_frame(cells, lang), best_line(best, lang), cell_list, picks


def on_apply_cell(label: str | None, picks: SweepPicks | None, current_path: str | None, lang: str = "en"):
    """The Chat tab set to a swept cell's setting (layers, strength, scale, mode, apply-to, ...), and shown."""
    with user_errors(lang):
        setting = picked_setting(picks, label)
    notice = picks.notice(current_path)
    if notice:
        toast("warning", notice, lang)
    return *chat_setting(setting), gr.Tabs(selected="chat")


def on_apply_best(picks: SweepPicks | None, current_path: str | None, lang: str = "en"):
    """The Chat tab set to the recommended cell's setting, and shown."""
    with user_errors(lang):
        best_setting(picks)  # refuses when there is no sweep, or it recommended nothing
    return on_apply_cell(picks.best, picks, current_path, lang)


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
        i18n=T.I18N,
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
    prepare_judge()  # (0.4 s now, or the first replies judged under load stall every other request)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(api=RULES.serve_api))


if __name__ == "__main__":
    main()
