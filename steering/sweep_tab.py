"""The app's Sweep tab without a UI: the grid a user typed, checked and resolved before any generation and run
on the bundled prompts; the "best" line; and the swept cells a user can pick and apply to the Chat tab. Nothing
here imports gradio.

The sweep itself is steering.sweep.sweep; its heatmaps are steering.plots.heatmap and its table
steering.tables.sweep_frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .checks import check_float, check_int
from .data import load_prompts
from .messages import Message, Text
from .models import LoadedModel
from .settings import (
    APPLY_TO,
    MAX_SWEEP_OPTIONS,
    MAX_SWEEP_STRENGTHS,
    default_lang,
    format_layers,
    parse_layer_options,
    parse_strengths,
)
from .steer import Steering, layer_pushes, strength_warning
from .sweep import DEFAULT_SWEEP_TOKENS, MAX_BROKEN, MAX_PERPLEXITY_RATIO, Setting, SweepCell, sweep
from .tables import cell_label

# Field names in errors (steering.checks and steering.settings say the rest in the same language)
PROMPTS = Text("prompts", "質問数")
MAX_NEW_TOKENS = Text("max new tokens", "最大トークン数")
REPETITION_PENALTY = Text("repetition penalty", "繰り返しペナルティ")
LAYER_OPTIONS = Text("layer options", "レイヤー候補")
STRENGTHS = Text("strengths", "強さ")
UNKNOWN_APPLY_TO = Text(
    "unknown apply-to {value!r}: expected one of {choices}",
    "適用先 {value!r} は使えません: {choices} のどれかにしてください",
)
RECOMMENDED = Text(
    "★ Recommended: layers **{layers}** at strength **{strength:g}** ({mode}, {apply_to}) — gal words in "
    "{markers:.0%} of replies, {broken:.0%} broken, perplexity {ratio}",
    "★ おすすめ: レイヤー **{layers}**、強さ **{strength:g}**（{mode}、{apply_to}）— ギャル語を含む返答 {markers:.0%}、"
    "崩れた返答 {broken:.0%}、パープレキシティ {ratio}",
)
RATIO = Text("{ratio:.2f}× that of unsteered replies", "操作なしの {ratio:.2f} 倍")
RATIO_UNKNOWN = Text("unknown", "不明")
NO_RECOMMENDATION = Text(
    "No recommendation: no strength other than 0 gave more replies with gal words than no steering while keeping "
    "broken replies at {max_broken:.0%} or less and perplexity at most {max_ratio:g}× that of unsteered replies. "
    "Try longer replies, other strengths or other layers.",
    "おすすめなし: 強さ 0 以外で、崩れた返答を {max_broken:.0%} 以下、パープレキシティを操作なしの {max_ratio:g} 倍以下に"
    "保ったまま、操作なしよりギャル語を含む返答を増やせたものはありませんでした。返答を長くするか、別の強さや別のレイヤーを試してください。",
)
OTHER_VECTOR = Text(
    "The sweep was run on a different vector than the one selected now.",
    "スイープしたのは、いま選んでいるのとは別のベクトルです。",
)
RUN_SWEEP_FIRST = Text("Run a sweep first.", "先にスイープを実行してください。")
UNKNOWN_CELL = Text(
    "unknown sweep cell {label!r}: pick one from the list",
    "スイープのセル {label!r} は見つかりません: 一覧から選んでください",
)
NO_BEST = Text(
    "The sweep has no recommended cell: pick one from the list.",
    "このスイープにはおすすめのセルがありません: 一覧から選んでください。",
)


@dataclass(frozen=True)
class SweepGrid:
    """A checked layers × strength grid: distinct layer lists (as canonical specs, in the order given), strengths,
    the scale, mode and apply-to every cell steers with, and the warning for a strength far outside what ever
    reads well (None when all are sane)."""

    layer_options: list[str]
    strengths: list[float]
    scale: str = "calibrated"
    mode: str = "add"
    apply_to: str = "all"
    warning: str | None = None

    @property
    def size(self) -> int:
        return len(self.layer_options) * len(self.strengths)

    def run(
        self,
        loaded: LoadedModel,
        vector,
        n_prompts: int,
        max_new_tokens: int = DEFAULT_SWEEP_TOKENS,
        repetition_penalty: float = 1.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[SweepCell]:
        """steering.sweep.sweep over this grid on the first `n_prompts` (at least 1) bundled prompts in the
        vector's language (else the model's), greedy. A count that is not a whole number (NaN from an API call)
        is a ValueError before anything runs.

        progress(done, total) counts replies: total = prompts × the cells generated (the strength-0 cells share
        one plain run); it advances as tokens are generated, at least once per cell, and ends at total."""
        n_prompts = max(1, check_int(n_prompts, PROMPTS(), minimum=None))
        max_new_tokens = check_int(max_new_tokens, MAX_NEW_TOKENS(), minimum=1)
        repetition_penalty = check_float(repetition_penalty, REPETITION_PENALTY(), above=0.0)
        lang = default_lang(vector.meta.lang, loaded.spec)
        prompts = load_prompts(lang)[:n_prompts]
        return sweep(
            loaded,
            vector,
            prompts,
            self.layer_options,
            self.strengths,
            lang,
            scale=self.scale,
            apply_to=self.apply_to,
            max_new_tokens=int(max_new_tokens),
            progress=progress,
            repetition_penalty=float(repetition_penalty),
            mode=self.mode,
        )


def sweep_grid(
    vector,
    layer_options: str | None,
    strengths: str | None,
    num_layers: int,
    scale: str = "calibrated",
    mode: str = "add",
    apply_to: str = "all",
) -> SweepGrid:
    """Parse the tab's text fields within its limits and check every option against the vector and the model, so
    a bad grid (a layer out of range or without a direction, a scale or mode the vector cannot do) is refused
    with a ValueError before anything is generated. Options naming the same layers are swept once."""
    options = parse_layer_options(layer_options, LAYER_OPTIONS(), max_count=MAX_SWEEP_OPTIONS)
    values = parse_strengths(strengths, STRENGTHS(), max_count=MAX_SWEEP_STRENGTHS)
    if apply_to not in APPLY_TO:
        raise ValueError(UNKNOWN_APPLY_TO(value=apply_to, choices=", ".join(APPLY_TO)))
    specs = []
    for option in options:
        steering = Steering(vector, option, 0.0, scale, apply_to, mode)
        layer_pushes(steering, num_layers)  # layers, scale and mode, as generation would check them
        specs.append(format_layers(steering.layer_list(num_layers)))
    warning = strength_warning(Steering(vector, None, values, scale))
    return SweepGrid(list(dict.fromkeys(specs)), values, scale, mode, apply_to, warning)


def best_line(best: SweepCell | None, ui_lang: str = "en") -> str:
    """The Markdown line naming the recommended cell and why (gal words, broken share, perplexity ratio), or the
    limits no cell met, in `ui_lang`."""
    if best is None:
        return NO_RECOMMENDATION.say(ui_lang, max_broken=MAX_BROKEN, max_ratio=MAX_PERPLEXITY_RATIO)
    s = best.summary
    ratio = s.get("perplexity_ratio")
    shown = RATIO.say(ui_lang, ratio=ratio) if ratio is not None else RATIO_UNKNOWN.say(ui_lang)
    return RECOMMENDED.say(
        ui_lang,
        layers=format_layers(best.layers),
        strength=best.strength,
        mode=best.setting.mode,
        apply_to=best.setting.apply_to,
        markers=s["marker_share"],
        broken=s["broken_share"],
        ratio=shown,
    )


@dataclass
class SweepPicks:
    """One user's last sweep: its cells' settings by label ('8-12 @ 2'), the recommended label, the vector swept."""

    path: str | None
    cells: dict[str, Setting] = field(default_factory=dict)
    best: str | None = None

    @classmethod
    def of(cls, cells: Sequence[SweepCell], best: SweepCell | None, path: str | None) -> SweepPicks:
        return cls(path, {cell_label(c): c.setting for c in cells}, cell_label(best) if best is not None else None)

    @property
    def labels(self) -> list[str]:
        return list(self.cells)

    def default_label(self) -> str | None:
        """The cell offered first: the recommended one, else the first that steers at all, else the first."""
        steered = (label for label, setting in self.cells.items() if not setting.plain)
        return self.best or next(steered, None) or next(iter(self.cells), None)

    def label_at(self, index) -> str | None:
        """The label of a table row, from a row number or a [row, column] cell index (None for anything else)."""
        row = index[0] if isinstance(index, (list, tuple)) and index else index
        labels = self.labels
        return labels[row] if isinstance(row, int) and 0 <= row < len(labels) else None

    def notice(self, current_path: str | None) -> Message | None:
        """A warning when the vector selected now is not the one swept (`.in_lang(ui_lang)` for the page)."""
        if current_path != self.path:
            return OTHER_VECTOR()
        return None


def picked_setting(picks: SweepPicks | None, label: str | None) -> Setting:
    """The setting of a swept cell; ValueError when there is no sweep or no such cell."""
    if picks is None or not picks.cells:
        raise ValueError(RUN_SWEEP_FIRST())
    if label not in picks.cells:
        raise ValueError(UNKNOWN_CELL(label=label))
    return picks.cells[label]


def best_setting(picks: SweepPicks | None) -> Setting:
    """The recommended cell's setting; ValueError when there is no sweep or it recommended nothing."""
    if picks is not None and picks.cells and picks.best is None:
        raise ValueError(NO_BEST())
    return picked_setting(picks, picks.best if picks is not None else None)
