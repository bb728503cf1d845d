"""Judge steered replies from their text: style (marker lexicon), breakage, fluency; and sweep layer × strength.

Never uses the model's own projection onto the vector as a style measure: that number rises with the strength
whatever the text says. Held-out projection AUC (from extraction) is reported only as a separation sanity check.

Breakage thresholds (a reply is `broken` when any holds; checked against hand-labelled replies in the tests):
    empty                 no letters at all
    repeated_ngram_rate   > 0.5   share of word 3-grams (character 4-grams for Japanese) that repeat an earlier one
    distinct_2            < 0.35  distinct word bigrams / all bigrams (needs >= 8 bigrams)
    symbol_share          > 0.3   share of non-space characters that are neither letters nor digits
    longest_run           >= 6    the same word (or character, Japanese) repeated back to back
    wrong_script_share    > 0.5   share of letters outside the prompt's script (kana/kanji for ja, Latin for en)
    gibberish_share       > 0.1   share of Latin words that no language spells: 5+ consonants in a row, or case
                                  flipping inside the word (2XzkfKyZsFhGd), or over 20 letters; stretched letters
                                  (sooo) are fine
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .generate import GenerationSettings, generate_rows
from .models import LoadedModel
from .steer import Steering
from .style import style_score

THRESHOLDS = {
    "repeated_ngram_rate": 0.5,
    "distinct_2": 0.35,
    "symbol_share": 0.3,
    "longest_run": 6,
    "wrong_script_share": 0.5,
    "gibberish_share": 0.1,
}
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5,}")
_CASE_FLIPS = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")
AASHI = "あーし"


def _units(text: str, lang: str) -> list[str]:
    """Words for English; characters (no spaces) for Japanese, which has no word boundaries."""
    if lang == "ja":
        return [c for c in text if not c.isspace()]
    return re.findall(r"[\w']+", text.lower())


def repeated_ngram_rate(text: str, lang: str) -> float:
    units = _units(text, lang)
    n = 4 if lang == "ja" else 3
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_2(text: str, lang: str) -> float:
    units = _units(text, lang)
    grams = list(zip(units, units[1:]))
    return len(set(grams)) / len(grams) if grams else 1.0


def symbol_share(text: str) -> float:
    """Share of non-space characters that are neither letters nor digits (punctuation, emoji, symbols)."""
    chars = [c for c in text if not c.isspace()]
    return sum(1 for c in chars if not c.isalnum()) / len(chars) if chars else 0.0


def longest_run(text: str, lang: str) -> int:
    units = _units(text, lang)
    best = run = 0
    for i, unit in enumerate(units):
        run = run + 1 if i and unit == units[i - 1] else 1
        best = max(best, run)
    return best


def _is_gibberish(word: str) -> bool:
    squeezed = re.sub(r"(.)\1+", r"\1", word.lower())  # stretched letters are style, not noise
    return bool(_CONSONANT_RUN.search(squeezed)) or len(_CASE_FLIPS.findall(word)) >= 2 or len(squeezed) > 20


def gibberish_share(text: str) -> float:
    words = re.findall(r"[A-Za-z]{4,}", text)
    return sum(1 for w in words if _is_gibberish(w)) / len(words) if words else 0.0


def _is_japanese(c: str) -> bool:
    return "\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" or c == "ー"


def wrong_script_share(text: str, lang: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    right = _is_japanese if lang == "ja" else (lambda c: c.isascii() or "\u00c0" <= c <= "\u024f")
    return sum(1 for c in letters if not right(c)) / len(letters)


@dataclass
class ReplyScore:
    style: float
    markers: list[str]
    aashi: bool
    repeated_ngram_rate: float
    distinct_2: float
    symbol_share: float
    longest_run: int
    wrong_script_share: float
    gibberish_share: float
    broken: bool
    reasons: list[str]


def score_reply(text: str, lang: str) -> ReplyScore:
    """Style and breakage of one reply, judged from its text alone."""
    style = style_score(text, lang)
    metrics = {
        "repeated_ngram_rate": repeated_ngram_rate(text, lang),
        "distinct_2": distinct_2(text, lang),
        "symbol_share": symbol_share(text),
        "longest_run": longest_run(text, lang),
        "wrong_script_share": wrong_script_share(text, lang),
        "gibberish_share": gibberish_share(text),
    }
    reasons = []
    if not any(c.isalpha() for c in text):
        reasons.append("empty")
    if metrics["repeated_ngram_rate"] > THRESHOLDS["repeated_ngram_rate"]:
        reasons.append("repeats")
    if len(_units(text, lang)) >= 9 and metrics["distinct_2"] < THRESHOLDS["distinct_2"]:
        reasons.append("low distinct-2")
    if metrics["symbol_share"] > THRESHOLDS["symbol_share"]:
        reasons.append("symbols")
    if metrics["longest_run"] >= THRESHOLDS["longest_run"]:
        reasons.append("run")
    if metrics["wrong_script_share"] > THRESHOLDS["wrong_script_share"]:
        reasons.append("wrong script")
    if metrics["gibberish_share"] > THRESHOLDS["gibberish_share"]:
        reasons.append("gibberish")
    return ReplyScore(
        style=style.score,
        markers=style.marker_ids,
        aashi=AASHI in text,
        **metrics,
        broken=bool(reasons),
        reasons=reasons,
    )


def summarize(texts: Sequence[str], lang: str) -> dict:
    """Mean style, marker share, あーし rate (ja) and broken share over a set of replies."""
    scores = [score_reply(t, lang) for t in texts]
    n = max(len(scores), 1)
    out = {
        "replies": len(scores),
        "style": sum(s.style for s in scores) / n,
        "marker_share": sum(1 for s in scores if s.markers) / n,
        "broken_share": sum(1 for s in scores if s.broken) / n,
        "repeated_ngram_rate": sum(s.repeated_ngram_rate for s in scores) / n,
        "distinct_2": sum(s.distinct_2 for s in scores) / n,
    }
    if lang == "ja":
        out["aashi_rate"] = sum(1 for s in scores if s.aashi) / n
    return out


def perplexity(loaded: LoadedModel, prompt: str, reply: str) -> float:
    """Perplexity of `reply` after `prompt` under the unsteered model (reported, not used alone: it penalizes
    the very style we ask for)."""
    tok = loaded.tokenizer
    context = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
    reply_ids = tok(reply, add_special_tokens=False)["input_ids"]
    if not reply_ids:
        return math.nan
    ids = torch.tensor([ctx_ids + reply_ids], device=loaded.device)
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits[0, len(ctx_ids) - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, len(ctx_ids) :])
    return float(torch.exp(nll))


@dataclass
class SweepCell:
    layers: list[int]
    strength: float
    summary: dict
    replies: list[str]


def sweep(
    loaded: LoadedModel,
    vector,
    prompts: Sequence[str],
    layer_options: Sequence[Sequence[int] | str | int],
    strengths: Sequence[float],
    lang: str,
    scale: str = "calibrated",
    position: str = "all",
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    repetition_penalty: float = 1.0,
) -> list[SweepCell]:
    """Greedy replies over a layer × strength grid; every strength of one layer option in one batched call."""
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, system_prompt=system_prompt, repetition_penalty=repetition_penalty
    )
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    cells: list[SweepCell] = []
    for i, layers in enumerate(layer_options):
        steering = Steering(vector, layers, 0.0, scale, position)
        layer_list = steering.layer_list(loaded.num_layers)
        rows = [(c, s) for s in strengths for c in conversations]
        result = generate_rows(loaded, [c for c, _ in rows], [s for _, s in rows], steering, settings)
        for j, strength in enumerate(strengths):
            replies = result.texts[j * len(prompts) : (j + 1) * len(prompts)]
            cells.append(SweepCell(layer_list, float(strength), summarize(replies, lang), replies))
        if progress:
            progress(i + 1, len(layer_options))
    return cells


def recommend(cells: Sequence[SweepCell], max_broken: float = 0.05) -> SweepCell | None:
    """The highest-style cell whose broken share is at most `max_broken` (ties: the smaller strength).

    A cell must beat the plain model (strength 0 at the same layers, else style 0): a setting that adds no style
    is no recommendation.
    """
    plain = {tuple(c.layers): c.summary["style"] for c in cells if c.strength == 0}
    ok = [
        c
        for c in cells
        if c.strength != 0
        and c.summary["broken_share"] <= max_broken
        and c.summary["style"] > plain.get(tuple(c.layers), 0.0)
    ]
    if not ok:
        return None
    return max(ok, key=lambda c: (round(c.summary["style"], 6), -abs(c.strength)))


def layers_label(layers: Sequence[int]) -> str:
    """'8-12' for a contiguous band, '8' for one layer, '8,10,12' otherwise."""
    layers = sorted(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def cells_table(cells: Sequence[SweepCell]) -> list[dict]:
    """Flat rows for CSV/JSON and the app's heatmaps."""
    return [{"layers": layers_label(c.layers), "strength": c.strength, **c.summary} for c in cells]
