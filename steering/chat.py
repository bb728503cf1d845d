"""The side-by-side chat without a UI: each column's history, one turn's bookkeeping and streaming, and the score
line under a reply. The app's Chat tab wires these to its components; nothing here imports gradio (and torch only
inside the functions that steer or generate).

Two columns, plain (strength 0) and steered (strength s), each continue their own conversation: the steered
column's model sees its own earlier replies; both rows still run in one batched generate call. Messages are
{"role", "content"} dicts with the raw text; `shown` escapes them for display.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass

from .judge import ReplyScore, score_reply

SIDES = ("plain", "steered")  # the chat columns, in row order of the batched generate call
LABELS = {"plain": "ふつう / Plain", "steered": "ギャル / Steered"}
History = dict[str, list[dict]]
# What the app shows for a turn: plain messages, steered messages, their score lines, and the history to keep.
TurnView = tuple[list[dict], list[dict], str, str, History]


def new_history() -> History:
    """An empty conversation for each column."""
    return {side: [] for side in SIDES}


def user_text(message: str | None, max_chars: int | None = None) -> str:
    """The message to send, stripped; a blank one, or one over `max_chars` characters, is refused (before anything
    tokenizes it)."""
    text = str(message or "").strip()
    if not text:
        raise ValueError("メッセージを書いてね / write a message first")
    if max_chars is not None and len(text) > max_chars:
        raise ValueError(
            f"メッセージが長すぎます / the message is {len(text):,} characters, over the {max_chars:,}-character "
            "limit for one message; shorten it"
        )
    return text


def parse_half_life(value: float | str | None) -> float | None:
    """The half-life field as Steering takes it: tokens over which the strength halves during a reply.
    Empty or 0 means a constant strength (None); a negative or non-finite number is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        tokens = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"half-life: {value!r} is not a number of tokens (0 or empty = constant)") from None
    if not math.isfinite(tokens) or tokens < 0:
        raise ValueError(f"half-life: {value!r} must be a positive number of tokens (0 or empty = constant)")
    return tokens or None


def shown(messages: Sequence[dict]) -> list[dict]:
    """Messages with their text escaped: a chat widget that inserts content as (sanitized) HTML then shows user and
    model text as plain text. An empty reply shows as "…" (still generating)."""
    return [{"role": m["role"], "content": html.escape(m["content"], quote=False) or "…"} for m in messages]


def score_text(score: ReplyScore) -> str:
    """What the judge found in one reply: style, the markers, and where (and why) it breaks."""
    markers = ", ".join(score.markers) or "none"
    line = f"style {score.style:.1f} / 100 chars — markers: {markers}"
    if score.broken:
        reasons = ", ".join(score.reasons) or "broken"
        where = f"breaks at character {score.onset_char}" if score.onset_char is not None else "breaks"
        line += f" — ⚠ {where} ({reasons})"
    return line


def score_line(text: str, lang: str, label: str) -> str:
    """The Markdown line under a reply: its label and score_text (HTML-escaped)."""
    return f"**{label}** — {html.escape(score_text(score_reply(text, lang)), quote=False)}"


def pending_line(label: str) -> str:
    """The line under a reply still being written (it is judged once complete)."""
    return f"**{label}** — …"


@dataclass(frozen=True)
class Turn:
    """One message sent to both columns: what each column's model sees, and the histories once replies arrive."""

    history: History
    message: str

    @classmethod
    def start(cls, history: History | None, message: str | None, max_chars: int | None = None) -> Turn:
        """A turn on `history` (None: a fresh conversation); a blank message, or one over `max_chars` characters
        (see generate.max_message_chars), is refused."""
        history = history or new_history()
        return cls({side: list(history.get(side, [])) for side in SIDES}, user_text(message, max_chars))

    @property
    def user(self) -> dict:
        return {"role": "user", "content": self.message}

    def contexts(self) -> list[list[dict]]:
        """Per column (SIDES order): its own history plus the new message."""
        return [self.history[side] + [self.user] for side in SIDES]

    def with_replies(self, texts: Sequence[str]) -> History:
        """Each column's history with the message and its reply (SIDES order) appended."""
        if len(texts) != len(SIDES):
            raise ValueError(f"{len(texts)} replies for {len(SIDES)} columns")
        return {
            side: self.history[side] + [self.user, {"role": "assistant", "content": text}]
            for side, text in zip(SIDES, texts)
        }

    def view(self, texts: Sequence[str], done: bool, lang: str) -> TurnView:
        """What the two columns show for these replies: escaped messages and, once `done`, each reply's score line
        and the history with the turn appended (before that, the history as it was)."""
        columns = self.with_replies(texts)
        lines = [score_line(t, lang, LABELS[s]) if done else pending_line(LABELS[s]) for s, t in zip(SIDES, texts)]
        return shown(columns["plain"]), shown(columns["steered"]), lines[0], lines[1], columns if done else self.history


def column_steering(
    vector,
    num_layers: int,
    layers: str | None,
    strength: float,
    scale: str,
    apply_to: str,
    mode: str = "add",
    half_life: float | str | None = None,
):
    """The steered column's Steering from the Chat tab's values (blank layers: the vector's own), checked now: a
    bad setting (a layer without a direction, the calibrated scale on a bare vector, clamp on a vector without
    recorded projections) is a ValueError before anything is generated."""
    from .steer import Steering, layer_pushes

    layers = (layers or "").strip() or None
    steering = Steering(vector, layers, float(strength), scale, apply_to, mode, parse_half_life(half_life))
    layer_pushes(steering, num_layers)
    return steering


def decoding(max_new_tokens: float, temperature: float, seed: float, repetition_penalty: float = 1.0):
    """GenerationSettings from the Chat tab's numbers (a UI may give floats; temperature 0 is greedy). The values go
    in as given: GenerationSettings turns whole floats into ints and refuses NaN, 2.5 tokens or a seed past 64 bits
    with a ValueError naming the field."""
    from .generate import GenerationSettings

    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        repetition_penalty=repetition_penalty,
    )


def stream_turn(
    loaded,
    turn: Turn,
    steering,
    settings,
    lang: str,
    on_notice: Callable[[str], None] | None = None,
    scheduler=None,
) -> Iterator[TurnView]:
    """Both columns' replies from ONE batched generate call (rows: strength 0 and the steering's strength): a view
    before the first token and after each step, then the judged view with the new history. Closing the iterator
    stops the generate call (and removes its hooks) at once. `on_notice` hears about a conversation cut to fit the
    context.

    With a `scheduler` (steering.scheduler.Scheduler) the two rows (plain, and steered) join the scheduler's next
    batch with every other waiting chat instead of a generate call of their own; closing the iterator cancels them.
    Its SchedulerBusy and ValueError come at the first step, before any view."""
    from .generate import stream_rows

    texts = [""] * len(SIDES)
    if scheduler is None:
        yield turn.view(texts, False, lang)
        stream = stream_rows(loaded, turn.contexts(), [0.0, float(steering.strength)], steering, settings, on_notice)
        with closing(stream):
            for texts in stream:
                yield turn.view(texts, False, lang)
        yield turn.view(texts, True, lang)
        return
    from .scheduler import Row

    plain, steered = turn.contexts()
    ticket = scheduler.submit(loaded, [Row(plain, None, settings), Row(steered, steering, settings)])
    try:  # however the reader leaves (even before the first token), its rows stop
        if ticket.notice and on_notice:
            on_notice(ticket.notice)
        yield turn.view(texts, False, lang)
        for texts in ticket.stream():
            yield turn.view(texts, False, lang)
        yield turn.view(texts, True, lang)
    finally:
        ticket.cancel()  # (nothing left to stop once it is done)
