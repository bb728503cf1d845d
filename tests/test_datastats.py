"""steering.datastats: the numbers describing a dataset and their table."""

from __future__ import annotations

import json

from steering.data import load_dataset
from steering.datastats import dataset_stats, format_stats_table
from tests.samples import JA, write_jsonl


def test_stats_numbers_on_a_tiny_file(tmp_path):
    rows = [
        {
            "id": "a",
            "topic": "Tech",
            "standard": "今日は晴れです。",
            "casual": "今日は晴れ。",
            "gyaru": "あーし今日マジ晴れじゃん！",
        },
        {
            "id": "b",
            "topic": "Tech",
            "standard": "明日は雨です。",
            "casual": "明日は雨。",
            "gyaru": "明日雨とかマジ無理じゃん",
        },
        {
            "id": "c",
            "topic": "Food",
            "standard": "お腹が空きました。",
            "casual": "お腹すいた。",
            "gyaru": "アーシお腹すいたしｗ",
        },
        {
            "id": "d",
            "topic": "Food",
            "standard": "ご飯を食べます。",
            "casual": "ご飯食べる。",
            "gyaru": "あ〜しご飯食べるし！",
        },
    ]
    path = write_jsonl(tmp_path / "tiny.jsonl", rows)
    stats = dataset_stats(load_dataset(path))
    assert stats["entries"] == 4
    assert stats["name"] == "tiny"
    assert stats["lang"] == "ja"
    assert stats["columns"] == ["standard", "casual", "gyaru"]
    assert stats["topics"] == {"Food": 2, "Tech": 2}
    assert stats["aashi_rate"] == 0.75  # あーし, アーシ and あ〜し count; line b has none
    assert stats["marker_rate"] == {"standard": 0.0, "casual": 0.0, "gyaru": 1.0}
    assert stats["mean_score"]["standard"] == 0.0 and stats["mean_score"]["gyaru"] > 10
    lengths = [len(r["standard"]) for r in rows]
    assert stats["length"]["standard"] == {"mean": sum(lengths) / 4, "median": 8.0, "min": 7, "max": 9}
    assert stats["length"]["gyaru"]["max"] == max(len(r["gyaru"]) for r in rows)
    import hashlib

    assert stats["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    json.dumps(stats)  # JSON-ready for --json


def test_stats_english_and_two_columns(tmp_path):
    rows = [
        {"standard": "That is nice.", "gyaru": "OMG that's literally so cute!"},
        {"standard": "I am tired.", "gyaru": "Ugh, I'm like, totally dead."},
    ]
    stats = dataset_stats(load_dataset(write_jsonl(tmp_path / "en.jsonl", rows)))
    assert stats["lang"] == "en"
    assert stats["aashi_rate"] == 0.0
    assert set(stats["marker_rate"]) == {"standard", "gyaru"}
    assert stats["marker_rate"]["gyaru"] == 1.0
    assert stats["topics"] == {"(none)": 2}


def test_format_stats_table(tmp_path):
    stats = dataset_stats(load_dataset(write_jsonl(tmp_path / "p.jsonl", JA)))
    table = format_stats_table(stats)
    assert isinstance(table, str)
    for needle in ("p", "entries", "3", "ja", stats["sha256"], "Tech 2", "Food 1", "standard", "casual", "gyaru"):
        assert needle in table
    assert "66.7%" in table  # あーし in 2 of 3 gyaru lines
