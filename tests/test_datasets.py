"""Quality gate over the shipped datasets data/gyaru_ja.jsonl, data/gal_en.jsonl and the prompt files."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from steering.data import BUNDLED, DATA_DIR, Dataset, load_dataset, load_prompts
from steering.style import normalize, style_score

MIN_ENTRIES = {"ja": 240, "en": 200}
JA_TOPICS = ("Tech", "Streaming", "Daily", "Gaming", "Food", "School/Work", "Fashion", "Travel")
REFERENCE_TOPICS = ("Tech", "Streaming", "Daily", "Gaming")
AASHI_RANGE = (0.85, 0.95)
MIN_GYARU_MATCHES = 2
GYARU_MEAN_MAX = 1.1  # mean gyaru length <= 1.1 x mean standard length
CASUAL_MEAN_TOLERANCE = 0.25  # mean casual length within +-25% of mean standard length
RATIO_RANGE = (0.6, 1.6)  # per entry gyaru/standard length ratio
MIN_PROMPTS = 50

LANGS = ("ja", "en")


@pytest.fixture(scope="module", params=LANGS)
def shipped(request) -> Dataset:
    path = BUNDLED[request.param]
    assert path.exists(), f"{path} is missing: merge data/parts/* into it"
    return load_dataset(path)


def _where(ds: Dataset, entry) -> str:
    return f"{ds.path.name} line {entry.line} ({entry.id})"


def test_size_and_language(shipped):
    lang = "ja" if shipped.name == "gyaru_ja" else "en"
    assert shipped.lang == lang
    assert len(shipped.entries) >= MIN_ENTRIES[lang]


def test_all_three_columns(shipped):
    assert shipped.columns == ("standard", "casual", "gyaru")
    for contrast in ("gyaru-vs-standard", "gyaru-vs-casual"):
        load_dataset(shipped.path, contrast=contrast)


def test_ids_unique(shipped):
    ids = Counter(e.id for e in shipped.entries)
    assert [i for i, n in ids.items() if n > 1] == []


@pytest.mark.parametrize("column", ["standard", "casual", "gyaru"])
def test_no_duplicate_texts(shipped, column):
    texts = Counter(getattr(e, column) for e in shipped.entries)
    assert [t for t, n in texts.items() if n > 1] == []


def test_ja_topics():
    ds = load_dataset(BUNDLED["ja"])
    topics = Counter(e.topic for e in ds.entries)
    assert [t for t in JA_TOPICS if t not in topics] == []
    counts = [topics[t] for t in REFERENCE_TOPICS]
    mean = statistics.fmean(counts)
    off = {t: topics[t] for t in REFERENCE_TOPICS if abs(topics[t] - mean) > 0.1 * mean}
    assert off == {}, f"reference topics should each be within 10% of their mean {mean:.1f}"


def test_ja_aashi_rate():
    ds = load_dataset(BUNDLED["ja"])
    rate = sum("あーし" in normalize(e.gyaru, "ja") for e in ds.entries) / len(ds.entries)
    low, high = AASHI_RANGE
    assert low <= rate <= high, f"あーし in {rate:.1%} of gyaru lines"


def test_every_gyaru_line_is_marked(shipped):
    weak = []
    for e in shipped.entries:
        result = style_score(e.gyaru, shipped.lang)
        if len(result.matches) < MIN_GYARU_MATCHES or result.score <= 0:
            weak.append(f"{_where(shipped, e)}: {result.matches} {e.gyaru}")
    assert weak == []


@pytest.mark.parametrize("column", ["standard", "casual"])
def test_plain_lines_have_no_marker(shipped, column):
    marked = []
    for e in shipped.entries:
        text = getattr(e, column)
        result = style_score(text, shipped.lang)
        if result.matches:
            marked.append(f"{_where(shipped, e)}: {result.matches} {text}")
    assert marked == []


def test_mean_lengths(shipped):
    mean = {c: statistics.fmean(len(getattr(e, c)) for e in shipped.entries) for c in ("standard", "casual", "gyaru")}
    assert mean["gyaru"] <= GYARU_MEAN_MAX * mean["standard"], mean
    assert abs(mean["casual"] - mean["standard"]) <= CASUAL_MEAN_TOLERANCE * mean["standard"], mean


def test_per_entry_length_ratio(shipped):
    low, high = RATIO_RANGE
    bad = [
        f"{_where(shipped, e)}: {len(e.gyaru) / len(e.standard):.2f}"
        for e in shipped.entries
        if not low <= len(e.gyaru) / len(e.standard) <= high
    ]
    assert bad == []


@pytest.mark.parametrize("lang", LANGS)
def test_prompts(lang):
    path = DATA_DIR / f"prompts_{lang}.jsonl"
    assert path.exists(), f"{path} is missing"
    prompts = load_prompts(lang)
    assert len(prompts) >= MIN_PROMPTS
    texts = [t for e in load_dataset(BUNDLED[lang]).entries for t in (e.standard, e.casual, e.gyaru) if t]
    leaked = [p for p in prompts if any(p in t for t in texts)]
    assert leaked == []
