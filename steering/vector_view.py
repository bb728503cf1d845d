"""What the app asks of and shows about one vector, without a UI: the Extract tab's request (from its fields) and
summary line, the Layers tab's note, and the Chat and Sweep tabs' defaults for it. Nothing here imports gradio."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check_int
from .data import load_prompts
from .settings import (
    SWEEP_STRENGTHS,
    SteerSetting,
    default_lang,
    default_layer_options,
    default_scale,
    format_layers,
    parse_layers,
    resolve_setting,
)

# The Extract tab's dataset choices as (label, value): a bundled set by language, or the uploaded file.
DATASET_CHOICES = [
    ("同梱 日本語 / bundled ja", "ja"),
    ("同梱 英語 / bundled en", "en"),
    ("アップロード / upload file", "upload"),
]
BARE_NOTE = (
    "⚠ サイドカー(.json)なし / no sidecar: PC1 explained variance, cos with the mean difference, held-out "
    "accuracy/AUC, mean-difference and residual norms were never recorded, so they cannot be shown, and the "
    "calibrated strength scale is unavailable (chat uses raw). Shown instead: each layer's direction norm and the "
    "cosine between adjacent layers' directions."
)


@dataclass(frozen=True)
class VectorDefaults:
    """The Chat tab's setting (the vector's recommended one, else the library defaults), example prompts in the
    vector's language, and the Sweep tab's layer options, strengths and scale."""

    setting: SteerSetting
    prompts: list[str]
    sweep_layers: str
    sweep_strengths: str
    sweep_scale: str

    @property
    def half_life(self) -> float:
        """The half-life as a number field shows it: 0 for a constant strength."""
        return self.setting.half_life or 0


def vector_defaults(vector, model_spec: str | None) -> VectorDefaults:
    """Defaults for `vector` with the model `model_spec` loaded (its language when the vector records none)."""
    sweep_scale = default_scale(vector)
    return VectorDefaults(
        setting=resolve_setting(vector),
        prompts=load_prompts(default_lang(vector.meta.lang, model_spec)),
        sweep_layers=default_layer_options(vector),
        sweep_strengths=SWEEP_STRENGTHS[sweep_scale],
        sweep_scale=sweep_scale,
    )


def _shown(value, missing: str = "?") -> str:
    """A metadata value for a note; `missing` when the file never recorded it."""
    return missing if value is None else str(value)


def layer_note(vector) -> str:
    """What the per-layer chart shows for this vector, and what a bare file cannot show."""
    if not vector.calibrated:
        return BARE_NOTE
    meta = vector.meta
    return (
        f"{len(vector.layers)} layers from `{_shown(meta.model)}`, {_shown(meta.method)}, {_shown(meta.pairs)} pairs; "
        f"★ = suggested layer {_shown(meta.suggested_layer, '—')}"
    )


def extraction_options(
    dataset: str,
    data_file: str | None,
    contrast: str,
    max_pairs: float | None,
    layers: str | None,
    method: str,
    read_position: str,
    num_layers: int | None = None,
) -> dict:
    """steering.pipeline.extract_from_dataset's keywords from the Extract tab's fields: the uploaded file when
    `dataset` is "upload" (ValueError when none was uploaded), else the bundled set; blank layers = the default
    band; no or 0 max pairs = all pairs. With `num_layers` (the loaded model's) the layers are range-checked here,
    before any data is read: '0-100000000' is refused at once."""
    data = data_file if dataset == "upload" else dataset
    if not data:
        raise ValueError("データセットをアップロードしてね / upload a dataset file first")
    layers = str(layers or "").strip() or None
    if layers is not None and num_layers is not None:
        parse_layers(layers, num_layers, "レイヤー / layers")
    return dict(
        data=data,
        contrast=contrast,
        layers=layers,
        method=method,
        read_position=read_position,
        max_pairs=check_int(max_pairs, "max pairs", minimum=1) if max_pairs else None,
    )


def extraction_summary(file_name: str, vector, timings: dict) -> str:
    """The Extract tab's line for a saved vector: pairs, method, language, layers, suggested layer, time taken."""
    meta = vector.meta
    return (
        f"saved `{file_name}` — {meta.pairs} pairs, {meta.method}, {meta.lang}, "
        f"layers {format_layers(vector.layers)}, ★ suggested layer **{meta.suggested_layer}** "
        f"({timings['total_s']:.1f} s)"
    )
