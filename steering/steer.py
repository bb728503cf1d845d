"""Apply steering vectors through forward hooks, as a context manager that always removes them.

Strength scales:
    calibrated (default)  1.0 = one mean gyaru-minus-standard difference at that layer (its norm is recorded at
                          extraction), so the same slider value is about the same push on any model and layer.
                          Over k layers the strength is shared: each layer gets strength/k of its own mean
                          difference, so the total push stays about one mean difference per unit of strength.
    raw                   unit direction × strength at every steered layer (the reference's numbers).
Negative strengths steer away from gyaru.

Modes (how the push changes a hidden state h at a steered position):
    add              h + strength × push — the reference's behaviour. The push compounds token after token.
    norm_preserving  the same add, then h is rescaled to its original norm, so the push cannot inflate the
                     residual stream (what makes long replies fall apart under `add`).
    clamp            the component of h along the direction is *set* to a target: the baseline (standard or
                     casual) side's mean projection plus strength × the gyaru-minus-baseline gap (both recorded at extraction;
                     raw scale: the target is the strength itself). Setting cannot compound. Strength 0 is off.

Where the push applies (`apply_to`; extraction's own "read position" is a different thing):
    all        every position of every forward pass (prompt and generated tokens) — what the reference did.
    generated  only forward passes after the prompt (the tokens the model writes).
    last       the last position of each forward pass (the seed write-up's sketch).

Hooks are bound to the thread that entered the context: another thread running the same model at the same time
is never steered by them, so concurrent users cannot steer each other.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .capture import block_output
from .models import LoadedModel
from .settings import APPLY_TO, MAX_STRENGTH, MODES, SCALES, parse_layers
from .vectors import MAX_DIRECTION_VALUE, MIN_DIRECTION_NORM, SteeringVector, check_fits

# Beyond this many mean differences (calibrated) text is gibberish on every model we tried; the UI stops earlier.
SANE_STRENGTH = {"calibrated": 8.0, "raw": 200.0}
# The per-layer statistics the clamp mode needs (recorded by extraction since the modes were added).
CLAMP_STATS = ("baseline_projection", "gyaru_projection")


@dataclass
class Steering:
    """One vector applied at some layers with one strength per batch row."""

    vector: SteeringVector
    layers: Sequence[int] | str | None = None
    strength: float | Sequence[float] = 1.0
    scale: str = "calibrated"
    apply_to: str = "all"
    mode: str = "add"
    half_life: float | None = None  # tokens: the strength halves every this many generated tokens (None: constant)

    def layer_list(self, num_layers: int) -> list[int]:
        chosen = self.vector.layers if self.layers is None else parse_layers(self.layers, num_layers)
        missing = [layer for layer in chosen if layer not in self.vector.directions]
        if missing:
            raise ValueError(f"the vector has no direction for layers {missing} (it has {self.vector.layers})")
        return chosen

    def with_strengths(self, strengths: float | Sequence[float]) -> Steering:
        return Steering(self.vector, self.layers, strengths, self.scale, self.apply_to, self.mode, self.half_life)


@dataclass
class LayerPush:
    """What one layer's hook needs: the unit direction and, per mode, how strength maps onto it."""

    unit: torch.Tensor  # float32, norm 1
    step: float  # add/norm_preserving: the push per unit of strength along `unit`
    base: float = 0.0  # clamp: target projection at strength 0 ...
    span: float = 1.0  # ... and its change per unit of strength


def _finite_positive(value, layer: int, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"layer {layer}: the recorded {key} is {value!r}, not a finite positive number (an edited or damaged "
            ".json sidecar?), so the calibrated scale is unknown; use scale='raw'"
        )
    return float(value)


def _clamp_stats(steering: Steering, layer: int) -> tuple[float, float]:
    stats = steering.vector.stats.get(layer, {})
    missing = [key for key in CLAMP_STATS if key not in stats]
    if missing:
        raise ValueError(
            f"mode 'clamp' needs the per-layer projections {', '.join(CLAMP_STATS)} recorded at extraction; this "
            f"vector has none for layer {layer} (extracted before they were recorded): re-extract it, or use mode "
            "'add' or 'norm_preserving'"
        )
    base, top = (float(stats[key]) for key in CLAMP_STATS)
    if not (math.isfinite(base) and math.isfinite(top)):
        raise ValueError(f"layer {layer}: the recorded projections are not finite numbers (a damaged sidecar?)")
    return base, top - base


def layer_pushes(steering: Steering, num_layers: int) -> dict[int, LayerPush]:
    """Per steered layer: the unit direction and the strength-1 push under the chosen scale and mode."""
    if steering.scale not in SCALES:
        raise ValueError(f"unknown scale {steering.scale!r}: expected one of {', '.join(SCALES)}")
    if steering.mode not in MODES:
        raise ValueError(f"unknown mode {steering.mode!r}: expected one of {', '.join(MODES)}")
    layers = steering.layer_list(num_layers)
    if steering.scale == "calibrated" and not steering.vector.calibrated:
        raise ValueError(
            "the vector has no recorded mean-difference norms (a bare .pt without its .json sidecar?), "
            "so the calibrated scale is unknown; use scale='raw'"
        )
    pushes = {}
    for layer in layers:
        unit = steering.vector.directions[layer].float()
        if not torch.isfinite(unit).all():
            raise ValueError(f"layer {layer}: the vector's direction holds NaN or inf values")
        norm = float(unit.double().norm())
        if norm < MIN_DIRECTION_NORM or float(unit.abs().max()) > MAX_DIRECTION_VALUE:
            raise ValueError(
                f"layer {layer}: the vector's direction has norm {norm:.3g} (all zeros, or values beyond "
                f"±{MAX_DIRECTION_VALUE:g}): it cannot steer"
            )
        unit = unit / unit.norm().clamp_min(1e-12)
        if steering.scale == "raw":
            pushes[layer] = LayerPush(unit, step=1.0, base=0.0, span=1.0)
        elif steering.mode == "clamp":
            base, span = _clamp_stats(steering, layer)
            pushes[layer] = LayerPush(unit, step=0.0, base=base, span=span)
        else:
            norm = _finite_positive(steering.vector.stats[layer].get("mean_diff_norm"), layer, "mean-difference norm")
            pushes[layer] = LayerPush(unit, step=norm / len(layers))
    return pushes


def strength_values(strength) -> list[float]:
    """The strength (or per-row strengths) as floats, refused unless finite and within ±MAX_STRENGTH (1e39 is a
    finite Python float but inf in float32: it would end in an empty reply, not an error)."""
    values = [float(strength)] if isinstance(strength, (int, float)) else [float(s) for s in strength]
    for s in values:
        if not math.isfinite(s):
            raise ValueError(f"strength must be a finite number, got {s}")
        if abs(s) > MAX_STRENGTH:
            raise ValueError(f"strength {s:g} is beyond ±{MAX_STRENGTH:g}, the most any strength may be")
    return values


def _strength_tensor(strength) -> torch.Tensor:
    return torch.tensor(strength_values(strength), dtype=torch.float32)


def strength_warning(steering: Steering) -> str | None:
    """The warning for a strength far outside what ever produces readable text, else None (a UI can show it)."""
    limit = SANE_STRENGTH.get(steering.scale, math.inf)
    values = _strength_tensor(steering.strength)
    if values.abs().max() > limit:
        return (
            f"strength {values.abs().max().item():g} on the {steering.scale} scale is beyond ±{limit:g}; "
            "expect broken text"
        )
    return None


def check_strengths(steering: Steering) -> None:
    """Warn (UserWarning) when a strength is far outside what ever produces readable text."""
    message = strength_warning(steering)
    if message:
        warnings.warn(message, stacklevel=3)


def steered_hidden(hidden: torch.Tensor, push: LayerPush, coeffs: torch.Tensor, mode: str, unit: torch.Tensor):
    """The new hidden states [rows, positions, hidden] for one strength per row (`unit` in hidden's dtype)."""
    coeffs = coeffs.view(-1, 1, 1)
    if mode == "clamp":
        projection = hidden @ unit  # [rows, positions]
        target = push.base + coeffs.view(-1, 1) * push.span
        shift = torch.where(coeffs.view(-1, 1) != 0, target - projection, torch.zeros_like(projection))
        return hidden + shift.unsqueeze(-1) * unit
    steered = hidden + coeffs * (push.step * unit)
    if mode == "norm_preserving":
        # float32 norms: half-precision sums of squares over thousands of dims overflow or lose the ratio.
        ratio = hidden.float().norm(dim=-1, keepdim=True) / steered.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
        steered = steered * ratio.to(steered.dtype)
    return steered


class _LayerHook:
    """Steers one block's output, only in the owning thread."""

    def __init__(self, push: LayerPush, coeffs: torch.Tensor, steering: Steering, owner: int):
        self.push, self.coeffs, self.owner = push, coeffs, owner
        self.apply_to, self.mode, self.half_life = steering.apply_to, steering.mode, steering.half_life
        self.calls = 0
        self._cache: dict = {}

    def _on(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (hidden.device, hidden.dtype)
        if key not in self._cache:
            self._cache[key] = (
                self.push.unit.to(hidden.device, hidden.dtype),
                self.coeffs.to(hidden.device, hidden.dtype),
            )
        return self._cache[key]

    def __call__(self, _module, _inputs, output):
        if threading.get_ident() != self.owner:
            return None
        self.calls += 1
        if self.apply_to == "generated" and self.calls == 1:
            return None  # the prompt's forward pass
        hidden = block_output(output)
        unit, coeffs = self._on(hidden)
        if self.half_life and self.calls > 1:  # decay over the reply: the pass after the prompt is token 0
            coeffs = coeffs * 0.5 ** ((self.calls - 2) / self.half_life)
        if coeffs.numel() not in (1, hidden.shape[0]):
            raise ValueError(f"{coeffs.numel()} strengths for a batch of {hidden.shape[0]} rows")
        if self.apply_to == "last":
            hidden = hidden.clone()
            hidden[:, -1:, :] = steered_hidden(hidden[:, -1:, :], self.push, coeffs, self.mode, unit)
        else:
            hidden = steered_hidden(hidden, self.push, coeffs, self.mode, unit)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def check_steering(loaded: LoadedModel, steering: Steering) -> dict[int, LayerPush]:
    """Every check a steering must pass before a hook is attached; returns its per-layer pushes."""
    if steering.apply_to not in APPLY_TO:
        raise ValueError(f"unknown apply_to {steering.apply_to!r}: expected one of {', '.join(APPLY_TO)}")
    check_fits(steering.vector, loaded.hidden_size, loaded.num_layers, loaded.name)
    check_strengths(steering)
    if steering.half_life is not None and not (math.isfinite(steering.half_life) and steering.half_life > 0):
        raise ValueError(f"half_life must be a positive number of tokens, got {steering.half_life}")
    return layer_pushes(steering, loaded.num_layers)


@contextmanager
def steer(loaded: LoadedModel, steerings: Steering | Sequence[Steering]):
    """Apply one or more steerings (their effects chain) inside the block; hooks are removed on any exit."""
    steerings = [steerings] if isinstance(steerings, Steering) else list(steerings)
    owner = threading.get_ident()
    handles = []
    try:
        for steering in steerings:
            pushes = check_steering(loaded, steering)
            coeffs = _strength_tensor(steering.strength)
            for layer, push in pushes.items():
                hook = _LayerHook(push, coeffs, steering, owner)
                handles.append(loaded.layers[layer].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
