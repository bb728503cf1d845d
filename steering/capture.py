"""Capture hidden states of decoder layers for many texts: batched, length-sorted, stopping early.

Forward hooks only read block outputs; nothing in the model is wrapped or replaced, and every hook is
removed when capture returns or fails.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .checks import check_int
from .models import LoadedModel, base_model
from .settings import READ_POSITIONS as POSITIONS
from .settings import parse_layers
from .templates import Rendered, render_reply

ProgressFn = Callable[[int, int], None]  # (texts done, texts total)


@dataclass
class Capture:
    """Per layer, one float32 row per text (input order); plus the typical residual-stream norm per layer."""

    states: dict[int, torch.Tensor]
    residual_norm: dict[int, float] = field(default_factory=dict)


class _StopForward(Exception):
    """Raised by the deepest hook: the layers after it are not needed."""


def block_output(output) -> torch.Tensor:
    """A decoder block returns a tensor or a tuple whose first item is the hidden states."""
    return output[0] if isinstance(output, tuple) else output


def _pad(sequences: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Padded ids, attention mask, and each row's offset (how far padding shifted its tokens)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    offsets = []
    for row, seq in enumerate(sequences):
        off = width - len(seq) if side == "left" else 0
        ids[row, off : off + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, off : off + len(seq)] = 1
        offsets.append(off)
    return ids, mask, offsets


@dataclass
class _Pass:
    """What the hooks need to know about the forward pass in flight."""

    rows: torch.Tensor | None  # output rows to fill; None for a shared-prefix pass (nothing to read)
    items: list[Rendered]
    offsets: list[int]  # where each row's tokens start in the padded batch
    mask: torch.Tensor  # real tokens of this pass
    start: int  # tokens of each text already in the cache (the shared prefix)
    repeat: int = 1  # a prefix pass stands for this many texts (their norm statistics)


def _read_rows(hidden: torch.Tensor, batch: _Pass, read_position: str) -> torch.Tensor:
    rows = []
    for row, (r, off) in enumerate(zip(batch.items, batch.offsets)):
        off -= batch.start  # the hidden states begin after the cached prefix
        if read_position == "last":
            rows.append(hidden[row, off + r.last].float())
        else:
            idx = torch.tensor(r.content, device=hidden.device) + off
            rows.append(hidden[row, idx].float().mean(dim=0))
    return torch.stack(rows).cpu()


def _token_norms(hidden: torch.Tensor, batch: _Pass) -> torch.Tensor:
    """Norms of the real tokens of each row, each text's first position excluded (an outlier in most models)."""
    keep = batch.mask.clone().bool()
    if batch.start == 0:
        for row, off in enumerate(batch.offsets):
            keep[row, off] = False
    return hidden.float().norm(dim=-1)[keep.to(hidden.device)].cpu().repeat(batch.repeat)


def _shared_prefixes(rendered: Sequence[Rendered], order: list[int]) -> dict[tuple[int, ...], list[int]]:
    """Texts grouped by the template tokens before their reply (same system and user turn), in `order`."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in order:
        groups.setdefault(tuple(rendered[i].input_ids[: rendered[i].content[0]]), []).append(i)
    return groups


def capture(
    loaded: LoadedModel,
    texts: Sequence[str],
    layers: Sequence[int],
    read_position: str = "last",
    topics: Sequence[str | None] | None = None,
    lang: str = "en",
    batch_size: int = 16,
    padding_side: str = "right",
    system_prompt: str | None = "",
    progress: ProgressFn | None = None,
    rendered: Sequence[Rendered] | None = None,
) -> Capture:
    """Hidden states at `layers` for each text templated as an assistant reply (see templates.py)."""
    if read_position not in POSITIONS:
        raise ValueError(f"unknown read position {read_position!r}: expected one of {', '.join(POSITIONS)}")
    # (a batch size below 1 would skip every batch and return the uninitialised rows of torch.empty)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    layers = parse_layers(list(layers), loaded.num_layers)  # sorted, unique, negatives resolved, range-checked
    if rendered is None:
        topics = topics or [None] * len(texts)
        rendered = [render_reply(loaded.tokenizer, t, tp, lang, system_prompt) for t, tp in zip(texts, topics)]
    order = sorted(range(len(rendered)), key=lambda i: len(rendered[i].input_ids))
    states = {layer: torch.empty(len(rendered), loaded.hidden_size) for layer in layers}
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    blocks = loaded.layers
    body = base_model(loaded.model)
    pad_id = loaded.tokenizer.pad_token_id or 0
    current: dict[str, _Pass] = {}
    owner = threading.get_ident()  # another thread using the same model (a chat) must not be read or stopped

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            if threading.get_ident() != owner:
                return
            hidden, batch = block_output(output), current["pass"]
            if batch.rows is not None:
                states[layer][batch.rows] = _read_rows(hidden, batch, read_position)
            norms[layer].append(_token_norms(hidden, batch))
            if layer == layers[-1]:
                raise _StopForward

        return hook

    def forward(batch: _Pass, **inputs) -> None:
        current["pass"] = batch
        with torch.inference_mode():
            try:
                body(**{k: v.to(loaded.device) if torch.is_tensor(v) else v for k, v in inputs.items()})
            except _StopForward:
                pass

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    try:
        done = 0
        # The chat template before each reply is shared by every text with the same topic: run it once per group
        # and keep its KV cache, so each batch only computes the replies' own tokens.
        for prefix, members in _shared_prefixes(rendered, order).items():
            start, cache = len(prefix), DynamicCache()
            ones = torch.ones((1, start), dtype=torch.long)
            if start:  # (a reply at token 0 has no template before it)
                forward(
                    _Pass(None, [], [0], ones, 0, len(members)),
                    input_ids=torch.tensor([prefix]),
                    attention_mask=ones,
                    past_key_values=cache,
                    use_cache=True,
                )
            for first in range(0, len(members), batch_size):
                rows = members[first : first + batch_size]
                items = [rendered[i] for i in rows]
                ids, mask, offsets = _pad([r.input_ids[start:] for r in items], pad_id, padding_side)
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(rows))
                forward(
                    _Pass(torch.tensor(rows), items, offsets, mask, start),
                    input_ids=ids,
                    attention_mask=torch.cat([ones.expand(len(rows), -1), mask], dim=1),
                    position_ids=start + (mask.cumsum(dim=1) - 1).clamp(min=0),
                    past_key_values=kv,
                    use_cache=True,
                )
                done += len(rows)
                if progress:
                    progress(done, len(order))
    finally:
        for h in handles:
            h.remove()
    residual = {layer: float(torch.cat(norms[layer]).median()) if norms[layer] else 0.0 for layer in layers}
    return Capture(states=states, residual_norm=residual)
