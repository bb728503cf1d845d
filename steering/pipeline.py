"""One call from a dataset file to a saved vector: what the CLI and the app both run."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from .data import contrast_pairs, load_dataset, location_unit, shown_path
from .extract import extract, suggest_layer, text_token_cap
from .metadata import Recommended, VectorMeta
from .models import LoadedModel
from .settings import CHARS_PER_TOKEN, FRESH_SETTING, MAX_TEXT_TOKENS, default_band
from .vector_files import save_preflight, save_vector
from .vectors import SteeringVector


def extract_from_dataset(
    loaded: LoadedModel,
    data: str | Path,
    contrast: str = "gyaru-vs-standard",
    layers=None,
    method: str = "mean_diff",
    read_position: str = "mean",
    max_pairs: int | None = None,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    max_text_tokens: int | None = MAX_TEXT_TOKENS,
) -> tuple[SteeringVector, dict[str, float]]:
    """Load pairs, extract, and build a SteeringVector with full metadata (not yet saved).

    Every text must fit `max_text_tokens` tokens and the model's context: one that does not is refused before the
    model runs, naming its file, line and field (by characters before anything is tokenized, then by tokens)."""
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be at least 1 (or None for all pairs), got {max_pairs}")
    cap = text_token_cap(loaded, max_text_tokens)
    # With max_pairs only that many entries are read and kept: a huge file costs no more memory than a small one.
    dataset = load_dataset(data, contrast=contrast, max_entries=max_pairs, max_text_chars=CHARS_PER_TOKEN * cap)
    pairs = contrast_pairs(dataset, contrast)
    shown, unit = shown_path(dataset.path), location_unit(dataset.path)
    negative = contrast.split("-vs-", 1)[1]
    lines = [e.line for e in dataset.entries]
    labels = [f'{shown} {unit} {line}, field "gyaru"' for line in lines]
    labels += [f'{shown} {unit} {line}, field "{negative}"' for line in lines]
    result = extract(
        loaded,
        [p.positive for p in pairs],
        [p.negative for p in pairs],
        layers=layers,
        method=method,
        read_position=read_position,
        topics=[p.topic for p in pairs],
        lang=dataset.lang,
        heldout_fraction=heldout_fraction,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        max_text_tokens=max_text_tokens,
        labels=labels,
    )
    meta = VectorMeta(
        model=loaded.spec,
        model_name=loaded.name,
        hidden_size=loaded.hidden_size,
        num_layers=loaded.num_layers,
        method=method,
        position=read_position,  # the sidecar key stays `position` (files written before the rename)
        contrast=contrast,
        dataset=dataset.name,
        dataset_sha256=dataset.sha256,
        lang=dataset.lang,
        pairs=len(pairs),
        heldout_fraction=heldout_fraction,
        seed=seed,
        suggested_layer=suggest_layer(result.stats, loaded.num_layers),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    vector = SteeringVector(result.directions, meta, result.stats)
    meta.recommended = fresh_recommendation(vector)
    return vector, result.timings


def fresh_recommendation(vector: SteeringVector) -> Recommended:
    """The default setting a new vector ships with until a sweep or study measures one for it."""
    return Recommended(
        layers=default_band(vector),
        **FRESH_SETTING,
        evidence="default for a new vector: the shipped study's setting (docs/evaluation.md), not measured on this one",
    )


def extract_and_save(
    loaded: LoadedModel, out: str | Path, overwrite: bool = False, **kwargs
) -> tuple[SteeringVector, dict]:
    """extract_from_dataset, then save to `out` (refusing to overwrite unless asked)."""
    t0 = time.perf_counter()
    save_preflight(out, overwrite)  # an existing or unwritable destination fails before the capture work
    vector, timings = extract_from_dataset(loaded, **kwargs)
    save_vector(vector, out, overwrite=overwrite)
    timings["total_s"] = time.perf_counter() - t0
    return vector, timings
