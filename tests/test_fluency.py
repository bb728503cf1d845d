"""The strict fluency judge: calibrated on our own fluent datasets, and catching the collapses we have seen."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from steering.fluency import judge_fluency, onset_token, token_index_at

DATA = Path(__file__).resolve().parent.parent / "data"
MAX_FLAG_RATE = 0.02  # at most 2 % of a fluent dataset column may be judged broken
DATASETS = {"en": "gal_en.jsonl", "ja": "gyaru_ja.jsonl"}

# (text, the part that must come after the onset: where the collapse starts)
COLLAPSES = [
    (
        "…That'd be nigh on 10 years ago when i first started out with uh-outahtzzsss....Andiowwwwhfdddds....",
        "outahtzzsss",
    ),
    (
        "Ugh! Uggg. You know what's so awesome about this place...I'm totally crazy-funkin'!!! Atmos..Atmz!!!! "
        "So freakin\u2019relly",
        "Atmz",
    ),
    ("OMG bestie, you have to see this, it is so BIGGFSYK........FuzzbgksscddjJnNtMmRr…", "BIGGFSYK"),
]
BROKEN = [
    "…BIGGFSYK........FuzzbgksscddjJnNtMmRr…",
    "asdfghjkl qwertyuiop zxcvbnm sdfsdf",
    "like like like like like like like like like like",
    "nooooooo,nooooooo,nooooooo,nooooooo,nooooooo,nooooooo",
    "I love this place so much! I love this place so much! I love this place so much! I love this place so much!",
]
FLUENT_EN = [
    "OMG bestie, that's like, sooo totally cute!! I literally can't even 💅",
    "Ugh, Mondays are the worst, ya know? Like, whatever, I'm getting boba.",
    "That outfit is adorbs, periodt. Slayyy queen, I'm obsesseddd, totallyyy iconic!",
    "My friend Jessica and I went to Trader Joe's, then Sephora. Check https://example.com/a?b=1 lol",
    "hahahahaha lolololol that's hilarious, ummm hmmm ahhh ugh eww yay woohoo",
    "**Tips:**\n1. Charge your phone to 80%\n2. Turn off 5G and Bluetooth\n3. Use dark mode 🌙",
]
FLUENT_JA = [
    "あーし的にはマジでそれアリだと思う〜！ウケる笑",
    "え、待って待って待って、それガチでヤバくない？ぴえん超えてぱおんなんだけどｗｗｗ",
    "iPhoneの新しいやつ、カメラがエグいらしいよ。SNSでめっちゃバズってるじゃん！",
    "新しいワイヤレスイヤホンを買いました。音質がとても良いです。",
]


def _rows(lang: str) -> list[dict]:
    with open(DATA / DATASETS[lang], encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _flagged(lang: str, side: str) -> tuple[list[str], int]:
    rows = _rows(lang)
    return [r[side] for r in rows if judge_fluency(r[side], lang).broken], len(rows)


@pytest.mark.parametrize("side", ["standard", "gyaru"])
@pytest.mark.parametrize("lang", ["en", "ja"])
def test_fluent_datasets_are_rarely_flagged(lang, side):
    flagged, total = _flagged(lang, side)
    print(f"{DATASETS[lang]} {side}: {len(flagged)}/{total} flagged ({len(flagged) / total:.1%})")
    assert len(flagged) <= MAX_FLAG_RATE * total, flagged


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_casual_flag_rate_is_reported(lang):
    flagged, total = _flagged(lang, "casual")
    print(f"{DATASETS[lang]} casual: {len(flagged)}/{total} flagged ({len(flagged) / total:.1%}) {flagged[:5]}")


@pytest.mark.parametrize(("text", "collapse"), COLLAPSES)
def test_a_collapse_is_broken_with_the_onset_at_the_collapse(text, collapse):
    verdict = judge_fluency(text, "en")
    assert verdict.broken, verdict
    assert verdict.onset_char is not None and verdict.onset_char > 20
    assert verdict.onset_char <= text.index(collapse), text[verdict.onset_char :]
    assert verdict.reasons


def test_the_onset_follows_a_long_fluent_start():
    fluent = "I'm so sorry to hear that, babe. Honestly, you deserve a whole spa day and a giant iced latte. "
    verdict = judge_fluency(fluent + "Zorbfl qwxzt hhhhgfd jJkKlLmM", "en")
    assert verdict.broken and verdict.onset_char == len(fluent)


@pytest.mark.parametrize("text", BROKEN)
def test_mash_and_loops_are_broken(text):
    verdict = judge_fluency(text, "en")
    assert verdict.broken and verdict.onset_char is not None, verdict


@pytest.mark.parametrize("text", FLUENT_EN)
def test_casual_english_is_fluent(text):
    verdict = judge_fluency(text, "en")
    assert not verdict.broken and verdict.onset_char is None and verdict.reasons == [], verdict


@pytest.mark.parametrize("text", FLUENT_JA)
def test_casual_japanese_is_fluent(text):
    verdict = judge_fluency(text, "ja")
    assert not verdict.broken and verdict.onset_char is None, verdict
    assert verdict.unknown_share < 0.1


def test_a_reply_cut_at_the_token_limit_is_not_broken():
    for text in ("The best way is to keep it between 20% and 80% so the batt", "1) Relaxing Bath & Body Sc"):
        assert not judge_fluency(text, "en").broken


def test_only_the_start_of_a_common_word_counts_as_cut_at_the_token_limit():
    cut, after_it, no_word_starts_so = (
        judge_fluency(f"What a day, it is really {end}", "en") for end in ("wonderf", "wonderf.", "wonderfx")
    )
    assert cut.unknown_share == 0 < after_it.unknown_share == no_word_starts_so.unknown_share


def test_japanese_gibberish_and_language_switches_are_broken():
    assert judge_fluency("あーし的にはマジで罏菕匮漤轱谲臔瓒謁篔颬槵躙忓爓", "ja").broken  # rare (Chinese) characters
    assert judge_fluency("マジでヘドワヲセョマベャヂエョアガピ", "ja").broken  # impossible katakana
    switched = judge_fluency("あーし的にはマジで that is so totally cool and I really love it so much", "ja")
    assert switched.broken and "wrong script" in switched.reasons and switched.onset_char >= 9
    assert judge_fluency("OMG that is so cute!! これは日本語の文章ですよね本当に", "en").broken


def test_allowed_words_are_known():
    text = "We met Zorblax and Quibbleflonk at the mall, they were so nice!"
    assert judge_fluency(text, "en").broken
    assert not judge_fluency(text, "en", allowed_words=["zorblax", "Quibbleflonk"]).broken


def test_unknown_language_is_refused():
    with pytest.raises(ValueError):
        judge_fluency("hola", "es")


def test_token_index_at():
    offsets = [(0, 0), (0, 3), (3, 4), (4, 9), (9, 9)]  # a special token, three tokens, a trailing special one
    assert token_index_at(0, offsets) == 1
    assert token_index_at(3, offsets) == 2
    assert token_index_at(5, offsets) == 3
    assert token_index_at(9, offsets) is None


class _WhitespaceTokenizer:
    """Just enough of a Hugging Face tokenizer: words and spaces as tokens, with offsets."""

    def __call__(self, text, return_offsets_mapping=False, add_special_tokens=True):
        return {"offset_mapping": [m.span() for m in re.finditer(r"\S+|\s+", text)]}


def test_onset_token_with_offsets():
    text = "so cute bestie asdfghjkl zxcvbnm"
    verdict = judge_fluency(text, "en")
    assert onset_token(_WhitespaceTokenizer(), text, verdict.onset_char) == 6  # so, ' ', cute, ' ', bestie, ' '
    assert onset_token(_WhitespaceTokenizer(), text, None) is None


def test_onset_token_with_the_bundled_tokenizer():
    from steering.bundled import FOLDER_NAME, cache_dir

    folder = cache_dir() / FOLDER_NAME
    if not (folder / "tokenizer.json").exists():
        pytest.skip("the bundled tokenizer is not downloaded")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = COLLAPSES[0][0]
    onset = judge_fluency(text, "en").onset_char
    index = onset_token(tokenizer, text, onset)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert 0 < index < len(ids)
    assert "out" in tokenizer.decode(ids[index : index + 2])  # the token where "outahtzzsss" starts
