"""A steering vector in memory: unit directions per layer with their metadata, the checks every vector file's
contents must pass, and the check that a vector fits a model. Reading and writing files: vector_files, interop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .metadata import VectorMeta

# What a direction may hold: values this large overflow float32 once squared, scaled or cast to half precision (a
# push of inf ends in an empty reply); a norm this small (all zeros) has no direction, so it would steer nothing.
MAX_DIRECTION_VALUE = 1e15
MIN_DIRECTION_NORM = 1e-12


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
        raise VectorFileError(f"{where}: layer {layer} is not a 1-D float tensor")
    if hidden is not None and tensor.numel() != hidden:
        raise VectorFileError(f"{where}: layer {layer} has size {tensor.numel()}, other layers {hidden}")
    if not torch.isfinite(tensor).all():
        raise VectorFileError(f"{where}: layer {layer} holds NaN or inf values")
    largest = float(tensor.abs().max()) if tensor.numel() else 0.0
    if largest > MAX_DIRECTION_VALUE:
        raise VectorFileError(
            f"{where}: layer {layer} holds a value of {largest:.3g}, beyond ±{MAX_DIRECTION_VALUE:g} (float32 would "
            "overflow while steering); a damaged or hand-edited file?"
        )
    norm = float(tensor.double().norm())
    if norm < MIN_DIRECTION_NORM:
        raise VectorFileError(
            f"{where}: layer {layer} has norm {norm:.3g} (all zeros?): it has no direction, so it would steer nothing"
        )
    return tensor.float()


def validate_directions(raw, where: str) -> dict[int, torch.Tensor]:
    """Check a loaded mapping is {int layer: finite 1-D float tensor of one size}."""
    if not isinstance(raw, dict) or not raw:
        raise VectorFileError(f"{where}: expected a non-empty dict of {{layer: tensor}}, got {type(raw).__name__}")
    out: dict[int, torch.Tensor] = {}
    hidden = None
    for key, tensor in raw.items():
        try:  # int keys (reference format) or their decimal strings; never floats/bools (int(3.7) would be 3)
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise TypeError
            layer = int(key)
        except (TypeError, ValueError):
            raise VectorFileError(f"{where}: key {key!r} is not a layer number") from None
        if layer < 0:
            raise VectorFileError(f"{where}: negative layer {layer}")
        if layer in out:
            raise VectorFileError(f"{where}: layer {layer} appears twice")
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
        made_for = vector.meta.model or "another model"
        raise VectorFileError(
            f"{where}: hidden size {vector.hidden_size} does not fit {model_name} "
            f"(hidden size {hidden_size}); it was made for {made_for}"
        )
    too_deep = [layer for layer in vector.layers if layer >= num_layers]
    if too_deep:
        raise VectorFileError(f"{where}: layers {too_deep} do not exist in {model_name} ({num_layers} layers)")
    expected = vector.meta.num_layers
    if expected is not None and expected != num_layers:
        raise VectorFileError(f"{where}: made for a {expected}-layer model; {model_name} has {num_layers} layers")
