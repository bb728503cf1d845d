"""Apply steering vectors through forward hooks, as a context manager that always removes them.

Strength scales:
    calibrated (default)  1.0 = one mean gyaru-minus-standard difference at that layer (its norm is recorded at
                          extraction), so the same slider value is about the same push on any model and layer.
                          Over k layers the strength is shared: each layer gets strength/k of its own mean
                          difference, so the total push stays about one mean difference per unit of strength.
    raw                   unit direction × strength at every steered layer (the reference's numbers).
Negative strengths steer away from gyaru.

Positions:
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
from .models import LoadedModel, parse_layers
from .vectors import SteeringVector, check_fits

SCALES = ("calibrated", "raw")
POSITIONS = ("all", "generated", "last")
# Beyond this many mean differences (calibrated) text is gibberish on every model we tried; the UI stops earlier.
SANE_STRENGTH = {"calibrated": 8.0, "raw": 200.0}


@dataclass
class Steering:
    """One vector applied at some layers with one strength per batch row."""

    vector: SteeringVector
    layers: Sequence[int] | str | None = None
    strength: float | Sequence[float] = 1.0
    scale: str = "calibrated"
    position: str = "all"

    def layer_list(self, num_layers: int) -> list[int]:
        chosen = self.vector.layers if self.layers is None else parse_layers(self.layers, num_layers)
        missing = [layer for layer in chosen if layer not in self.vector.directions]
        if missing:
            raise ValueError(f"the vector has no direction for layers {missing} (it has {self.vector.layers})")
        return chosen


def layer_pushes(steering: Steering, num_layers: int) -> dict[int, torch.Tensor]:
    """The float32 push vector per layer for strength 1.0 under the chosen scale."""
    if steering.scale not in SCALES:
        raise ValueError(f"unknown scale {steering.scale!r}: expected one of {', '.join(SCALES)}")
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
        unit = unit / unit.norm().clamp_min(1e-12)
        if steering.scale == "raw":
            pushes[layer] = unit
            continue
        norm = steering.vector.stats[layer]["mean_diff_norm"]
        if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0:
            raise ValueError(
                f"layer {layer}: the recorded mean-difference norm is {norm!r}, not a finite positive "
                "number (an edited or damaged .json sidecar?), so the calibrated scale is unknown; "
                "use scale='raw'"
            )
        pushes[layer] = unit * float(norm) / len(layers)
    return pushes


def _strength_tensor(strength) -> torch.Tensor:
    values = [float(strength)] if isinstance(strength, (int, float)) else [float(s) for s in strength]
    for s in values:
        if not math.isfinite(s):
            raise ValueError(f"strength must be a finite number, got {s}")
    return torch.tensor(values, dtype=torch.float32)


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


class _LayerHook:
    """Adds coefficient × push to one block's output, only in the owning thread."""

    def __init__(self, push: torch.Tensor, coeffs: torch.Tensor, position: str, owner: int):
        self.push, self.coeffs, self.position, self.owner = push, coeffs, position, owner
        self.calls = 0
        self._cache: dict = {}

    def _on(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (hidden.device, hidden.dtype)
        if key not in self._cache:
            self._cache[key] = (self.push.to(hidden.device, hidden.dtype), self.coeffs.to(hidden.device, hidden.dtype))
        return self._cache[key]

    def __call__(self, _module, _inputs, output):
        if threading.get_ident() != self.owner:
            return None
        self.calls += 1
        if self.position == "generated" and self.calls == 1:
            return None  # the prompt's forward pass
        hidden = block_output(output)
        push, coeffs = self._on(hidden)
        if coeffs.numel() not in (1, hidden.shape[0]):
            raise ValueError(f"{coeffs.numel()} strengths for a batch of {hidden.shape[0]} rows")
        delta = coeffs.view(-1, 1, 1) * push.view(1, 1, -1)
        if self.position == "last":
            hidden = hidden.clone()
            hidden[:, -1:, :] += delta
        else:
            hidden = hidden + delta
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def steer(loaded: LoadedModel, steerings: Steering | Sequence[Steering]):
    """Apply one or more steerings (their pushes add) inside the block; hooks are removed on any exit."""
    steerings = [steerings] if isinstance(steerings, Steering) else list(steerings)
    owner = threading.get_ident()
    handles = []
    try:
        for steering in steerings:
            if steering.position not in POSITIONS:
                raise ValueError(f"unknown position {steering.position!r}: expected one of {', '.join(POSITIONS)}")
            check_fits(steering.vector, loaded.hidden_size, loaded.num_layers, loaded.name)
            check_strengths(steering)
            coeffs = _strength_tensor(steering.strength)
            for layer, push in layer_pushes(steering, loaded.num_layers).items():
                hook = _LayerHook(push, coeffs, steering.position, owner)
                handles.append(loaded.layers[layer].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def hooks_left(model: torch.nn.Module) -> int:
    """How many forward hooks remain anywhere in the model (0 after every steering call)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
