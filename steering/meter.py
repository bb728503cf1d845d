"""A per-token gyaru meter: how far each generated token's hidden state lies along the steering vector's direction
at a read layer, recorded DURING generation (no second forward pass), and its rendering as coloured HTML.

What is recorded, precisely: at the read layer L, the output of decoder block L (after the steering push at L when
L is a steered layer: the meter's hook is registered after row_steer.py's and sees the output they return), at the
LAST position of each forward pass, dotted (float32) with the vector's unit direction at L. That position is where
the next token is chosen, so the projection of pass k belongs to generated token k: the prompt's forward pass gives
the value of the first generated token, the pass that reads token k-1 gives token k's. Every generated token thus
has one value, the last one included (its own position is never run), and nothing else of the prompt is recorded.

    RowMeter / row_meter   what one row records (layer and unit direction), checked against the model and vector
    request_meters         the RowMeter of each row of a request: a plain row reads its steered partner's vector
    meter_rows             the recording: a forward hook per read layer, thread-bound, removed on any exit
    TokenPieces            (text, projection) per token, merged so that every piece holds whole characters and the
                           pieces join to exactly the decoded text (generate.Utf8SafeDecoder's deltas)
    meter_html             the pieces as HTML: each one's background from white to pink, its value as a title

The colour of a steered token is (its projection − the plain reply's mean projection) / a scale: the vector's
recorded gap between the gyaru and baseline mean projections at L (extraction stats), else the plain reply's
standard deviation, else the steered reply's largest deviation. 0 (or below) is white, 1 or more full pink. It
shows where the push is felt inside the model, not whether the text reads as gyaru (judge.py, or a reader, does).
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .capture import block_output
from .messages import Text
from .models import LoadedModel

Piece = tuple[str, float]  # a run of whole characters and its value (a projection, or a colour value)

NEEDS_VECTOR = Text(
    en="the gyaru meter reads a steering vector's direction: a request that meters a plain row needs a steered row",
    ja="ギャルメーターはステアリングベクトルの方向を読みます: ふつうの行を測るには、同じリクエストにステアリングした行が必要です",
)
BAD_LAYER = Text(
    en="meter layer {layer!r} is not a layer of the model (0 to {last})",
    ja="メーターのレイヤー {layer!r} はモデルのレイヤーではありません (0〜{last})",
)
NO_DIRECTION = Text(
    en="the vector has no direction at meter layer {layer} (it has layers {layers}); read one of those",
    ja="ベクトルにはメーターのレイヤー {layer} の方向がありません (あるのは {layers}); そのどれかを選んでね",
)
CAPTION = Text(
    en="Gyaru meter: the model's internal projection onto the vector's direction at layer {layer}, per token. "
    "White = as in the plain reply (its mean), pink = {unit} or more towards gyaru; hover a token for its value. "
    "It shows where the push is felt, not a judgement of the style: judge the style from the text.",
    ja="ギャルメーター: レイヤー {layer} でベクトルの方向へのモデル内部の射影 (トークンごと)。"
    "白 = ふつうの返答 (の平均) と同じ、ピンク = ギャル側に{unit}以上。トークンにカーソルを置くと値が出ます。"
    "押しがどこで効いているかを示すもので、スタイルの判定ではありません。スタイルは文章で判断してね。",
)
UNITS = {
    "gap": Text(en="one extraction gap (gyaru − baseline mean)", ja="抽出時の差 (ギャル − 基準の平均) 1つ分"),
    "std": Text(en="one standard deviation of the plain reply", ja="ふつうの返答の標準偏差1つ分"),
    "max": Text(en="this reply's largest deviation", ja="この返答の最大の偏差"),
}
PINK = (255, 105, 180)  # full pink (hot pink); the background goes from white to it


@dataclass(frozen=True)
class RowMeter:
    """What one row records: the read layer and the (float32, unit-norm) direction whose projection is taken."""

    layer: int
    unit: torch.Tensor


def row_meter(loaded: LoadedModel, vector, layer) -> RowMeter:
    """The RowMeter reading `vector`'s direction at `layer`; ValueError (a messages.Text) when there is no vector,
    the layer is not the model's, or the vector has no direction there."""
    if vector is None:
        raise ValueError(NEEDS_VECTOR())
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < loaded.num_layers:
        raise ValueError(BAD_LAYER(layer=layer, last=loaded.num_layers - 1))
    if layer not in vector.directions:
        raise ValueError(NO_DIRECTION(layer=layer, layers=vector.layers))
    direction = vector.directions[layer].detach().float().cpu()
    return RowMeter(layer, direction / direction.norm().clamp_min(1e-12))


def request_meters(loaded: LoadedModel, rows) -> list[RowMeter | None]:
    """Per row of one request (objects with .steering and .meter_layer): None when it does not meter, else the
    RowMeter of its own steering's vector; a plain row reads the vector of the request's first steered row (the
    plain column of a plain + steered pair is measured along the same direction)."""
    partner = next((r.steering.vector for r in rows if r.steering is not None), None)
    meters = []
    for row in rows:
        if row.meter_layer is None:
            meters.append(None)
        else:
            vector = row.steering.vector if row.steering is not None else partner
            meters.append(row_meter(loaded, vector, row.meter_layer))
    return meters


def default_meter_layer(steering, num_layers: int) -> int:
    """Where to read by default: the vector's suggested layer when it has a direction there and it is not before
    the first steered layer (the push has reached it), else the middle of the steered layers."""
    layers = steering.layer_list(num_layers)
    suggested = steering.vector.meta.suggested_layer
    if suggested in steering.vector.directions and suggested >= layers[0]:
        return suggested
    return layers[len(layers) // 2]


# --------------------------------------------------------------------------------------------- recording


class MeterHook:
    """Records, in the owning thread only, each row's projection at the last position of every forward pass."""

    def __init__(self, units: torch.Tensor, owner: int):
        self.units, self.owner = units, owner  # [rows, hidden] float32; zero rows for rows read elsewhere or not
        self.calls = 0
        self.last: torch.Tensor | None = None

    def __call__(self, _module, _inputs, output):
        if threading.get_ident() != self.owner:
            return None
        hidden = block_output(output)
        if hidden.shape[0] != self.units.shape[0]:
            raise ValueError(f"a meter for {self.units.shape[0]} rows met a batch of {hidden.shape[0]} rows")
        if self.units.device != hidden.device:
            self.units = self.units.to(hidden.device)
        self.last = (hidden[:, -1].float() * self.units).sum(dim=-1)
        self.calls += 1
        return None  # reads only: the output goes on unchanged


class Meter:
    """The hooks of one generation; `read` gives each row's latest projection."""

    def __init__(self, rows: Sequence[RowMeter | None], hooks: dict[int, MeterHook]):
        self.rows, self.hooks = list(rows), hooks

    def read(self, passes: int | None = None) -> list[float]:
        """Each row's projection from the latest forward pass (NaN for a row not metered). With `passes`, a layer
        whose hook has not seen exactly that many passes gives NaN (a value must never land on the wrong token)."""
        values = {}
        for layer, hook in self.hooks.items():
            fresh = hook.last is not None and (passes is None or hook.calls == passes)
            values[layer] = hook.last.tolist() if fresh else None
        out = []
        for r, meter in enumerate(self.rows):
            got = values.get(meter.layer) if meter is not None else None
            out.append(float(got[r]) if got is not None else math.nan)
        return out


@contextmanager
def meter_rows(loaded: LoadedModel, rows: Sequence[RowMeter | None]):
    """Record the rows' projections inside the block: one hook per read layer, bound to this thread and removed on
    any exit. Yields a Meter, or None when no row meters. Enter it AFTER row_steer (its hooks then see the pushed
    output)."""
    rows = list(rows)
    layers = sorted({m.layer for m in rows if m is not None})
    if not layers:
        yield None
        return
    owner = threading.get_ident()
    hooks, handles = {}, []
    try:
        for layer in layers:
            units = torch.zeros(len(rows), loaded.hidden_size)
            for r, meter in enumerate(rows):
                if meter is not None and meter.layer == layer:
                    units[r] = meter.unit
            hooks[layer] = MeterHook(units, owner)
            handles.append(loaded.layers[layer].register_forward_hook(hooks[layer]))
        yield Meter(rows, hooks)
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------------------------- pieces


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class TokenPieces:
    """(text, projection) per generated token, fed with Utf8SafeDecoder's deltas: a token whose delta is empty
    (half a character, or a skipped special token) waits and is merged into the next piece that brings text, its
    value the mean of the merged tokens'. The pieces' texts join to exactly the decoder's emitted text."""

    def __init__(self):
        self.pieces: list[Piece] = []
        self._pending: list[float] = []

    def add(self, delta: str, value: float | None) -> None:
        """One token's new text and projection (None: no token, e.g. the final flush of held-back bytes)."""
        if value is not None:
            self._pending.append(value)
        if delta:
            self.pieces.append((delta, _mean(self._pending)))
            self._pending = []

    def upto(self, chars: int) -> list[Piece]:
        """The pieces of the first `chars` characters (a piece straddling the end is cut)."""
        return pieces_upto(self.pieces, chars)


def pieces_upto(pieces: Sequence[Piece], chars: int) -> list[Piece]:
    out, used = [], 0
    for text, value in pieces:
        if used + len(text) > chars:
            if chars > used:
                out.append((text[: chars - used], value))
            break
        out.append((text, value))
        used += len(text)
    return out


# --------------------------------------------------------------------------------------------- colour


def meter_scale(vector, layer: int, plain: Sequence[float], steered: Sequence[float], center: float):
    """(scale, kind): the projection difference that colours full pink, and which it is ('gap', 'std' or 'max';
    see the module docstring). `center` is what the steered values are compared with (the plain mean)."""
    stats = vector.stats.get(layer, {}) if vector is not None else {}
    try:
        gap = float(stats["gyaru_projection"]) - float(stats["baseline_projection"])
    except (KeyError, TypeError, ValueError):
        gap = math.nan
    if math.isfinite(gap) and gap > 0:
        return gap, "gap"
    finite = [v for v in plain if math.isfinite(v)]
    if len(finite) >= 2:
        mean = sum(finite) / len(finite)
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
        if std > 1e-6:
            return std, "std"
    largest = max((abs(v - center) for v in steered if math.isfinite(v)), default=0.0)
    return (largest if largest > 1e-6 else 1.0), "max"


def meter_center(vector, layer: int, plain: Sequence[float]) -> float:
    """What a steered projection is compared with: the plain reply's mean projection; before the plain reply has
    a token (or when it is empty), the baseline mean recorded at extraction, else 0."""
    mean = _mean(plain)
    if math.isfinite(mean):
        return mean
    stats = vector.stats.get(layer, {}) if vector is not None else {}
    base = stats.get("baseline_projection")
    return float(base) if isinstance(base, (int, float)) and math.isfinite(base) else 0.0


def _background(value: float) -> str:
    t = min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    r, g, b = (round(255 + (c - 255) * t) for c in PINK)
    return f"rgb({r},{g},{b})"


def meter_html(pieces: Sequence[Piece], lang: str = "en", layer: int | None = None, unit: str = "gap") -> str:
    """The pieces (text, colour value) as HTML: each in a <span> whose background goes from white (0 or below:
    plain-like) to pink (1 or more: gyaru-like), its value as the title; all text escaped, newlines kept; then a
    one-line caption in `lang` ("en"/"ja") on what the colour means (`unit`: the scale kind of meter_scale)."""
    spans = []
    for text, value in pieces:
        title = f"{value:+.2f}" if math.isfinite(value) else "?"
        spans.append(f'<span style="background:{_background(value)}" title="{title}">{html.escape(text)}</span>')
    where = str(layer) if layer is not None else "?"
    caption = CAPTION.say(lang, layer=where, unit=UNITS.get(unit, UNITS["gap"]).say(lang))
    return (
        '<div class="gyaru-meter">'
        '<div class="gyaru-meter-text" style="white-space:pre-wrap;color:#111;background:#fff;padding:6px;'
        f'border-radius:6px;line-height:1.7">{"".join(spans)}</div>'
        f'<div class="gyaru-meter-caption" style="font-size:0.85em;opacity:0.8">{html.escape(caption)}</div></div>'
    )


def turn_meter_html(steered: Sequence[Piece] | None, plain: Sequence[Piece] | None, vector, layer: int, lang: str):
    """The meter of one chat turn from both rows' (text, projection) pieces: each steered piece coloured by
    (projection − meter_center) / meter_scale; '' when the steered row was not metered."""
    if steered is None:
        return ""
    plain_values, steered_values = [v for _, v in plain or []], [v for _, v in steered]
    center = meter_center(vector, layer, plain_values)
    scale, unit = meter_scale(vector, layer, plain_values, steered_values, center)
    return meter_html([(text, (value - center) / scale) for text, value in steered], lang, layer, unit)
