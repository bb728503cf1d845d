"""steering.readers: JSONL, JSON list and CSV readers, their file/line/item messages, and field checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steering.readers import DatasetError, check_file, records, shown_path, text_field
from tests.samples import JA, write_jsonl


def read_all(path: Path) -> list:
    return list(records(path, shown_path(path)))


def reader_error(path: Path) -> str:
    with pytest.raises(DatasetError) as info:
        check_file(path, shown_path(path))
        read_all(path)
    return str(info.value)


def assert_names(message: str, path: Path, where: str | None = None, field: str | None = None) -> None:
    assert path.name in message, message
    if where is not None:
        assert where in message, message
    if field is not None:
        assert f'field "{field}"' in message, message


def test_json_list_larger_than_64_kib(tmp_path):
    rows = [
        {"id": f"x{i}", "standard": f"これは{i}番目の文です。" * 20, "gyaru": f"あーし{i}番目だし！" * 20}
        for i in range(400)
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert path.stat().st_size > 3 * 65536
    items = read_all(path)
    assert len(items) == 400
    assert items[-1] == (400, "item 400", rows[-1])


def test_file_not_found(tmp_path):
    path = tmp_path / "nope.jsonl"
    message = reader_error(path)
    assert_names(message, path)
    assert "not found" in message


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.jsonl"
    path.write_bytes(b"")
    message = reader_error(path)
    assert_names(message, path)
    assert "empty" in message


def test_invalid_utf8_names_byte_offset(tmp_path):
    path = tmp_path / "bad.jsonl"
    first = (json.dumps(JA[0], ensure_ascii=False) + "\n").encode("utf-8")
    second = b'{"standard": "ok", "gyaru": "\xff\xfe"}\n'
    path.write_bytes(first + second)
    message = reader_error(path)
    assert_names(message, path, "line 2")
    offset = len(first) + second.index(b"\xff")
    assert f"byte offset {offset}" in message


def test_invalid_utf8_in_json_list(tmp_path):
    path = tmp_path / "bad.json"
    body = b'[{"standard": "ok", "gyaru": "\xc3"}]'
    path.write_bytes(body)
    message = reader_error(path)
    assert_names(message, path)
    offset = body.index(b"\xc3")
    assert f"byte offset {offset}" in message


def test_invalid_json_line(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", JA[:2], ['{"standard": "a", "gyaru": '])
    message = reader_error(path)
    assert_names(message, path, "line 3")
    assert "invalid JSON" in message


def test_invalid_json_in_list(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"standard": "a", "gyaru": "b"},\n {"standard": "a" "gyaru": "b"}\n]', encoding="utf-8")
    message = reader_error(path)
    assert_names(message, path, "item 2")
    assert "line 3" in message and "invalid JSON" in message


def test_unclosed_json_list(tmp_path):
    path = tmp_path / "open.json"
    path.write_text('[{"standard": "a", "gyaru": "b"},', encoding="utf-8")
    assert "invalid JSON" in reader_error(path)


def test_csv_row_with_wrong_cell_count(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("standard,gyaru\nHello.,OMG hi!\nonly one\n", encoding="utf-8")
    assert_names(reader_error(path), path, "line 3")


# --------------------------------------------------------------------------- added with the reader split


def test_json_list_extra_text_after_the_list(tmp_path):
    path = tmp_path / "extra.json"
    path.write_text('[{"a": 1},\n {"a": 2}]\n junk', encoding="utf-8")
    items = records(path, shown_path(path))
    assert [next(items)[2], next(items)[2]] == [{"a": 1}, {"a": 2}]  # the whole list comes first
    with pytest.raises(DatasetError, match=r"extra\.json line 3: invalid JSON: extra text after the closing '\]'"):
        next(items)


def test_broken_json_list_yields_the_items_before_the_break(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"a": 1}, {"a": 2},\n {"a": 3} {"a": 4}]', encoding="utf-8")
    items = records(path, shown_path(path))
    assert [next(items) for _ in range(3)] == [
        (1, "item 1", {"a": 1}),
        (2, "item 2", {"a": 2}),
        (3, "item 3", {"a": 3}),
    ]
    with pytest.raises(DatasetError, match=r"item 3 \(line 2\): invalid JSON: Expecting ',' delimiter"):
        next(items)


@pytest.mark.parametrize(
    "body, where, message",
    [
        ('[{"a": 1},', "item 2 (line 1)", "the list is not closed"),
        ('[{"a": 1}', "item 1 (line 1)", "the list is not closed"),
        ('[{"a": 1},\n]', "item 2 (line 2)", "Expecting value"),
        ('[{"a": 1}, {"a": }]', "item 2 (line 1)", "Expecting value"),
    ],
)
def test_broken_json_list_names_the_item(tmp_path, body, where, message):
    path = tmp_path / "bad.json"
    path.write_text(body, encoding="utf-8")
    assert reader_error(path).endswith(f"bad.json {where}: invalid JSON: {message}")


def test_json_list_with_a_bom_and_leading_space(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf \n" + json.dumps([{"a": "\u3042"}]).encode("utf-8"))
    assert read_all(path) == [(1, "item 1", {"a": "\u3042"})]


def test_csv_duplicate_column_and_header_check(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n1,2,3\n", encoding="utf-8")
    assert reader_error(path).endswith('dup.csv line 1, field "a": duplicate column in the header')
    path.write_text("\nx,y\n1,2\n", encoding="utf-8")
    seen = []
    assert list(records(path, "dup.csv", lambda header, where: seen.append((header, where)))) == [
        (3, "line 3", {"x": "1", "y": "2"})
    ]
    assert seen == [(["x", "y"], "line 2 (header)")]


def test_reader_is_picked_by_extension_then_content(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("x\ty\n1\t2\n", encoding="utf-8")
    assert read_all(tsv) == [(2, "line 2", {"x": "1", "y": "2"})]
    jsonl_txt = tmp_path / "j.txt"
    jsonl_txt.write_text('{"x": 1}\n', encoding="utf-8")
    assert read_all(jsonl_txt) == [(1, "line 1", {"x": 1})]
    csv_txt = tmp_path / "c.txt"
    csv_txt.write_text("x,y\n1,2\n", encoding="utf-8")
    assert read_all(csv_txt) == [(2, "line 2", {"x": "1", "y": "2"})]


def test_text_field():
    record = {"a": "  hi ", "n": 3, "blank": "  ", "none": None}
    assert text_field(record, "a", "f.jsonl", "line 1", required=True) == "hi"
    assert text_field(record, "none", "f.jsonl", "line 1", required=False) is None
    assert text_field(record, "missing", "f.jsonl", "line 1", required=False) is None
    with pytest.raises(DatasetError, match=r'^f\.jsonl line 1, field "missing": missing \(the entry has keys: a, n'):
        text_field(record, "missing", "f.jsonl", "line 1", required=True)
    with pytest.raises(DatasetError, match='field "n": expected a string, got int'):
        text_field(record, "n", "f.jsonl", "line 1", required=True)
    with pytest.raises(DatasetError, match='field "blank": empty text'):
        text_field(record, "blank", "f.jsonl", "line 1", required=True)
