"""Record readers for data files: JSONL, a JSON list, CSV/TSV with a header, and plain text lines.

Each reader yields (number, location, raw record) and raises DatasetError naming the file, the line (or list item)
and, for field checks, the field: `FILE line 3, field "gyaru": empty text`. What a record must hold is the caller's
business (data.py for contrast pairs and prompts); only `text_field` checks a single text field here.

JSONL, CSV and text files are read line by line, so a caller that stops early never reads the rest of the file.
A JSON list is parsed whole with json.loads (such files are small: uploads are size-limited); when it is broken,
the items before the broken one are still yielded, in order, before the error names the item where parsing failed.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from .messages import Text, composed, localized, rendered

_CHUNK = 1 << 16
_SPACE = re.compile(r"[ \t\r\n]*")  # JSON's whitespace
_LOCATION = re.compile(r"(line|item) ([0-9]+)(?: \((header|line ([0-9]+))\))?")  # the locations records yield

Record = tuple[int, str, Any]  # (line number or item index, location for messages, parsed value)
HeaderCheck = Callable[[list[str], str], None]  # (CSV column names, location) -> raises DatasetError


class DatasetError(ValueError):
    """A dataset or prompt file that cannot be used; the message names the file, line and field."""


# --------------------------------------------------------------------------- messages

# Where in a file (records yield these as their location; error_at puts them after the file's name)
LINE = Text(en="line {n}", ja="{n} 行目")
ITEM = Text(en="item {n}", ja="{n} 番目の要素")
HEADER_LINE = Text(en="line {n} (header)", ja="{n} 行目（ヘッダー）")
ITEM_AT_LINE = Text(en="item {n} (line {line})", ja="{n} 番目の要素（{line} 行目）")
FIELD = Text(en=', field "{field}"', ja="、フィールド「{field}」")
# JSON value kinds, as json_type names them
A_LIST = Text(en="a list", ja="リスト")
A_STRING = Text(en="a string", ja="文字列")
A_BOOLEAN = Text(en="a boolean", ja="真偽値")
A_NUMBER = Text(en="a number", ja="数")
NO_KEYS = Text(en="none", ja="なし")
# What is wrong
FILE_NOT_FOUND = Text(en="file not found", ja="ファイルが見つかりません")
NOT_A_REGULAR_FILE = Text(en="not a regular file", ja="通常のファイルではありません")
EMPTY_FILE = Text(en="empty file (0 bytes)", ja="空のファイルです（0 バイト）")
FIELD_MISSING = Text(en="missing (the entry has keys: {keys})", ja="ありません（このエントリーのキー: {keys}）")
EXPECTED_STRING = Text(en="expected a string, got {kind}", ja="文字列にしてください（{kind} でした）")
EMPTY_TEXT = Text(en="empty text", ja="テキストが空です")
TEXT_TOO_LONG = Text(
    en="{length:,} characters, over the limit of {limit:,} characters per text",
    ja="{length:,} 文字あり、1 テキストあたりの上限 {limit:,} 文字を超えています",
)
INVALID_UTF8 = Text(en="invalid UTF-8 at byte offset {offset}", ja="バイト位置 {offset} に不正な UTF-8 があります")
INVALID_JSON_AT = Text(
    en="invalid JSON: {reason} (column {column})", ja="JSON として読めません: {reason}（{column} 文字目）"
)
INVALID_JSON = Text(en="invalid JSON: {reason}", ja="JSON として読めません: {reason}")
EXTRA_AFTER_LIST = Text(
    en="invalid JSON: extra text after the closing ']'",
    ja="JSON として読めません: 閉じる ']' の後に余分なテキストがあります",
)
LIST_NOT_CLOSED = Text(en="the list is not closed", ja="リストが閉じていません")
NOT_A_LIST = Text(
    en="expected a JSON list of objects ('['), found {found}",
    ja="オブジェクトの JSON リスト（'['）が必要ですが、{found} でした",
)
INVALID_CSV = Text(en="invalid CSV: {reason}", ja="CSV として読めません: {reason}")
CELL_COUNT = Text(
    en="expected {expected} cells (as in the header), got {got}",
    ja="セルが {got} 個あります（ヘッダーと同じ {expected} 個にしてください）",
)
NO_ROWS = Text(en="no entries (the file holds only blank lines)", ja="エントリーがありません（空行しかありません）")
DUPLICATE_COLUMN = Text(en="duplicate column in the header", ja="ヘッダーに同じ名前の列が 2 つあります")


def location(where: str) -> str:
    """A location as records yield it ('line 3', 'item 2', 'item 2 (line 5)', 'line 1 (header)') as a Message that
    can say itself in Japanese; anything else as given. Records yield plain strings (a Message per record would
    slow the reading of a big file by a fifth); error_at and the messages quoting a location go through this."""
    match = _LOCATION.fullmatch(where) if type(where) is str else None
    if match is None:
        return where
    kind, n, paren, line = match.groups()
    if paren is None:
        return (LINE if kind == "line" else ITEM)(n=int(n))
    return HEADER_LINE(n=int(n)) if paren == "header" else ITEM_AT_LINE(n=int(n), line=int(line))


# --------------------------------------------------------------------------- files


def shown_path(path: Path) -> str:
    """The path as messages show it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def error_at(shown: str, where: str | None, message: str, field: str | None = None) -> DatasetError:
    """A DatasetError reading `FILE line N, field "F": message`; `where` and `message` may be Messages (the error
    then says itself in either language)."""

    def say(lang: str) -> str:
        head = shown if where is None else f"{shown} {localized(location(where), lang)}"
        if field is not None:
            head += FIELD.say(lang, field=field)
        return f"{head}: {localized(message, lang)}"

    return DatasetError(rendered(say))


def check_file(path: Path, shown: str) -> None:
    """Refuse a missing, non-regular or zero-byte file."""
    if not path.exists():
        raise error_at(shown, None, FILE_NOT_FOUND())
    if not path.is_file():
        raise error_at(shown, None, NOT_A_REGULAR_FILE())
    if path.stat().st_size == 0:
        raise error_at(shown, None, EMPTY_FILE())


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sniff(path: Path) -> str:
    """The first non-whitespace character of the file, or '' if none in its first 64 KiB."""
    with open(path, "rb") as f:
        head = f.read(_CHUNK)
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    return chr(text[0]) if text else ""


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    names = {list: A_LIST, str: A_STRING, bool: A_BOOLEAN, int: A_NUMBER, float: A_NUMBER}
    return "null" if value is None else names[type(value)]() if type(value) in names else type(value).__name__


def text_field(
    record: dict, key: str, shown: str, where: str, required: bool, max_chars: int | None = None
) -> str | None:
    """A text field: a non-blank string (at most `max_chars` characters); None when optional and absent (or null /
    empty CSV cell)."""
    if key not in record or record[key] is None:
        if required:
            has = ", ".join(str(k) for k in record) or NO_KEYS()
            raise error_at(shown, where, composed(FIELD_MISSING, keys=has), field=key)
        return None
    value = record[key]
    if not isinstance(value, str):
        raise error_at(shown, where, EXPECTED_STRING(kind=type(value).__name__), field=key)
    if not value.strip():
        raise error_at(shown, where, EMPTY_TEXT(), field=key)
    if max_chars is not None and len(value) > max_chars:
        raise error_at(shown, where, TEXT_TOO_LONG(length=len(value), limit=max_chars), field=key)
    return value.strip()


# --------------------------------------------------------------------------- text


def decoded_lines(path: Path, shown: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text with its line ending) for each line; invalid UTF-8 names its byte offset."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error_at(shown, LINE(n=number), INVALID_UTF8(offset=offset + e.start)) from None
            if number == 1:
                text = text.removeprefix("\ufeff")
            offset += len(raw)
            yield number, text


def _read_text(path: Path, shown: str) -> str:
    """The whole file as text, a leading BOM dropped; invalid UTF-8 names its byte offset."""
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise error_at(shown, None, INVALID_UTF8(offset=e.start)) from None


# --------------------------------------------------------------------------- JSONL and JSON lists


def iter_jsonl(path: Path, shown: str) -> Iterator[Record]:
    """(line number, location, parsed value) for each non-blank line of a JSONL file."""
    for number, text in decoded_lines(path, shown):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            # the column within this line (json's own colno restarts after the line's trailing newline)
            column = min(e.pos, len(text.rstrip("\r\n"))) + 1
            raise error_at(shown, LINE(n=number), INVALID_JSON_AT(reason=e.msg, column=column)) from None
        yield number, f"line {number}", value


def iter_json_list(path: Path, shown: str) -> Iterator[Record]:
    """(item index, location, value) for each item of a JSON list file; 1-based."""
    text = _read_text(path, shown)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        yield from _items_then_error(text, exc, shown)
        return
    if not isinstance(items, list):
        raise error_at(shown, LINE(n=1), composed(NOT_A_LIST, found=json_type(items)))
    for index, value in enumerate(items, start=1):
        yield index, f"item {index}", value


def _items_then_error(text: str, exc: json.JSONDecodeError, shown: str) -> Iterator[Record]:
    """The items of a broken list that parse, then the error naming the item (and line) where json.loads failed.

    The good items come first so that a caller stopping after N entries never meets a break further on.
    """
    if exc.msg == "Extra data":  # the list itself is whole
        for index, value in enumerate(json.loads(text[: exc.pos]), start=1):
            yield index, f"item {index}", value
        raise error_at(shown, LINE(n=exc.lineno), EXTRA_AFTER_LIST())
    index = yield from _leading_items(text)
    reason = LIST_NOT_CLOSED() if not text[exc.pos :].strip() else exc.msg
    raise error_at(shown, ITEM_AT_LINE(n=index, line=exc.lineno), composed(INVALID_JSON, reason=reason))


def _leading_items(text: str) -> Generator[Record, None, int]:
    """Yield a list's items while they parse; return the 1-based index of the item where parsing stops."""
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text, text.find("[") + 1).end()
    index = 1
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return index
        yield index, f"item {index}", value
        pos = _SPACE.match(text, end).end()
        if not text.startswith(",", pos):
            return index
        pos = _SPACE.match(text, pos + 1).end()
        index += 1


# --------------------------------------------------------------------------- CSV


def iter_csv(path: Path, shown: str, delimiter: str, check_header: HeaderCheck | None = None) -> Iterator[Record]:
    """(line number, location, {column: cell}) for each row of a CSV/TSV file with a header.

    `check_header(columns, location)` may refuse the header (e.g. one without the columns the caller needs).
    """
    lines = (text for _, text in decoded_lines(path, shown))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise error_at(shown, LINE(n=start), INVALID_CSV(reason=str(e))) from None
        line, start = start, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = _csv_header(row, shown, line)
            if check_header is not None:
                check_header(header, HEADER_LINE(n=line))
            continue
        if len(row) != len(header):
            raise error_at(shown, LINE(n=line), CELL_COUNT(expected=len(header), got=len(row)))
        yield line, f"line {line}", {key: cell for key, cell in zip(header, row) if key}
    if header is None:
        raise error_at(shown, None, NO_ROWS())


def _csv_header(row: list[str], shown: str, line: int) -> list[str]:
    """The CSV header's column names; refuses a column named twice."""
    header = [cell.strip() for cell in row]
    dupes = sorted({name for name in header if name and header.count(name) > 1})
    if dupes:
        raise error_at(shown, LINE(n=line), DUPLICATE_COLUMN(), field=dupes[0])
    return header


# --------------------------------------------------------------------------- by file type


def records(path: Path, shown: str, check_header: HeaderCheck | None = None) -> Iterator[Record]:
    """The raw records of a data file, picking the reader from the extension and the content."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return iter_csv(path, shown, ",", check_header)
    if suffix == ".tsv":
        return iter_csv(path, shown, "\t", check_header)
    first = sniff(path)
    if first == "[":
        return iter_json_list(path, shown)
    if first == "{" or suffix in (".jsonl", ".json", ".ndjson"):
        return iter_jsonl(path, shown)
    return iter_csv(path, shown, ",", check_header)
