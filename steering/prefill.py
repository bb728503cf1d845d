"""Prefill: the prompt passes of rows joining a live batch, with a shared prompt start computed once.

Rows of one admission often begin alike: every templated conversation opens with the same system prompt, and the
app's plain and steered columns carry the same conversation. Rows whose prompts are pushed alike (`prompt_key`: no
push on the prompt, or the same vector, layers, strength and mode on every position) and begin with the same
tokens share one pass over that common start; then one pass over every row's own rest reads the shared start from
the cache. Attention is causal and each push acts position by position, so the shared start's keys and values are
what each row's own pass would compute. Rows with nothing to share (a prefix under MIN_SHARED tokens, or alone in
their group) run their whole prompt in the second pass.

The second pass's mask may thus hold padding in the middle (shared start, padding, own rest): positions come from
the mask, as generate computes them for left padding, and masked positions add exact zeros to attention.

On a CPU, a padded position costs as much as a real one: a chat's next turn brings 20 to 45 new tokens per row, and
one pass padded to the longest computed about 40 % padding. The rows' own rests are therefore run in passes of
similar lengths (`length_groups`: the fewest padded positions, counting PASS_COST_POSITIONS per extra pass for the
weights each pass reads), and their caches stacked into one (kv_buffer.stack_rows). On other devices padding is
nearly free beside a pass, and one pass runs every row.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .generate import PreparedPrompt, batch_inputs
from .kv_buffer import growing_cache, pad_left, stack_rows
from .meter import meter_rows
from .models import LoadedModel
from .prefix_cache import PrefixCache
from .row_steer import RowPlan, row_steer

if TYPE_CHECKING:
    from .row_decode import RowState

MIN_SHARED = 8  # tokens: a shorter common start is not worth a pass of its own
PASS_COST_POSITIONS = 32  # on a CPU, a pass costs about as much as this many more positions (bundled model: 40 ms)


def forward(loaded: LoadedModel, input_ids, mask, positions, cache):
    """One forward pass with the KV cache, keeping only the last position's logits (as generate does)."""
    kwargs = dict(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
    if "logits_to_keep" in inspect.signature(loaded.model.forward).parameters:  # microseconds beside the pass
        kwargs["logits_to_keep"] = 1  # not the whole prompt's logits: only the last position chooses a token
    return loaded.model(**kwargs, use_cache=True)


def prompt_key(plan: RowPlan | None):
    """Rows with equal keys push their prompts identically (RowPlan.prompt_key; None for a plain row)."""
    return plan.prompt_key if plan is not None else None


def shared_starts(rows: Sequence[RowState]) -> list[tuple[list[int], int]]:
    """The groups that share a start: (their row indices, the shared length), each at least MIN_SHARED tokens and
    leaving every row at least one token of its own."""
    groups: dict = defaultdict(list)
    for i, row in enumerate(rows):
        groups[prompt_key(row.plan)].append(i)
    shared = []
    for members in groups.values():
        if len(members) < 2:
            continue
        prompts = [rows[i].prompt.input_ids for i in members]
        length = min(len(p) for p in prompts) - 1
        for k in range(length):
            if any(p[k] != prompts[0][k] for p in prompts):
                length = k
                break
        if length >= MIN_SHARED:
            shared.append((members, length))
    return shared


def _left_padded(loaded: LoadedModel, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = batch_inputs(loaded, [PreparedPrompt(list(s)) for s in seqs])
    return inputs["input_ids"], inputs["attention_mask"]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each real token's position (as generate derives it from the mask); 0 under padding."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _shared_pass(loaded: LoadedModel, rows: Sequence[RowState], shared) -> list:
    """The shared starts in one pass (one row per group, pushed as its group's prompts are): each row's start as
    per-layer (keys, values) [heads, length, dim], or None for a row outside every group."""
    starts = [rows[members[0]].prompt.input_ids[:length] for members, length in shared]
    plans = [rows[members[0]].plan if prompt_key(rows[members[0]].plan) is not None else None for members, _ in shared]
    ids, mask = _left_padded(loaded, starts)
    with row_steer(loaded, plans):
        cache = forward(loaded, ids, mask, _positions(mask), None).past_key_values
    out: list = [None] * len(rows)
    for g, (members, length) in enumerate(shared):
        real = slice(mask.shape[1] - length, None)  # left-padded: the group's tokens are the last `length`
        keys = [layer.keys[g, :, real] for layer in cache.layers]
        values = [layer.values[g, :, real] for layer in cache.layers]
        for i in members:
            out[i] = (keys, values)
    return out


def _assembled(loaded: LoadedModel, starts: list):
    """One cache holding each row's start (right-aligned, masked padding before it; nothing for a row without)."""
    width = max(s[0][0].shape[1] for s in starts if s is not None)
    some = next(s for s in starts if s is not None)
    cache = growing_cache(loaded.model.config)
    mask = torch.zeros(len(starts), width, dtype=torch.long, device=some[0][0].device)
    for layer, (k0, v0) in enumerate(zip(*some)):
        keys = k0.new_zeros(len(starts), k0.shape[0], width, k0.shape[2])
        values = v0.new_zeros(len(starts), v0.shape[0], width, v0.shape[2])
        for i, start in enumerate(starts):
            if start is not None:
                n = start[0][layer].shape[1]
                keys[i, :, width - n :], values[i, :, width - n :] = start[0][layer], start[1][layer]
                mask[i, width - n :] = 1
        cache.update(keys, values, layer)
    return cache, mask


def _starts(loaded: LoadedModel, rows: Sequence[RowState], cache: PrefixCache | None) -> list:
    """Each row's start as per-layer (keys, values), from the prefix cache or a shared pass, or None."""
    starts: list = [None] * len(rows)
    if cache is not None:
        for i, row in enumerate(rows):
            hit = cache.longest(prompt_key(row.plan), row.prompt.input_ids)
            if hit is not None:
                entry, n = hit
                starts[i] = ([k[:, :n] for k in entry.keys], [v[:, :n] for v in entry.values])
    rest = [i for i, start in enumerate(starts) if start is None]
    shared = shared_starts([rows[i] for i in rest])
    if shared:
        for i, start in zip(rest, _shared_pass(loaded, [rows[i] for i in rest], shared)):
            starts[i] = start
    return starts


def length_groups(lengths: Sequence[int], pass_cost: int) -> list[list[int]]:
    """Row indices (in order) in passes of similar lengths, shortest first: the split with the fewest positions
    computed (each pass's rows times its longest length, plus `pass_cost` per pass)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best, cut = [0] + [math.inf] * len(order), [0] * (len(order) + 1)  # best[j]: the first j rows of `order`
    for j in range(1, len(order) + 1):
        for i in range(j):
            cost = best[i] + (j - i) * lengths[order[j - 1]] + pass_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(sorted(order[cut[j] : j]))
        j = cut[j]
    return groups[::-1]


def _length(start) -> int:
    """How many tokens a row's start (per-layer keys and values, or None) holds."""
    return start[0][0].shape[1] if start is not None else 0


def _stacked(parts: list, groups: list[list[int]]):
    """The passes' results as one, in the rows' own order (each pass's rows left-padded to the widest)."""
    if len(parts) == 1:  # (a single group holds every row, in order)
        return parts[0]
    cache, mask = stack_rows([p[0] for p in parts], [p[1] for p in parts])
    width = mask.shape[1]
    positions = torch.cat([pad_left(p[2], width - p[2].shape[1], -1) for p in parts])
    logits = torch.cat([p[3] for p in parts])
    values = [v for p in parts for v in p[4]]
    placed = [i for group in groups for i in group]  # row placed[k] sits at k
    where = sorted(range(len(placed)), key=placed.__getitem__)  # row i sits at where[i]
    index = torch.tensor(where, device=mask.device)
    cache.batch_select_indices(index)
    return cache, mask[index], positions[index], logits[index], [values[k] for k in where]


def prefill(loaded: LoadedModel, rows: Sequence[RowState], cache: PrefixCache | None = None):
    """The prompt passes of `rows` (started RowStates) under their steering, metered rows recorded; a start found
    in `cache` or shared by several rows is not computed again. Returns the cache, the mask [rows, width], each
    position [rows, width], the last position's float logits [rows, vocab] and each row's meter value for its
    first token."""
    if growing_cache(loaded.model.config) is None:  # sliding windows: every prompt in full, in one pass
        return _own_pass(loaded, rows, [None] * len(rows))
    starts = _starts(loaded, rows, cache)
    groups = [list(range(len(rows)))]
    if loaded.device.type == "cpu":
        rests = [len(row.prompt.input_ids) - _length(start) for row, start in zip(rows, starts)]
        groups = length_groups(rests, PASS_COST_POSITIONS)
    parts = [_own_pass(loaded, [rows[i] for i in group], [starts[i] for i in group]) for group in groups]
    return _stacked(parts, groups)


def _own_pass(loaded: LoadedModel, rows: Sequence[RowState], starts: list):
    """One pass over each row's prompt after its start (computed before, or None): prefill's results for `rows`."""
    own = [_length(start) for start in starts]
    past, start_mask = _assembled(loaded, starts) if any(own) else (growing_cache(loaded.model.config), None)
    ids, rest_mask = _left_padded(loaded, [row.prompt.input_ids[k:] for row, k in zip(rows, own)])
    mask = rest_mask if start_mask is None else torch.cat([start_mask, rest_mask], dim=1)
    positions = _positions(mask)
    rest_positions = positions[:, -ids.shape[1] :]
    with row_steer(loaded, [r.plan for r in rows]), meter_rows(loaded, [r.meter for r in rows]) as meter:
        out = forward(loaded, ids, mask, rest_positions, past)
        values = meter.read(1) if meter is not None else [None] * len(rows)
    return out.past_key_values, mask, positions, out.logits[:, -1].float(), values
