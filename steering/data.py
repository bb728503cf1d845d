"""Contrast-pair datasets: load and validate them, turn them into (positive, negative) pairs, split and describe them.

A dataset holds one entry per line of meaning, each written in up to three registers:
`standard` (polite/neutral), `casual` (plain but not gyaru) and `gyaru`. Supported files:

* JSONL (.jsonl): one JSON object per line, blank lines skipped;
* JSON list (.json): a list of objects; keys other than id/topic/standard/casual/gyaru are ignored;
* CSV / TSV (.csv, .tsv) with a header row.

Files are read incrementally, so `max_entries` bounds the memory used even for huge files.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import random
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .style import guess_lang, normalize, style_score

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CONTRASTS = ("gyaru-vs-standard", "gyaru-vs-casual")
BUNDLED = {"ja": DATA_DIR / "gyaru_ja.jsonl", "en": DATA_DIR / "gal_en.jsonl"}
TEXT_COLUMNS = ("standard", "casual", "gyaru")
REQUIRED = ("standard", "gyaru")
OPTIONAL = ("id", "topic", "casual")
AASHI = "あーし"

_CHUNK = 1 << 16
_MAX_ITEM_CHARS = 1 << 24  # a JSON list item larger than this is treated as broken, not as "read more"
_LANG_SAMPLE = 20

T = TypeVar("T")


class DatasetError(ValueError):
    """A dataset or prompt file that cannot be used; the message names the file, line and field."""


@dataclass
class Entry:
    """One meaning written in each register; `line` is where it came from (JSON list: item index)."""

    id: str
    topic: str | None
    standard: str
    gyaru: str
    casual: str | None
    line: int


@dataclass
class Dataset:
    """A loaded, validated dataset and what it is made of."""

    path: Path
    name: str
    entries: list[Entry]
    sha256: str
    lang: str
    columns: tuple[str, ...]


@dataclass
class Pair:
    """A contrast pair: `positive` shows the style (gyaru), `negative` does not."""

    id: str
    topic: str | None
    positive: str
    negative: str


# --------------------------------------------------------------------------- paths and messages


def resolve_path(path: str | Path) -> Path:
    """The file a dataset argument names: `bundled:ja`, `bundled:en`, `ja`, `en` or a path."""
    text = str(path)
    key = text.removeprefix("bundled:")
    if key in BUNDLED:
        return BUNDLED[key]
    if text.startswith("bundled:"):
        raise DatasetError(
            f"unknown bundled dataset {text!r}: expected one of " + ", ".join(f"bundled:{k}" for k in BUNDLED)
        )
    return Path(path)


def _shown(path: Path) -> str:
    """The path as messages show it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _error(shown: str, where: str | None, message: str, field: str | None = None) -> DatasetError:
    """A DatasetError reading `FILE line N, field "F": message`."""
    head = shown if where is None else f"{shown} {where}"
    if field is not None:
        head += f', field "{field}"'
    return DatasetError(f"{head}: {message}")


def _check_file(path: Path, shown: str) -> None:
    """Refuse a missing, non-regular or zero-byte file."""
    if not path.exists():
        raise _error(shown, None, "file not found")
    if not path.is_file():
        raise _error(shown, None, "not a regular file")
    if path.stat().st_size == 0:
        raise _error(shown, None, "empty file (0 bytes)")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_contrast(contrast: str) -> None:
    """Refuse a contrast name that is not one of CONTRASTS."""
    if contrast not in CONTRASTS:
        raise DatasetError(f'unknown contrast "{contrast}": expected one of {", ".join(CONTRASTS)}')


def _negative_column(contrast: str) -> str:
    """The column a contrast puts on the negative side."""
    check_contrast(contrast)
    return contrast.split("-vs-", 1)[1]


# --------------------------------------------------------------------------- raw readers


def _decoded_lines(path: Path, shown: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text with its line ending) for each line; invalid UTF-8 names its byte offset."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _error(shown, f"line {number}", f"invalid UTF-8 at byte offset {offset + e.start}") from None
            if number == 1:
                text = text.removeprefix("\ufeff")
            offset += len(raw)
            yield number, text


def _decoded_chunks(path: Path, shown: str) -> Iterator[str]:
    """The file's text in chunks; invalid UTF-8 names its byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    first = True
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise _error(shown, None, f"invalid UTF-8 at byte offset {offset - pending + e.start}") from None
            offset += len(chunk)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if text:
                yield text
            if not chunk:
                return


def _iter_jsonl(path: Path, shown: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, location, parsed value) for each non-blank line of a JSONL file."""
    for number, text in _decoded_lines(path, shown):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            # the column within this line (json's own colno restarts after the line's trailing newline)
            column = min(e.pos, len(text.rstrip("\r\n"))) + 1
            raise _error(shown, f"line {number}", f"invalid JSON: {e.msg} (column {column})") from None
        yield number, f"line {number}", value


class _JsonListReader:
    """Reads the items of a top-level JSON list one at a time, holding only the current item's text."""

    def __init__(self, path: Path, shown: str) -> None:
        self.shown = shown
        self.chunks = _decoded_chunks(path, shown)
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        """Append the next chunk to the buffer; False at end of file."""
        if self.eof:
            return False
        chunk = next(self.chunks, None)
        if chunk is None:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def _peek(self) -> str | None:
        """The next non-whitespace character (not consumed), or None at end of file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self._advance(self.pos + 1)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return None

    def _decode_item(self, index: int) -> Any:
        """Decode the value starting at the cursor, reading more of the file while it is incomplete."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if len(self.buf) - self.pos < _MAX_ITEM_CHARS and self._fill():
                    continue
                line = self.line + self.buf.count("\n", self.pos, e.pos)
                raise _error(self.shown, f"item {index} (line {line})", f"invalid JSON: {e.msg}") from None
            incomplete = end == len(self.buf) and not isinstance(value, (dict, list, str))
            if incomplete and self._fill():  # a number or literal may continue in the next chunk
                continue
            self._advance(end)
            return value

    def items(self) -> Iterator[tuple[int, str, Any]]:
        """(item index, location, value) for each item of the list; 1-based."""
        first = self._peek()
        if first != "[":
            found = "nothing" if first is None else repr(first)
            raise _error(self.shown, f"line {self.line}", f"expected a JSON list of objects ('['), found {found}")
        self._advance(self.pos + 1)
        if self._peek() == "]":
            self._advance(self.pos + 1)
            return
        index = 0
        while True:
            index += 1
            if self._peek() is None:
                raise _error(self.shown, f"item {index} (line {self.line})", "invalid JSON: the list is not closed")
            value = self._decode_item(index)
            yield index, f"item {index}", value
            sep = self._peek()
            if sep == "]":
                self._advance(self.pos + 1)
                break
            if sep != ",":
                found = "end of file" if sep is None else repr(sep)
                raise _error(
                    self.shown,
                    f"item {index} (line {self.line})",
                    f"invalid JSON: expected ',' or ']' after the item, found {found}",
                )
            self._advance(self.pos + 1)
        if self._peek() is not None:
            raise _error(self.shown, f"line {self.line}", "invalid JSON: extra text after the closing ']'")


def _iter_json_list(path: Path, shown: str) -> Iterator[tuple[int, str, Any]]:
    """(item index, location, value) for each item of a JSON list file."""
    yield from _JsonListReader(path, shown).items()


def _iter_csv(path: Path, shown: str, delimiter: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, location, {column: cell}) for each row of a CSV/TSV file with a header."""
    lines = (text for _, text in _decoded_lines(path, shown))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise _error(shown, f"line {start}", f"invalid CSV: {e}") from None
        line, start = start, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = _csv_header(row, shown, line)
            continue
        if len(row) != len(header):
            raise _error(shown, f"line {line}", f"expected {len(header)} cells (as in the header), got {len(row)}")
        yield line, f"line {line}", {key: cell for key, cell in zip(header, row) if key}
    if header is None:
        raise _error(shown, None, "no entries (the file holds only blank lines)")


def _csv_header(row: list[str], shown: str, line: int) -> list[str]:
    """The CSV header's column names; refuses duplicates and a header without the pair columns."""
    header = [cell.strip() for cell in row]
    dupes = sorted({name for name in header if name and header.count(name) > 1})
    if dupes:
        raise _error(shown, f"line {line}", "duplicate column in the header", field=dupes[0])
    _check_pair_keys(header, shown, f"line {line} (header)")
    for key in REQUIRED:
        if key not in header:
            raise _error(
                shown, f"line {line} (header)", f"missing column (the header has: {', '.join(header)})", field=key
            )
    return header


def _sniff(path: Path) -> str:
    """The first non-whitespace character of the file, or '' if none in its first 64 KiB."""
    with open(path, "rb") as f:
        head = f.read(_CHUNK)
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    return chr(text[0]) if text else ""


def _records(path: Path, shown: str) -> Iterator[tuple[int, str, Any]]:
    """The raw records of a dataset file, picking the reader from the extension and the content."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _iter_csv(path, shown, ",")
    if suffix == ".tsv":
        return _iter_csv(path, shown, "\t")
    first = _sniff(path)
    if first == "[":
        return _iter_json_list(path, shown)
    if first == "{" or suffix in (".jsonl", ".json", ".ndjson"):
        return _iter_jsonl(path, shown)
    return _iter_csv(path, shown, ",")


# --------------------------------------------------------------------------- validation


def _check_pair_keys(keys: Sequence[str], shown: str, where: str) -> None:
    """Refuse a record or header holding neither `standard` nor `gyaru`: the file is not contrast pairs."""
    if any(k in keys for k in REQUIRED):
        return
    has = ", ".join(str(k) for k in keys) or "no keys"
    raise _error(
        shown,
        where,
        f"this does not look like a contrast-pair file: found keys {has}; "
        f"expected {' and '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})",
    )


def _text(record: dict, key: str, shown: str, where: str, required: bool) -> str | None:
    """A text field: a non-blank string; None when optional and absent (or null / empty CSV cell)."""
    if key not in record or record[key] is None:
        if required:
            has = ", ".join(str(k) for k in record) or "none"
            raise _error(shown, where, f"missing (the entry has keys: {has})", field=key)
        return None
    value = record[key]
    if not isinstance(value, str):
        raise _error(shown, where, f"expected a string, got {type(value).__name__}", field=key)
    if not value.strip():
        raise _error(shown, where, "empty text", field=key)
    return value.strip()


def _entry_id(record: dict, shown: str, where: str, default: str) -> str:
    """The entry's id: a string (or integer) id field, else `default`."""
    value = record.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _error(shown, where, f"expected a string, got {type(value).__name__}", field="id")
    return str(value).strip()


def _topic(record: dict, shown: str, where: str) -> str | None:
    """The entry's topic, or None when absent or blank."""
    value = record.get("topic")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error(shown, where, f"expected a string, got {type(value).__name__}", field="topic")
    return value.strip() or None


def _make_entry(record: Any, number: int, where: str, shown: str, default_id: str) -> Entry:
    """Validate one raw record and turn it into an Entry."""
    if not isinstance(record, dict):
        raise _error(shown, where, f"expected a JSON object, got {_json_type(record)}")
    return Entry(
        id=_entry_id(record, shown, where, default_id),
        topic=_topic(record, shown, where),
        standard=_text(record, "standard", shown, where, required=True),
        gyaru=_text(record, "gyaru", shown, where, required=True),
        casual=_text(record, "casual", shown, where, required=False),
        line=number,
    )


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _location_unit(path: Path) -> str:
    """What Entry.line counts in this file: "item" for a JSON list, else "line"."""
    if path.suffix.lower() in (".csv", ".tsv") or not path.is_file():
        return "line"
    return "item" if _sniff(path) == "[" else "line"


def _check_columns(entries: Sequence[Entry], contrast: str, path: Path) -> None:
    """Refuse a contrast whose negative column is missing from some entries, naming them."""
    column = _negative_column(contrast)
    missing = [e for e in entries if getattr(e, column) is None]
    if not missing:
        return
    shown, unit = _shown(path), _location_unit(path)
    listed = ", ".join(f"{unit} {e.line} (id {e.id})" for e in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise DatasetError(
        f'{shown}: contrast "{contrast}" needs column "{column}", which is missing '
        f"in {len(missing)} of {len(entries)} entries: {listed}{more}"
    )


def _columns(entries: Sequence[Entry]) -> tuple[str, ...]:
    """The text columns every entry has, in the order standard, casual, gyaru."""
    return tuple(c for c in TEXT_COLUMNS if entries and all(getattr(e, c) is not None for e in entries))


def _guess_dataset_lang(entries: Sequence[Entry]) -> str:
    """'ja' when a sample of the gyaru texts holds kana or kanji, else 'en'."""
    return guess_lang(" ".join(e.gyaru for e in entries[:_LANG_SAMPLE]))


# --------------------------------------------------------------------------- public API


def load_dataset(path: str | Path, contrast: str | None = None, max_entries: int | None = None) -> Dataset:
    """Load and validate a pair file (JSONL, JSON list or CSV); `path` may be `bundled:ja`/`ja` or `bundled:en`/`en`.

    Raises DatasetError naming the file, line and field of the first problem. With `contrast`, also refuses
    data that lacks that contrast's negative column. With `max_entries`, stops after that many entries.
    """
    if contrast is not None:
        check_contrast(contrast)
    if max_entries is not None and max_entries < 1:
        raise DatasetError(f"max_entries must be at least 1, got {max_entries}")
    resolved = resolve_path(path)
    shown = _shown(resolved)
    _check_file(resolved, shown)
    entries = _read_entries(resolved, shown, max_entries)
    if contrast is not None:
        _check_columns(entries, contrast, resolved)
    return Dataset(
        path=resolved,
        name=resolved.stem,
        entries=entries,
        sha256=file_sha256(resolved),
        lang=_guess_dataset_lang(entries),
        columns=_columns(entries),
    )


def _read_entries(path: Path, shown: str, max_entries: int | None) -> list[Entry]:
    """The validated entries of a file, at most `max_entries` of them."""
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    records = _records(path, shown)
    try:
        for number, where, record in records:
            if not entries and isinstance(record, dict):
                _check_pair_keys(list(record), shown, where)
            entry = _make_entry(record, number, where, shown, f"{path.stem}-{len(entries) + 1:04d}")
            if entry.id in seen:
                raise _error(shown, where, f'duplicate id "{entry.id}" (first used at {seen[entry.id]})', field="id")
            seen[entry.id] = where
            entries.append(entry)
            if max_entries is not None and len(entries) >= max_entries:
                break
    finally:
        records.close()
    if not entries:
        raise _error(shown, None, "no entries (the file holds only blank lines or an empty list)")
    return entries


def contrast_pairs(dataset: Dataset, contrast: str = "gyaru-vs-standard") -> list[Pair]:
    """(positive=gyaru, negative=standard or casual) pairs for a contrast."""
    column = _negative_column(contrast)
    _check_columns(dataset.entries, contrast, dataset.path)
    return [Pair(e.id, e.topic, e.gyaru, getattr(e, column)) for e in dataset.entries]


def split(items: Sequence[T], heldout_fraction: float = 0.2, seed: int = 0) -> tuple[list[T], list[T]]:
    """(train, heldout): a seeded, deterministic, disjoint split keeping the input order on each side.

    With two or more items and a fraction above 0, both sides are non-empty; fraction 0 holds nothing out.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    n = len(items)
    k = _heldout_count(n, heldout_fraction)
    order = random.Random(seed).sample(range(n), n)
    held = set(order[:k])
    train = [items[i] for i in range(n) if i not in held]
    heldout = [items[i] for i in range(n) if i in held]
    return train, heldout


def _heldout_count(n: int, fraction: float) -> int:
    """How many of n items to hold out: round(n * fraction), kept within [1, n-1] when that is possible."""
    if fraction == 0.0 or n == 0:
        return 0
    k = round(n * fraction)
    return min(max(k, 1), n - 1) if n >= 2 else k


def _length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Mean, median, min and max length in characters."""
    lengths = [len(t) for t in texts]
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    return {
        "mean": round(statistics.fmean(lengths), 2),
        "median": float(statistics.median(lengths)),
        "min": min(lengths),
        "max": max(lengths),
    }


def _share(flags: Sequence[bool]) -> float:
    """The share of true flags, 0.0 for none."""
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def _column_texts(dataset: Dataset, column: str) -> list[str]:
    """The non-missing texts of one column."""
    return [t for t in (getattr(e, column) for e in dataset.entries) if t is not None]


def dataset_stats(dataset: Dataset) -> dict[str, Any]:
    """JSON-ready numbers describing a dataset: size, topics, あーし rate, marker rates, scores, lengths."""
    topics = Counter(e.topic if e.topic is not None else "(none)" for e in dataset.entries)
    marker_rate: dict[str, float] = {}
    mean_score: dict[str, float] = {}
    length: dict[str, dict[str, float]] = {}
    for column in TEXT_COLUMNS:
        texts = _column_texts(dataset, column)
        if not texts:
            continue
        scores = [style_score(t, dataset.lang) for t in texts]
        marker_rate[column] = _share([bool(s.matches) for s in scores])
        mean_score[column] = round(statistics.fmean(s.score for s in scores), 3)
        length[column] = _length_stats(texts)
    gyaru = _column_texts(dataset, "gyaru")
    return {
        "name": dataset.name,
        "path": _shown(dataset.path),
        "entries": len(dataset.entries),
        "lang": dataset.lang,
        "sha256": dataset.sha256,
        "columns": list(dataset.columns),
        "topics": dict(sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))),
        "aashi_rate": _share([AASHI in normalize(t, "ja") for t in gyaru]),
        "marker_rate": marker_rate,
        "mean_score": mean_score,
        "length": length,
    }


def format_stats_table(stats: dict[str, Any]) -> str:
    """A plain-text table of dataset_stats() output, for the CLI."""
    lines = [
        f"dataset   {stats['name']}  ({stats['path']})",
        f"entries   {stats['entries']}    lang {stats['lang']}    columns {', '.join(stats['columns'])}",
        f"sha256    {stats['sha256']}",
        f"あーし    {stats['aashi_rate'] * 100:.1f}% of gyaru lines",
        "topics    " + ", ".join(f"{name} {count}" for name, count in stats["topics"].items()),
        "",
        f"{'column':<10}{'markers':>9}{'score':>9}{'len mean':>10}{'median':>8}{'min':>6}{'max':>6}",
    ]
    for column, lengths in stats["length"].items():
        lines.append(
            f"{column:<10}{stats['marker_rate'][column] * 100:>8.1f}%{stats['mean_score'][column]:>9.2f}"
            f"{lengths['mean']:>10.1f}{lengths['median']:>8.1f}{lengths['min']:>6}{lengths['max']:>6}"
        )
    lines.append("")
    lines.append("markers = share of lines with at least one style marker; score = markers per 100 characters")
    return "\n".join(lines)


def load_prompts(path_or_lang: str | Path) -> list[str]:
    """Chat prompts: JSONL with a "prompt" field, or plain text with one prompt per line; `ja`/`en` = bundled."""
    text = str(path_or_lang)
    key = text.removeprefix("bundled:")
    path = DATA_DIR / f"prompts_{key}.jsonl" if key in ("ja", "en") else Path(path_or_lang)
    shown = _shown(path)
    _check_file(path, shown)
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson") or _sniff(path) == "{"
    prompts = list(_jsonl_prompts(path, shown) if jsonl else _text_prompts(path, shown))
    if not prompts:
        raise _error(shown, None, "no prompts (the file holds only blank lines)")
    return prompts


def _jsonl_prompts(path: Path, shown: str) -> Iterator[str]:
    """The "prompt" field of each line of a JSONL prompt file."""
    for number, _, record in _iter_jsonl(path, shown):
        where = f"line {number}"
        if not isinstance(record, dict):
            raise _error(shown, where, f"expected a JSON object, got {_json_type(record)}")
        prompt = _text(record, "prompt", shown, where, required=True)
        assert prompt is not None
        yield prompt


def _text_prompts(path: Path, shown: str) -> Iterator[str]:
    """The non-blank lines of a plain-text prompt file."""
    for _, text in _decoded_lines(path, shown):
        if text.strip():
            yield text.strip()
