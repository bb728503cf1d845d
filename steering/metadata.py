"""A vector's metadata, typed: the JSON sidecar next to a .pt (less its per-layer "layers" stats), which also rides
inside .gguf and .safetensors files (interop).

Every field is optional (None when absent) so that any sidecar written so far loads; keys this module does not
know are kept in `extra` and written back unchanged. Types are checked on read: a value of the wrong type is a
MetadataError naming the key (the file readers add the file's name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .messages import Text, composed
from .readers import A_LIST, A_NUMBER, A_STRING
from .settings import check_layer_spec, format_layers

WRONG_TYPE = Text(
    en="{key} is {value!r} ({kind}); expected {expected}",
    ja="{key} が {value!r}（{kind}）です。{expected}にしてください",
)
NOT_AN_OBJECT = Text(en="{key} is {kind}; expected an object", ja="{key} が {kind} です。オブジェクトにしてください")
METADATA_NOT_AN_OBJECT = Text(
    en="the metadata is {kind}; expected an object", ja="メタデータが {kind} です。オブジェクトにしてください"
)
AN_OBJECT = Text(en="an object", ja="オブジェクト")
A_WHOLE_NUMBER = Text(en="a whole number", ja="整数")
A_FINITE_NUMBER = Text(en="a finite number", ja="有限の数")
A_LIST_OF_WHOLE_NUMBERS = Text(en="a list of whole numbers", ja="整数のリスト")


class MetadataError(ValueError):
    """A metadata value has the wrong type; the message names the key."""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return A_NUMBER()
    if isinstance(value, str):
        return A_STRING()
    if isinstance(value, list):
        return A_LIST()
    return AN_OBJECT() if isinstance(value, dict) else type(value).__name__


_EXPECTED = {"str": A_STRING, "int": A_WHOLE_NUMBER, "float": A_FINITE_NUMBER, "list[int]": A_LIST_OF_WHOLE_NUMBERS}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(value: Any, kind: str, key: str) -> Any:
    """`value` as the field's kind ('str', 'int', 'float', 'list[int]'), else a MetadataError naming `key`."""
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "int" and _is_int(value):
        return value
    if kind == "float" and (_is_int(value) or isinstance(value, float)) and math.isfinite(value):
        return float(value)
    if kind == "list[int]" and isinstance(value, list) and all(_is_int(x) for x in value):
        return list(value)
    raise MetadataError(composed(WRONG_TYPE, key=key, value=value, kind=_json_type(value), expected=_EXPECTED[kind]()))


def _kind(annotation: str) -> str:
    """'float | None' -> 'float': the kind _check validates (annotations are strings here)."""
    return annotation.replace(" | None", "")


def _typed_fields(cls, data: dict, prefix: str) -> dict:
    """Constructor arguments for dataclass `cls` from `data`: known keys type-checked (null = absent), unknown
    ones gathered into `extra`."""
    known = {f.name: f for f in fields(cls) if f.name != "extra"}
    kwargs: dict[str, Any] = {"extra": {}}
    for key, value in data.items():
        if key not in known:
            kwargs["extra"][key] = value
        elif value is not None:
            kwargs[key] = _check(value, _kind(known[key].type), f"{prefix}{key}")
    return kwargs


def _known_dict(obj) -> dict:
    """The set fields of a dataclass as JSON values (None left out), then its `extra` keys."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name != "extra" and value is not None:
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
    return {**out, **{k: v for k, v in obj.extra.items() if k not in out}}


@dataclass
class Recommended:
    """The setting a sweep or study found best; each field is spelled like its `generate` flag."""

    layers: str | None = None  # a layer spec ('12-16', '3,5,7'); old sidecars hold a list, read as its spec
    strength: float | None = None
    scale: str | None = None
    mode: str = "add"
    apply_to: str | None = None  # where the push applies; old sidecars called it `position`
    repetition_penalty: float | None = None
    half_life: float | None = None  # tokens over which the strength halves during a reply (None: constant)
    evidence: str | None = None  # how far the setting was checked (e.g. "not validated: ...")
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, key: str = "recommended") -> Recommended:
        if not isinstance(data, dict):
            raise MetadataError(composed(NOT_AN_OBJECT, key=key, kind=_json_type(data)))
        data = dict(data)
        legacy = data.pop("position", None)  # the steering `position` was renamed `apply_to`
        if data.get("apply_to") is None and legacy is not None:
            data["apply_to"] = legacy
        if isinstance(data.get("layers"), list):
            layers = _check(data["layers"], "list[int]", f"{key}.layers")
            data["layers"] = format_layers(layers) or None
        rec = cls(**_typed_fields(cls, data, f"{key}."))
        if rec.layers is not None:
            try:
                check_layer_spec(rec.layers, f"{key}.layers")
            except ValueError as exc:
                raise MetadataError(*exc.args) from None  # the settings' Message, in either language
        return rec

    def to_dict(self) -> dict:
        return _known_dict(self)


@dataclass
class VectorMeta:
    """What a vector file records about itself, beside the directions and per-layer stats."""

    # the model it was extracted from
    model: str | None = None  # the spec load_model was given: bundled, a hub id, a folder or a .gguf
    model_name: str | None = None
    model_type: str | None = None  # config.json's model_type when known (llama.cpp's model hint)
    hidden_size: int | None = None
    num_layers: int | None = None
    # how it was extracted
    method: str | None = None
    # extraction's read position (last / mean), not where steering applies; the key stays `position` (the library
    # calls it read_position) so files written before the rename still read
    position: str | None = None
    contrast: str | None = None
    dataset: str | None = None
    dataset_sha256: str | None = None
    lang: str | None = None
    pairs: int | None = None
    heldout_fraction: float | None = None
    seed: int | None = None
    suggested_layer: int | None = None
    created: str | None = None
    recommended: Recommended | None = None
    # written by save_vector
    vector_layers: list[int] | None = None
    library_version: str | None = None
    name: str | None = None
    # read from a foreign .gguf / .safetensors, or written by a GGUF export
    source_format: str | None = None
    model_hint: str | None = None
    layer_count: int | None = None
    gguf_dropped_layers: list[int] | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> VectorMeta:
        """Typed metadata from a sidecar's JSON object (without its "layers" stats); MetadataError names a bad key."""
        if not isinstance(data, dict):
            raise MetadataError(composed(METADATA_NOT_AN_OBJECT, kind=_json_type(data)))
        data = dict(data)
        rec = data.pop("recommended", None)
        meta = cls(**_typed_fields(cls, data, ""))
        meta.recommended = Recommended.from_dict(rec) if rec is not None else None
        return meta

    def to_dict(self) -> dict:
        """The JSON object to write (None fields left out, unknown keys kept)."""
        return _known_dict(self)

    @property
    def is_empty(self) -> bool:
        """Nothing recorded: a bare reference-style file."""
        return not self.to_dict()
