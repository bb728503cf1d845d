"""Strict fluency judge: is a reply still language, and if not, where did it stop being language?

Steered replies from small models often read fine for a sentence and then collapse into invented words,
letter mash, symbol floods, loops or another script. This module judges the text alone:

- words are looked up in wordfreq (English) or cut by MeCab and looked up in wordfreq (Japanese); the gal/gyaru
  marker lexicons, stretched spellings (sooo, totallyyy) and caller-allowed words count as known;
- unknown words, mash (consonant clusters, case flipping, keyboard rows, impossible kana, rare kanji), the wrong
  script, words glued by punctuation, symbol/letter floods, loops of words or substrings, and stray U+FFFD are events;
- events are weighed in a sliding window of words, so one rare word passes but two nonsense words close together
  break the reply, and `onset_char` says where the first breaking window starts.

Strict on purpose: a steering sweep must not pick a strength whose replies are half gibberish, and a judge that
only sees whole-text averages lets a long fluent opening hide the collapse behind it. A reply cut off at the token
limit is not penalized: a last word that is the start of a known word counts as known.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import takewhile

from wordfreq import tokenize as wordfreq_tokenize
from wordfreq import top_n_list, zipf_frequency

from .style import load_lexicon, normalize

UNSEEN_ZIPF = 1.0  # below this wordfreq has (almost) never seen the word: an invention, weight 1
RARE_ZIPF = 2.0  # below this a word is a typo or a rarity: weight 0.5, so two need company to break a reply
PART_ZIPF = 2.5  # each part of a split compound (ワイヤレス+イヤホン) must be a common word on its own
WINDOW_UNITS = 20  # events at most this many words/morphemes apart belong to one collapse
BREAK_SCORE = 2.0  # window weight that breaks the reply: two inventions, four rarities, or one mash/loop/flood
CONSONANT_RUN = 4  # consonants in a row in an unknown word after squeezing: "htzs"; with y one more: "gfsyk"
CASE_FLIPS = 2  # lower→upper flips inside one word: "jJnNtMmRr"; iPhone has one and is known anyway
MAX_WORD_LETTERS = 20  # no unknown word this long is a real one
KEYBOARD_RUN = 4  # letters in keyboard-row order: qwer, asdf, hjkl, zxcv
KANA_MASH_LEN = 6  # an unknown all-kana morpheme this long is not a word MeCab failed on but a kana soup
SMALL_KANA_LEN = 4  # ゃゅょ misplaced in a morpheme this long is soup; in shorter ones it is gyaru-moji (ぃくょ)
WORD_REPEATS = 5  # the same word back to back: "like like like" is style, five times is a loop
NGRAM_REPEATS = 4  # a 2-8 unit phrase four times in a row is a loop (待って待って待って is style)
NGRAM_OCCURRENCES = 4  # a phrase of NGRAM_SIZE units anywhere four times: the model is circling
# 4 English words, not 3: a fluent 256-token list says "look at the" four times (measured on plain replies)
NGRAM_SIZE = {"en": 4, "ja": 5}
SUBSTRING_REPEATS = 4  # a 3-40 character piece four times in a row inside a space-less run: nooo,nooo,nooo,nooo
SYMBOL_RUN = 8  # "!!!!!!!" is gal emphasis; eight symbols in a row weigh 1, sixteen break the reply alone
LETTER_RUN = 13  # "sooooo" and "wwwwww" are style; thirteen of one letter is a stuck token
GLUE_WEIGHT = 0.5  # "Atmos..Atmz", "Ugh!Soooo": words glued by punctuation, a typo alone, a symptom in company
FOREIGN_WEIGHT = 0.5  # an English word in a Japanese reply: loanwords happen, four in a window is a switch
MAX_COMPOUND = 16  # longer unknown morphemes are not tried as compounds (the search is quadratic)
TRUNCATION_PREFIX_WORDS = 50_000  # the last word may be any prefix of this many common words (cut at the limit)

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_SLANG = frozenset(  # chat slang that wordfreq has not seen (enough) and the marker lexicon does not list
    "iykyk istg bffr highkey bussin ootd omw hbu wbu tysm ttyl ilysm rizz delulu girlboss glowup".split()
)
_GYARU_MOJI = str.maketrans("ぁぃぅぇぉゎょ", "あいうえおはよ")  # ぁたしゎ = あたしは
_UNIT = re.compile(
    r"(?P<latin>[A-Za-z\u00c0-\u024f]+(?:['\u2019][A-Za-z\u00c0-\u024f]+)*['\u2019]?)"
    r"|(?P<ja>[\u3040-\u30ff\u4e00-\u9fff\u3005\u3006\uff66-\uff9f]+)"
    r"|(?P<num>\d+(?:[.,:]\d+)*(?:st|nd|rd|th|s|am|pm|k)?)"
    r"|(?P<other>[^\W\d_]+)"
)
_TAKES_SMALL_Y = set("きしちにひみりぎじぢびぴキシチニヒミリギジヂビピテデフヴ")  # kana that can precede ゃゅょ


@dataclass
class FluencyVerdict:
    """The judgement of one whole reply."""

    broken: bool
    reasons: list[str]
    onset_char: int | None  # where the first breaking window starts; None when fluent
    unknown_share: float  # share of words (morphemes for ja) not found as known
    words: int = 0
    score: float = 0.0  # the heaviest window's event weight; BREAK_SCORE or more is broken
    events: list[tuple[int, float, str]] = field(default_factory=list)  # (char index, weight, reason)


@dataclass(frozen=True)
class _Unit:
    text: str
    start: int
    kind: str  # latin, ja, num, other


_zipf = lru_cache(maxsize=200_000)(zipf_frequency)  # thousands of replies look up the same few thousand words


@lru_cache(maxsize=4)
def _common_words(lang: str) -> list[str]:
    """The TRUNCATION_PREFIX_WORDS most common words of `lang`, sorted: a bisection finds whether a piece starts one
    (a set of every prefix took 0.2 s to build, holding the GIL, in the middle of serving the first cut reply)."""
    return sorted(top_n_list(lang, TRUNCATION_PREFIX_WORDS))


def prepare(lang: str) -> None:
    """Build the word list a cut-off last word is looked up in (judge.prepare warms the rest)."""
    _common_words(lang)


def _starts_common_word(piece: str, lang: str) -> bool:
    words = _common_words(lang)
    i = bisect_left(words, piece)
    return bool(piece) and i < len(words) and words[i].startswith(piece)


@lru_cache(maxsize=100_000)
def _in_lexicon(word: str, lang: str) -> bool:
    """A gal/gyaru marker that matches the whole word (totallyyy, ぴえん, periodt)."""
    norm = normalize(word, lang)
    return any(m.span() == (0, len(norm)) for marker in load_lexicon(lang) for m in marker.pattern.finditer(norm))


def _squeezed(word: str) -> list[str]:
    """Stretched spellings to retry: each run of three or more letters cut to two or to one (totallyyy, sooo)."""
    pieces = re.split(r"((.)\2{2,})", word) + ["", ""]  # plain text, stretch, its letter, plain text, ...
    variants = [""]
    for plain, stretch in zip(pieces[::3], pieces[1::3]):
        variants = [v + plain + end for v in variants for end in dict.fromkeys((stretch[:2], stretch[:1]))][:16]
    return variants


def _latin_candidates(word: str) -> list[str]:
    w = word.lower().replace("\u2019", "'").strip("'")
    possessive = [w[:-2]] if w.endswith("'s") else []
    return [w, *_squeezed(w), *possessive, *([w + "g"] if word.endswith(("in'", "in\u2019")) else [])]  # freakin'


@lru_cache(maxsize=200_000)
def _word_zipf(word: str, lang: str) -> float:
    """Best frequency over the word's spellings; apostrophe-glued words (freakin'relly) by their weakest part."""
    spellings = _latin_candidates(word) if lang == "en" else (word.lower(), word.translate(_GYARU_MOJI))
    best = max(_zipf(c, lang) for c in spellings)
    parts = re.split(r"['\u2019]", word.strip("'\u2019"))
    if best < RARE_ZIPF and len(parts) > 1 and all(parts):
        best = max(best, min(_word_zipf(p, lang) for p in parts))
    return best


@lru_cache(maxsize=100_000)
def _compound_known(token: str, lang: str, parts_left: int = 3) -> bool:
    """An unknown compound of common words or markers: ワイヤレスイヤホン, ぱおん+なんだけど. One-character parts: kanji."""
    word_like = len(token) > 1 or "\u4e00" <= token <= "\u9fff"
    if (word_like and _zipf(token, lang) >= PART_ZIPF) or (len(token) > 1 and _in_lexicon(token, lang)):
        return True
    return parts_left > 1 and any(
        _compound_known(token[:i], lang, 1) and _compound_known(token[i:], lang, parts_left - 1)
        for i in range(1, len(token))
    )


def _latin_mash(word: str) -> bool:
    """Consonant clusters, case flipping, keyboard rows, no vowel, or too long: no language spells it."""
    squeezed = re.sub(r"(.)\1+", r"\1", word.lower())
    flips = len(re.findall(r"[a-z][A-Z]", word))
    grams = {squeezed[i : i + KEYBOARD_RUN] for i in range(len(squeezed) - KEYBOARD_RUN + 1)}
    rows = any(g in row or g in row[::-1] for g in grams for row in _KEYBOARD_ROWS)
    return (
        bool(re.search(f"[bcdfghjklmnpqrstvwxz]{{{CONSONANT_RUN},}}", squeezed))
        or bool(re.search(f"[bcdfghjklmnpqrstvwxyz]{{{CONSONANT_RUN + 1},}}", squeezed))
        or flips >= CASE_FLIPS
        or rows
        or len(squeezed) > MAX_WORD_LETTERS
        or (len(squeezed) >= 4 and not re.search("[aeiouy]", squeezed))
    )


def _kana_mash(token: str, lang: str) -> bool:
    """Impossible kana (ゃ after a kana that takes none), archaic kana, rare kanji, or a long unknown kana run."""
    misplaced = any(c in "ゃゅょャュョ" and (i == 0 or token[i - 1] not in _TAKES_SMALL_Y) for i, c in enumerate(token))
    return (
        (misplaced and len(token) >= SMALL_KANA_LEN)
        or any(c in "ゐゑヰヱ" or ("\u4e00" <= c <= "\u9fff" and _zipf(c, lang) < UNSEEN_ZIPF) for c in token)
        or (len(token) >= KANA_MASH_LEN and all("\u3040" <= c <= "\u30ff" for c in token))
    )


def _units(text: str, lang: str) -> list[_Unit]:
    """Words (Latin, numbers, other scripts) and, inside Japanese runs, MeCab morphemes, with char offsets."""
    units = []
    for m in _UNIT.finditer(text):
        kind, piece = m.lastgroup, m.group()
        if kind != "ja":
            units.append(_Unit(piece, m.start(), kind))
            continue
        cursor = 0
        for tok in wordfreq_tokenize(piece, "ja") if lang == "ja" else [piece]:
            at = piece.find(tok, cursor)  # wordfreq may fold a token's spelling: then it keeps the cursor
            units.append(_Unit(tok, m.start() + (cursor if at < 0 else at), kind))
            cursor = cursor if at < 0 else at + len(tok)
    return units


def _truncated(unit: _Unit, text: str, lang: str) -> bool:
    """The reply stops inside this unit (token limit), and it is the start of a common word."""
    at_the_end = unit.start + len(unit.text) >= len(text.rstrip()) == len(text)
    return at_the_end and _starts_common_word(unit.text.lower(), lang)


def _word_event(unit: _Unit, text: str, lang: str, allowed: frozenset[str]) -> tuple[float, str] | None:
    """(weight, reason) for a word that is not a known word of `lang`, else None."""
    word = unit.text
    if unit.kind == "num" or word.lower() in allowed | _SLANG or _in_lexicon(word, lang):
        return None
    if unit.kind == "other" or (unit.kind == "ja" and lang == "en"):
        return (2.0 if len(word) > 4 else 1.0), "wrong script"
    if unit.kind == "latin" and lang == "ja":
        if len(word) == 1 or re.fullmatch("w+", word) or (word.isupper() and len(word) <= 5):
            return None  # Tシャツ, 草www, SNS: Latin letters Japanese writes every day
        if _word_zipf(word, "en") >= RARE_ZIPF or _in_lexicon(word, "en"):
            return FOREIGN_WEIGHT / (1 + word[0].isupper()), "wrong script"  # names (iPhone, Netflix) weigh less
        lang = "en"  # an unknown Latin word is judged as English gibberish
    zipf = _word_zipf(word, lang)
    capital = unit.kind == "latin" and word[:1].isupper() and word[1:].islower()
    if zipf >= RARE_ZIPF or (capital and zipf >= UNSEEN_ZIPF) or _truncated(unit, text, lang):
        return None
    if unit.kind == "ja" and len(word) <= MAX_COMPOUND and _compound_known(word.strip("ー"), lang):
        return None
    if _latin_mash(word) if unit.kind == "latin" else _kana_mash(word, lang):
        return BREAK_SCORE, "letter mash"
    return (1.0 if zipf < UNSEEN_ZIPF else 0.5), "unknown word"


def _loop_events(units: Sequence[_Unit], lang: str) -> list[tuple[int, float, str]]:
    """Word/phrase loops: (unit index of the first repeated copy, weight, reason)."""
    keys = [re.sub(r"(.)\1+", r"\1", u.text.lower()) for u in units]
    events = []
    for size in range(1, 9):
        need = WORD_REPEATS if size == 1 else NGRAM_REPEATS
        i = 0
        while i + size * need <= len(keys):
            copies = 1
            while keys[i : i + size] == keys[i + copies * size : i + (copies + 1) * size]:
                copies += 1
            if copies >= need:
                events.append((i + size, BREAK_SCORE, "repetition"))
            i += max(1, (copies - 1) * size) if copies >= need else 1
    n = NGRAM_SIZE[lang]
    seen: dict[tuple, list[int]] = {}
    for i in range(len(keys) - n + 1):
        places = seen.setdefault(tuple(keys[i : i + n]), [])
        places.append(i)
        if len(places) == NGRAM_OCCURRENCES:
            events.append((places[1], BREAK_SCORE, "repetition"))  # the first copy is fine, the second circles
    return events


def _char_events(text: str, lang: str) -> list[tuple[int, float, str]]:
    """Floods, substring loops in space-less runs, glued words and replacement characters: (char, weight, reason)."""
    glue = r"(?<=[A-Za-z]{2})(?:\.\.|[!?]+)(?=[A-Za-z])" if lang == "en" else r"(?!)"  # not "...", not "e.g."
    events = [(m.start(), GLUE_WEIGHT, "glued words") for m in re.finditer(glue, text)]
    floods = re.finditer(rf"[^\w\s]{{{SYMBOL_RUN},}}", text)
    events += [(m.start(), 1.0 + (len(m.group()) >= 2 * SYMBOL_RUN), "symbol flood") for m in floods]
    events += [(m.start(), BREAK_SCORE, "letter flood") for m in re.finditer(rf"(\w)\1{{{LETTER_RUN - 1},}}", text)]
    for run in re.finditer(r"\S{12,}", text):
        keep = [i for i, c in enumerate(run.group()) if i == 0 or c != run.group()[i - 1]]  # squeeze stretches
        squeezed = "".join(run.group()[i] for i in keep)
        for m in re.finditer(rf"(.{{3,40}}?)\1{{{SUBSTRING_REPEATS - 1},}}", squeezed):
            if not re.fullmatch(r"(.{1,2})\1+", m.group(1)):  # hahaha, lololol: laughter, not a loop
                events.append((run.start() + keep[m.start() + len(m.group(1))], BREAK_SCORE, "repetition"))
    events += [(i, BREAK_SCORE, "broken encoding") for i, c in enumerate(text.rstrip()[:-1]) if c == "\ufffd"]
    return events


def _clean(text: str) -> str:
    """Full-width letters as ASCII, URLs and `code` blanked, one character for one, so offsets stay those of `text`."""
    text = "".join(n if len(n := unicodedata.normalize("NFKC", c)) == 1 else c for c in text)
    return re.sub(r"https?://\S+|www\.\S+|```.*?```|`[^`\n]*`", lambda m: " " * len(m.group()), text, flags=re.S)


def judge_fluency(text: str, lang: str, allowed_words: Iterable[str] = ()) -> FluencyVerdict:
    """Broken or fluent, why, and the character where the first breaking window starts."""
    if lang not in ("en", "ja"):
        raise ValueError(f"unknown language {lang!r}: expected 'en' or 'ja'")
    clean = _clean(text)
    units = _units(clean, lang)
    allowed = frozenset(w.lower() for w in allowed_words)
    words = [i for i, u in enumerate(units) if u.kind != "num"]
    scored = {i: _word_event(units[i], clean, lang, allowed) for i in words}
    unknown = sum(1 for i in words if scored[i] and scored[i][1] != "wrong script")
    events = [(i, units[i].start, *ev) for i, ev in scored.items() if ev]
    events += [(i, units[i].start, w, why) for i, w, why in _loop_events(units, lang)]
    starts = [u.start for u in units]
    events += [(max(bisect_right(starts, c) - 1, 0), c, w, why) for c, w, why in _char_events(clean, lang)]
    events.sort()
    onset, reasons, best = None, [], 0.0
    for k, (idx, char, _, _) in enumerate(events):
        window = list(takewhile(lambda e, idx=idx: e[0] - idx < WINDOW_UNITS, events[k:]))
        weight = sum(e[2] for e in window)
        best = max(best, weight)
        if weight >= BREAK_SCORE:
            onset = char if onset is None else onset
            reasons += [why for why in dict.fromkeys(e[3] for e in window) if why not in reasons]
    share = unknown / len(words) if words else 0.0
    return FluencyVerdict(onset is not None, reasons, onset, share, len(words), best, [e[1:] for e in events])


def token_index_at(char_index: int, offsets: Sequence[tuple[int, int]]) -> int | None:
    """Index of the token that holds `char_index` (or the first token after it); None past the end."""
    return next((i for i, (start, end) in enumerate(offsets) if end > char_index and end > start), None)


def onset_token(tokenizer, text: str, onset_char: int | None) -> int | None:
    """The token index (no special tokens) where a reply breaks, from a Hugging Face fast tokenizer's offsets."""
    if onset_char is None:
        return None
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    return token_index_at(onset_char, [tuple(o) for o in enc["offset_mapping"]])
