"""Test helpers that read torch internals (kept out of the library: only tests use them)."""

from __future__ import annotations

import torch


def hooks_left(model: torch.nn.Module) -> int:
    """How many forward (and forward-pre) hooks remain anywhere in the model: 0 after every steering call."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def pair_line(i: int) -> str:
    """One long English contrast pair as a JSONL line (about 440 bytes)."""
    import json

    standard = f"Entry {i}: I went to work as usual today, and the meeting in the afternoon was rather long. " * 2
    gyaru = f"Entry {i}: OMG bestie, work was sooo long today, like, that meeting literally took forever! " * 2
    return json.dumps({"id": f"e{i:05d}", "topic": "Life", "standard": standard.strip(), "gyaru": gyaru.strip()})


def write_big_jsonl(path, lines: int = 20_000):
    """`lines - 1` valid pairs, then a broken last line that only a reader of the whole file meets."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(pair_line(i) + "\n" for i in range(1, lines))
        f.write('{"standard": "the file was cut off here", "gyaru": \n')
    return path


def random_steering_vector(seed: int = 0, layers=(1, 2), hidden: int = 64, lang: str | None = None):
    """A vector for the tiny 4-layer models with every statistic the steering modes need (calibrated, clamp)."""
    from steering.vectors import SteeringVector

    gen = torch.Generator().manual_seed(seed)
    directions = {layer: torch.nn.functional.normalize(torch.randn(hidden, generator=gen), dim=0) for layer in layers}
    stats = {
        layer: {"mean_diff_norm": 3.0, "residual_norm": 10.0, "gyaru_projection": 2.0, "baseline_projection": -1.0}
        for layer in layers
    }
    meta = {"model": "tiny-qwen2", **({"lang": lang} if lang else {})}
    return SteeringVector(directions, meta, stats)


def has_japanese(text: str) -> bool:
    """Kana or kanji anywhere in `text` (a page string said in Japanese has some; an English one none)."""
    return any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in text)
