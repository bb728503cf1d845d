"""gyaru steering studio: a Gradio app over the `steering` library — extract a vector, inspect its layers, and
chat with the plain and the steered model side by side.

The app only wires UI events to library calls. One model is loaded at a time and shared by every user (HOLDER);
each user's vector uploads, settings and chat history live in gr.State and the components, never in globals.
"""

from __future__ import annotations

import argparse
import gc
import html
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from contextlib import closing
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: no phoning home

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import torch  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from steering.cli import STAT_COLUMNS  # noqa: E402
from steering.data import CONTRASTS, DatasetError, load_prompts  # noqa: E402
from steering.evaluate import SweepCell, cells_table, recommend, sweep  # noqa: E402
from steering.extract import METHODS  # noqa: E402
from steering.generate import GenerationSettings, stream_rows  # noqa: E402
from steering.models import BUNDLED, LoadedModel, check_loadable, load_model  # noqa: E402
from steering.pipeline import extract_and_save  # noqa: E402
from steering.report import heatmap  # noqa: E402
from steering.steer import POSITIONS, SCALES, Steering, strength_warning  # noqa: E402
from steering.style import guess_lang, style_score  # noqa: E402
from steering.vectors import SUFFIXES, SteeringVector, VectorFileError, check_fits, load_vector, unique_path  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:
    gpu = lambda fn: fn  # noqa: E731

LOG = logging.getLogger("gyaru-studio")
ROOT = Path(__file__).resolve().parent
VECTOR_DIR = ROOT / "vectors"
MAX_UPLOAD_MB = 32
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
# Slider range per strength scale: calibrated 1.0 = one mean difference; raw is a unit vector × strength.
STRENGTH_RANGE = {"calibrated": (-4.0, 8.0, 0.25), "raw": (-50.0, 200.0, 0.5)}
# Sweep tab: default strengths per scale, and grid limits (each layer option is one batched generate call of
# strengths × prompts rows; a bigger grid is a job for `python -m steering sweep`).
SWEEP_STRENGTHS = {"calibrated": "0,1,2,3,4", "raw": "0,4,8,12,16"}
MAX_SWEEP_OPTIONS, MAX_SWEEP_STRENGTHS = 8, 12
# Layers-tab series: label -> (stat key in the sidecar, drawn on the secondary "norm" axis)
SERIES = {
    "cos(方向, 平均差) / cos(direction, mean diff)": ("cos_mean_diff", False),
    "検証 正解率 / held-out accuracy": ("heldout_accuracy", False),
    "検証 AUC / held-out AUC": ("heldout_auc", False),
    "平均差ノルム / mean-diff norm": ("mean_diff_norm", True),
    "残差ノルム / residual norm": ("residual_norm", True),
}
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


# --------------------------------------------------------------------------- the shared model


class ModelHolder:
    """The one model every user shares; loading replaces it under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.loaded: LoadedModel | None = None

    def get(self) -> LoadedModel:
        """The current model; the bundled one is loaded on first use (never at import: tests import app)."""
        with self.lock:
            if self.loaded is None:
                self.loaded = load_model(BUNDLED)
            return self.loaded

    def load(self, spec: str) -> LoadedModel:
        with self.lock:
            if self.loaded is not None and self.loaded.spec == spec:
                return self.loaded
            # What fails without loading (4-bit without CUDA, a missing path) fails here, and everyone keeps the
            # current model.
            check_loadable(spec)
            # Release the old model first so two never sit in memory together; if loading still fails (e.g. the
            # hub is unreachable), the previous model is loaded back so nobody loses theirs.
            previous = self.loaded.spec if self.loaded is not None else None
            self.loaded = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            try:
                self.loaded = load_model(spec)
            except Exception:
                self._restore(previous)
                raise
            return self.loaded

    def _restore(self, spec: str | None) -> None:
        """Best effort: bring the previous model back after a failed load (else the bundled one loads lazily)."""
        if spec is None:
            return
        try:
            self.loaded = load_model(spec)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            LOG.exception("could not restore the previous model %s", spec)


HOLDER = ModelHolder()


def model_status(loaded: LoadedModel | None) -> str:
    if loaded is None:
        return "モデル未読み込み / no model loaded — the bundled model loads on first use"
    d = loaded.describe()
    return (
        f"**{d['name']}** (`{d['spec']}`) — {d['num_layers']} レイヤー / layers, hidden {d['hidden_size']}, "
        f"{d['dtype']} on {d['device']}"
    )


# --------------------------------------------------------------------------- vectors


def _candidate_files(uploads: list[str]) -> list[Path]:
    found = sorted(p for p in VECTOR_DIR.glob("*") if p.suffix.lower() in SUFFIXES) if VECTOR_DIR.is_dir() else []
    return found + [Path(u) for u in uploads]


def fitting_vectors(loaded: LoadedModel, uploads: list[str]) -> tuple[list[tuple[str, str]], list[str], dict]:
    """(label, path) of every file in vectors/ and this user's uploads that fits the model, the skip reasons, and
    each fitting file's metadata by path."""
    choices, skipped, metas = [], [], {}
    for path in _candidate_files(uploads):
        try:
            vector = load_vector(path)
            check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)
        except (VectorFileError, ImportError) as exc:  # ImportError: a format whose reader is not installed
            skipped.append(f"{path.name}: {exc}")
            continue
        label = path.name if path.parent == VECTOR_DIR else f"⬆ {path.name} (upload)"
        choices.append((label, str(path)))
        metas[str(path)] = vector.meta
    return choices, skipped, metas


def preferred_vector(loaded: LoadedModel, metas: dict[str, dict]) -> str | None:
    """The vector a page opens with (from {path: meta}): one with a recommended setting, in the language the model
    speaks (English for the bundled model, Japanese otherwise), else the newest file."""
    want = "en" if loaded.spec == BUNDLED else "ja"

    def rank(path: str) -> tuple[bool, bool, float]:
        meta = metas[path]
        return "recommended" in meta, meta.get("lang") == want, Path(path).stat().st_mtime

    return max(metas, key=rank) if metas else None


def vector_dropdown(loaded: LoadedModel, uploads: list[str], selected: str | None = None):
    """The vector dropdown refreshed for the current model (keeps `selected` when it still fits)."""
    choices, skipped, metas = fitting_vectors(loaded, uploads)
    value = selected if selected in metas else preferred_vector(loaded, metas)
    note = f"{len(choices)} 件 / vectors fit {loaded.name}"
    if skipped:
        note += f"; {len(skipped)} skipped (other model or unreadable): " + "; ".join(skipped)[:400]
    return gr.Dropdown(choices=choices, value=value), note


def open_vector(path: str | None, uploads: list[str]) -> SteeringVector:
    """Load the chosen vector; only files in vectors/ or this user's own uploads are ever opened."""
    if not path:
        raise gr.Error("ベクトルを選んでね / pick a vector first (extract one or upload a file)")
    inside = Path(path).resolve().parent == VECTOR_DIR.resolve()
    if not inside and path not in uploads:
        raise gr.Error(f"unknown vector {path!r}")
    try:
        return load_vector(path)
    except (VectorFileError, ImportError) as exc:
        raise gr.Error(str(exc)) from None


def layer_text(layers: list[int]) -> str:
    """'8-12' for a contiguous run, else '3,5,9' (what parse_layers reads back)."""
    layers = sorted(layers)
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def chat_defaults(vector: SteeringVector) -> tuple[str, float, str]:
    """(layers, strength, scale): the vector's "recommended" meta, else suggested layer ±2 at strength 2.0.

    A bare .pt has no recorded mean-difference norms, so only the raw scale works; 8.0 raw is the reference's
    weakest audible setting.
    """
    rec = vector.meta.get("recommended")
    rec = rec if isinstance(rec, dict) else {}
    center = vector.meta.get("suggested_layer", vector.layers[len(vector.layers) // 2])
    band = [layer for layer in range(center - 2, center + 3) if layer in vector.directions] or vector.layers
    layers = rec.get("layers") or band
    layers = layers if isinstance(layers, str) else layer_text([int(layer) for layer in layers])
    scale = rec.get("scale") if rec.get("scale") in SCALES else ("calibrated" if vector.calibrated else "raw")
    strength = float(rec.get("strength", 2.0 if scale == "calibrated" else 8.0))
    return layers, strength, scale


def sweep_layer_options(vector: SteeringVector) -> str:
    """Three 5-layer bands around the suggested layer (those the vector has), e.g. '8-12 12-16 16-20'."""
    center = vector.meta.get("suggested_layer", vector.layers[len(vector.layers) // 2])
    options: list[str] = []
    for low in (center - 6, center - 2, center + 2):
        band = [layer for layer in range(low, low + 5) if layer in vector.directions]
        if band and layer_text(band) not in options:
            options.append(layer_text(band))
    return " ".join(options) or layer_text(vector.layers)


def strength_slider(scale: str, value: float):
    lo, hi, step = STRENGTH_RANGE.get(scale, STRENGTH_RANGE["calibrated"])
    return gr.Slider(minimum=lo, maximum=hi, step=step, value=min(max(float(value), lo), hi))


# --------------------------------------------------------------------------- handlers: model bar


@gpu
def on_load_model(spec: str, uploads: list[str], progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - the Gradio idiom
    """Load a model for everyone; a failure (e.g. 4-bit without CUDA) is shown, never raised."""
    spec = (spec or "").strip() or BUNDLED
    progress(0, desc=f"loading {spec} …")
    try:
        loaded = HOLDER.load(spec)
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
    too_big = [Path(f).name for f in files if os.path.getsize(f) > MAX_UPLOAD_MB << 20]
    if too_big:
        raise gr.Error(f"{', '.join(too_big)}: larger than {MAX_UPLOAD_MB} MB")
    folder = Path(tempfile.mkdtemp(prefix="gyaru-upload-"))  # one folder per upload keeps .pt and .json together
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    loaded, added = HOLDER.get(), []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
        try:
            check_fits(load_vector(path), loaded.hidden_size, loaded.num_layers, loaded.name)
            added.append(str(path))
        except (VectorFileError, ImportError) as exc:
            gr.Warning(str(exc))
    if not added:  # nothing usable: leave no temporary copies behind
        shutil.rmtree(folder, ignore_errors=True)
    uploads = uploads + added
    dropdown, note = vector_dropdown(loaded, uploads, added[-1] if added else selected)
    return dropdown, uploads, note


# --------------------------------------------------------------------------- handlers: extract


def stats_frame(stats: dict[int, dict], suggested: int | None) -> pd.DataFrame:
    """Per-layer stats as a table; the suggested layer is marked with ★."""
    rows = [
        [f"{layer}{' ★' if layer == suggested else ''}"]
        + [round(stats[layer][key], 3) if key in stats[layer] else None for key, _ in STAT_COLUMNS]
        for layer in sorted(stats)
    ]
    return pd.DataFrame(rows, columns=["layer"] + [short for _, short in STAT_COLUMNS])


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
    """Extract a vector from a dataset, save it under vectors/ (never overwriting) and offer it for download."""
    data = data_file if dataset == "upload" else dataset
    if not data:
        raise gr.Error("データセットをアップロードしてね / upload a dataset file first")
    loaded = HOLDER.get()
    out = unique_path(VECTOR_DIR, (name or "").strip() or "gyaru")
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
        f"saved `{out.name}` — {meta['pairs']} pairs, {meta['method']}, {meta['lang']}, "
        f"layers {layer_text(vector.layers)}, ★ suggested layer **{meta['suggested_layer']}** "
        f"({timings['total_s']:.1f} s)"
    )
    dropdown, note = vector_dropdown(loaded, uploads, str(out))
    return (
        summary,
        [str(out), str(out.with_suffix(".json"))],
        stats_frame(vector.stats, meta["suggested_layer"]),
        dropdown,
        note,
    )


# --------------------------------------------------------------------------- handlers: layers


def _base_figure(title: str) -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.update_layout(
        title=title,
        height=440,
        template="plotly_white",
        margin=dict(l=50, r=50, t=60, b=40),
        legend=dict(orientation="h", y=-0.2),
        xaxis_title="layer",
    )
    return fig


def sidecar_figure(vector: SteeringVector, series: list[str]) -> go.Figure:
    """PC1 explained variance per layer (bars) plus the chosen series; norms on the secondary axis."""
    layers, suggested = vector.layers, vector.meta.get("suggested_layer")
    fig = _base_figure(f"{vector.name}: PC1 explained variance per layer")
    colors = ["#e75480" if layer == suggested else "#f4b6c8" for layer in layers]
    fig.add_trace(
        go.Bar(
            x=layers,
            y=[vector.stats.get(i, {}).get("pc1_explained_variance") for i in layers],
            name="PC1 分散 / PC1 explained variance",
            marker_color=colors,
        ),
        secondary_y=False,
    )
    for label in series:
        key, secondary = SERIES[label]
        values = [vector.stats.get(i, {}).get(key) for i in layers]
        if any(v is not None for v in values):
            fig.add_trace(go.Scatter(x=layers, y=values, name=label, mode="lines+markers"), secondary_y=secondary)
    if suggested is not None:
        fig.add_vline(
            x=suggested,
            line_dash="dash",
            line_color="#e75480",
            annotation_text=f"★ suggested {suggested}",
            annotation_position="top",
        )
    fig.update_yaxes(title_text="share / cos / accuracy", range=[-0.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="norm", secondary_y=True, showgrid=False)
    return fig


def bare_figure(vector: SteeringVector) -> go.Figure:
    """What a bare {layer: tensor} file still tells: direction norms and adjacent layers' cosine."""
    layers = vector.layers
    dirs = [vector.directions[i].float() for i in layers]
    # .safetensors/.gguf readers normalize and keep the file's own norm as "file_norm"
    norms = [vector.stats.get(i, {}).get("file_norm", float(d.norm())) for i, d in zip(layers, dirs)]
    fig = _base_figure(f"{vector.name}: no sidecar — direction norms and adjacent-layer cosine")
    fig.add_trace(
        go.Bar(x=layers, y=norms, name="方向ノルム / direction norm", marker_color="#f4b6c8"),
        secondary_y=True,
    )
    cos = [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in zip(dirs, dirs[1:])]
    fig.add_trace(
        go.Scatter(x=layers[1:], y=cos, name="cos(L-1, L) / adjacent-layer cosine", mode="lines+markers"),
        secondary_y=False,
    )
    fig.update_yaxes(title_text="cosine", range=[-1.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="norm", secondary_y=True, showgrid=False)
    return fig


def on_layers(path: str | None, series: list[str], uploads: list[str]):
    """The per-layer chart of the chosen vector, and a note on what it can and cannot show."""
    if not path:  # an empty vector list (fired by the dropdown clearing) is not an error
        return None, "ベクトルを選んでね / pick a vector to see its layers"
    vector = open_vector(path, uploads)
    if vector.calibrated:
        note = (
            f"{len(vector.layers)} layers from `{vector.meta.get('model', '?')}`, "
            f"{vector.meta.get('method', '?')}, {vector.meta.get('pairs', '?')} pairs; "
            f"★ = suggested layer {vector.meta.get('suggested_layer', '—')}"
        )
        return sidecar_figure(vector, series or []), note
    note = (
        "⚠ サイドカー(.json)なし / no sidecar: PC1 explained variance, cos with the mean difference, "
        "held-out accuracy/AUC, mean-difference and residual norms were never recorded, so they cannot be "
        "shown, and the calibrated strength scale is unavailable (chat uses raw). Shown instead: each layer's "
        "direction norm and the cosine between adjacent layers' directions."
    )
    return bare_figure(vector), note


# --------------------------------------------------------------------------- handlers: chat


def on_vector_selected(path: str | None, uploads: list[str]):
    """Chat defaults and example prompts for the chosen vector (its recommended setting and language), and the
    Sweep tab's layer options, strengths and scale."""
    if not path:
        return (gr.skip(),) * 8
    vector = open_vector(path, uploads)
    layers, strength, scale = chat_defaults(vector)
    rec = vector.meta.get("recommended")
    penalty = float(rec.get("repetition_penalty", 1.0)) if isinstance(rec, dict) else 1.0
    prompts = load_prompts(vector.meta.get("lang", "ja"))
    sweep_scale = "calibrated" if vector.calibrated else "raw"
    return (
        layers,
        strength_slider(scale, strength),
        scale,
        gr.Dropdown(choices=prompts, value=None),
        sweep_layer_options(vector),
        SWEEP_STRENGTHS[sweep_scale],
        sweep_scale,
        penalty,
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
    lang = vector.meta.get("lang") or guess_lang(message)
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


def parse_layer_options(text: str) -> list[str]:
    """'6-10 10-14 14-18' -> ['6-10', '10-14', '14-18']: options are separated by spaces, ';' or '|' (commas stay
    inside one option: '8,10,12')."""
    options = [part.strip(",") for part in re.split(r"[\s;|]+", text or "") if part.strip(",")]
    if not options:
        raise gr.Error("レイヤー候補を書いてね / write at least one layer option, e.g. 6-10 10-14 14-18")
    if len(options) > MAX_SWEEP_OPTIONS:
        raise gr.Error(f"{len(options)} layer options: at most {MAX_SWEEP_OPTIONS} in the app")
    return options


def parse_strengths(text: str) -> list[float]:
    """'0,1,2,3,4' (commas or spaces) -> [0.0, 1.0, 2.0, 3.0, 4.0], duplicates dropped, order kept."""
    values: list[float] = []
    for part in re.split(r"[\s,;]+", text or ""):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise gr.Error(f"strength {part!r} is not a number") from None
        if not math.isfinite(value):
            raise gr.Error(f"strength {part!r} is not a finite number")
        if value not in values:
            values.append(value)
    if not values:
        raise gr.Error("強さを書いてね / write at least one strength, e.g. 0,1,2,3,4")
    if len(values) > MAX_SWEEP_STRENGTHS:
        raise gr.Error(f"{len(values)} strengths: at most {MAX_SWEEP_STRENGTHS} in the app")
    return values


def cell_label(cell: SweepCell) -> str:
    return f"{layer_text(cell.layers)} @ {cell.strength:g}"


def sweep_frame(cells: list[SweepCell]) -> pd.DataFrame:
    """cells_table as a DataFrame (floats rounded), plus the first reply of each cell as a sample."""
    frame = pd.DataFrame(cells_table(cells)).round(3)
    frame.insert(0, "cell", [cell_label(c) for c in cells])
    frame["sample reply"] = [(c.replies[0] if c.replies else "")[:120] for c in cells]
    return frame


def best_line(best: SweepCell | None) -> str:
    if best is None:
        return (
            "おすすめなし / no recommendation: no non-zero strength added style over the plain replies while "
            "keeping the broken share at or under 5 % (try more tokens, other strengths or other layers)"
        )
    s = best.summary
    return (
        f"★ おすすめ / recommended: layers **{layer_text(best.layers)}** @ strength **{best.strength:g}** — "
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
    options, values = parse_layer_options(layer_options), parse_strengths(strengths)
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
    lang = vector.meta.get("lang") or "ja"
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
        "cells": {label: [layer_text(c.layers), c.strength] for label, c in zip(labels, cells)},
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
        uploads = gr.State([])  # this user's uploaded vector files
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
                    method = gr.Radio(list(METHODS), value="mean_diff", label="手法 / Method")
                    position = gr.Radio(["last", "mean"], value="mean", label="読む位置 / Read position")
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
                    strength = gr.Slider(
                        -4, 8, value=2.0, step=0.25, label="ギャル度 / Gyaru strength", elem_id="strength"
                    )
                    scale = gr.Radio(list(SCALES), value="calibrated", label="スケール / Scale")
                    chat_position = gr.Radio(list(POSITIONS), value="all", label="位置 / Position")
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
                        "6-10 10-14 14-18",
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
    """What every launch needs (the tests use it too): offline theme, upload limit, downloads from vectors/."""
    return dict(
        theme=THEME,
        css=CSS,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        allowed_paths=[str(VECTOR_DIR)],
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
