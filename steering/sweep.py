"""Run steering settings on a model and judge the replies: the grid behind `sweep`, the app's Sweep tab and
the study.

Replies are generated at the lengths users read (128 new tokens by default) and judged by the strict fluency
judge; perplexity under the plain model is reported as a median and as a ratio to the plain replies'.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

from .generate import GenerationSettings, generate_rows
from .judge import score_reply, summarize_scores
from .models import LoadedModel
from .perplexity import median, perplexities
from .settings import format_layers, parse_layers
from .steer import Steering

MAX_BROKEN = 0.05  # a recommended setting breaks at most this share of replies ...
MAX_PERPLEXITY_RATIO = 2.5  # ... and reads at most this much less fluent (median perplexity) than plain replies
DEFAULT_SWEEP_TOKENS = 128  # the CLI's and the app's default reply length: judge what users read
MAX_BATCH_ROWS = 64  # rows per generate call: more costs memory and, on a CPU, gains little


@dataclass(frozen=True)
class Setting:
    """One steering setting: what a sidecar's `recommended` holds (each field spelled like its generate flag)."""

    layers: str
    strength: float
    scale: str = "calibrated"
    mode: str = "add"
    apply_to: str = "all"
    repetition_penalty: float = 1.0
    half_life: float | None = None

    @property
    def plain(self) -> bool:
        return self.strength == 0

    def group(self) -> tuple:
        """Settings that differ only in strength share one generate call (one strength per row)."""
        return (self.layers, self.scale, self.mode, self.apply_to, self.repetition_penalty, self.half_life)

    def label(self) -> str:
        if self.plain:
            return f"plain (rep {self.repetition_penalty:g})"
        decay = f" half-life {self.half_life:g}" if self.half_life else ""
        return (
            f"{self.mode}/{self.apply_to} L{self.layers} s{self.strength:g} {self.scale} "
            f"rep {self.repetition_penalty:g}{decay}"
        )


@dataclass
class Replies:
    """Replies to a list of conversations under one setting, with their generated token ids."""

    conversations: list[list[dict]]
    texts: list[str]
    token_ids: list[list[int]]


class _Progress:
    """progress(done, total) in replies, called only when `done` grows (so it never goes back or repeats)."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int):
        self.progress, self.total, self.shown = progress, total, 0

    def __call__(self, done: int) -> None:
        done = min(int(done), self.total)
        if self.progress is not None and done > self.shown:
            self.shown = done
            self.progress(done, self.total)

    def during(self, loaded: LoadedModel, before: int, rows: int, max_new_tokens: int):
        """While `rows` replies are generated in one call: after each new token, the share of the call done so far
        as whole replies (never all of them: the call's end reports those)."""
        if self.progress is None or rows < 2:
            return nullcontext()
        return _forward_passes(loaded, lambda n: self(before + min(rows - 1, rows * n // max_new_tokens)))


@contextmanager
def _forward_passes(loaded: LoadedModel, on_pass: Callable[[int], None]) -> Iterator[None]:
    """Call on_pass(n) after the model's n-th forward pass in this thread (one per new token while generating);
    another thread's passes on the shared model are not counted."""
    register = getattr(loaded.model, "register_forward_hook", None)
    if register is None:
        yield
        return
    owner, passes = threading.get_ident(), 0

    def hook(_module, _inputs, _output) -> None:
        nonlocal passes
        if threading.get_ident() == owner:
            passes += 1
            on_pass(passes)

    handle = register(hook)
    try:
        yield
    finally:
        handle.remove()


def generate_settings(
    loaded: LoadedModel,
    vector,
    conversations: Sequence[Sequence[dict]],
    settings: Sequence[Setting],
    max_new_tokens: int,
    system_prompt: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Setting, Replies]:
    """Greedy replies for every setting, batched: all strengths of one group (and the prompts) share calls.

    progress(done, total) counts replies (total: settings × conversations); inside a batched call it advances with
    the tokens generated, so a long call moves the bar too. It only grows, and ends at total."""
    groups: dict[tuple, list[Setting]] = {}
    for setting in dict.fromkeys(settings):
        groups.setdefault(setting.group(), []).append(setting)
    rows = [(s, c) for members in groups.values() for s in members for c in conversations]
    out: dict[Setting, Replies] = {s: Replies([], [], []) for members in groups.values() for s in members}
    report = _Progress(progress, len(rows))
    done = 0
    for members in groups.values():
        group_rows = [(s, c) for s in members for c in conversations]
        first = members[0]
        gen = GenerationSettings(
            max_new_tokens=max_new_tokens, repetition_penalty=first.repetition_penalty, system_prompt=system_prompt
        )
        steering = None
        if any(not s.plain for s in members):
            steering = Steering(vector, first.layers, 0.0, first.scale, first.apply_to, first.mode, first.half_life)
        for start in range(0, len(group_rows), MAX_BATCH_ROWS):
            chunk = group_rows[start : start + MAX_BATCH_ROWS]
            with report.during(loaded, done, len(chunk), max_new_tokens):
                result = generate_rows(loaded, [c for _, c in chunk], [s.strength for s, _ in chunk], steering, gen)
            for (setting, conv), text, ids in zip(chunk, result.texts, result.token_ids):
                replies = out[setting]
                replies.conversations.append(list(conv))
                replies.texts.append(text)
                replies.token_ids.append(ids)
            done += len(chunk)
            report(done)
    return out


def cut(loaded: LoadedModel, replies: Replies, max_tokens: int) -> Replies:
    """The same replies as if generated with `max_tokens` new tokens (greedy: a prefix of the longer run)."""
    ids = [r[:max_tokens] for r in replies.token_ids]
    texts = [loaded.tokenizer.decode(r, skip_special_tokens=True) for r in ids]
    return Replies(replies.conversations, texts, ids)


def judge_replies(loaded: LoadedModel, replies: Replies, lang: str) -> dict:
    """Style and fluency shares (onset in tokens) and the median perplexity under the plain model."""
    scores = [score_reply(t, lang, loaded.tokenizer) for t in replies.texts]
    summary = summarize_scores(scores, lang)
    summary["perplexity"] = median(perplexities(loaded, replies.conversations, replies.token_ids))
    summary["broken_examples"] = [t for t, s in zip(replies.texts, scores) if s.broken][:3]
    return summary


def add_perplexity_ratio(summary: dict, plain: dict) -> dict:
    """The summary's median perplexity over the plain replies' (same prompts, same decoding)."""
    ppl, base = summary.get("perplexity"), plain.get("perplexity")
    summary["perplexity_ratio"] = ppl / base if ppl is not None and base else None
    return summary


@dataclass
class SweepCell:
    setting: Setting
    layers: list[int]
    summary: dict
    replies: list[str] = field(default_factory=list)

    @property
    def strength(self) -> float:
        return self.setting.strength

    @classmethod
    def of(cls, layers: Sequence[int], strength: float, summary: dict, replies=(), **setting) -> SweepCell:
        """A cell from its layer list and strength (other setting fields as keywords)."""
        return cls(Setting(format_layers(layers), float(strength), **setting), list(layers), summary, list(replies))


def judge_grid(
    loaded: LoadedModel, generated: dict[Setting, Replies], lang: str, max_tokens: int | None = None
) -> list[SweepCell]:
    """One judged cell per setting (replies cut to `max_tokens`), perplexity ratios against the plain cell of the
    same decoding (strength 0 is plain under every mode and layer set)."""
    cells = []
    for setting, replies in generated.items():
        shown = cut(loaded, replies, max_tokens) if max_tokens else replies
        layers = parse_layers(setting.layers, loaded.num_layers) if setting.layers else []
        cells.append(SweepCell(setting, layers, judge_replies(loaded, shown, lang), shown.texts))
    plain = {c.setting.repetition_penalty: c.summary for c in cells if c.setting.plain}
    for cell in cells:
        add_perplexity_ratio(cell.summary, plain.get(cell.setting.repetition_penalty, {}))
    return cells


def sweep(
    loaded: LoadedModel,
    vector,
    prompts: Sequence[str],
    layer_options: Sequence[str],
    strengths: Sequence[float],
    lang: str,
    scale: str = "calibrated",
    apply_to: str = "all",
    max_new_tokens: int = DEFAULT_SWEEP_TOKENS,
    system_prompt: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    repetition_penalty: float = 1.0,
    mode: str = "add",
) -> list[SweepCell]:
    """Greedy replies over a layer × strength grid (plus the plain replies, for the perplexity ratio).

    progress(done, total) counts the replies generated (see generate_settings): total is the number of prompts
    times the cells actually run (strength 0 is one plain run whatever the layers). Judging the replies afterwards
    is not counted."""
    base = Setting("", 0.0, scale, mode, apply_to, float(repetition_penalty))
    layer_lists = [Steering(vector, option).layer_list(loaded.num_layers) for option in layer_options]
    grid = [replace(base, layers=format_layers(x), strength=float(s)) for x in layer_lists for s in strengths]
    plain = replace(base, layers=grid[0].layers if grid else "")
    to_run = [plain, *(s for s in grid if not s.plain)]  # strength 0 is the same plain run whatever the layers
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    generated = generate_settings(loaded, vector, conversations, to_run, max_new_tokens, system_prompt, progress)
    judged = {c.setting: c for c in judge_grid(loaded, generated, lang)}
    plain_cell = judged[plain]
    return [
        judged[s]
        if not s.plain
        else SweepCell(s, parse_layers(s.layers, loaded.num_layers), plain_cell.summary, plain_cell.replies)
        for s in grid
    ]


def eligible(cell: SweepCell, plain_markers: float) -> bool:
    """Readable enough to recommend, and more gal than the plain model."""
    s = cell.summary
    ratio = s.get("perplexity_ratio")
    return (
        not cell.setting.plain
        and s["broken_share"] <= MAX_BROKEN
        and ratio is not None
        and ratio <= MAX_PERPLEXITY_RATIO
        and s["marker_share"] > plain_markers
    )


def recommend(cells: Sequence[SweepCell]) -> SweepCell | None:
    """The highest marker share among readable cells (ties: fewer broken, lower perplexity, smaller strength)."""
    plain = max((c.summary["marker_share"] for c in cells if c.setting.plain), default=0.0)
    ok = [c for c in cells if eligible(c, plain)]
    if not ok:
        return None
    return max(
        ok,
        key=lambda c: (
            round(c.summary["marker_share"], 6),
            -c.summary["broken_share"],
            -c.summary["perplexity_ratio"],
            -abs(c.strength),
        ),
    )


def cells_table(cells: Sequence[SweepCell]) -> list[dict]:
    """Flat rows for CSV/JSON and the app's heatmaps."""
    rows = []
    for c in cells:
        summary = {k: v for k, v in c.summary.items() if k != "broken_examples"}
        rows.append({"layers": c.setting.layers, "strength": c.strength, "mode": c.setting.mode, **summary})
    return rows
