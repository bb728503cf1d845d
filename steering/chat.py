"""The side-by-side chat without a UI: each column's history, one turn's bookkeeping and streaming, and the score
line under a reply. The app's Chat tab wires these to its components; nothing here imports gradio (and torch only
inside the functions that steer or generate).

Two columns, plain (strength 0) and steered (strength s), each continue their own conversation: the steered
column's model sees its own earlier replies; both rows still run in one batched generate call. Messages are
{"role", "content"} dicts with the raw text; `shown` escapes them for display. With a meter layer, the steered reply
also comes as meter.py's coloured HTML (each token's projection at that layer, recorded during the generation).

Two languages meet here: `lang` is the vector's (the replies') language, which the judge scores in; `ui_lang` is
the page's ("en"/"ja"), which every displayed text (labels, score lines, the meter's caption, errors via
messages.localized) is said in.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass

from .judge import ReplyScore, score_reply
from .messages import Message, Text, localized

SIDES = ("plain", "steered")  # the chat columns, in row order of the batched generate call
# A page gets an update every second token, at most 10 a second. Each update costs the web server about 2 ms of CPU
# (gradio's event, postprocessing in worker threads, diff and message), taken from the generation: under load the
# pages' updates share a budget of PAGE_UPDATES_PER_SECOND, so with 8 chats running each gets one every half second.
PAGE_UPDATE_SECONDS, PAGE_UPDATE_TOKENS = 0.1, 2
PAGE_UPDATES_PER_SECOND = 16
# Each column's label: a messages.Message (its English str; `.in_lang("ja")` or column_label for the page's).
LABELS: dict[str, Message] = {"plain": Text(en="Plain", ja="ふつう")(), "steered": Text(en="Steered", ja="ギャル")()}
History = dict[str, list[dict]]
# What the app shows for a turn: plain messages, steered messages, their score lines, the history to keep, and the
# steered reply's gyaru meter HTML ("" when the meter is off).
TurnView = tuple[list[dict], list[dict], str, str, History, str]

WRITE_FIRST = Text(en="write a message first", ja="メッセージを書いてね")
TOO_LONG = Text(
    en="the message is {chars:,} characters, over the {limit:,}-character limit for one message; shorten it",
    ja="メッセージが長すぎます: {chars:,} 文字で、1通の上限 {limit:,} 文字を超えています。短くしてね",
)
HALF_LIFE_NAN = Text(
    en="half-life: {value!r} is not a number of tokens (0 or empty = constant)",
    ja="半減期: {value!r} はトークン数ではありません (0 か空欄 = 一定)",
)
HALF_LIFE_BAD = Text(
    en="half-life: {value!r} must be a positive number of tokens (0 or empty = constant)",
    ja="半減期: {value!r} は正のトークン数にしてね (0 か空欄 = 一定)",
)
SCORE = Text(
    en="style {style:.1f} / 100 chars — markers: {markers}", ja="スタイル {style:.1f} / 100文字 — マーカー: {markers}"
)
NO_MARKERS = Text(en="none", ja="なし")
BREAKS_AT = Text(en="breaks at character {char}", ja="{char}文字目で崩れる")
BREAKS = Text(en="breaks", ja="崩れる")
BROKEN = Text(en="broken", ja="崩れ")
ENGLISH_ONLY = Text(
    en="This model only knows English: a Japanese message gets a poor reply, and the gyaru vector needs a "
    "Japanese-capable model such as Qwen2.5.",
    ja="このモデルは英語しか知りません: 日本語のメッセージにはまともに返事できず、ギャルのベクトルには Qwen2.5 "
    "のような日本語のできるモデルが必要です。",
)


def column_label(side: str, ui_lang: str = "en") -> str:
    """A column's label ("plain"/"steered") in the page's language."""
    return LABELS[side].in_lang(ui_lang)


def language_notice(message: str, model_lang: str) -> Message | None:
    """A notice when `message` holds Japanese (kana or kanji) and the model speaks English only (`model_lang`,
    settings.model_lang of its spec, is "en"); None otherwise."""
    from .style import guess_lang

    if model_lang != "en" or guess_lang(str(message or "")) != "ja":
        return None
    return ENGLISH_ONLY()


def new_history() -> History:
    """An empty conversation for each column."""
    return {side: [] for side in SIDES}


def user_text(message: str | None, max_chars: int | None = None) -> str:
    """The message to send, stripped; a blank one, or one over `max_chars` characters, is refused (before anything
    tokenizes it)."""
    text = str(message or "").strip()
    if not text:
        raise ValueError(WRITE_FIRST())
    if max_chars is not None and len(text) > max_chars:
        raise ValueError(TOO_LONG(chars=len(text), limit=max_chars))
    return text


def parse_half_life(value: float | str | None) -> float | None:
    """The half-life field as Steering takes it: tokens over which the strength halves during a reply.
    Empty or 0 means a constant strength (None); a negative or non-finite number is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        tokens = float(value)
    except (TypeError, ValueError):
        raise ValueError(HALF_LIFE_NAN(value=value)) from None
    if not math.isfinite(tokens) or tokens < 0:
        raise ValueError(HALF_LIFE_BAD(value=value))
    return tokens or None


def shown(messages: Sequence[dict]) -> list[dict]:
    """Messages with their text escaped: a chat widget that inserts content as (sanitized) HTML then shows user and
    model text as plain text. An empty reply shows as "…" (still generating)."""
    return [{"role": m["role"], "content": html.escape(m["content"], quote=False) or "…"} for m in messages]


def score_text(score: ReplyScore, ui_lang: str = "en") -> str:
    """What the judge found in one reply, in the page's language: style, the markers, and where (and why) it
    breaks (marker and reason names are the judge's own ids)."""
    markers = ", ".join(score.markers) or NO_MARKERS.say(ui_lang)
    line = SCORE.say(ui_lang, style=score.style, markers=markers)
    if score.broken:
        reasons = ", ".join(score.reasons) or BROKEN.say(ui_lang)
        where = BREAKS_AT.say(ui_lang, char=score.onset_char) if score.onset_char is not None else BREAKS.say(ui_lang)
        line += f" — ⚠ {where} ({reasons})"
    return line


def score_line(text: str, lang: str, label: str, ui_lang: str = "en") -> str:
    """The Markdown line under a reply judged in `lang`: its label (a Message is said in `ui_lang`) and score_text
    in `ui_lang`, HTML-escaped."""
    line = score_text(score_reply(text, lang), ui_lang)
    return f"**{html.escape(localized(label, ui_lang), quote=False)}** — {html.escape(line, quote=False)}"


def pending_line(label: str, ui_lang: str = "en") -> str:
    """The line under a reply still being written (it is judged once complete)."""
    return f"**{html.escape(localized(label, ui_lang), quote=False)}** — …"


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

    def view(self, texts: Sequence[str], done: bool, lang: str, ui_lang: str = "en", meter: str = "") -> TurnView:
        """What the two columns show for these replies: escaped messages and, once `done`, each reply's score line
        (judged in `lang`, said in `ui_lang`) and the history with the turn appended (before that, the history as
        it was); `meter` (the steered reply's meter HTML, or "") rides along last."""
        columns = self.with_replies(texts)
        lines = [
            score_line(t, lang, LABELS[s], ui_lang) if done else pending_line(LABELS[s], ui_lang)
            for s, t in zip(SIDES, texts)
        ]
        history = columns if done else self.history
        return shown(columns["plain"]), shown(columns["steered"]), lines[0], lines[1], history, meter


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


def page_update_interval(scheduler) -> float:
    """Seconds between a page's updates now: PAGE_UPDATE_SECONDS, or longer while so many requests run in
    `scheduler` that their updates together would pass PAGE_UPDATES_PER_SECOND."""
    return max(PAGE_UPDATE_SECONDS, scheduler.load()["running"] / PAGE_UPDATES_PER_SECOND)


def page_updates(ticket, scheduler):
    """`ticket`'s updates (a request submitted to `scheduler`) as a page reads them: every PAGE_UPDATE_TOKENS
    tokens, at most one per page_update_interval."""
    return ticket.updates(min_interval=lambda: page_update_interval(scheduler), every=PAGE_UPDATE_TOKENS)


def stream_turn(
    loaded,
    turn: Turn,
    steering,
    settings,
    lang: str,
    on_notice: Callable[[str], None] | None = None,
    scheduler=None,
    meter_layer: int | None = None,
    ui_lang: str = "en",
) -> Iterator[TurnView]:
    """Both columns' replies from ONE batched generate call (rows: strength 0 and the steering's strength): a view
    before the first token and after each step, then the judged view with the new history. Closing the iterator
    stops the generate call (and removes its hooks) at once. `on_notice` hears about a conversation cut to fit the
    context. Replies are judged in `lang`; texts are said in `ui_lang`.

    With a `scheduler` (steering.scheduler.Scheduler) the two rows (plain, and steered) join the scheduler's running
    batch, with every other chat, instead of a generate call of their own; views come every PAGE_UPDATE_TOKENS
    tokens, at most one per page_update_interval; closing the iterator cancels the rows.
    Its SchedulerBusy and ValueError come at the first step, before any view.

    With `meter_layer` (see meter.default_meter_layer) both rows record the gyaru meter at that layer during the
    generation, and each view's last item is the steered reply as meter.turn_meter_html (its tokens coloured by
    their projection relative to the plain reply's mean so far); without a scheduler a private one runs the turn.
    A layer where the vector has no direction is a ValueError at the first step. Without it the item is ""."""
    if meter_layer is not None and scheduler is None:
        from .scheduler import Scheduler

        private = Scheduler(max_batch_rows=len(SIDES), max_queue=1, gather_seconds=0.0)
        try:
            yield from stream_turn(loaded, turn, steering, settings, lang, on_notice, private, meter_layer, ui_lang)
        finally:
            private.close()
        return
    texts = [""] * len(SIDES)
    if scheduler is None:
        from .generate import stream_rows

        yield turn.view(texts, False, lang, ui_lang)
        stream = stream_rows(loaded, turn.contexts(), [0.0, float(steering.strength)], steering, settings, on_notice)
        with closing(stream):
            for texts in stream:
                yield turn.view(texts, False, lang, ui_lang)
        yield turn.view(texts, True, lang, ui_lang)
        return
    from .meter import turn_meter_html
    from .scheduler import Row

    def meter(pieces: Sequence | None) -> str:
        if meter_layer is None:
            return ""
        plain, steered = pieces or (None, [])
        return turn_meter_html(steered, plain, steering.vector, meter_layer, ui_lang)

    contexts = turn.contexts()
    rows = [Row(context, plan, settings, meter_layer=meter_layer) for context, plan in zip(contexts, (None, steering))]
    ticket = scheduler.submit(loaded, rows)
    try:  # however the reader leaves (even before the first token), its rows stop
        if ticket.notice and on_notice:
            on_notice(ticket.notice)
        yield turn.view(texts, False, lang, ui_lang, meter(None))
        update = None
        for update in page_updates(ticket, scheduler):
            if update.done:  # the final view below shows it (one server round trip less per reply)
                break
            yield turn.view(update.texts, False, lang, ui_lang, meter(update.pieces))
        texts, pieces = (update.texts, update.pieces) if update is not None else (texts, None)
        yield turn.view(texts, True, lang, ui_lang, meter(pieces))
    finally:
        ticket.cancel()  # (nothing left to stop once it is done)


@dataclass(frozen=True)
class ChatRequest:
    """One turn asked for, checked: everything a bad field would refuse (a blank or oversized message, layers the
    vector lacks, a bad strength, mode or decoding number) is refused by `check`, before any generation."""

    loaded: object
    turn: Turn
    vector: object
    steering: object
    settings: object

    @classmethod
    def check(cls, loaded, vector, message, history, steering: Sequence, *decoding_fields) -> ChatRequest:
        """`steering`: (layers, strength, scale, apply_to, mode, half_life) as column_steering takes them;
        `decoding_fields`: (max_new_tokens, temperature, seed, repetition_penalty) as decoding takes them."""
        from .generate import max_message_chars

        turn = Turn.start(history, message, max_message_chars(loaded))  # a 3 MB message is refused untokenized
        layers, strength, scale, apply_to, mode, half_life = steering
        checked = column_steering(vector, loaded.num_layers, layers, strength, scale, apply_to, mode, half_life)
        return cls(loaded, turn, vector, checked, decoding(*decoding_fields))
