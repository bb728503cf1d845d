"""Per-row decoding inside one batched generation (live_batch.py's loop): what lets the scheduler put requests with
different decoding settings, stop strings and lengths into one batch, and stream each caller its own rows.

    RowState   one row while it runs: prompt, steering plan, settings, UTF-8-safe decoder, visible text (and, for a
               metered row, its (text, projection) pieces: meter.py), why it ended
    RowLogits  each row's repetition penalty (over the row's own tokens, as transformers'
               RepetitionPenaltyLogitsProcessor computes it), its minimum length, and for sampled rows transformers'
               temperature / top-k / top-p warpers and a draw from the row's own seeded generator; greedy rows take
               the argmax, as generate does
    advance    hands each row the token its pass chose: feeds the decoder, ends rows (end of sequence, stop string,
               max_new_tokens, cancelled), gives metered rows their token's projection (meter.py: the value of the
               pass that chose the token); `publish` then tells each ticket
    run_batch  a set of tickets run to the end in one live batch (the scheduler's worker also lets rows join)

Text that might be the start of a stop string is held back until it is not (or the row ends), so what a caller
has seen never has to be taken back.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .generate import GenerationSettings, PreparedPrompt, Utf8SafeDecoder
from .meter import Piece, RowMeter, TokenPieces
from .models import LoadedModel
from .row_steer import RowPlan

if TYPE_CHECKING:
    from .ticket import Ticket

STOP, LENGTH, CANCELLED = "stop", "length", "cancelled"  # why a row ended (OpenAI's finish_reason for the first two)
MAX_STOP_STRINGS, MAX_STOP_CHARS = 8, 200


def check_stops(stop) -> tuple[str, ...]:
    """Stop strings as a tuple (one string, a list, or None), refused when empty, too long or too many."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    for s in stops:
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
            raise ValueError(f"stop: each stop string must be text of 1 to {MAX_STOP_CHARS} characters, got {s!r}")
    return stops


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could be the start of a stop string (not shown yet)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class RowState:
    """One row while it runs: its prompt, plan, decoding, decoder and progress. `shown` is what its caller may see,
    set in one piece: the text, and for a metered row its (text, projection) pieces joining to that text (else
    None)."""

    def __init__(
        self,
        prompt: PreparedPrompt,
        plan: RowPlan | None,
        settings: GenerationSettings,
        stops,
        min_new,
        meter: RowMeter | None = None,
    ):
        self.prompt, self.plan, self.settings = prompt, plan, settings
        self.stops, self.min_new, self.meter = stops, min_new, meter
        self.sampled = settings.temperature > 0
        self.seed: int | None = None
        self.generator: torch.Generator | None = None  # made on the device of the logits it samples
        self.decoder: Utf8SafeDecoder | None = None
        self.tokens = TokenPieces() if meter is not None else None
        self.shown: tuple[str, list[Piece] | None] = ("", [] if meter is not None else None)
        self.count = 0  # generated tokens (without the end-of-sequence token)
        self.seen = set(prompt.input_ids)  # the row's own token ids: what its repetition penalty weighs
        self.passes = 0  # forward passes this row took part in (its prompt's is the first)
        self.fed = list(prompt.input_ids)  # every token fed to the model so far: its keys and values are cached
        self.finished: str | None = None

    def start(self, loaded: LoadedModel) -> None:
        self.decoder = Utf8SafeDecoder(loaded.tokenizer)
        if self.sampled:
            self.seed = self.settings.seed if self.settings.seed is not None else secrets.randbits(63)

    @property
    def text(self) -> str:
        return self.shown[0]

    @property
    def pieces(self) -> list[Piece] | None:
        return self.shown[1]

    def _set(self, text: str) -> None:
        self.shown = (text, self.tokens.upto(len(text)) if self.tokens is not None else None)

    def push(self, token: int, projection: float | None = None) -> None:
        """The next token (and, for a metered row, the projection of the pass that chose it)."""
        self.seen.add(token)
        delta = self.decoder.push(token)
        if self.tokens is not None:
            self.tokens.add(delta, projection)
        self.count += 1
        self._show(final=False)
        if self.finished is None and self.count >= self.settings.max_new_tokens:
            self.end(LENGTH)

    def _show(self, final: bool) -> None:
        raw = self.decoder.emitted
        if self.stops:
            found = [i for i in (raw.find(s) for s in self.stops) if i >= 0]
            if found:
                self._set(raw[: min(found)])
                self.finished = STOP
                return
            if not final:
                raw = raw[: len(raw) - _held_back(raw, self.stops)]
        self._set(raw)

    def end(self, reason: str) -> None:
        if self.finished is not None:
            return
        if reason != CANCELLED:
            delta = self.decoder.flush()
            if self.tokens is not None:
                self.tokens.add(delta, None)
            self._show(final=True)
        if self.finished is None:
            self.finished = reason


class RowLogits:
    """Per-row decoding of one forward pass's last-position logits (see the module docstring); `choose` returns
    each row's token: the argmax, as generate's greedy pick, or for a sampled row the drawn token."""

    def __init__(self, rows: list[RowState], stop_ids: Sequence[int]):
        self.rows, self.stop_ids = rows, list(stop_ids)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        for i, row in enumerate(self.rows):
            if row.finished is not None:
                continue
            penalty = row.settings.repetition_penalty
            if penalty != 1.0:  # as transformers' RepetitionPenaltyLogitsProcessor, over the row's own tokens
                ids = torch.tensor([t for t in row.seen if t < vocab], dtype=torch.long, device=scores.device)
                picked = scores[i].gather(0, ids)
                scores[i] = scores[i].scatter(0, ids, torch.where(picked < 0, picked * penalty, picked / penalty))
            if row.count < row.min_new:
                scores[i, self.stop_ids] = -math.inf
            if row.sampled:
                scores[i] = self._sample(scores[i], row)
        return scores

    def choose(self, scores: torch.Tensor) -> list[int]:
        return self(scores).argmax(dim=-1).tolist()

    @staticmethod
    def _sample(scores: torch.Tensor, row: RowState) -> torch.Tensor:
        """transformers' temperature, top-k and top-p warpers, then one draw from the row's generator; the drawn
        token is left as the only candidate."""
        s = row.settings
        scores = scores / s.temperature
        if s.top_k:
            kth = torch.topk(scores, min(s.top_k, scores.shape[-1]))[0][-1]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if s.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False)
            remove = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - s.top_p)
            remove[-1:] = False
            scores = scores.masked_fill(remove.scatter(0, order, remove), -math.inf)
        if row.generator is None or row.generator.device != scores.device:
            row.generator = torch.Generator(device=scores.device).manual_seed(row.seed)
        token = torch.multinomial(scores.softmax(dim=-1), 1, generator=row.generator)
        return torch.full_like(scores, -math.inf).index_fill_(0, token, 0.0)


def advance(rows: Sequence[tuple[Ticket, RowState]], tokens, values, stop_ids: set[int]) -> None:
    """Hand each live row the token its forward pass chose (and, for a metered row, that pass's projection): a
    cancelled ticket's rows end without it, a stop id ends the row, anything else is pushed."""
    now = time.perf_counter()
    for (ticket, row), token, value in zip(rows, tokens, values):
        if row.finished is not None:
            continue
        if ticket.first_token is None:
            ticket.first_token = now
        if ticket.cancelled:
            row.end(CANCELLED)
        elif token in stop_ids:
            row.end(STOP)
        else:
            row.push(token, value)


def publish(tickets: Sequence[Ticket]) -> None:
    """Tell each ticket's readers what changed; a ticket whose rows all ended is done."""
    for ticket in tickets:
        if not ticket.done:
            ticket._publish(done=all(r.finished is not None for r in ticket._rows))


def run_batch(loaded: LoadedModel, tickets: list[Ticket]) -> None:
    """Generate every row of `tickets` in one live batch until all ended (what the scheduler's worker does, minus
    the joining; callable directly, e.g. in tests). Each ticket ends done, or failed with the exception generation
    raised (an exception that is not an Exception is raised again after)."""
    from .live_batch import LiveBatch

    batch = LiveBatch(loaded)
    batch.admit(tickets)
    while batch.rows:
        batch.step()
