"""Style score: how gyaru a text reads, judged from the text itself with a weighted marker lexicon.

The lexicons live in data/markers_{lang}.json so they can be read and extended without code changes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

LEXICON_DIR = Path(__file__).resolve().parent.parent / "data"
LANGS = ("ja", "en")

_WAVES = str.maketrans({"〜": "ー", "～": "ー", "~": "ー", "−": "ー", "-": "-"})
_KATAKANA_TO_HIRAGANA = {chr(c): chr(c - 0x60) for c in range(0x30A1, 0x30F7)}


@dataclass(frozen=True)
class Marker:
    id: str
    pattern: re.Pattern
    weight: float


@dataclass
class StyleScore:
    """Score per 100 characters of the original text, and every marker match found."""

    score: float
    total_weight: float
    matches: list[tuple[str, str]] = field(default_factory=list)  # (marker id, matched text)

    @property
    def marker_ids(self) -> list[str]:
        return sorted({m for m, _ in self.matches})


def normalize(text: str, lang: str) -> str:
    """Fold the spelling variants a lexicon should not have to list one by one."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    if lang == "ja":
        text = text.translate(_WAVES)
        text = "".join(_KATAKANA_TO_HIRAGANA.get(ch, ch) for ch in text)
        text = re.sub("ー+", "ー", text)
    return text


@cache
def load_lexicon(lang: str) -> tuple[Marker, ...]:
    """The markers of one language, compiled; raises ValueError for an unknown language."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: expected one of {', '.join(LANGS)}")
    path = LEXICON_DIR / f"markers_{lang}.json"
    entries = json.loads(path.read_text(encoding="utf-8"))["markers"]
    return tuple(Marker(e["id"], re.compile(e["pattern"]), float(e["weight"])) for e in entries)


def style_score(text: str, lang: str) -> StyleScore:
    """Weighted marker count per 100 characters of `text`, with the markers that matched."""
    norm = normalize(text, lang)
    matches = [(m.id, hit.group(0)) for m in load_lexicon(lang) for hit in m.pattern.finditer(norm)]
    weights = {m.id: m.weight for m in load_lexicon(lang)}
    total = sum(weights[mid] for mid, _ in matches)
    length = max(len(text.strip()), 1)
    return StyleScore(score=100.0 * total / length, total_weight=total, matches=matches)


def guess_lang(text: str) -> str:
    """'ja' when the text holds kana or kanji, else 'en'."""
    return "ja" if re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text) else "en"
