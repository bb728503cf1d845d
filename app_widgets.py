"""The studio page's small parts, shared by app.py's handlers and app_layout.py: how events queue, toasts and errors
in the page's language, the sliders whose range depends on a setting, and the chat's controls that need neither
the model nor the vectors (Stop, Clear, a column's trash icon, what a failed reply says)."""

from __future__ import annotations

import html
import logging
from contextlib import contextmanager

import gradio as gr

import app_text as T
from steering.chat import new_history
from steering.layer_band import band_of
from steering.messages import Text, localized
from steering.scheduler import SchedulerBusy
from steering.serve import MONO_FONTS, SYSTEM_FONTS
from steering.settings import STRENGTH_RANGE
from steering.vectors import VectorFileError

LOG = logging.getLogger("gyaru-studio")
THEME = gr.themes.Default(primary_hue="pink", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
CSS = ".score-line p { margin: 0; font-size: 0.9em; }"
MODEL_WORK = dict(concurrency_limit=1, concurrency_id="model")  # one generation or load at a time, in one queue slot
COSMETIC = dict(api_visibility="private", queue=False)  # no model work, not part of the API
# Chats do not take the model's slot: up to 16 at once (32 rows, SCHEDULER's batch) join SCHEDULER's batches.
CHAT_WORK = dict(concurrency_limit=16, concurrency_id="chat")
# Notes that follow a control: queued, and per page one at a time with only the latest waiting (always_last), so an
# older note never overwrites a newer one (unqueued replies could arrive out of order).
NOTE_WORK = dict(concurrency_limit=None, trigger_mode="always_last", api_visibility="private")
UI_WORK = dict(concurrency_limit=None)  # queued only so that its toasts reach the page; no model work
# Gradio's queue looks for new events every 1 ms, and for progress every 10 ms, even when idle: on 2 cores that took
# 7 % of a core with nobody on the page, and slowed the decoding steps of 8 chatting pages by a fifth (README, Load).
QUEUE_POLL_SECONDS, PROGRESS_POLL_SECONDS = 0.01, 0.05  # an event starts at most 10 ms later


def calm_queue(demo: gr.Blocks, poll: float = QUEUE_POLL_SECONDS) -> None:
    """Make the queue of `demo` look for new events every `poll` seconds and send progress every 50 ms (attributes
    of Gradio's Queue, left alone if a Gradio release renames them: tests/test_app.py notices)."""
    for name, seconds in (("sleep_when_free", poll), ("progress_update_sleep_when_free", PROGRESS_POLL_SECONDS)):
        if isinstance(getattr(demo._queue, name, None), (int, float)):
            setattr(demo._queue, name, seconds)


def toast(kind: str, message, lang: str | None) -> None:
    """A toast in the page's language: `kind` is error, warning or info; `message` a str, Message or exception
    (escaped: Gradio shows toasts as HTML, and messages quote what the user typed)."""
    show = {"error": gr.Warning, "warning": gr.Warning, "info": gr.Info}[kind]  # an error toast keeps the page as is
    message = message() if isinstance(message, Text) else message
    title = T.TOAST_TITLE[kind].say(lang)
    show(html.escape(localized(message, lang), quote=False), title=title, duration=None if kind == "error" else 10)


@contextmanager
def user_errors(lang: str | None = None, *kinds: type[Exception]):
    """A library ValueError (bad layers, a clamp the vector cannot do, ...) or one of `kinds`, raised as gr.Error in
    the page's language (events whose outputs stay as they were show it as a toast)."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, *kinds) as exc:
        raise gr.Error(html.escape(localized(exc, lang), quote=False), title=T.TOAST_TITLE["error"].say(lang)) from None


def strength_slider(scale: str, value: float, **props):
    """The strength slider's range for `scale`, holding `value` (clamped to it); `props` when building it."""
    lo, hi, step = STRENGTH_RANGE.get(scale, STRENGTH_RANGE["calibrated"])
    return gr.Slider(minimum=lo, maximum=hi, step=step, value=min(max(float(value), lo), hi), **props)


def layer_sliders(first: int, last: int, layers: str | None = None, num_layers: int | None = None) -> tuple:
    """The layer sliders spanning layers `first`..`last`, showing `layers` when it is one band of them."""
    band = band_of(layers, num_layers or last + 1) if layers else None
    start = dict(value=band[0]) if band else {}
    width = dict(value=band[1]) if band else {}
    span = last - first + 1
    return gr.Slider(minimum=first, maximum=last, **start), gr.Slider(minimum=1, maximum=span, **width)


# --------------------------------------------------------------------------- the chat's controls


def chat_failure(exc: Exception, lang: str | None) -> str:
    """What went wrong in a chat, in the page's language (an unexpected failure is logged with its traceback)."""
    if isinstance(exc, (ValueError, VectorFileError)):
        return localized(exc, lang)
    if isinstance(exc, SchedulerBusy):
        return T.BUSY.say(lang)
    LOG.exception("generation failed")  # out of memory, a model bug: the user still hears of it
    return T.GENERATION_FAILED.say(lang, error=f"{type(exc).__name__}: {exc}")


def on_stream_end():
    """The reply ended or was stopped: Send is back."""
    return False, gr.Button(visible=True), gr.Button(visible=False)


def on_buttons_back(busy: bool):
    """After a page's stream: Send is back, unless another reply still streams (the stream was a refused send)."""
    return (gr.skip(), gr.skip()) if busy else on_stream_end()[1:]


def on_clear():
    """Stop any reply and empty both columns, their score lines, the meter and this user's chat history."""
    return [], [], "", "", new_history(), "", *on_stream_end()


def on_clear_column(side: str):
    """A column's own trash icon: that column's conversation starts afresh (the other keeps its own)."""

    def clear(history: dict | None):
        kept = {**(history or new_history()), side: []}
        return ("", kept, "") if side == "steered" else ("", kept)

    clear.__name__ = f"on_clear_{side}"
    return clear


# Stop and Clear reach a page's stream through this (Gradio's cancel may hit a later, refused run of the stream
# event instead of the one streaming): per page id (a random id in the page's gr.State), (presses, the last one).
STOPPED: dict[str, tuple[int, str | None]] = {}


def stops(page: str) -> tuple[int, str | None]:
    """How often Stop or Clear was pressed on this page, and which was last."""
    return STOPPED.get(page, (0, None))


def on_stop(page: str):
    """Stop this page's reply (keeping what came) and bring Send back."""
    STOPPED[page] = (stops(page)[0] + 1, "stop")
    return on_stream_end()


def on_clear_page(page: str):
    """Stop this page's reply and empty both columns (see on_clear)."""
    STOPPED[page] = (stops(page)[0] + 1, "clear")
    return on_clear()
