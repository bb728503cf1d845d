"""A steering vector in memory: unit directions per layer with their metadata, the checks every vector file's
contents must pass, and the check that a vector fits a model. Reading and writing files: vector_files, interop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .messages import Text
from .metadata import VectorMeta

# What a direction may hold: values this large overflow float32 once squared, scaled or cast to half precision (a
# push of inf ends in an empty reply); a norm this small (all zeros) has no direction, so it would steer nothing.
MAX_DIRECTION_VALUE = 1e15
MIN_DIRECTION_NORM = 1e-12

# `where` is the file (or vector) the message is about.
NOT_1D_FLOAT = Text(
    en="{where}: layer {layer} is not a 1-D float tensor",
    ja="{where}: レイヤー {layer} が 1 次元の float テンソルではありません",
)
SIZE_MISMATCH = Text(
    en="{where}: layer {layer} has size {size}, other layers {hidden}",
    ja="{where}: レイヤー {layer} のサイズは {size} ですが、ほかのレイヤーは {hidden} です",
)
NOT_FINITE = Text(
    en="{where}: layer {layer} holds NaN or inf values", ja="{where}: レイヤー {layer} に NaN か inf が含まれています"
)
TOO_LARGE = Text(
    en="{where}: layer {layer} holds a value of {value:.3g}, beyond ±{limit:g} (float32 would overflow while steering); "
    "a damaged or hand-edited file?",
    ja="{where}: レイヤー {layer} に ±{limit:g} を超える値 {value:.3g} があります（ステアリング中に float32 があふれます）。"
    "壊れたか、手で編集されたファイル？",
)
ZERO_NORM = Text(
    en="{where}: layer {layer} has norm {norm:.3g} (all zeros?): it has no direction, so it would steer nothing",
    ja="{where}: レイヤー {layer} のノルムが {norm:.3g} です（すべて 0？）。方向がないので何もステアリングできません",
)
NOT_A_DICT = Text(
    en="{where}: expected a non-empty dict of {{layer: tensor}}, got {kind}",
    ja="{where}: 空でない {{layer: tensor}} の dict にしてください（{kind} でした）",
)
BAD_KEY = Text(en="{where}: key {key!r} is not a layer number", ja="{where}: キー {key!r} はレイヤー番号ではありません")
NEGATIVE_LAYER = Text(en="{where}: negative layer {layer}", ja="{where}: レイヤー番号 {layer} が負です")
LAYER_TWICE = Text(en="{where}: layer {layer} appears twice", ja="{where}: レイヤー {layer} が 2 回出てきます")
OTHER_HIDDEN_SIZE = Text(
    en="{where}: hidden size {size} does not fit {model} (hidden size {hidden}); it was made for {made_for}",
    ja="{where}: 隠れ層のサイズ {size} が {model}（隠れ層のサイズ {hidden}）に合いません。{made_for} 用のベクトルです",
)
OTHER_MODEL_HIDDEN_SIZE = Text(
    en="{where}: hidden size {size} does not fit {model} (hidden size {hidden}); it was made for another model",
    ja="{where}: 隠れ層のサイズ {size} が {model}（隠れ層のサイズ {hidden}）に合いません。別のモデル用のベクトルです",
)
NO_SUCH_LAYERS = Text(
    en="{where}: layers {layers} do not exist in {model} ({count} layers)",
    ja="{where}: レイヤー {layers} は {model}（{count} レイヤー）にありません",
)
OTHER_LAYER_COUNT = Text(
    en="{where}: made for a {expected}-layer model; {model} has {count} layers",
    ja="{where}: {expected} レイヤーのモデル用です。{model} は {count} レイヤーです",
)


class VectorFileError(ValueError):
    """A vector file is unreadable, unsafe, or does not fit the model; the message says which and why."""


@dataclass
class SteeringVector:
    """Unit directions per layer plus metadata (model, method, dataset...) and per-layer stats.

    `meta` may be given as a plain dict (a sidecar's JSON object): it is read into a VectorMeta.
    """

    directions: dict[int, torch.Tensor]
    meta: VectorMeta = field(default_factory=VectorMeta)
    stats: dict[int, dict] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        if isinstance(self.meta, dict):
            self.meta = VectorMeta.from_dict(self.meta)

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).numel())

    @property
    def has_sidecar(self) -> bool:
        return not self.meta.is_empty

    @property
    def calibrated(self) -> bool:
        """Whether every layer has its mean-difference norm recorded (extraction stats, from a sidecar or inside a
        .safetensors/.gguf file): the calibrated strength scale needs it; a bare reference-style file has none."""
        return all(isinstance(s := self.stats.get(layer), dict) and "mean_diff_norm" in s for layer in self.directions)

    @property
    def name(self) -> str:
        return self.path.stem if self.path else (self.meta.name or "vector")


def _check_tensor(layer, tensor, where: str, hidden: int | None) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or not tensor.is_floating_point():
        raise VectorFileError(NOT_1D_FLOAT(where=where, layer=layer))
    if hidden is not None and tensor.numel() != hidden:
        raise VectorFileError(SIZE_MISMATCH(where=where, layer=layer, size=tensor.numel(), hidden=hidden))
    if not torch.isfinite(tensor).all():
        raise VectorFileError(NOT_FINITE(where=where, layer=layer))
    largest = float(tensor.abs().max()) if tensor.numel() else 0.0
    if largest > MAX_DIRECTION_VALUE:
        raise VectorFileError(TOO_LARGE(where=where, layer=layer, value=largest, limit=MAX_DIRECTION_VALUE))
    norm = float(tensor.double().norm())
    if norm < MIN_DIRECTION_NORM:
        raise VectorFileError(ZERO_NORM(where=where, layer=layer, norm=norm))
    return tensor.float()


def validate_directions(raw, where: str) -> dict[int, torch.Tensor]:
    """Check a loaded mapping is {int layer: finite 1-D float tensor of one size}."""
    if not isinstance(raw, dict) or not raw:
        raise VectorFileError(NOT_A_DICT(where=where, kind=type(raw).__name__))
    out: dict[int, torch.Tensor] = {}
    hidden = None
    for key, tensor in raw.items():
        try:  # int keys (reference format) or their decimal strings; never floats/bools (int(3.7) would be 3)
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise TypeError
            layer = int(key)
        except (TypeError, ValueError):
            raise VectorFileError(BAD_KEY(where=where, key=key)) from None
        if layer < 0:
            raise VectorFileError(NEGATIVE_LAYER(where=where, layer=layer))
        if layer in out:
            raise VectorFileError(LAYER_TWICE(where=where, layer=layer))
        out[layer] = _check_tensor(layer, tensor, where, hidden)
        hidden = out[layer].numel()
    return dict(sorted(out.items()))


def json_safe(value):
    """`value` with NaN/inf floats as None and dict keys as strings: strict JSON for sidecars and embedded metadata."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def check_fits(vector: SteeringVector, hidden_size: int, num_layers: int, model_name: str = "the model") -> None:
    """Refuse a vector made for another model (hidden size or layers out of range)."""
    where = vector.path or vector.name
    if vector.hidden_size != hidden_size:
        sizes = {"where": where, "size": vector.hidden_size, "model": model_name, "hidden": hidden_size}
        if vector.meta.model:
            raise VectorFileError(OTHER_HIDDEN_SIZE(made_for=vector.meta.model, **sizes))
        raise VectorFileError(OTHER_MODEL_HIDDEN_SIZE(**sizes))
    too_deep = [layer for layer in vector.layers if layer >= num_layers]
    if too_deep:
        raise VectorFileError(NO_SUCH_LAYERS(where=where, layers=too_deep, model=model_name, count=num_layers))
    expected = vector.meta.num_layers
    if expected is not None and expected != num_layers:
        raise VectorFileError(OTHER_LAYER_COUNT(where=where, expected=expected, model=model_name, count=num_layers))
