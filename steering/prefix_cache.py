"""A prefix cache: the keys and values of rows that ended, kept so that a later prompt beginning with the same
tokens, pushed the same way, skips computing them. A chat's next turn is its last prompt, the reply and a new
message: with the cache, only the new message is computed.

What is stored when a row ends: every token it fed the model (its prompt, then each generated token but the last),
with the key of the pushes those positions got (prefill.prompt_key) and as many of them as a new prompt's pass would
push the same way: all of them for a plain row and for a row pushed on every position at a constant strength;
only its prompt when the push skipped the prompt (`generated`: then the prompt is as a plain row's), decayed over
the reply (a half-life), or touched only the prompt's last token (`last`: all but that token, as plain).

`longest` finds, among entries with the same key, the longest run of leading tokens shared with a new prompt
(whole entries need not match: a reply that tokenizes differently when templated still shares what comes before
it). Entries are kept on the model's device, the least recently used dropped first beyond `max_tokens` in all;
an entry that is the start of a newer one with the same key is dropped as the newer one holds it. The scheduler's
worker uses it; a different model empties it, and so does a model load (app.py), from its own thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MIN_REUSED = 8  # tokens: a shorter shared start is not worth a lookup's copy


@dataclass
class Entry:
    key: object
    tokens: tuple[int, ...]
    keys: list[torch.Tensor]  # per layer [kv heads, tokens, head dim]
    values: list[torch.Tensor]


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """Keys and values of ended rows by their leading tokens (see the module docstring)."""

    def __init__(self, max_tokens: int = 8192):
        self.max_tokens = max(0, int(max_tokens))
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.tokens = 0
        self.model_id: int | None = None
        self.lookups = self.hits = self.reused_tokens = 0
        self._lock = threading.Lock()  # the worker stores and looks up; a model load may clear from another thread

    def for_model(self, model) -> PrefixCache:
        """This cache for `model`, emptied if it held another model's entries."""
        if self.model_id != id(model):
            self.clear()
            self.model_id = id(model)
        return self

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.tokens = 0

    def store(self, key, tokens: Sequence[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep one row's leading `tokens` and their per-layer keys and values ([heads, len(tokens), dim])."""
        tokens = tuple(tokens)
        if len(tokens) < MIN_REUSED or len(tokens) > self.max_tokens:
            return
        with self._lock:
            self._store(key, tokens, keys, values)

    def _store(self, key, tokens: tuple[int, ...], keys, values) -> None:
        for handle, entry in list(self.entries.items()):  # a start of the new entry, or the same: superseded
            if entry.key == key and len(entry.tokens) <= len(tokens) and tokens[: len(entry.tokens)] == entry.tokens:
                self._drop(handle)
        entry = Entry(key, tokens, keys, values)
        self.entries[id(entry)] = entry
        self.tokens += len(tokens)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self.entries)))

    def longest(self, key, ids: Sequence[int]) -> tuple[Entry, int] | None:
        """The entry with `key` sharing the most leading tokens with `ids` and how many (leaving `ids` at least
        its last token to compute), or None under MIN_REUSED."""
        with self._lock:
            return self._longest(key, ids)

    def _longest(self, key, ids: Sequence[int]) -> tuple[Entry, int] | None:
        self.lookups += 1
        best, length = None, 0
        for handle, entry in self.entries.items():
            if entry.key == key:
                shared = min(_common(entry.tokens, ids), len(ids) - 1)
                if shared > length:
                    best, length = handle, shared
        if best is None or length < MIN_REUSED:
            return None
        self.entries.move_to_end(best)
        self.hits += 1
        self.reused_tokens += length
        return self.entries[best], length

    def _drop(self, handle: int) -> None:
        self.tokens -= len(self.entries.pop(handle).tokens)


def reusable(row) -> tuple[object, int]:
    """The key and how many of a finished row's fed tokens a new prompt's pass would compute alike (see the module
    docstring)."""
    from .prefill import prompt_key

    plan, fed, prompt = row.plan, len(row.fed), len(row.prompt.input_ids)
    if plan is None:
        return None, fed
    if plan.apply_to == "generated":
        return None, prompt
    if plan.apply_to == "last":
        return None, prompt - 1
    return prompt_key(plan), fed if not plan.half_life else prompt
