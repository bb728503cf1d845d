"""A live batch: rows join a running generation between two tokens and leave it the step they end.

The decoding loop is generate's own, written out so that the batch can change between steps: each step runs one
forward pass over every live row's last token (its KV cache, left-padded mask and position), then row_decode.py's
RowLogits picks each row's token and `advance` hands it over. New rows are prefilled in a pass of their own (left-
padded among themselves, as generate does), and their cache is joined to the live one: the shorter side is padded
on the left with masked positions, so every row keeps its own positions and sees only its own tokens. Rows that end
(or are cancelled) leave at once: their cache rows are dropped, and so are the columns that only they used.

A greedy row thus gives its solo `generate` reply whenever it joins and whatever shares its batch (the extra
masked positions add exact zeros to attention; tests/test_live_batch.py checks it token for token). Joining needs a
plain DynamicCache (full attention in every layer); a model whose cache has other layers (sliding windows) runs
rows that start together, and new rows wait until the batch is empty (`joinable`).

Steering and the meter are the per-row hooks of row_steer.py and meter.py, rebuilt whenever rows join or leave,
bound to the worker's thread, and removed before a batch that empties publishes its last tickets.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

import torch

from .kv_buffer import plain_layers, stack_rows
from .meter import meter_rows
from .models import LoadedModel
from .prefill import forward, prefill
from .prefix_cache import PrefixCache, reusable
from .row_decode import CANCELLED, RowLogits, RowState, advance, publish
from .row_steer import row_steer

if TYPE_CHECKING:
    from .ticket import Ticket


class LiveBatch:
    """The rows of one running generation and their cache. Not thread-safe: one thread (the scheduler's worker)
    calls `admit` and `step`."""

    def __init__(self, loaded: LoadedModel, prefix_cache: PrefixCache | None = None):
        self.loaded = loaded
        self.prefix_cache = prefix_cache.for_model(loaded.model) if prefix_cache is not None else None
        tok = loaded.tokenizer
        self.stop_ids = sorted({tok.eos_token_id, tok.pad_token_id} - {None})
        self.rows: list[tuple[Ticket, RowState]] = []
        self.cache = None  # the model's KV cache, one row per live row
        self.mask: torch.Tensor | None = None  # [rows, width]: 1 where a row has a real token
        self.positions: torch.Tensor | None = None  # [rows, 1]: the position of each row's next input token
        self.next_ids: torch.Tensor | None = None  # [rows, 1]: each row's last chosen token (the next input)
        self._hooks = ExitStack()
        self._meter = None
        self._hook_passes = 0

    @property
    def tickets(self) -> list[Ticket]:
        return list(dict.fromkeys(ticket for ticket, _ in self.rows))

    def joinable(self) -> bool:
        """Whether new rows may join now: an empty batch, or a cache of plain full-attention layers only."""
        return self.cache is None or plain_layers(self.cache)

    # ---------------------------------------------------------------- the loop

    @torch.inference_mode()
    def admit(self, tickets: list[Ticket]) -> None:
        """Prefill the tickets' rows in one pass, pick their first tokens and join them to the batch. A failure
        fails these tickets only; the live rows go on."""
        rows = [(t, r) for t in tickets for r in t._rows]
        started = time.perf_counter()
        for ticket in tickets:
            ticket.started = started
        try:
            for _, row in rows:
                row.start(self.loaded)
            self._hooks.close()  # the live rows' hooks must not see the new rows' passes
            states = [r for _, r in rows]
            cache, mask, positions, logits, values = prefill(self.loaded, states, self.prefix_cache)
            tokens = RowLogits(states, self.stop_ids).choose(logits)
        except BaseException as exc:  # noqa: BLE001 - these callers hear it; the live rows go on
            self._fail(tickets, exc)
            self._rehook()
            if not isinstance(exc, Exception):
                raise
            return
        for _, row in rows:
            row.passes += 1
        next_ids = torch.tensor([[t] for t in tokens], device=mask.device)
        self._join(cache, mask, positions[:, -1:] + 1, next_ids)
        self.rows.extend(rows)
        advance(rows, tokens, values, set(self.stop_ids))
        self._finish(tickets, joined=True)

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every live row (cancelled ones leave first). A failure fails every live ticket."""
        cancelled = [t for t in self.tickets if t.cancelled]
        for ticket, row in self.rows:
            if ticket.cancelled:
                row.end(CANCELLED)
        self._finish(cancelled)  # (only they changed: each reader hears once per step)
        if not self.rows:
            return
        tickets = self.tickets
        try:
            for (_, row), token in zip(self.rows, self.next_ids.flatten().tolist()):
                row.fed.append(token)
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
            out = forward(self.loaded, self.next_ids, self.mask, self.positions, self.cache)
            self._hook_passes += 1
            values = self._meter.read(self._hook_passes) if self._meter is not None else [None] * len(self.rows)
            states = [r for _, r in self.rows]
            tokens = RowLogits(states, self.stop_ids).choose(out.logits[:, -1].float())
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch hears it
            self._reset()
            self._fail(tickets, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.cache = out.past_key_values
        for row in states:
            row.passes += 1
        self.next_ids = torch.tensor([[t] for t in tokens], device=self.mask.device)
        self.positions = self.positions + 1
        advance(self.rows, tokens, values, set(self.stop_ids))
        self._finish(tickets)

    def close(self) -> None:
        """Cancel what still runs and remove the hooks (the worker's shutdown)."""
        for ticket in self.tickets:
            ticket.cancel()
        for _, row in self.rows:
            row.end(CANCELLED)
        self._finish(self.tickets)

    # ---------------------------------------------------------------- parts

    def _join(self, cache, mask, positions, next_ids) -> None:
        """Add prefilled rows (their cache, mask, next positions and first tokens) to the live ones."""
        if self.cache is None:
            self.cache, self.mask, self.positions, self.next_ids = cache, mask, positions, next_ids
            return
        self.cache, self.mask = stack_rows([self.cache, cache], [self.mask, mask])
        self.positions = torch.cat([self.positions, positions])
        self.next_ids = torch.cat([self.next_ids, next_ids])

    def _finish(self, tickets, joined: bool = False) -> None:
        """Drop ended rows from the batch, rebuild the hooks when rows joined or left (none when it emptied), then
        publish: a caller told its request is done finds no hook of this batch left on the model."""
        keep = [i for i, (_, row) in enumerate(self.rows) if row.finished is None]
        if len(keep) < len(self.rows) and self.cache is not None:
            self._keep_prefixes([i for i in range(len(self.rows)) if i not in keep])
        if len(keep) < len(self.rows) or joined:
            if not keep:
                self._reset()
            else:
                self._select(keep)
            self._rehook()
        publish(tickets)

    def _keep_prefixes(self, leaving: list[int]) -> None:
        """Store the cached tokens of rows that ended (not failed or cancelled) in the prefix cache."""
        if self.prefix_cache is None or not self.joinable():
            return
        for i in leaving:
            row = self.rows[i][1]
            if row.finished in (CANCELLED, None):
                continue
            key, n = reusable(row)
            columns = self.mask[i].nonzero().flatten()[:n]
            keys = [layer.keys[i, :, columns] for layer in self.cache.layers]
            values = [layer.values[i, :, columns] for layer in self.cache.layers]
            self.prefix_cache.store(key, row.fed[:n], keys, values)

    def _select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.next_ids = self.mask[index], self.positions[index], self.next_ids[index]
        used = self.mask.any(dim=0)  # columns that are padding in every row left go
        if not bool(used.all()) and self.joinable():
            columns = used.nonzero().flatten()
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., columns, :], layer.values[..., columns, :]
            self.mask = self.mask[:, columns]

    def _rehook(self) -> None:
        """The per-row steering and meter hooks for the rows now live (each row's passes so far)."""
        self._hooks.close()
        self._hooks, self._meter, self._hook_passes = ExitStack(), None, 0
        if not self.rows:
            return
        states = [r for _, r in self.rows]
        self._hooks.enter_context(row_steer(self.loaded, [r.plan for r in states], [r.passes for r in states]))
        self._meter = self._hooks.enter_context(meter_rows(self.loaded, [r.meter for r in states]))

    def _reset(self) -> None:
        self._hooks.close()
        self._hooks, self._meter = ExitStack(), None
        self.rows, self.cache, self.mask, self.positions, self.next_ids = [], None, None, None, None

    @staticmethod
    def _fail(tickets, exc: BaseException) -> None:
        for ticket in tickets:
            ticket._fail(exc)
