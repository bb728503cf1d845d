"""Contrast-pair datasets: load and validate them, turn them into (positive, negative) pairs and split them; prompt files.

A dataset holds one entry per line of meaning, each written in up to three registers:
`standard` (polite/neutral), `casual` (plain but not gyaru) and `gyaru`. Supported files (readers.py reads them):

* JSONL (.jsonl): one JSON object per line, blank lines skipped;
* JSON list (.json): a list of objects; keys other than id/topic/standard/casual/gyaru are ignored;
* CSV / TSV (.csv, .tsv) with a header row.

JSONL and CSV files are read line by line, so `max_entries` bounds the memory used even for huge files.
Statistics about a dataset: datastats.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .messages import Text
from .readers import (
    EXPECTED_STRING,
    ITEM,
    LINE,
    DatasetError,
    HeaderCheck,
    check_file,
    composed,
    decoded_lines,
    error_at,
    file_sha256,
    iter_jsonl,
    json_type,
    location,
    records,
    rendered,
    shown_path,
    sniff,
    text_field,
)
from .style import guess_lang

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CONTRASTS = ("gyaru-vs-standard", "gyaru-vs-casual")
BUNDLED = {"ja": DATA_DIR / "gyaru_ja.jsonl", "en": DATA_DIR / "gal_en.jsonl"}
TEXT_COLUMNS = ("standard", "casual", "gyaru")
REQUIRED = ("standard", "gyaru")
OPTIONAL = ("id", "topic", "casual")
AASHI = "あーし"

_LANG_SAMPLE = 20

UNKNOWN_BUNDLED = Text(
    en="unknown bundled dataset {name!r}: expected one of {choices}",
    ja="同梱データセット {name!r} はありません: {choices} のどれかにしてください",
)
UNKNOWN_CONTRAST = Text(
    en='unknown contrast "{contrast}": expected one of {choices}',
    ja="コントラスト「{contrast}」は不明です: {choices} のどれかにしてください",
)
BOTH = Text(en="{first} and {second}", ja="{first} と {second}")
NO_KEYS = Text(en="no keys", ja="キーなし")
NOT_PAIRS = Text(
    en="this does not look like a contrast-pair file: found keys {found}; expected {required} (optional: {optional})",
    ja="コントラストペアのファイルではないようです: キーは {found} でした。{required} が必要です（任意: {optional}）",
)
MISSING_COLUMN = Text(en="missing column (the header has: {header})", ja="列がありません（ヘッダーにある列: {header}）")
EXPECTED_OBJECT = Text(en="expected a JSON object, got {found}", ja="JSON オブジェクトにしてください（{found} でした）")
MISSING_IN_ENTRIES = Text(
    en='{shown}: contrast "{contrast}" needs column "{column}", which is missing in {missing} of {total} entries: '
    "{listed}{more}",
    ja="{shown}: コントラスト「{contrast}」には列「{column}」が必要ですが、{total} 件中 {missing} 件にありません: "
    "{listed}{more}",
)
ENTRY_AT = Text(en="{where} (id {id})", ja="{where}（id は {id}）")
AND_MORE = Text(en=" and {n} more", ja=" ほか {n} 件")
AT_LEAST_ONE = Text(en="{name} must be at least 1, got {value}", ja="{name} は 1 以上にしてください（{value} でした）")
DUPLICATE_ID = Text(en='duplicate id "{id}" (first used at {first})', ja="id「{id}」が重複しています（最初は {first}）")
NO_ENTRIES = Text(
    en="no entries (the file holds only blank lines or an empty list)",
    ja="エントリーがありません（空行か空のリストしかありません）",
)
BAD_HELDOUT = Text(
    en="heldout_fraction must be in [0, 1), got {value}",
    ja="heldout_fraction は 0 以上 1 未満にしてください（{value} でした）",
)
NO_PROMPTS = Text(en="no prompts (the file holds only blank lines)", ja="プロンプトがありません（空行しかありません）")
PROMPT_TOO_LONG = Text(
    en="prompt: {length:,} characters, over the {limit:,}-character limit for one message",
    ja="プロンプト: {length:,} 文字あり、1 メッセージの上限 {limit:,} 文字を超えています",
)
PROMPT_LINE_TOO_LONG = Text(
    en="prompt of {length:,} characters, over the limit of {limit:,}",
    ja="プロンプトが {length:,} 文字あり、上限 {limit:,} 文字を超えています",
)

T = TypeVar("T")


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


# --------------------------------------------------------------------------- names and contrasts


def resolve_path(path: str | Path) -> Path:
    """The file a dataset argument names: `bundled:ja`, `bundled:en`, `ja`, `en` or a path."""
    text = str(path)
    key = text.removeprefix("bundled:")
    if key in BUNDLED:
        return BUNDLED[key]
    if text.startswith("bundled:"):
        raise DatasetError(UNKNOWN_BUNDLED(name=text, choices=", ".join(f"bundled:{k}" for k in BUNDLED)))
    return Path(path)


def check_contrast(contrast: str) -> None:
    """Refuse a contrast name that is not one of CONTRASTS."""
    if contrast not in CONTRASTS:
        raise DatasetError(UNKNOWN_CONTRAST(contrast=contrast, choices=", ".join(CONTRASTS)))


def _negative_column(contrast: str) -> str:
    """The column a contrast puts on the negative side."""
    check_contrast(contrast)
    return contrast.split("-vs-", 1)[1]


# --------------------------------------------------------------------------- validation


def _check_pair_keys(keys: Sequence[str], shown: str, where: str) -> None:
    """Refuse a record or header holding neither `standard` nor `gyaru`: the file is not contrast pairs."""
    if any(k in keys for k in REQUIRED):
        return
    has = ", ".join(str(k) for k in keys) or NO_KEYS()
    required = BOTH(first=REQUIRED[0], second=REQUIRED[1])
    raise error_at(shown, where, composed(NOT_PAIRS, found=has, required=required, optional=", ".join(OPTIONAL)))


def _check_pair_header(shown: str) -> HeaderCheck:
    """The CSV header check for a pair file: pair columns present, both required ones among them."""

    def check(header: list[str], where: str) -> None:
        _check_pair_keys(header, shown, where)
        for key in REQUIRED:
            if key not in header:
                raise error_at(shown, where, MISSING_COLUMN(header=", ".join(header)), field=key)

    return check


def _entry_id(record: dict, shown: str, where: str, default: str) -> str:
    """The entry's id: a string (or integer) id field, else `default`."""
    value = record.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise error_at(shown, where, EXPECTED_STRING(kind=type(value).__name__), field="id")
    return str(value).strip()


def _topic(record: dict, shown: str, where: str) -> str | None:
    """The entry's topic, or None when absent or blank."""
    value = record.get("topic")
    if value is None:
        return None
    if not isinstance(value, str):
        raise error_at(shown, where, EXPECTED_STRING(kind=type(value).__name__), field="topic")
    return value.strip() or None


def _make_entry(
    record: Any, number: int, where: str, shown: str, default_id: str, max_chars: int | None = None
) -> Entry:
    """Validate one raw record and turn it into an Entry (texts longer than `max_chars` are refused)."""
    if not isinstance(record, dict):
        raise error_at(shown, where, composed(EXPECTED_OBJECT, found=json_type(record)))
    return Entry(
        id=_entry_id(record, shown, where, default_id),
        topic=_topic(record, shown, where),
        standard=text_field(record, "standard", shown, where, required=True, max_chars=max_chars),
        gyaru=text_field(record, "gyaru", shown, where, required=True, max_chars=max_chars),
        casual=text_field(record, "casual", shown, where, required=False, max_chars=max_chars),
        line=number,
    )


def location_unit(path: Path) -> str:
    """What Entry.line counts in this file: "item" for a JSON list, else "line"."""
    if path.suffix.lower() in (".csv", ".tsv") or not path.is_file():
        return "line"
    return "item" if sniff(path) == "[" else "line"


def _check_columns(entries: Sequence[Entry], contrast: str, path: Path) -> None:
    """Refuse a contrast whose negative column is missing from some entries, naming them."""
    column = _negative_column(contrast)
    missing = [e for e in entries if getattr(e, column) is None]
    if not missing:
        return
    shown, unit = shown_path(path), ITEM if location_unit(path) == "item" else LINE

    def say(lang: str) -> str:
        listed = ", ".join(ENTRY_AT.say(lang, where=unit.say(lang, n=e.line), id=e.id) for e in missing[:5])
        more = AND_MORE.say(lang, n=len(missing) - 5) if len(missing) > 5 else ""
        params = {"contrast": contrast, "column": column, "missing": len(missing), "total": len(entries)}
        return MISSING_IN_ENTRIES.say(lang, shown=shown, listed=listed, more=more, **params)

    raise DatasetError(rendered(say))


def _columns(entries: Sequence[Entry]) -> tuple[str, ...]:
    """The text columns every entry has, in the order standard, casual, gyaru."""
    return tuple(c for c in TEXT_COLUMNS if entries and all(getattr(e, c) is not None for e in entries))


def _guess_dataset_lang(entries: Sequence[Entry]) -> str:
    """'ja' when a sample of the gyaru texts holds kana or kanji, else 'en'."""
    return guess_lang(" ".join(e.gyaru for e in entries[:_LANG_SAMPLE]))


# --------------------------------------------------------------------------- public API


def load_dataset(
    path: str | Path, contrast: str | None = None, max_entries: int | None = None, max_text_chars: int | None = None
) -> Dataset:
    """Load and validate a pair file (JSONL, JSON list or CSV); `path` may be `bundled:ja`/`ja` or `bundled:en`/`en`.

    Raises DatasetError naming the file, line and field of the first problem. With `contrast`, also refuses
    data that lacks that contrast's negative column. With `max_entries`, stops after that many entries. With
    `max_text_chars`, refuses any text longer than that (extraction's cheap check before it tokenizes anything).
    """
    if contrast is not None:
        check_contrast(contrast)
    if max_entries is not None and max_entries < 1:
        raise DatasetError(AT_LEAST_ONE(name="max_entries", value=max_entries))
    if max_text_chars is not None and max_text_chars < 1:
        raise DatasetError(AT_LEAST_ONE(name="max_text_chars", value=max_text_chars))
    resolved = resolve_path(path)
    shown = shown_path(resolved)
    check_file(resolved, shown)
    entries = _read_entries(resolved, shown, max_entries, max_text_chars)
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


def _read_entries(path: Path, shown: str, max_entries: int | None, max_chars: int | None = None) -> list[Entry]:
    """The validated entries of a file, at most `max_entries` of them."""
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    rows = records(path, shown, _check_pair_header(shown))
    try:
        for number, where, record in rows:
            if not entries and isinstance(record, dict):
                _check_pair_keys(list(record), shown, where)
            entry = _make_entry(record, number, where, shown, f"{path.stem}-{len(entries) + 1:04d}", max_chars)
            if entry.id in seen:
                raise error_at(
                    shown, where, composed(DUPLICATE_ID, id=entry.id, first=location(seen[entry.id])), field="id"
                )
            seen[entry.id] = where
            entries.append(entry)
            if max_entries is not None and len(entries) >= max_entries:
                break
    finally:
        rows.close()
    if not entries:
        raise error_at(shown, None, NO_ENTRIES())
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
        raise ValueError(BAD_HELDOUT(value=heldout_fraction))
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


def load_prompts(path_or_lang: str | Path, max_chars: int | None = None) -> list[str]:
    """Chat prompts: JSONL with a "prompt" field, or plain text with one prompt per line; `ja`/`en` = bundled.

    With `max_chars`, a prompt longer than that is refused, naming its line."""
    text = str(path_or_lang)
    key = text.removeprefix("bundled:")
    path = DATA_DIR / f"prompts_{key}.jsonl" if key in ("ja", "en") else Path(path_or_lang)
    shown = shown_path(path)
    check_file(path, shown)
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson") or sniff(path) == "{"
    prompts = list(_jsonl_prompts(path, shown, max_chars) if jsonl else _text_prompts(path, shown, max_chars))
    if not prompts:
        raise error_at(shown, None, NO_PROMPTS())
    return prompts


def check_prompt_lengths(prompts: Sequence[str], source: str | Path | None, max_chars: int) -> None:
    """Refuse a prompt longer than `max_chars` characters before any is answered, naming its line when the prompts
    came from the file `source` (None: they were typed)."""
    longest = max(prompts, key=len, default="")
    if len(longest) <= max_chars:
        return
    if source is not None:
        load_prompts(source, max_chars=max_chars)  # raises, naming the file and line
    raise ValueError(PROMPT_TOO_LONG(length=len(longest), limit=max_chars))


def _jsonl_prompts(path: Path, shown: str, max_chars: int | None = None) -> Iterator[str]:
    """The "prompt" field of each line of a JSONL prompt file."""
    for number, _, record in iter_jsonl(path, shown):
        where = f"line {number}"
        if not isinstance(record, dict):
            raise error_at(shown, where, composed(EXPECTED_OBJECT, found=json_type(record)))
        prompt = text_field(record, "prompt", shown, where, required=True, max_chars=max_chars)
        assert prompt is not None
        yield prompt


def _text_prompts(path: Path, shown: str, max_chars: int | None = None) -> Iterator[str]:
    """The non-blank lines of a plain-text prompt file."""
    for number, text in decoded_lines(path, shown):
        if max_chars is not None and len(text.strip()) > max_chars:
            raise error_at(shown, LINE(n=number), PROMPT_LINE_TOO_LONG(length=len(text.strip()), limit=max_chars))
        if text.strip():
            yield text.strip()
