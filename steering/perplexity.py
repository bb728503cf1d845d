"""Perplexity of replies under the plain (unsteered) model, batched: how fluent a reply reads to the model.

Reported beside the text judges, never alone: it also rises with the very style we ask for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .models import LoadedModel
from .templates import apply_template


def _context_ids(loaded: LoadedModel, conversation: Sequence[dict]) -> list[int]:
    text = apply_template(loaded.tokenizer, list(conversation), "", add_generation_prompt=True)
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def _reply_ids(loaded: LoadedModel, reply: str | Sequence[int]) -> list[int]:
    if isinstance(reply, str):
        return loaded.tokenizer(reply, add_special_tokens=False)["input_ids"]
    return list(reply)


def perplexities(
    loaded: LoadedModel,
    conversations: Sequence[Sequence[dict]],
    replies: Sequence[str | Sequence[int]],
    batch_size: int = 16,
) -> list[float]:
    """exp(mean token NLL) of each reply (text or generated ids) after its conversation; NaN for an empty reply."""
    if len(conversations) != len(replies):
        raise ValueError(f"{len(conversations)} conversations for {len(replies)} replies")
    rows = [(_context_ids(loaded, c), _reply_ids(loaded, r)) for c, r in zip(conversations, replies)]
    out = [math.nan] * len(rows)
    todo = [i for i, (_, reply) in enumerate(rows) if reply]
    todo.sort(key=lambda i: len(rows[i][0]) + len(rows[i][1]))  # similar lengths share a batch: less padding
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        for i, value in zip(chunk, _batch_perplexity(loaded, [rows[i] for i in chunk])):
            out[i] = value
    return out


def _batch_perplexity(loaded: LoadedModel, rows: list[tuple[list[int], list[int]]]) -> list[float]:
    """Right-padded batch: causal attention never sees the padding, so each row scores as it would alone."""
    width = max(len(c) + len(r) for c, r in rows)
    pad = loaded.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (context, reply) in enumerate(rows):
        seq = context + reply
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device)).logits
    values = []
    for i, (context, reply) in enumerate(rows):
        start = len(context)
        row_logits = logits[i, start - 1 : start - 1 + len(reply)].float()
        target = torch.tensor(reply, device=row_logits.device)
        values.append(float(torch.exp(torch.nn.functional.cross_entropy(row_logits, target))))
    return values


def median(values: Sequence[float]) -> float | None:
    """Median of the finite values (a few broken replies explode a mean), None when there are none."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
