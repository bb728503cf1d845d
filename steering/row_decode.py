"""Per-row decoding inside ONE `model.generate` call: what lets the scheduler put requests with different decoding
settings, stop strings and lengths into one batch, and stream each caller its own rows.

    RowState   one row while it runs: prompt, steering plan, settings, UTF-8-safe decoder, visible text (and, for a
               metered row, its (text, projection) pieces: meter.py), why it ended
    RowLogits  a transformers logits processor: each row's repetition penalty (over the row's own tokens, never its
               padding, as transformers' RepetitionPenaltyLogitsProcessor computes it), its minimum length, and for
               sampled rows transformers' temperature / top-k / top-p warpers and a draw from the row's own seeded
               generator; the drawn token is left as the only candidate, so generate's greedy pick takes it
    RowDriver  a transformers stopping criterion: reads each step's token per row, feeds the decoders, ends rows
               (end of sequence, stop string, max_new_tokens, cancelled), hands metered rows their token's
               projection (meter.py: the value of the pass that chose the token) and publishes to each ticket
    run_batch  the batched generate call itself, under row_steer.py's per-row hooks and meter.py's recording

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

from .generate import GenerationSettings, PreparedPrompt, Utf8SafeDecoder, batch_inputs
from .meter import Meter, Piece, RowMeter, TokenPieces, meter_rows
from .models import LoadedModel
from .row_steer import RowPlan, row_steer

if TYPE_CHECKING:
    from .scheduler import Ticket

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
    """Per-row decoding inside one generate call (see the module docstring)."""

    def __init__(self, rows: list[RowState], width: int, stop_ids: list[int]):
        self.rows, self.width, self.stop_ids = rows, width, list(stop_ids)
        self.pads = [width - len(r.prompt.input_ids) for r in rows]
        self.penalized = [i for i, r in enumerate(rows) if r.settings.repetition_penalty != 1.0]
        self.penalties = torch.tensor([[rows[i].settings.repetition_penalty] for i in self.penalized])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.width
        if self.penalized:  # as transformers' RepetitionPenaltyLogitsProcessor, over each row's own tokens only
            idx = torch.tensor(self.penalized, device=scores.device)
            self.penalties = self.penalties.to(scores.device)  # (logits may sit on another GPU than the model's first)
            vocab = scores.shape[-1]
            ids = input_ids[idx].clamp(max=vocab)  # ids past the LM head's vocabulary go to a dropped extra column
            for j, i in enumerate(self.penalized):
                if self.pads[i]:
                    ids[j, : self.pads[i]] = ids[j, self.pads[i]]  # padding repeats a real token: no effect
            rows = torch.nn.functional.pad(scores[idx], (0, 1))
            picked = torch.gather(rows, 1, ids)
            picked = torch.where(picked < 0, picked * self.penalties, picked / self.penalties)
            scores[idx] = rows.scatter(1, ids, picked)[..., :vocab]
        for i, row in enumerate(self.rows):
            if row.finished is not None:
                continue
            if step < row.min_new:
                scores[i, self.stop_ids] = -math.inf
            if row.sampled:
                scores[i] = self._sample(scores[i], row)
        return scores

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


class RowDriver:
    """A transformers stopping criterion that reads each step's tokens: feeds every live row's decoder, ends rows
    (end of sequence, stop string, max_new_tokens, cancelled) and publishes to each ticket. With a `meter`, step k's
    token gets the projection of forward pass k (the one whose last position chose it)."""

    def __init__(self, tickets: list[Ticket], stop_ids: set[int], meter: Meter | None = None):
        self.tickets, self.stop_ids, self.meter = tickets, stop_ids, meter
        self.rows = [(t, r) for t in tickets for r in t._rows]
        self.steps = 0

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tokens = input_ids[:, -1].tolist()
        self.steps += 1
        values = self.meter.read(self.steps) if self.meter is not None else [None] * len(tokens)
        now = time.perf_counter()
        for (ticket, row), token, value in zip(self.rows, tokens, values):
            if row.finished is not None:
                continue
            if ticket.cancelled:
                row.end(CANCELLED)
            elif token in self.stop_ids:
                row.end(STOP)
            else:
                row.push(token, value)
        for ticket in self.tickets:
            if ticket.done:
                continue
            if ticket.first_token is None:
                ticket.first_token = now
            ticket._publish(done=all(r.finished is not None for r in ticket._rows))
        return torch.tensor([r.finished is not None for _, r in self.rows], device=input_ids.device)


def run_batch(loaded: LoadedModel, tickets: list[Ticket]) -> None:
    """Generate every row of `tickets` in one batched call (the worker's job; callable directly, e.g. in tests).
    Each ticket ends done, or failed with the exception generation raised. Metered rows are recorded by meter.py's
    hooks, registered after the steering hooks (they read each layer's pushed output)."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    rows = [r for t in tickets for r in t._rows]
    started = time.perf_counter()
    for ticket in tickets:
        ticket.started = started
    try:
        for row in rows:
            row.start(loaded)
        inputs = batch_inputs(loaded, [r.prompt for r in rows])
        tok = loaded.tokenizer
        stop_ids = sorted({tok.eos_token_id, tok.pad_token_id} - {None})
        width = inputs["input_ids"].shape[1]
        driver = RowDriver(tickets, set(stop_ids))
        kwargs = dict(
            max_new_tokens=max(r.settings.max_new_tokens for r in rows),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=1.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            logits_processor=LogitsProcessorList([RowLogits(rows, width, stop_ids)]),
            stopping_criteria=StoppingCriteriaList([driver]),
        )
        plans, meters = [r.plan for r in rows], [r.meter for r in rows]
        with row_steer(loaded, plans), meter_rows(loaded, meters) as meter, torch.inference_mode():
            driver.meter = meter
            loaded.model.generate(**inputs, **kwargs)
        for row in rows:  # generate's own end (the longest max_new_tokens) without the driver's word
            row.end(LENGTH)
    except BaseException as exc:  # noqa: BLE001 - every caller of the batch hears it
        for ticket in tickets:
            ticket._fail(exc)
        if not isinstance(exc, Exception):
            raise
        return
    for ticket in tickets:
        ticket._publish(done=True)
