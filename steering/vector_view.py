"""What the app asks of and shows about one vector, without a UI: the Extract tab's request (from its fields) and
summary line, the Layers tab's note, the Chat and Sweep tabs' defaults for it, the notice that selecting it set the
Chat tab, and the note under the strength slider (where this vector's own evaluation saw replies break).

Everything shown is in the page's language (`ui_lang`: "en" or "ja"); errors carry a messages.Text. Nothing here
imports gradio.

A vector's evaluation is what it records itself: judged sweep or study cells saved in its metadata under
EVIDENCE_KEY (record_evidence writes them; save_vector keeps them). A vector that records none has no break
strength, and the slider's note is empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .checks import check_int
from .data import load_prompts
from .messages import Text, page_lang
from .settings import (
    SWEEP_STRENGTHS,
    SteerSetting,
    default_lang,
    default_layer_options,
    default_scale,
    format_layers,
    parse_layers,
    resolve_setting,
)

# The Extract tab's dataset choices: a bundled set by language, or the uploaded file (keys are what the tab sends).
DATASET_TEXTS = {
    "ja": Text("Bundled Japanese pairs", "同梱の日本語ペア"),
    "en": Text("Bundled English pairs", "同梱の英語ペア"),
    "upload": Text("My own file (upload)", "自分のファイル (アップロード)"),
}
BARE_NOTE = Text(
    "⚠ This file has no statistics saved with it (such as a .json beside a .pt): how well each layer separates gal "
    "from plain text was never recorded, so it cannot be shown, and strengths use the raw scale (the calibrated one "
    "needs those statistics). Shown instead: each layer's direction size and how alike neighboring layers' "
    "directions are.",
    "⚠ このファイルには統計が保存されていません（.pt の横の .json など）: レイヤーごとにギャル文と普通の文をどれだけ見分けるかは"
    "記録されていないので表示できず、強さは raw スケールになります（calibrated には統計が必要です）。代わりに、各レイヤーの方向の"
    "大きさと、隣のレイヤーの方向との似かたを表示します。",
)
LAYER_NOTE = Text(
    "{layers} layers, taken from `{model}` with {method} on {pairs} pairs; ★ marks the suggested layer ({suggested})",
    "`{model}` から {pairs} ペアで取り出した {layers} レイヤー（{method}）。★ はおすすめのレイヤー（{suggested}）",
)
SAVED = Text(
    "Saved `{file}` — {pairs} pairs, {method}, language {language}, layers {layers}, ★ suggested layer **{suggested}** "
    "({seconds:.1f} s)",
    "`{file}` を保存しました — {pairs} ペア、{method}、言語 {language}、レイヤー {layers}、★ おすすめのレイヤー **{suggested}**"
    "（{seconds:.1f} 秒）",
)
UPLOAD_FIRST = Text("Please upload a dataset file first.", "先にデータセットのファイルをアップロードしてください。")
MAX_PAIRS = Text("max pairs", "最大ペア数")  # field names in errors (checks and settings say the rest)
LAYERS = Text("layers", "レイヤー")

# ------------------------------------------------------------------------------------- the vector's evaluation

EVIDENCE_KEY = "evidence_cells"  # VectorMeta.extra key: judged cells saved with the vector (record_evidence)
SETTING_KEYS = ("layers", "strength", "scale", "mode", "apply_to", "repetition_penalty", "half_life")


def evidence_rows(cells: Sequence, max_new_tokens: int) -> list[dict]:
    """One JSON row per judged cell (sweep.SweepCell): its setting, the reply length it was judged at and what the
    judges found (replies, broken share, marker share, perplexity ratio)."""
    rows = []
    for cell in cells:
        s = cell.summary
        judged = {k: s.get(k) for k in ("replies", "broken_share", "marker_share", "perplexity_ratio")}
        rows.append({**asdict(cell.setting), "tokens": int(max_new_tokens), **judged})
    return rows


def record_evidence(vector, cells: Sequence, max_new_tokens: int) -> None:
    """Keep judged cells in the vector's metadata (saved by save_vector): a row for the same setting and length
    replaces the old one, other rows stay."""
    new = evidence_rows(cells, max_new_tokens)
    key = lambda row: tuple(row.get(k) for k in (*SETTING_KEYS, "tokens"))  # noqa: E731
    replaced = {key(row) for row in new}
    kept = [row for row in evidence_of(vector) if key(row) not in replaced]
    vector.meta.extra[EVIDENCE_KEY] = kept + new


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evidence_of(vector) -> tuple[dict, ...]:
    """The judged cells the vector records (rows without a numeric strength and broken share are skipped)."""
    rows = vector.meta.extra.get(EVIDENCE_KEY)
    if not isinstance(rows, list):
        return ()
    return tuple(
        r for r in rows if isinstance(r, dict) and _number(r.get("strength")) and _number(r.get("broken_share"))
    )


@dataclass(frozen=True)
class BreakPoint:
    """The smallest strength at which the vector's evaluation saw replies break, and how badly."""

    strength: float
    broken_share: float
    tokens: int | None  # the reply length it was judged at
    plain_share: float | None  # the broken share without steering at that length, when recorded


def _plain_share(rows: Sequence[dict], row: dict) -> float | None:
    """The broken share of the unsteered replies judged beside `row` (same length; same repetition penalty if
    recorded)."""
    plain = [r for r in rows if r["strength"] == 0 and r.get("tokens") == row.get("tokens")]
    same = [r for r in plain if r.get("repetition_penalty") == row.get("repetition_penalty")]
    return float((same or plain)[0]["broken_share"]) if (same or plain) else None


def _steered(rows: Sequence[dict], scale: str, mode: str, **like) -> list[dict]:
    """Rows steering towards the style (strength > 0) on `scale` in `mode` (old rows without them: calibrated, add),
    narrowed to those matching `like` (apply_to=..., repetition_penalty=...) where any do."""
    found = [
        r
        for r in rows
        if r["strength"] > 0 and (r.get("scale") or "calibrated", r.get("mode") or "add") == (scale, mode)
    ]
    for key, value in like.items():
        found = [r for r in found if r.get(key) == value] or found
    return found


def break_point(rows: Sequence[dict], scale: str = "calibrated", mode: str = "add", **like) -> BreakPoint | None:
    """The smallest strength (on `scale`, in `mode`) whose replies broke: a broken share over the sweep's limit
    (sweep.MAX_BROKEN) and over the unsteered replies' at the same length. None when no such row is recorded."""
    from .sweep import MAX_BROKEN

    broke = []
    for row in _steered(rows, scale, mode, **like):
        plain = _plain_share(rows, row)
        if row["broken_share"] > max(MAX_BROKEN, plain or 0.0):
            broke.append((row["strength"], -row["broken_share"], row, plain))
    if not broke:
        return None
    strength, _, row, plain = min(broke, key=lambda b: b[:2])
    tokens = row.get("tokens")
    return BreakPoint(float(strength), float(row["broken_share"]), tokens if _number(tokens) else None, plain)


@dataclass(frozen=True)
class VectorDefaults:
    """The Chat tab's setting (the vector's recommended one, else the library defaults), example prompts in the
    vector's language, the Sweep tab's layer options, strengths and scale, whether the setting is the vector's
    recommended one, and the judged cells the vector records (its evaluation)."""

    setting: SteerSetting
    prompts: list[str]
    sweep_layers: str
    sweep_strengths: str
    sweep_scale: str
    recommended: bool = False
    evidence_cells: tuple[dict, ...] = ()

    @property
    def half_life(self) -> float:
        """The half-life as a number field shows it: 0 for a constant strength."""
        return self.setting.half_life or 0

    @property
    def break_at(self) -> BreakPoint | None:
        """Where this vector's evaluation saw replies break at the setting's scale and mode (None: not recorded)."""
        return break_point(self.evidence_cells, self.setting.scale, self.setting.mode)

    @property
    def break_strength(self) -> float | None:
        """The smallest strength at which this vector's evaluation saw replies break; None when it records none."""
        return self.break_at.strength if self.break_at is not None else None


def vector_defaults(vector, model_spec: str | None) -> VectorDefaults:
    """Defaults for `vector` with the model `model_spec` loaded (its language when the vector records none)."""
    sweep_scale = default_scale(vector)
    return VectorDefaults(
        setting=resolve_setting(vector),
        prompts=load_prompts(default_lang(vector.meta.lang, model_spec)),
        sweep_layers=default_layer_options(vector),
        sweep_strengths=SWEEP_STRENGTHS[sweep_scale],
        sweep_scale=sweep_scale,
        recommended=vector.meta.recommended is not None,
        evidence_cells=evidence_of(vector),
    )


# ------------------------------------------------------------------------------------- the strength slider's note

BROKE = Text(
    "⚠ From strength {strength:g} on, replies broke in this vector's evaluation ({detail}).",
    "⚠ 強さ {strength:g} 以上: このベクトルの評価では返答が崩れました（{detail}）。",
)
BROKEN_AT = Text("{share:.0%} broken at {tokens} tokens", "{tokens} トークンで {share:.0%} が崩壊")
BROKEN = Text("{share:.0%} broken", "{share:.0%} が崩壊")
PLAIN_BROKEN = Text("; {share:.0%} without steering", "、操作なしでは {share:.0%}")
BREAKS_ABOVE = Text(
    "In this vector's evaluation, replies broke from strength {strength:g} on.",
    "このベクトルの評価では、強さ {strength:g} 以上で返答が崩れました。",
)
STAYED_READABLE = Text(
    "In this vector's evaluation, replies stayed readable up to strength {top:g}, the highest it tried.",
    "このベクトルの評価では、試した中でいちばん強い {top:g} まで返答は読める文のままでした。",
)
UNTRIED = Text(
    "Strength {strength:g} is above anything this vector's evaluation tried (up to {top:g}): replies may break.",
    "強さ {strength:g} はこのベクトルの評価で試した範囲（{top:g} まで）より上です: 返答が崩れるかもしれません。",
)


def strength_note(
    source, strength, ui_lang: str = "en", scale: str | None = None, mode: str | None = None, **like
) -> str:
    """The line under the strength slider for `source` (VectorDefaults or a vector) at `strength`: a warning at or
    above where its evaluation saw replies break, else a short hint of what it tried; "" when it records nothing
    for this scale and mode (default: the source's setting's) or the strength does not push towards the style.
    `like` (apply_to, repetition_penalty) prefers the rows judged with the Chat tab's own values."""
    if isinstance(source, VectorDefaults):
        rows, setting = source.evidence_cells, source.setting
    else:
        rows, setting = evidence_of(source), resolve_setting(source)
    scale, mode = scale or setting.scale, mode or setting.mode
    steered = _steered(rows, scale, mode, **like)
    if not steered or not _number(strength) or strength <= 0:
        return ""
    found = break_point(rows, scale, mode, **like)
    if found is not None and strength >= found.strength:
        detail = (
            BROKEN_AT.say(ui_lang, share=found.broken_share, tokens=found.tokens)
            if found.tokens is not None
            else BROKEN.say(ui_lang, share=found.broken_share)
        )
        if found.plain_share is not None:
            detail += PLAIN_BROKEN.say(ui_lang, share=found.plain_share)
        return BROKE.say(ui_lang, strength=found.strength, detail=detail)
    if found is not None:
        return BREAKS_ABOVE.say(ui_lang, strength=found.strength)
    top = max(r["strength"] for r in steered)
    if strength > top:
        return UNTRIED.say(ui_lang, strength=strength, top=top)
    return STAYED_READABLE.say(ui_lang, top=top)


# ------------------------------------------------------------------------------------- the Chat tab's notice

SET_TO_RECOMMENDED = Text(
    "Chat tab set to this vector's recommended setting: {changes}.",
    "チャットタブをこのベクトルのおすすめ設定にしました: {changes}。",
)
SET_TO_DEFAULTS = Text(
    "This vector has no recommended setting, so the Chat tab is set to the defaults: {changes}.",
    "このベクトルにはおすすめ設定がないので、チャットタブを標準の設定にしました: {changes}。",
)
ALREADY_RECOMMENDED = Text(
    "The Chat tab already has this vector's recommended setting.",
    "チャットタブはすでにこのベクトルのおすすめ設定です。",
)
ALREADY_DEFAULTS = Text(
    "This vector has no recommended setting; the Chat tab already has the defaults.",
    "このベクトルにはおすすめ設定がありません。チャットタブはすでに標準の設定です。",
)
# The Chat tab's setting fields, in the order of its controls
FIELD_TEXTS = {
    "layers": Text("layers", "レイヤー"),
    "strength": Text("strength", "強さ"),
    "scale": Text("scale", "スケール"),
    "mode": Text("mode", "方式"),
    "apply_to": Text("apply to", "適用先"),
    "half_life": Text("half-life", "半減期"),
    "repetition_penalty": Text("repetition penalty", "繰り返しペナルティ"),
}
# The Chat tab's choices by their names on the page (app_text takes them from here): the notice names them alike.
CHOICE_TEXTS = {
    "scale": {"calibrated": Text("calibrated", "較正済み"), "raw": Text("raw", "そのまま")},
    "apply_to": {
        "all": Text("every token", "全トークン"),
        "generated": Text("reply tokens", "返事のトークン"),
        "last": Text("newest token", "最新のトークン"),
    },
    "mode": {
        "add": Text("add", "足す"),
        "norm_preserving": Text("norm-preserving", "長さを保つ"),
        "clamp": Text("clamp", "固定"),
    },
}
CONSTANT = Text("constant", "一定")
TOKENS = Text("{n:g} tokens", "{n:g} トークン")
CHANGE = Text("{field} {old} → {new}", "{field} {old} → {new}")
VALUE = Text("{field} {value}", "{field} {value}")


def _field_values(setting) -> dict:
    """A setting's Chat fields, comparable: a SteerSetting, or a sequence in FIELD_TEXTS order (the tab's values)."""
    if isinstance(setting, SteerSetting):
        values = {name: getattr(setting, name) for name in FIELD_TEXTS}
    else:
        values = dict(zip(FIELD_TEXTS, setting))
    out = {}
    for name, value in values.items():
        if name == "half_life" and (value is None or value == 0):
            value = 0.0
        if _number(value):
            value = float(value)
        elif isinstance(value, str):
            value = value.strip()
        out[name] = value
    return out


def _shown_value(name: str, value, ui_lang: str) -> str:
    if value is None or value == "":
        return "—"
    if name == "half_life" and _number(value):
        return CONSTANT.say(ui_lang) if value == 0 else TOKENS.say(ui_lang, n=value)
    if value in CHOICE_TEXTS.get(name, {}):
        return CHOICE_TEXTS[name][value].say(ui_lang)
    return f"{value:g}" if _number(value) else str(value)


def defaults_notice(defaults: VectorDefaults, ui_lang: str = "en", previous=None) -> str:
    """A toast saying selecting the vector set the Chat tab to its recommended setting (or to the defaults when it
    has none), listing each field: all of them, or with `previous` (the Chat tab's values before, a SteerSetting
    or a sequence in the order layers, strength, scale, mode, apply-to, half-life, repetition penalty) only those
    that changed, as old → new."""
    new = _field_values(defaults.setting)
    old = _field_values(previous) if previous is not None else None
    sep = "、" if page_lang(ui_lang) == "ja" else ", "
    parts = []
    for name, value in new.items():
        field = FIELD_TEXTS[name].say(ui_lang)
        if old is None:
            parts.append(VALUE.say(ui_lang, field=field, value=_shown_value(name, value, ui_lang)))
        elif old.get(name) != value:
            shown = (_shown_value(name, old.get(name), ui_lang), _shown_value(name, value, ui_lang))
            parts.append(CHANGE.say(ui_lang, field=field, old=shown[0], new=shown[1]))
    if not parts:
        return (ALREADY_RECOMMENDED if defaults.recommended else ALREADY_DEFAULTS).say(ui_lang)
    return (SET_TO_RECOMMENDED if defaults.recommended else SET_TO_DEFAULTS).say(ui_lang, changes=sep.join(parts))


# ------------------------------------------------------------------------------------- the Layers and Extract tabs


def setting_choices(field: str, ui_lang: str = "en") -> list[tuple[str, str]]:
    """A Chat-tab choice field's choices ("scale", "apply_to" or "mode") as (name in `ui_lang`, value)."""
    return [(text.say(ui_lang), value) for value, text in CHOICE_TEXTS[field].items()]


def dataset_choices(ui_lang: str = "en") -> list[tuple[str, str]]:
    """The Extract tab's dataset choices as (name in `ui_lang`, key): "ja", "en" (bundled sets) or "upload"."""
    return [(text.say(ui_lang), key) for key, text in DATASET_TEXTS.items()]


DATASET_CHOICES = dataset_choices("en")  # for callers that do not pass the page's language yet


def _shown(value, missing: str = "?") -> str:
    """A metadata value for a note; `missing` when the file never recorded it."""
    return missing if value is None else str(value)


def layer_note(vector, ui_lang: str = "en") -> str:
    """What the per-layer chart shows for this vector, and what a bare file cannot show."""
    if not vector.calibrated:
        return BARE_NOTE.say(ui_lang)
    meta = vector.meta
    return LAYER_NOTE.say(
        ui_lang,
        layers=len(vector.layers),
        model=_shown(meta.model),
        method=_shown(meta.method),
        pairs=_shown(meta.pairs),
        suggested=_shown(meta.suggested_layer, "—"),
    )


def extraction_options(
    dataset: str,
    data_file: str | None,
    contrast: str,
    max_pairs: float | None,
    layers: str | None,
    method: str,
    read_position: str,
    num_layers: int | None = None,
) -> dict:
    """steering.pipeline.extract_from_dataset's keywords from the Extract tab's fields: the uploaded file when
    `dataset` is "upload" (ValueError when none was uploaded), else the bundled set; blank layers = the default
    band; no or 0 max pairs = all pairs. With `num_layers` (the loaded model's) the layers are range-checked here,
    before any data is read: '0-100000000' is refused at once."""
    data = data_file if dataset == "upload" else dataset
    if not data:
        raise ValueError(UPLOAD_FIRST())
    layers = str(layers or "").strip() or None
    if layers is not None and num_layers is not None:
        parse_layers(layers, num_layers, LAYERS())
    return dict(
        data=data,
        contrast=contrast,
        layers=layers,
        method=method,
        read_position=read_position,
        max_pairs=check_int(max_pairs, MAX_PAIRS(), minimum=1) if max_pairs else None,
    )


def extraction_summary(file_name: str, vector, timings: dict, ui_lang: str = "en") -> str:
    """The Extract tab's line for a saved vector: pairs, method, language, layers, suggested layer, time taken."""
    meta = vector.meta
    return SAVED.say(
        ui_lang,
        file=file_name,
        pairs=_shown(meta.pairs),
        method=_shown(meta.method),
        language=_shown(meta.lang),  # (`lang` is Text.say's own argument)
        layers=format_layers(vector.layers),
        suggested=_shown(meta.suggested_layer, "—"),
        seconds=timings["total_s"],
    )
