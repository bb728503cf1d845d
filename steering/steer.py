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
from .messages import Message, Text
from .models import LoadedModel
from .settings import APPLY_TO, MAX_STRENGTH, MODES, SCALES, parse_layers
from .vectors import MAX_DIRECTION_VALUE, MIN_DIRECTION_NORM, SteeringVector, check_fits

# Beyond this many mean differences (calibrated) text is gibberish on every model we tried; the UI stops earlier.
SANE_STRENGTH = {"calibrated": 8.0, "raw": 200.0}
# The per-layer statistics the clamp mode needs (recorded by extraction since the modes were added).
CLAMP_STATS = ("baseline_projection", "gyaru_projection")

NO_DIRECTION = Text(
    en="the vector has no direction for layers {missing} (it has {layers})",
    ja="このベクトルにはレイヤー {missing} の方向がありません（あるのは {layers}）",
)
BAD_NORM = Text(
    en="layer {layer}: the recorded mean-difference norm is {value!r}, not a finite positive number (an edited or "
    "damaged .json sidecar?), so the calibrated scale is unknown; use scale='raw'",
    ja="レイヤー {layer}: 記録された平均差のノルムが {value!r} で、有限の正の数ではありません（.json サイドカーが"
    "編集されたか壊れている？）。calibrated スケールが決まらないので scale='raw' を使ってください",
)
CLAMP_NEEDS_STATS = Text(
    en="mode 'clamp' needs the per-layer projections {stats} recorded at extraction; this vector has none for layer "
    "{layer} (extracted before they were recorded): re-extract it, or use mode 'add' or 'norm_preserving'",
    ja="mode 'clamp' には抽出時に記録されるレイヤーごとの射影 {stats} が必要ですが、このベクトルにはレイヤー {layer} "
    "の分がありません（記録されるようになる前の抽出です）。抽出し直すか、mode 'add' か 'norm_preserving' を使ってください",
)
BAD_PROJECTIONS = Text(
    en="layer {layer}: the recorded projections are not finite numbers (a damaged sidecar?)",
    ja="レイヤー {layer}: 記録された射影が有限の数ではありません（サイドカーが壊れている？）",
)
UNKNOWN_CHOICE = Text(
    en="unknown {name} {value!r}: expected one of {choices}",
    ja="{name} {value!r} は使えません: {choices} のどれかにしてください",
)
NOT_CALIBRATED = Text(
    en="the vector has no recorded mean-difference norms (a bare .pt without its .json sidecar?), so the calibrated "
    "scale is unknown; use scale='raw'",
    ja="このベクトルには平均差のノルムが記録されていません（.json サイドカーのない .pt だけ？）。calibrated スケール"
    "が決まらないので scale='raw' を使ってください",
)
DIRECTION_NOT_FINITE = Text(
    en="layer {layer}: the vector's direction holds NaN or inf values",
    ja="レイヤー {layer}: ベクトルの方向に NaN か inf が含まれています",
)
DIRECTION_UNUSABLE = Text(
    en="layer {layer}: the vector's direction has norm {norm:.3g} (all zeros, or values beyond ±{limit:g}): it "
    "cannot steer",
    ja="レイヤー {layer}: ベクトルの方向のノルムが {norm:.3g} です（すべて 0 か、±{limit:g} を超える値）。これでは"
    "ステアリングできません",
)
STRENGTH_NOT_FINITE = Text(
    en="strength must be a finite number, got {value}", ja="強度は有限の数にしてください（{value} でした）"
)
STRENGTH_BEYOND = Text(
    en="strength {value:g} is beyond ±{limit:g}, the most any strength may be",
    ja="強度 {value:g} は上限の ±{limit:g} を超えています",
)
STRENGTH_WARNING = Text(
    en="strength {value:g} on the {scale} scale is beyond ±{limit:g}; expect broken text",
    ja="{scale} スケールで強度 {value:g} は ±{limit:g} を超えています。文章が崩れるおそれがあります",
)
ROW_MISMATCH = Text(
    en="{count} strengths for a batch of {rows} rows", ja="{rows} 行のバッチに強度が {count} 個あります"
)
BAD_HALF_LIFE = Text(
    en="half_life must be a positive number of tokens, got {value}",
    ja="half_life は正のトークン数にしてください（{value} でした）",
)


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
            raise ValueError(NO_DIRECTION(missing=missing, layers=self.vector.layers))
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


def _norm(value, layer: int) -> float:
    """A recorded mean-difference norm, refused unless a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(BAD_NORM(layer=layer, value=value))
    return float(value)


def _clamp_stats(steering: Steering, layer: int) -> tuple[float, float]:
    stats = steering.vector.stats.get(layer, {})
    missing = [key for key in CLAMP_STATS if key not in stats]
    if missing:
        raise ValueError(CLAMP_NEEDS_STATS(stats=", ".join(CLAMP_STATS), layer=layer))
    base, top = (float(stats[key]) for key in CLAMP_STATS)
    if not (math.isfinite(base) and math.isfinite(top)):
        raise ValueError(BAD_PROJECTIONS(layer=layer))
    return base, top - base


def layer_pushes(steering: Steering, num_layers: int) -> dict[int, LayerPush]:
    """Per steered layer: the unit direction and the strength-1 push under the chosen scale and mode."""
    if steering.scale not in SCALES:
        raise ValueError(UNKNOWN_CHOICE(name="scale", value=steering.scale, choices=", ".join(SCALES)))
    if steering.mode not in MODES:
        raise ValueError(UNKNOWN_CHOICE(name="mode", value=steering.mode, choices=", ".join(MODES)))
    layers = steering.layer_list(num_layers)
    if steering.scale == "calibrated" and not steering.vector.calibrated:
        raise ValueError(NOT_CALIBRATED())
    pushes = {}
    for layer in layers:
        unit = steering.vector.directions[layer].float()
        if not torch.isfinite(unit).all():
            raise ValueError(DIRECTION_NOT_FINITE(layer=layer))
        norm = float(unit.double().norm())
        if norm < MIN_DIRECTION_NORM or float(unit.abs().max()) > MAX_DIRECTION_VALUE:
            raise ValueError(DIRECTION_UNUSABLE(layer=layer, norm=norm, limit=MAX_DIRECTION_VALUE))
        unit = unit / unit.norm().clamp_min(1e-12)
        if steering.scale == "raw":
            pushes[layer] = LayerPush(unit, step=1.0, base=0.0, span=1.0)
        elif steering.mode == "clamp":
            base, span = _clamp_stats(steering, layer)
            pushes[layer] = LayerPush(unit, step=0.0, base=base, span=span)
        else:
            norm = _norm(steering.vector.stats[layer].get("mean_diff_norm"), layer)
            pushes[layer] = LayerPush(unit, step=norm / len(layers))
    return pushes


def strength_values(strength) -> list[float]:
    """The strength (or per-row strengths) as floats, refused unless finite and within ±MAX_STRENGTH (1e39 is a
    finite Python float but inf in float32: it would end in an empty reply, not an error)."""
    values = [float(strength)] if isinstance(strength, (int, float)) else [float(s) for s in strength]
    for s in values:
        if not math.isfinite(s):
            raise ValueError(STRENGTH_NOT_FINITE(value=s))
        if abs(s) > MAX_STRENGTH:
            raise ValueError(STRENGTH_BEYOND(value=s, limit=MAX_STRENGTH))
    return values


def _strength_tensor(strength) -> torch.Tensor:
    return torch.tensor(strength_values(strength), dtype=torch.float32)


def strength_warning(steering: Steering) -> Message | None:
    """The warning for a strength far outside what ever produces readable text, else None (a UI can show it in
    either language)."""
    limit = SANE_STRENGTH.get(steering.scale, math.inf)
    values = _strength_tensor(steering.strength)
    if values.abs().max() > limit:
        return STRENGTH_WARNING(value=values.abs().max().item(), scale=steering.scale, limit=limit)
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
            raise ValueError(ROW_MISMATCH(count=coeffs.numel(), rows=hidden.shape[0]))
        if self.apply_to == "last":
            hidden = hidden.clone()
            hidden[:, -1:, :] = steered_hidden(hidden[:, -1:, :], self.push, coeffs, self.mode, unit)
        else:
            hidden = steered_hidden(hidden, self.push, coeffs, self.mode, unit)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def check_steering(loaded: LoadedModel, steering: Steering) -> dict[int, LayerPush]:
    """Every check a steering must pass before a hook is attached; returns its per-layer pushes."""
    if steering.apply_to not in APPLY_TO:
        raise ValueError(UNKNOWN_CHOICE(name="apply_to", value=steering.apply_to, choices=", ".join(APPLY_TO)))
    check_fits(steering.vector, loaded.hidden_size, loaded.num_layers, loaded.name)
    check_strengths(steering)
    if steering.half_life is not None and not (math.isfinite(steering.half_life) and steering.half_life > 0):
        raise ValueError(BAD_HALF_LIFE(value=steering.half_life))
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
