"""The steering settings people type, parsed in one place for the CLI, the app, `sweep` and `compare`.

    layer spec      '8-20', '3,5,7', '-8--1' (negatives count from the end), or a mix: '0-2,-2--1'
    layer options   several specs separated by spaces, ';' or '|' ('6-10 10-14 3,5,7'): one sweep row each
    strengths       numbers separated by commas or spaces ('0,1,2,4')

Bounds are checked on the numbers as written, before any list is built: '0-1000000000000' is refused at once
instead of filling memory. Empty text is an error naming the argument; only None means "use the default".

Numbers people type (batch sizes, token counts, fractions, seeds) are checked here too, by `check_int`,
`check_float` and `check_seed` (a ValueError naming the argument) and by their argparse forms `int_arg`,
`float_arg` and `seed_arg`, so the CLI, the app and the library refuse the same values with the same words.

Also here: the default language rule, a vector's recommended setting filled in under what the user gave, the
choice lists a user picks from and the UI ranges. This module imports no torch, so the CLI can build its
argument parser (choices included) and start quickly; the modules that check a choice import its list from here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .data import CONTRASTS  # noqa: F401 - re-exported: every choice list in one place
from .messages import Text, composed
from .style import LANGS

# Choice lists. steer.py keeps its own copies of SCALES / APPLY_TO / MODES for now; tests/test_settings.py checks
# that they agree.
SCALES = ("calibrated", "raw")  # strength scales (steer.py explains both)
APPLY_TO = ("all", "generated", "last")  # where a push applies while generating
MODES = ("add", "norm_preserving", "clamp")  # how a push changes a hidden state
METHODS = ("mean_diff", "pca_diff", "pca_center")  # how extraction fits a direction
READ_POSITIONS = ("last", "mean")  # which reply tokens extraction reads (not where steering applies)
DEFAULT_READ_POSITION = "mean"  # the evaluation's winner (docs/evaluation.md)
EXPORT_FORMATS = ("gguf", "safetensors")
QUANTIZE = ("4bit",)
# Strength slider (min, max, step) per scale: calibrated 1.0 = one mean difference; raw is a unit vector × strength.
STRENGTH_RANGE = {"calibrated": (-4.0, 8.0, 0.25), "raw": (-50.0, 200.0, 0.5)}
# Default strength when a vector recommends none: an audible push on each scale (8.0 raw: the reference's weakest).
DEFAULT_STRENGTH = {"calibrated": 2.0, "raw": 8.0}
# Sweep grids: default strengths per scale and layer options; the app's grid limits (each layer option is one
# batched generate call of strengths × prompts rows; a bigger grid is a job for `python -m steering sweep`).
SWEEP_STRENGTHS = {"calibrated": "0,1,2,3,4", "raw": "0,4,8,12,16"}
SWEEP_LAYER_OPTIONS = "6-10 10-14 14-18"
MAX_SWEEP_OPTIONS, MAX_SWEEP_STRENGTHS = 8, 12
# `compare`'s dev grid (the study adds strength 0 itself).
STUDY_LAYER_OPTIONS = "4-8 8-12 12-16 16-20"
STUDY_STRENGTHS = "1,2,3,4,6"
# Defaults of a steering setting when neither the user nor the vector's recommended setting gives one.
DEFAULT_MODE = MODES[0]
DEFAULT_APPLY_TO = APPLY_TO[0]
DEFAULT_REPETITION_PENALTY = 1.0
# What a freshly extracted vector recommends before anyone sweeps it: the shipped study's mode, apply_to, scale,
# repetition penalty, schedule and strength (docs/evaluation.md: the most gal-and-readable replies; no setting
# there met every readability limit), on the layers around the vector's suggested layer, so the first chat after
# an extraction shows style.
FRESH_SETTING = {
    "strength": 4.0,
    "scale": "calibrated",
    "mode": "add",
    "apply_to": "generated",
    "repetition_penalty": 1.1,
    "half_life": 32.0,
}
BAND_HALF_WIDTH = 2  # default layers: the suggested layer ± this many
# Hard limits on what a request may ask for (a shared server must survive any of them):
MAX_STRENGTH = 1e4  # |strength| on any scale; far past the "expect broken text" warning, still finite in float32
MAX_TEXT_TOKENS = 2048  # longest text extraction reads (tokens; also capped by the model's context); overridable
CHARS_PER_TOKEN = 16  # a text longer than this many characters per allowed token is refused without tokenizing it

_PART = re.compile(r"(-?[0-9]+)(?:-(-?[0-9]+))?")
_OPTION_SEPARATORS = re.compile(r"[\s;|]+")
_STRENGTH_SEPARATORS = re.compile(r"[\s,;]+")

# What a user reads when a setting is refused; `what` names the argument or field ('--layers', 'layers').
EMPTY_LAYER_SPEC = Text(
    en="{what}: empty layer spec; give e.g. 8-20, 3,5,7 or -8--1",
    ja="{what}: レイヤー指定が空です。8-20、3,5,7、-8--1 のように書いてください",
)
BAD_LAYER_PART = Text(
    en="{what}: bad layer spec {spec!r}: {part!r} is not a number or an A-B range",
    ja="{what}: レイヤー指定 {spec!r} が正しくありません: {part!r} は数でも A-B の範囲でもありません",
)
NO_LAYERS_SELECTED = Text(
    en="{what}: bad layer spec {spec!r}: no layers selected",
    ja="{what}: レイヤー指定 {spec!r} が正しくありません: レイヤーが 1 つも選ばれていません",
)
LAYER_OUT_OF_RANGE = Text(
    en="{what} {spec!r}: layer {layer} is out of range: the model has {count} layers "
    "(0..{last}, or -{count}..-1 from the end)",
    ja="{what} {spec!r}: レイヤー {layer} は範囲外です: このモデルのレイヤーは {count} 個です"
    "（0..{last}、または後ろから数えて -{count}..-1）",
)
BAD_LAYER_TYPE = Text(
    en="{what}: bad layer spec {spec!r}: expected a layer number, a list or a string like 8-20",
    ja="{what}: レイヤー指定 {spec!r} が正しくありません: レイヤー番号、そのリスト、または 8-20 のような文字列にしてください",
)
NOT_LAYER_LIST = Text(
    en="{what}: bad layer spec {spec!r}: not a list of layer numbers",
    ja="{what}: レイヤー指定 {spec!r} が正しくありません: レイヤー番号のリストではありません",
)
BACKWARDS_RANGE = Text(
    en="{what}: bad layer spec {spec!r}: the range {first}-{last} runs backwards",
    ja="{what}: レイヤー指定 {spec!r} が正しくありません: 範囲 {first}-{last} が逆向きです",
)
NO_OPTIONS = Text(
    en="{what}: empty; write at least one layer option, e.g. {example}",
    ja="{what}: 空です。{example} のようにレイヤー候補を 1 つ以上書いてください",
)
NO_OPTION_IN = Text(
    en="{what}: no layer option in {text!r}; write e.g. {example}",
    ja="{what}: {text!r} にレイヤー候補がありません。{example} のように書いてください",
)
TOO_MANY_OPTIONS = Text(
    en="{what}: {count} layer options, at most {limit} here",
    ja="{what}: レイヤー候補が {count} 個あります。ここでは {limit} 個までです",
)
PENALTY_BELOW_ONE = Text(
    en="{what}: repetition penalty {value:g} is below 1 (that rewards repeating)",
    ja="{what}: 繰り返しペナルティ {value:g} が 1 未満です（それでは繰り返しを促してしまいます）",
)
# The numbers a list holds (the `noun` and `nouns` of the messages below)
STRENGTH = Text(en="strength", ja="強度")
STRENGTHS = Text(en="strengths", ja="強度")
PENALTY = Text(en="repetition penalty", ja="繰り返しペナルティ")
PENALTIES = Text(en="repetition penalties", ja="繰り返しペナルティ")
NO_NUMBERS = Text(
    en="{what}: empty; write at least one {noun}, e.g. {example}",
    ja="{what}: 空です。{example} のように{noun}を 1 つ以上書いてください",
)
NOT_A_NUMBER = Text(en="{what}: {noun} {part!r} is not a number", ja="{what}: {noun} {part!r} は数ではありません")
NOT_FINITE = Text(
    en="{what}: {noun} {part!r} is not a finite number", ja="{what}: {noun} {part!r} は有限の数ではありません"
)
BEYOND_LIMIT = Text(
    en="{what}: {noun} {part!r} is beyond ±{limit:g}, the most any {noun} may be",
    ja="{what}: {noun} {part!r} は上限の ±{limit:g} を超えています",
)
TOO_MANY_NUMBERS = Text(
    en="{what}: more than {limit} {nouns}, at most {limit} here",
    ja="{what}: {nouns}が {limit} 個を超えています。ここでは {limit} 個までです",
)
NO_NUMBER_IN = Text(
    en="{what}: no {noun} in {text!r}; write e.g. {example}",
    ja="{what}: {text!r} に{noun}がありません。{example} のように書いてください",
)
EMPTY_SETTING = Text(
    en="{arg}: empty; leave it out to use the vector's recommended setting",
    ja="{arg}: 空です。ベクトルのおすすめ設定を使うには、この指定ごと省いてください",
)


# --------------------------------------------------------------------------------------------- layer specs


def _is_blank(text) -> bool:
    return text is None or not str(text).strip()


def _spec_parts(spec: str, what: str) -> list[tuple[int, int]]:
    """'8-12,3' -> [(8, 12), (3, 3)]: the numbers as written (negatives unresolved), nothing expanded."""
    compact = "".join(str(spec).split())
    if not compact:
        raise ValueError(EMPTY_LAYER_SPEC(what=what))
    parts = []
    for part in compact.split(","):
        if not part:
            continue
        match = _PART.fullmatch(part)
        if not match:
            raise ValueError(BAD_LAYER_PART(what=what, spec=spec, part=part))
        lo = int(match.group(1))
        parts.append((lo, int(match.group(2)) if match.group(2) is not None else lo))
    if not parts:
        raise ValueError(NO_LAYERS_SELECTED(what=what, spec=spec))
    return parts


def check_layer_spec(spec: str, what: str = "layers") -> None:
    """Refuse a layer spec that is not even well formed (no model needed: ranges are checked by parse_layers)."""
    _spec_parts(spec, what)


def _resolve_layer(layer: int, num_layers: int, spec, what: str) -> int:
    """A layer number with negatives counted from the end, refused when the model has no such layer."""
    index = layer + num_layers if layer < 0 else layer
    if not 0 <= index < num_layers:
        raise ValueError(LAYER_OUT_OF_RANGE(what=what, spec=spec, layer=layer, count=num_layers, last=num_layers - 1))
    return index


def default_layers(num_layers: int) -> list[int]:
    """The middle band (the reference used 20–50 of 64): from 1/4 to 3/4 of the depth."""
    return list(range(num_layers // 4, (3 * num_layers) // 4 + 1))


def _items(spec, num_layers: int, what: str) -> Iterable[tuple[int, int]]:
    """(first, last) runs of a spec in any accepted form; a range is checked by its ends, never iterated."""
    if isinstance(spec, bool):
        raise ValueError(BAD_LAYER_TYPE(what=what, spec=spec))
    if isinstance(spec, int):
        return [(spec, spec)]
    if isinstance(spec, range):
        if not spec:
            raise ValueError(NO_LAYERS_SELECTED(what=what, spec=spec))
        _resolve_layer(min(spec[0], spec[-1]), num_layers, spec, what)
        _resolve_layer(max(spec[0], spec[-1]), num_layers, spec, what)
        return [(layer, layer) for layer in spec]  # both ends fit: at most 2 × num_layers items
    if isinstance(spec, (list, tuple)):
        try:
            return [(int(x), int(x)) for x in spec]
        except (TypeError, ValueError):
            raise ValueError(NOT_LAYER_LIST(what=what, spec=spec)) from None
    return _spec_parts(str(spec), what)


def parse_layers(spec: str | int | Sequence[int] | range | None, num_layers: int, what: str = "layers") -> list[int]:
    """Layer selection: '8-20', '8,10,12', '-4--1', 12, a list or range; negatives count from the end.

    Sorted and without repeats. None gives the default middle band; an empty string is an error naming `what`
    (the argument, e.g. '--layers'). Every number is range-checked before a range is expanded.
    """
    if spec is None:
        return default_layers(num_layers)
    chosen: set[int] = set()
    for first, last in _items(spec, num_layers, what):
        lo, hi = _resolve_layer(first, num_layers, spec, what), _resolve_layer(last, num_layers, spec, what)
        if lo > hi:
            raise ValueError(BACKWARDS_RANGE(what=what, spec=spec, first=first, last=last))
        chosen.update(range(lo, hi + 1))
    if not chosen:
        raise ValueError(NO_LAYERS_SELECTED(what=what, spec=spec))
    return sorted(chosen)


def format_layers(layers: Iterable[int]) -> str:
    """'8-12' for a contiguous run of 2+, else '3,5,9' (what parse_layers reads back)."""
    layers = sorted(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


# --------------------------------------------------------------------------------------------- option lists


def parse_layer_options(
    text: str | None, what: str = "layer options", max_count: int | None = None, num_layers: int | None = None
) -> list[str]:
    """'6-10 10-14;3,5,7' -> ['6-10', '10-14', '3,5,7']: options separated by spaces, ';' or '|' (commas stay
    inside one option). Each option's syntax is checked, and its range too when num_layers is given."""
    if _is_blank(text):
        raise ValueError(NO_OPTIONS(what=what, example=SWEEP_LAYER_OPTIONS))
    options = [part.strip(",") for part in _OPTION_SEPARATORS.split(str(text)) if part.strip(",")]
    if not options:
        raise ValueError(NO_OPTION_IN(what=what, text=text, example=SWEEP_LAYER_OPTIONS))
    if max_count is not None and len(options) > max_count:
        raise ValueError(TOO_MANY_OPTIONS(what=what, count=len(options), limit=max_count))
    for option in options:
        if num_layers is None:
            _spec_parts(option, what)
        else:
            parse_layers(option, num_layers, what)
    return options


def parse_strengths(text: str | None, what: str = "strengths", max_count: int | None = None) -> list[float]:
    """'0,1,2,3,4' (commas or spaces) -> [0.0, 1.0, 2.0, 3.0, 4.0]; repeats dropped, order kept, all finite."""
    return _parse_numbers(text, what, (STRENGTH, STRENGTHS), SWEEP_STRENGTHS["calibrated"], max_count)


def parse_penalties(text: str | None, what: str = "repetition penalties") -> list[float]:
    """'1.1,1.3' -> [1.1, 1.3]: repetition penalties, each at least 1 (below 1 rewards repeating)."""
    values = _parse_numbers(text, what, (PENALTY, PENALTIES), "1.1,1.3", None)
    for value in values:
        if value < 1:
            raise ValueError(PENALTY_BELOW_ONE(what=what, value=value))
    return values


def _parse_numbers(text, what: str, words: tuple[Text, Text], example: str, max_count: int | None) -> list[float]:
    """The numbers in `text`; `words` name one and several of them in messages (STRENGTH, STRENGTHS)."""
    noun, nouns = words[0](), words[1]()
    if _is_blank(text):
        raise ValueError(composed(NO_NUMBERS, what=what, noun=noun, example=example))
    values: dict[float, None] = {}  # a dict keeps order and finds repeats in O(1)
    for part in _STRENGTH_SEPARATORS.split(str(text)):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(composed(NOT_A_NUMBER, what=what, noun=noun, part=part)) from None
        if not math.isfinite(value):
            raise ValueError(composed(NOT_FINITE, what=what, noun=noun, part=part))
        if abs(value) > MAX_STRENGTH:
            raise ValueError(composed(BEYOND_LIMIT, what=what, noun=noun, part=part, limit=MAX_STRENGTH))
        values[value] = None
        if max_count is not None and len(values) > max_count:  # checked while reading: a huge list stops early
            raise ValueError(composed(TOO_MANY_NUMBERS, what=what, nouns=nouns, limit=max_count))
    if not values:
        raise ValueError(composed(NO_NUMBER_IN, what=what, noun=noun, text=text, example=example))
    return list(values)


# --------------------------------------------------------------------------------------------- language


def model_lang(model_spec: str | None) -> str:
    """The language a model is taken to speak: English for the bundled SmolLM2 (it answers Japanese in English),
    Japanese for any other model (this is a gyaru studio)."""
    from .models import BUNDLED  # here, not at the top: models imports torch

    return "en" if model_spec in (None, BUNDLED) else "ja"


def default_lang(recorded: str | None, model_spec: str | None) -> str:
    """The one language rule: the vector's or dataset's recorded language, else the loaded model's."""
    return recorded if recorded in LANGS else model_lang(model_spec)


# --------------------------------------------------------------------------------------------- defaults


@dataclass(frozen=True)
class SteerSetting:
    """A complete steering setting: each value from the user, else the vector's recommended one, else a default."""

    layers: str
    strength: float
    scale: str
    mode: str
    apply_to: str
    repetition_penalty: float
    half_life: float | None = None


def center_layer(vector) -> int:
    """The vector's suggested layer, else the middle of the layers it has."""
    suggested = vector.meta.suggested_layer
    return suggested if suggested is not None else vector.layers[len(vector.layers) // 2]


def default_band(vector) -> str:
    """The suggested layer ± BAND_HALF_WIDTH (those the vector has), else all its layers."""
    center = center_layer(vector)
    band = [x for x in range(center - BAND_HALF_WIDTH, center + BAND_HALF_WIDTH + 1) if x in vector.directions]
    return format_layers(band or vector.layers)


def default_layer_options(vector) -> str:
    """Three 5-layer bands around the suggested layer (those the vector has), e.g. '8-12 12-16 16-20'."""
    center = center_layer(vector)
    options: list[str] = []
    for low in (center - 6, center - 2, center + 2):
        band = [layer for layer in range(low, low + 5) if layer in vector.directions]
        if band and format_layers(band) not in options:
            options.append(format_layers(band))
    return " ".join(options) or format_layers(vector.layers)


def default_scale(vector) -> str:
    """Calibrated when the vector has its mean-difference norms (a sidecar), else raw (the only one that works)."""
    return "calibrated" if vector.calibrated else "raw"


def _given(value, name: str, cli: bool):
    """None stays None (not given); a blank string is an error naming the argument, not a silent default."""
    if isinstance(value, str):
        if not value.strip():
            arg = "--" + name.replace("_", "-") if cli else name
            raise ValueError(EMPTY_SETTING(arg=arg))
        return value.strip()
    return value


def _first(*values):
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def resolve_setting(
    vector,
    layers: str | None = None,
    strength: float | None = None,
    scale: str | None = None,
    mode: str | None = None,
    apply_to: str | None = None,
    repetition_penalty: float | None = None,
    cli: bool = False,
    half_life: float | None = None,
) -> SteerSetting:
    """Fill in what the user left out (None) from vector.meta.recommended, else the defaults above.

    cli=True names arguments as flags in errors ('--layers: empty').
    """
    rec = vector.meta.recommended
    recorded = (lambda key: getattr(rec, key)) if rec is not None else (lambda key: None)
    scale = _first(
        _given(scale, "scale", cli), recorded("scale") if recorded("scale") in SCALES else None, default_scale(vector)
    )
    strength = _first(strength, recorded("strength"), DEFAULT_STRENGTH.get(scale, DEFAULT_STRENGTH["calibrated"]))
    return SteerSetting(
        layers=_first(_given(layers, "layers", cli), recorded("layers"), default_band(vector)),
        strength=float(strength),
        scale=scale,
        mode=_first(_given(mode, "mode", cli), recorded("mode"), DEFAULT_MODE),
        apply_to=_first(_given(apply_to, "apply_to", cli), recorded("apply_to"), DEFAULT_APPLY_TO),
        repetition_penalty=float(
            _first(repetition_penalty, recorded("repetition_penalty"), DEFAULT_REPETITION_PENALTY)
        ),
        half_life=_first(half_life, recorded("half_life")),
    )
