"""Capture hidden states of decoder layers for many texts: batched, length-sorted, stopping early.

Forward hooks only read block outputs; nothing in the model is wrapped or replaced, and every hook is
removed when capture returns or fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .models import LoadedModel, base_model, parse_layers
from .templates import Rendered, render_reply

POSITIONS = ("last", "mean")
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


def _pad_batch(items: list[Rendered], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Padded ids, attention mask, and each row's offset (how far padding shifted its tokens)."""
    width = max(len(r.input_ids) for r in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    offsets = []
    for row, r in enumerate(items):
        n = len(r.input_ids)
        off = width - n if side == "left" else 0
        ids[row, off : off + n] = torch.tensor(r.input_ids)
        mask[row, off : off + n] = 1
        offsets.append(off)
    return ids, mask, offsets


def _read_rows(hidden: torch.Tensor, items: list[Rendered], offsets: list[int], position: str) -> torch.Tensor:
    rows = []
    for row, (r, off) in enumerate(zip(items, offsets)):
        if position == "last":
            rows.append(hidden[row, off + r.last].float())
        else:
            idx = torch.tensor(r.content, device=hidden.device) + off
            rows.append(hidden[row, idx].float().mean(dim=0))
    return torch.stack(rows).cpu()


def _token_norms(hidden: torch.Tensor, mask: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """Norms of the real tokens of each row, the first position excluded (it is an outlier in most models)."""
    keep = mask.clone().bool()
    for row, off in enumerate(offsets):
        keep[row, off] = False
    return hidden.float().norm(dim=-1)[keep.to(hidden.device)].cpu()


def capture(
    loaded: LoadedModel,
    texts: Sequence[str],
    layers: Sequence[int],
    position: str = "last",
    topics: Sequence[str | None] | None = None,
    lang: str = "en",
    batch_size: int = 16,
    padding_side: str = "right",
    system_prompt: str | None = "",
    progress: ProgressFn | None = None,
    rendered: Sequence[Rendered] | None = None,
) -> Capture:
    """Hidden states at `layers` for each text templated as an assistant reply (see templates.py)."""
    if position not in POSITIONS:
        raise ValueError(f"unknown read position {position!r}: expected one of {', '.join(POSITIONS)}")
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
    current: dict = {}
    owner = threading.get_ident()  # another thread using the same model (a chat) must not be read or stopped

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            if threading.get_ident() != owner:
                return
            hidden = block_output(output)
            rows = current["rows"]
            states[layer][rows] = _read_rows(hidden, current["items"], current["offsets"], position)
            norms[layer].append(_token_norms(hidden, current["mask"], current["offsets"]))
            if layer == layers[-1]:
                raise _StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    try:
        done = 0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            items = [rendered[i] for i in rows]
            ids, mask, offsets = _pad_batch(items, pad_id, padding_side)
            current.update(rows=torch.tensor(rows), items=items, offsets=offsets, mask=mask)
            device = loaded.device
            with torch.inference_mode():
                try:
                    body(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                except _StopForward:
                    pass
            done += len(rows)
            if progress:
                progress(done, len(order))
    finally:
        for h in handles:
            h.remove()
    residual = {layer: float(torch.cat(norms[layer]).median()) if norms[layer] else 0.0 for layer in layers}
    return Capture(states=states, residual_norm=residual)
