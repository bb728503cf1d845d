"""Sample data shared by several test files: a steering vector and a small Japanese pair dataset."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steering.vectors import SteeringVector

HIDDEN = 576


def make_vector(layers=(8, 9, 10), hidden=HIDDEN, seed=0, **meta) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in layers:
        v = torch.randn(hidden, generator=gen)
        directions[layer] = v / v.norm()
    stats = {layer: {"mean_diff_norm": 1.5 + layer, "heldout_auc": 0.75, "nan_stat": float("nan")} for layer in layers}
    return SteeringVector(directions, {"model": "bundled", "method": "mean_diff", **meta}, stats)


JA = [
    {
        "id": "t-1",
        "topic": "Tech",
        "standard": "新しいパソコンを買いました。",
        "casual": "新しいパソコン買ったよ。",
        "gyaru": "あーし新しいパソコン買ったんだけど、マジ最強じゃん！",
    },
    {
        "id": "t-2",
        "topic": "Tech",
        "standard": "動作がとても速いです。",
        "casual": "動きがすごく速いよ。",
        "gyaru": "動きちょー速くてウケるｗ",
    },
    {
        "id": "f-1",
        "topic": "Food",
        "standard": "昼食にラーメンを食べました。",
        "casual": "昼にラーメン食べた。",
        "gyaru": "あーしお昼ラーメンだったし、めっちゃうまかったじゃん！",
    },
]


def write_jsonl(path: Path, rows: list, extra_lines: list[str] | None = None) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + (extra_lines or [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
