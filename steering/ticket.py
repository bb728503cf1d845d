"""A submitted request as its caller sees it: its rows' progress (`updates`, `stream`, `aupdates` for asyncio),
`cancel`, and the `result`. The scheduler's worker (live_batch.py, row_decode.py) publishes to it; readers are
woken, never polled, and a slow reader skips to the latest state."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from .meter import Piece
from .models import LoadedModel
from .row_decode import CANCELLED, RowState


@dataclass
class Update:
    """A caller's rows so far: the text of each, why each ended (None while running), whether all ended, and per
    row its meter pieces: (text, projection) per token (characters never split), joining to exactly its text (None
    for a row without meter_layer)."""

    texts: list[str]
    finished: list[str | None]
    done: bool
    pieces: list[list[Piece] | None] = field(default_factory=list)


@dataclass
class TicketResult:
    texts: list[str]
    finished: list[str]
    token_counts: list[int]
    prompt_tokens: list[int]
    notice: str | None
    queued_s: float  # submit -> its batch started
    first_token_s: float | None  # submit -> its first token
    total_s: float  # submit -> its last row ended
    pieces: list[list[Piece] | None] = field(default_factory=list)  # each row's meter pieces (see Update)


class Ticket:
    """A submitted request: read its rows' progress, cancel it, or wait for its result. Thread-safe; `aupdates`
    serves asyncio code (a web server) without holding a thread per waiting caller."""

    def __init__(self, loaded: LoadedModel, rows: list[RowState]):
        self.loaded, self._rows = loaded, rows
        self.notice = next((r.prompt.notice for r in rows if r.prompt.notice), None)
        self.prompt_tokens = [len(r.prompt.input_ids) for r in rows]
        self.submitted = time.perf_counter()
        self.started: float | None = None
        self.first_token: float | None = None
        self.ended: float | None = None
        self._cond = threading.Condition()
        self._version = 0
        self._done = False
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def __len__(self) -> int:
        return len(self._rows)

    # ---------------------------------------------------------------- caller side

    def cancel(self) -> None:
        """Stop this request's rows at the next step (or drop it from the queue); other requests run on. Nothing
        once it is done."""
        with self._cond:
            if not self._done:
                self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done

    def _snapshot(self) -> Update:
        shown = [r.shown for r in self._rows]  # each row's text and pieces, set together
        return Update([s[0] for s in shown], [r.finished for r in self._rows], self._done, [s[1] for s in shown])

    def _news(self, seen: int) -> tuple[int, Update] | None:
        """(version, update) when anything changed since version `seen`, else None; raises what the generation
        raised. Called under the lock."""
        if self._version == seen and not self._done:
            return None
        if self._error is not None:
            raise self._error
        return self._version, self._snapshot()

    def _abandon(self) -> None:
        """A reader left early: its request stops."""
        if not self._done:
            self.cancel()

    def updates(
        self, timeout: float | None = None, min_interval: float | Callable[[], float] = 0.0, every: int = 1
    ) -> Iterator[Update]:
        """Each change of this request's rows (from its first token) until all ended; coalesced: a slow reader skips
        to the latest. A reader whose every update is costly (a web page) can ask for fewer, larger ones: at most
        one per `min_interval` seconds (a number, or a function asked before each update) and per `every` steps (the
        first token and the end come at once). Raises what the generation raised; TimeoutError after `timeout`
        seconds without news. Closing the iterator early cancels the request."""
        seen, shown = 0, 0.0  # version 0: nothing generated yet; when the last update was yielded
        try:
            while True:
                interval = min_interval() if callable(min_interval) else min_interval  # (asked outside the lock)
                with self._cond:
                    step = 1 if not seen else every  # one version per step the request took part in
                    if not self._cond.wait_for(lambda s=seen + step: self._version >= s or self._done, timeout):
                        raise TimeoutError(f"no progress in {timeout} s")
                    rest = shown + interval - time.perf_counter()
                    if seen and rest > 0:
                        self._cond.wait_for(lambda: self._done, rest)  # news keeps coming meanwhile
                    seen, update = self._news(seen)
                shown = time.perf_counter()
                yield update
                if update.done:
                    return
        finally:
            self._abandon()

    def stream(self, timeout: float | None = None) -> Iterator[list[str]]:
        """The text of every row after each change (like generate.stream_rows)."""
        for update in self.updates(timeout):
            yield update.texts

    async def aupdates(self) -> AsyncIterator[Update]:
        """`updates` for asyncio: awaits news without blocking the loop or a thread; cancelled with its task."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            self._waiters.add(waiter)
        seen = 0
        try:
            while True:
                waiter[1].clear()
                with self._cond:
                    news = self._news(seen)
                if news is None:
                    await waiter[1].wait()
                    continue
                seen, update = news
                yield update
                if update.done:
                    return
        finally:
            with self._cond:
                self._waiters.discard(waiter)
            self._abandon()

    def result(self, timeout: float | None = None) -> TicketResult:
        """Wait for every row to end; raises what the generation raised."""
        for _ in self.updates(timeout):
            pass
        return TicketResult(
            texts=[r.text for r in self._rows],
            finished=[r.finished for r in self._rows],
            token_counts=[r.count for r in self._rows],
            prompt_tokens=self.prompt_tokens,
            notice=self.notice,
            queued_s=(self.started or self.ended) - self.submitted,
            first_token_s=self.first_token - self.submitted if self.first_token else None,
            total_s=self.ended - self.submitted,
            pieces=[r.pieces for r in self._rows],
        )

    # ---------------------------------------------------------------- worker side

    def _publish(self, done: bool = False, error: BaseException | None = None) -> None:
        with self._cond:
            if self._done:
                return
            self._version += 1
            if error is not None:
                self._error = error
            if done or error is not None:
                self._done = True
                self.ended = time.perf_counter()
            self._cond.notify_all()
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that event loop is closed: its reader is gone
                pass

    def _end_unrun(self) -> None:
        """Cancelled while waiting: its rows end without running."""
        for row in self._rows:
            row.finished = row.finished or CANCELLED
        self._publish(done=True)

    def _fail(self, error: BaseException) -> None:
        for row in self._rows:
            if row.finished is None:
                row.finished = CANCELLED
        self._publish(error=error)
