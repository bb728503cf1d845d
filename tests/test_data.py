"""steering.data: loading and validating pair files, contrasts and pairs, split, and prompts."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from steering import data
from steering.data import (
    BUNDLED,
    CONTRASTS,
    DatasetError,
    contrast_pairs,
    load_dataset,
    load_prompts,
    split,
)
from tests.samples import JA, write_jsonl


def error_of(path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **kwargs)
    return str(info.value)


def assert_names(message: str, path: Path, where: str | None = None, field: str | None = None) -> None:
    assert path.name in message, message
    if where is not None:
        assert where in message, message
    if field is not None:
        assert f'field "{field}"' in message, message


# --------------------------------------------------------------------------- constants


def test_constants():
    assert CONTRASTS == ("gyaru-vs-standard", "gyaru-vs-casual")
    assert BUNDLED["ja"] == data.DATA_DIR / "gyaru_ja.jsonl"
    assert BUNDLED["en"] == data.DATA_DIR / "gal_en.jsonl"
    assert data.DATA_DIR == Path(data.__file__).resolve().parent.parent / "data"
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize("arg, lang", [("bundled:ja", "ja"), ("ja", "ja"), ("bundled:en", "en"), ("en", "en")])
def test_shortcuts_resolve_to_bundled(arg, lang):
    assert data.resolve_path(arg) == BUNDLED[lang]


def test_unknown_bundled_name():
    with pytest.raises(DatasetError, match="bundled:ja"):
        load_dataset("bundled:fr")


# --------------------------------------------------------------------------- formats


def test_jsonl_loads(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", JA)
    ds = load_dataset(path)
    assert ds.name == "pairs"
    assert ds.path == path
    assert ds.lang == "ja"
    assert ds.columns == ("standard", "casual", "gyaru")
    assert [e.id for e in ds.entries] == ["t-1", "t-2", "f-1"]
    assert [e.line for e in ds.entries] == [1, 2, 3]
    assert ds.entries[0].topic == "Tech"
    assert ds.entries[1].gyaru == "動きちょー速くてウケるｗ"
    import hashlib

    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_jsonl_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    path = tmp_path / "gaps.jsonl"
    rows = [json.dumps(r, ensure_ascii=False) for r in JA]
    path.write_text(f"\n{rows[0]}\n   \n{rows[1]}\n\n{rows[2]}\n\n", encoding="utf-8")
    ds = load_dataset(path)
    assert [e.line for e in ds.entries] == [2, 4, 6]


def test_json_list_reference_style_with_extra_keys(tmp_path):
    rows = [
        {
            "id": i + 1,
            "batch": 3,
            "generated_at": "2024-05-01T12:00:00",
            "topic": r["topic"],
            "standard": r["standard"],
            "gyaru": r["gyaru"],
            "model": "x",
        }
        for i, r in enumerate(JA)
    ]
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    ds = load_dataset(path)
    assert [e.id for e in ds.entries] == ["1", "2", "3"]
    assert [e.line for e in ds.entries] == [1, 2, 3]
    assert ds.columns == ("standard", "gyaru")
    assert ds.entries[2].standard == JA[2]["standard"]
    assert all(e.casual is None for e in ds.entries)


def test_csv_loads(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "id,topic,standard,casual,gyaru\n"
        'a,Daily,"Good morning, everyone.","Morning, all.","OMG, good morning besties!"\n'
        "b,Daily,It is raining today.,It's raining.,\"Ugh, it's literally raining, like, sooo much.\"\n",
        encoding="utf-8",
    )
    ds = load_dataset(path)
    assert ds.lang == "en"
    assert ds.columns == ("standard", "casual", "gyaru")
    assert ds.entries[0].standard == "Good morning, everyone."
    assert [e.line for e in ds.entries] == [2, 3]


def test_csv_multiline_cell_reports_the_starting_line(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text(
        'standard,gyaru\n"Line one\nline two.","OMG, like, totally!"\n"Hello.",""\n',
        encoding="utf-8",
    )
    message = error_of(path)
    assert_names(message, path, "line 4", "gyaru")
    assert "empty text" in message


def test_missing_id_is_generated_and_topic_optional(tmp_path):
    rows = [{"standard": r["standard"], "gyaru": r["gyaru"]} for r in JA]
    ds = load_dataset(write_jsonl(tmp_path / "noid.jsonl", rows))
    assert [e.id for e in ds.entries] == ["noid-0001", "noid-0002", "noid-0003"]
    assert all(e.topic is None for e in ds.entries)


def test_english_lang_detected(tmp_path):
    rows = [{"standard": "I like this song.", "gyaru": "OMG this song is literally iconic!"}]
    assert load_dataset(write_jsonl(tmp_path / "en.jsonl", rows)).lang == "en"


# --------------------------------------------------------------------------- contrasts and pairs


def test_two_column_data_valid_for_standard_refused_for_casual(tmp_path):
    rows = [{"id": r["id"], "standard": r["standard"], "gyaru": r["gyaru"]} for r in JA]
    path = write_jsonl(tmp_path / "two.jsonl", rows)
    ds = load_dataset(path, contrast="gyaru-vs-standard")
    assert ds.columns == ("standard", "gyaru")
    pairs = contrast_pairs(ds)
    assert [(p.positive, p.negative) for p in pairs] == [(r["gyaru"], r["standard"]) for r in JA]

    message = error_of(path, contrast="gyaru-vs-casual")
    assert_names(message, path, "line 1")
    assert '"casual"' in message and "gyaru-vs-casual" in message
    assert "t-1" in message and "line 3" in message
    with pytest.raises(DatasetError, match='"casual"'):
        contrast_pairs(ds, "gyaru-vs-casual")


def test_partly_missing_casual_names_the_entries(tmp_path):
    rows = [dict(JA[0]), {k: v for k, v in JA[1].items() if k != "casual"}, dict(JA[2])]
    path = write_jsonl(tmp_path / "part.jsonl", rows)
    ds = load_dataset(path)
    assert ds.columns == ("standard", "gyaru")
    message = error_of(path, contrast="gyaru-vs-casual")
    assert "line 2 (id t-2)" in message and "1 of 3" in message


def test_json_list_missing_casual_names_items(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"standard": "a", "gyaru": "b"}]), encoding="utf-8")
    assert "item 1" in error_of(path, contrast="gyaru-vs-casual")


def test_contrast_pairs_casual(tmp_path):
    ds = load_dataset(write_jsonl(tmp_path / "p.jsonl", JA), contrast="gyaru-vs-casual")
    pairs = contrast_pairs(ds, "gyaru-vs-casual")
    assert pairs[0].id == "t-1" and pairs[0].topic == "Tech"
    assert pairs[0].positive == JA[0]["gyaru"] and pairs[0].negative == JA[0]["casual"]


def test_unknown_contrast(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", JA)
    message = error_of(path, contrast="gyaru-vs-robot")
    assert "gyaru-vs-robot" in message and "gyaru-vs-casual" in message
    with pytest.raises(DatasetError, match="unknown contrast"):
        contrast_pairs(load_dataset(path), "standard-vs-gyaru")


# --------------------------------------------------------------------------- error paths


@pytest.mark.parametrize("name, content", [("blank.jsonl", "\n\n  \n"), ("blank.csv", "\n\n"), ("empty.json", "[]")])
def test_file_without_entries(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    message = error_of(path)
    assert_names(message, path)
    assert "no entries" in message


def test_line_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "arr.jsonl", JA[:1], ['["a", "b"]'])
    message = error_of(path)
    assert_names(message, path, "line 2")
    assert "object" in message and "list" in message


def test_missing_field(tmp_path):
    rows = [JA[0], JA[1], {"id": "x", "standard": "こんにちは。"}]
    path = write_jsonl(tmp_path / "miss.jsonl", rows)
    message = error_of(path)
    assert_names(message, path, "line 3", "gyaru")
    assert "missing" in message


def test_missing_column_in_csv_header(tmp_path):
    path = tmp_path / "miss.csv"
    path.write_text("id,standard,casual\na,Hello.,Hi.\n", encoding="utf-8")
    message = error_of(path)
    assert_names(message, path, "line 1", "gyaru")
    assert "missing column" in message


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("gyaru", 42, "int"),
        ("standard", ["a"], "list"),
        ("casual", {"x": 1}, "dict"),
        ("topic", 3, "int"),
        ("id", 1.5, "float"),
    ],
)
def test_field_not_a_string(tmp_path, field, value, kind):
    row = dict(JA[1])
    row[field] = value
    path = write_jsonl(tmp_path / "types.jsonl", [JA[0], row])
    message = error_of(path)
    assert_names(message, path, "line 2", field)
    assert "expected a string" in message and kind in message


@pytest.mark.parametrize("field, value", [("gyaru", ""), ("standard", "   "), ("casual", "\u3000\n")])
def test_empty_text(tmp_path, field, value):
    row = dict(JA[2])
    row[field] = value
    path = write_jsonl(tmp_path / "empty.jsonl", [JA[0], JA[1], row])
    message = error_of(path)
    assert_names(message, path, "line 3", field)
    assert message.endswith("empty text")


def test_error_message_format(tmp_path):
    row = dict(JA[0], id="t-9", gyaru="")
    path = write_jsonl(tmp_path / "x.jsonl", [JA[0], JA[1], JA[2], row])
    message = error_of(path)
    assert message.endswith('x.jsonl line 4, field "gyaru": empty text')


def test_duplicate_id_names_both_lines(tmp_path):
    rows = [JA[0], JA[1], dict(JA[2], id="t-1")]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    message = error_of(path)
    assert_names(message, path, "line 3", "id")
    assert "duplicate" in message and "line 1" in message and "t-1" in message


def test_not_a_pairs_file(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "hi", "response": "hello"}])
    message = error_of(path)
    assert_names(message, path, "line 1")
    assert "prompt, response" in message
    assert "standard" in message and "gyaru" in message


def test_not_a_pairs_csv(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("name,age\nAnn,3\n", encoding="utf-8")
    message = error_of(path)
    assert "name, age" in message and "standard" in message and "gyaru" in message


def test_bad_max_entries(tmp_path):
    with pytest.raises(DatasetError, match="max_entries"):
        load_dataset(write_jsonl(tmp_path / "p.jsonl", JA), max_entries=0)


# --------------------------------------------------------------------------- max_entries


def test_max_entries_honoured_and_stops_reading(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", JA, ["this line is not JSON"])
    ds = load_dataset(path, max_entries=2)
    assert [e.id for e in ds.entries] == ["t-1", "t-2"]
    ds = load_dataset(path, max_entries=3)  # the broken 4th line is never read
    assert len(ds.entries) == 3
    import hashlib

    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="line 4"):
        load_dataset(path)


def test_max_entries_json_list_stops_early(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(JA, ensure_ascii=False)[:-1] + ", garbage", encoding="utf-8")
    assert len(load_dataset(path, max_entries=3).entries) == 3


def test_max_entries_memory_is_bounded(tmp_path):
    path = tmp_path / "huge.jsonl"
    line = (
        json.dumps(
            {"standard": "これはとても長い普通の文です。" * 10, "gyaru": "あーしマジ長い文だし！" * 10},
            ensure_ascii=False,
        )
        + "\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line for _ in range(30_000))
    size = path.stat().st_size
    assert size > 10_000_000
    tracemalloc.start()
    try:
        ds = load_dataset(path, max_entries=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ds.entries) == 10
    assert peak < size / 10


# --------------------------------------------------------------------------- split


def test_split_deterministic_disjoint_complete():
    items = list(range(50))
    train, held = split(items, 0.2, seed=3)
    assert (train, held) == split(items, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40
    assert not set(train) & set(held)
    assert sorted(train + held) == items
    assert train == sorted(train) and held == sorted(held)


def test_split_depends_on_seed():
    items = list(range(50))
    assert split(items, 0.2, seed=0)[1] != split(items, 0.2, seed=1)[1]


@pytest.mark.parametrize("n, fraction", [(2, 0.2), (2, 0.9), (3, 0.01), (5, 0.99), (10, 0.5)])
def test_split_both_sides_non_empty(n, fraction):
    train, held = split(list(range(n)), fraction)
    assert train and held and len(train) + len(held) == n


def test_split_zero_fraction_and_tiny_inputs():
    assert split(list(range(7)), 0.0) == (list(range(7)), [])
    assert split([], 0.2) == ([], [])
    assert split(["only"], 0.2) == (["only"], [])


def test_split_rejects_bad_fraction():
    for fraction in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            split([1, 2, 3], fraction)


def test_split_works_on_pairs(tmp_path):
    pairs = contrast_pairs(load_dataset(write_jsonl(tmp_path / "p.jsonl", JA)))
    train, held = split(pairs, 0.34, seed=0)
    assert len(held) == 1 and len(train) == 2
    assert {p.id for p in train + held} == {"t-1", "t-2", "f-1"}


# --------------------------------------------------------------------------- prompts


def test_load_prompts_jsonl(tmp_path):
    path = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"id": "p1", "topic": "Tech", "prompt": "おすすめのアプリは？"}, {"prompt": " What's up? "}],
        [""],
    )
    assert load_prompts(path) == ["おすすめのアプリは？", "What's up?"]


def test_load_prompts_text(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Tell me a joke.\n\n  Plan my weekend.  \n", encoding="utf-8")
    assert load_prompts(path) == ["Tell me a joke.", "Plan my weekend."]


def test_load_prompts_shortcut_path(monkeypatch, tmp_path):
    write_jsonl(tmp_path / "prompts_en.jsonl", [{"prompt": "Hi?"}])
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    assert load_prompts("en") == ["Hi?"]
    assert load_prompts("bundled:en") == ["Hi?"]


def test_load_prompts_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="empty.jsonl.*empty"):
        load_prompts(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DatasetError, match="blank.txt.*no prompts"):
        load_prompts(blank)
    missing = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"text": "no prompt"}])
    with pytest.raises(DatasetError) as info:
        load_prompts(missing)
    assert_names(str(info.value), missing, "line 2", "prompt")
    with pytest.raises(DatasetError, match="not found"):
        load_prompts(tmp_path / "nope.jsonl")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": 3}])
    with pytest.raises(DatasetError, match='line 1, field "prompt": expected a string'):
        load_prompts(bad)
