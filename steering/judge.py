"""Judge replies from their text alone: gal/gyaru style (marker lexicon) and fluency (the strict judge).

Never from the model's own projection onto the vector: that "gauge" rises with the strength whatever the text
says. Perplexity, which needs the model, lives in perplexity.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from .fluency import judge_fluency, onset_token
from .fluency import prepare as prepare_word_lists
from .style import style_score

AASHI = "あーし"
# one reply per language: judging it loads the marker lexicons, wordfreq and (Japanese) MeCab (`prepare`)
WARM_UP_TEXTS = {"en": "Hey bestie, that is totally a wonderf", "ja": "まじでうれしいんだけど、今日はいい天"}


@dataclass
class ReplyScore:
    style: float  # marker weight per 100 characters
    markers: list[str]
    aashi: bool
    broken: bool
    reasons: list[str] = field(default_factory=list)
    onset_char: int | None = None  # where the reply first breaks (None: fluent)
    onset_token: int | None = None  # the same as a token index, when a tokenizer was given
    unknown_share: float = 0.0


def score_reply(text: str, lang: str, tokenizer=None) -> ReplyScore:
    """Style and fluency of one reply; with a tokenizer the onset is also given in tokens."""
    style = style_score(text, lang)
    verdict = judge_fluency(text, lang)  # it knows the marker lexicon's words itself
    reasons = list(verdict.reasons)
    if not any(c.isalpha() for c in text):
        reasons.append("empty")
    return ReplyScore(
        style=style.score,
        markers=style.marker_ids,
        aashi=AASHI in text,
        broken=bool(reasons),
        reasons=reasons,
        onset_char=verdict.onset_char if verdict.broken else (0 if reasons else None),
        onset_token=onset_token(tokenizer, text, verdict.onset_char) if tokenizer is not None else None,
        unknown_share=verdict.unknown_share,
    )


def prepare(langs: Sequence[str] = tuple(WARM_UP_TEXTS)) -> None:
    """Load what judging `langs` reads (word lists, the marker lexicons, the Japanese tokenizer) now. The first
    reply judged otherwise pays 0.15 to 0.25 s of pure Python, holding the GIL: a server calls this at start, so that
    the first replies it judges under load do not stall every other request."""
    for lang in langs:
        prepare_word_lists(lang)
        score_reply(WARM_UP_TEXTS[lang], lang)


def summarize_scores(scores: Sequence[ReplyScore], lang: str) -> dict:
    """Shares over a set of judged replies. `gal_readable` counts replies with a marker that are not broken."""
    n = max(len(scores), 1)
    onsets = [s.onset_token if s.onset_token is not None else s.onset_char for s in scores if s.broken]
    onsets = [o for o in onsets if o is not None]
    out = {
        "replies": len(scores),
        "style": sum(s.style for s in scores) / n,
        "marker_share": sum(1 for s in scores if s.markers) / n,
        "broken_share": sum(1 for s in scores if s.broken) / n,
        "gal_readable_share": sum(1 for s in scores if s.markers and not s.broken) / n,
        "median_onset": statistics.median(onsets) if onsets else None,
    }
    if lang == "ja":
        out["aashi_rate"] = sum(1 for s in scores if s.aashi) / n
    return out


def summarize(texts: Sequence[str], lang: str, tokenizer=None) -> dict:
    """Mean style, marker share, broken share, median onset (tokens with a tokenizer, else characters)."""
    return summarize_scores([score_reply(t, lang, tokenizer) for t in texts], lang)
