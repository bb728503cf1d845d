"""llama.cpp's `controlvector.model_hint` for a vector: the model family it was made on, found without loading the
model (meta keys, a config.json on disk, a .gguf model's architecture), "llama" when nothing says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from .metadata import VectorMeta

DEFAULT_MODEL_HINT = "llama"


def _model_type_from_config(config: Path) -> str | None:
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def model_hint_for(meta: VectorMeta) -> str:
    """llama.cpp's controlvector.model_hint for a vector's meta, without loading any model.

    meta.model_type / meta.model_hint when present; else the model's config.json model_type when it is on
    disk (bundled cache, a local folder, the HF cache) or a .gguf model's general.architecture; else "llama".
    """
    if meta.model_type or meta.model_hint:
        return meta.model_type or meta.model_hint
    spec = meta.model
    hint = None
    if spec:
        try:
            hint = _hint_for_spec(spec)
        except Exception:  # noqa: BLE001 - a hint is never worth failing an export for
            hint = None
    return hint or DEFAULT_MODEL_HINT


def _hint_for_spec(spec: str) -> str | None:
    if spec == "bundled":
        from .bundled import FOLDER_NAME, cache_dir

        return _model_type_from_config(cache_dir() / FOLDER_NAME / "config.json") or "llama"  # SmolLM2: llama
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("general.architecture")
        value = field.contents() if field is not None else None
        return value if isinstance(value, str) and value else None
    if path.is_dir():
        return _model_type_from_config(path / "config.json")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json")
    return _model_type_from_config(Path(cached)) if isinstance(cached, str) else None
