"""Many users, one model: a scheduler that runs the rows of every waiting chat request in ONE batched generation.

Callers (page sessions, API requests, scripts; any thread) `submit` a request: one or more rows, each with its own
conversation, steering (a Steering, or None = plain) and decoding settings (max_new_tokens, temperature, top_p,
top_k, repetition_penalty, seed, plus stop strings and a minimum length). One worker thread owns the generation, a
live batch (live_batch.py): between any two of its tokens, every waiting request that fits (up to `max_batch_rows`
rows in all, first come first served) is prefilled and joins it, and each row leaves the step it ends, so a
request never waits for another's reply to finish. Steering is per row (row_steer.py's hooks). More than
`max_queue` waiting requests is `SchedulerBusy` ("busy, try again").

Decoding is per row (row_decode.py): each row's repetition penalty, minimum length, temperature / top-k / top-p and
seeded draw, so requests with different decoding settings share a batch; greedy rows give exactly their solo
`generate_rows` reply whenever they join, and a seeded sampled row gives the same reply whatever else shares its
batch (not the same draw as generate_rows' global-RNG sampling). Each row ends on its own max_new_tokens, end of
sequence, stop strings or cancellation.

Each caller reads only its own rows (`Ticket.updates`/`stream`/`aupdates`/`result`), decoded incrementally with
generate.Utf8SafeDecoder (never half a character) and with text that might begin a stop string held back. A caller
that cancels (or closes its stream) stops its rows at the next step; the other rows run on.

A row with `meter_layer` also gets its gyaru meter (meter.py): each shown token's projection onto the steering
vector's direction at that layer, recorded during the same generation (`Update.pieces`); a plain row reads the
direction of its request's steered row.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .checks import check_int
from .generate import GenerationSettings, prepare_prompt
from .live_batch import LiveBatch
from .meter import request_meters
from .models import LoadedModel
from .prefix_cache import PrefixCache
from .row_decode import CANCELLED, LENGTH, STOP, RowState, check_stops, run_batch
from .row_steer import plan_row
from .steer import Steering
from .ticket import Ticket, TicketResult, Update

__all__ = [
    "CANCELLED",
    "LENGTH",
    "STOP",
    "Row",
    "Scheduler",
    "SchedulerBusy",
    "SchedulerClosed",
    "Ticket",
    "TicketResult",
    "Update",
    "run_batch",
]


class SchedulerBusy(RuntimeError):
    """Too many requests are waiting: try again later."""


class SchedulerClosed(RuntimeError):
    """The scheduler was shut down before the request ran."""


@dataclass
class Row:
    """One reply to generate: a conversation, its steering (None = plain) and its decoding settings."""

    messages: Sequence[dict]
    steering: Steering | None = None
    settings: GenerationSettings | None = None  # None: GenerationSettings() (greedy, 128 tokens)
    stop: Sequence[str] = ()  # the reply ends before the first of these strings
    min_new_tokens: int = 0  # no end of sequence before this many tokens
    meter_layer: int | None = None  # record the gyaru meter at this layer (meter.py); None: off


@dataclass
class SchedulerStats:
    batches: int = 0  # admissions: requests prefilled together (into a new batch or a running one)
    joined: int = 0  # admissions into a running batch (between two of its tokens)
    rows: int = 0  # rows admitted
    largest_batch: int = 0  # most rows in one decoding step
    steps: int = 0  # decoding steps
    row_steps: int = 0  # rows over all steps (row_steps / steps: rows per step)
    step_seconds: float = 0.0  # time in decoding steps (step_seconds / steps: a step's cost at rows per step)
    admit_seconds: float = 0.0  # time in admissions (prefill passes), while running rows wait
    recent_batches: deque = field(default_factory=lambda: deque(maxlen=64))  # rows per admission, newest last


class Scheduler:
    """Queues chat requests from any thread and runs them in batches on one worker thread (started on first use).

    max_batch_rows: rows running at once (a request with more is refused; one that does not fit now waits for rows
    to end); max_queue: requests that may wait (beyond it, SchedulerBusy). Before a batch starts from empty the
    worker gathers: it waits until no request has arrived for `gather_seconds`, at most `max_gather_seconds` in
    all, so a burst of callers is prefilled together (sharing their common prompt start, prefill.py); a lone
    request waits `gather_seconds`. A caller that takes a while to make its request ready (checking its fields,
    reading a vector file) announces it with `incoming`, and the gathering waits for it too. Once a batch runs,
    waiting requests join it at its next step.
    prefix_cache_tokens: how many tokens of ended rows' keys and values to keep for later prompts that begin with
    them, such as a chat's next turn (prefix_cache.py; 0, the default: none).
    """

    def __init__(
        self,
        max_batch_rows: int = 32,
        max_queue: int = 64,
        gather_seconds: float = 0.01,
        max_gather_seconds: float = 0.1,
        prefix_cache_tokens: int = 0,
    ):
        self.max_batch_rows = check_int(max_batch_rows, "max_batch_rows", minimum=1)
        self.max_queue = check_int(max_queue, "max_queue", minimum=0)
        self.gather_seconds = max(0.0, float(gather_seconds))
        self.max_gather_seconds = max(self.gather_seconds, float(max_gather_seconds))
        self.stats = SchedulerStats()
        # keys and values of ended rows, so a chat's next turn computes only its new tokens (0: off)
        self.prefix_cache = PrefixCache(check_int(prefix_cache_tokens, "prefix_cache_tokens", minimum=0))
        self._queue: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running: list[Ticket] = []
        self._incoming = 0  # requests announced (`incoming`) and not yet submitted
        self._worker: threading.Thread | None = None

    # ---------------------------------------------------------------- callers

    def prepare(self, loaded: LoadedModel, rows: Sequence[Row]) -> Ticket:
        """Check and template every row (ValueError naming what is wrong) without queueing anything."""
        rows = list(rows)
        if not rows:
            raise ValueError("a request needs at least one row")
        if len(rows) > self.max_batch_rows:
            raise ValueError(f"{len(rows)} rows in one request, more than the {self.max_batch_rows} a batch holds")
        states = []
        meters = request_meters(loaded, rows)
        for row, meter in zip(rows, meters):
            settings = row.settings or GenerationSettings()
            settings.check()
            stops = check_stops(row.stop)
            min_new = check_int(row.min_new_tokens, "min_new_tokens", minimum=0, maximum=settings.max_new_tokens)
            prompt = prepare_prompt(loaded, row.messages, settings)
            states.append(RowState(prompt, plan_row(loaded, row.steering), settings, stops, min_new, meter))
        return Ticket(loaded, states)

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce a request on its way to `submit` (inside the block): a batch gathering from empty waits for it
        (at most max_gather_seconds in all). Eight page sessions sending their next turns together finish checking
        them tens of milliseconds apart; without it, one that came after a quiet gap missed their shared prefill
        and waited for it. A block left without a submit (a refused request) stops the wait."""
        with self._cond:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                self._cond.notify_all()

    def submit(self, loaded: LoadedModel, rows: Sequence[Row]) -> Ticket:
        """Queue a request; its rows join the live batch at its next step. ValueError for a bad row, SchedulerBusy when
        `max_queue` requests are already waiting, SchedulerClosed after close()."""
        ticket = self.prepare(loaded, rows)
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the scheduler is shut down")
            if len(self._queue) >= self.max_queue:
                raise SchedulerBusy(f"busy, try again: {len(self._queue)} requests are already waiting")
            self._queue.append(ticket)
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="steering-scheduler", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        return ticket

    def chat(self, loaded: LoadedModel, rows: Sequence[Row], timeout: float | None = None) -> TicketResult:
        """Submit and wait for the result."""
        return self.submit(loaded, rows).result(timeout)

    def load(self) -> dict:
        """Waiting requests, running requests and their rows, and announced requests (`incoming`) now (a status
        line, a health check, a page pacing its updates)."""
        with self._cond:
            running = [t for t in self._running if not t.done]
            rows = sum(len(t) for t in running)
            return {
                "waiting": len(self._queue),
                "running": len(running),
                "running_rows": rows,
                "incoming": self._incoming,
            }

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking requests, fail the waiting ones, cancel the running batch and wait for the worker."""
        with self._cond:
            self._closed = True
            waiting, self._queue = list(self._queue), deque()
            running = list(self._running)
            self._cond.notify_all()
        for ticket in waiting:
            ticket._fail(SchedulerClosed("the scheduler was shut down before this request ran"))
        for ticket in running:
            ticket.cancel()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)

    # ---------------------------------------------------------------- worker

    def _take(self, live: LiveBatch | None) -> list[Ticket]:
        """The requests to admit now (under the lock): waiting ones in order that share the live batch's model (or
        the first one's) and fit in the rows it has left; cancelled ones are dropped. Every row ends on its own,
        so rows of any lengths share a batch."""
        running = live is not None and bool(live.rows)
        if running and not live.joinable():
            return []
        batch: list[Ticket] = []
        model = live.loaded if running else None
        room = self.max_batch_rows - (len(live.rows) if running else 0)
        keep: deque[Ticket] = deque()
        while self._queue:
            ticket = self._queue.popleft()
            if ticket.cancelled:
                ticket._end_unrun()
                continue
            if (model or ticket.loaded) is not ticket.loaded:
                keep.append(ticket)
                continue
            if len(ticket) > room:
                keep.append(ticket)
                keep.extend(self._queue)
                self._queue.clear()
                break
            model = ticket.loaded
            batch.append(ticket)
            room -= len(ticket)
        self._queue = keep
        return batch

    def _gather(self) -> None:
        """Wait for a quiet gap of gather_seconds with no new request and none announced (`incoming`), at most
        max_gather_seconds in all."""
        if not self.gather_seconds:
            return
        deadline = time.perf_counter() + self.max_gather_seconds
        while True:
            with self._cond:  # announced requests first: their submits (or refusals) end the wait
                self._cond.wait_for(lambda: not self._incoming, max(0.0, deadline - time.perf_counter()))
                seen = len(self._queue)
            time.sleep(min(self.gather_seconds, max(0.0, deadline - time.perf_counter())))
            with self._cond:
                quiet = len(self._queue) == seen and not self._incoming
                rows = sum(len(t) for t in self._queue)
            if quiet or rows >= self.max_batch_rows or time.perf_counter() >= deadline:
                return

    def _loop(self) -> None:
        live: LiveBatch | None = None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed or (live is not None and live.rows))
                if self._closed:
                    break
            if live is None or not live.rows:
                self._gather()  # a new batch: let a burst of callers arrive together
            with self._cond:
                joiners = self._take(live)
            if joiners:
                self._admit(live := self._batch_for(live, joiners[0].loaded), joiners)
            if live is not None and live.rows:
                self.stats.steps += 1
                self.stats.row_steps += len(live.rows)
                self.stats.largest_batch = max(self.stats.largest_batch, len(live.rows))
                started = time.perf_counter()
                live.step()
                self.stats.step_seconds += time.perf_counter() - started
            with self._cond:
                self._running = live.tickets if live is not None else []
        if live is not None:
            live.close()

    def _batch_for(self, live: LiveBatch | None, loaded: LoadedModel) -> LiveBatch:
        if live is not None and live.rows and live.loaded is loaded:
            return live
        return LiveBatch(loaded, self.prefix_cache if self.prefix_cache.max_tokens else None)

    def _admit(self, live: LiveBatch, joiners: list[Ticket]) -> None:
        rows = sum(len(t) for t in joiners)
        self.stats.batches += 1
        self.stats.joined += bool(live.rows)
        self.stats.rows += rows
        self.stats.recent_batches.append(rows)
        started = time.perf_counter()
        live.admit(joiners)
        self.stats.admit_seconds += time.perf_counter() - started
