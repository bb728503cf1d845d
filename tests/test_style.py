"""steering.style: the marker lexicons find gyaru/gal markers in their spelling variants and leave plain text alone."""

from __future__ import annotations

import pytest

from steering.style import guess_lang, load_lexicon, normalize, style_score


def ids(text: str, lang: str) -> list[str]:
    return style_score(text, lang).marker_ids


# --------------------------------------------------------------------------- Japanese variants


@pytest.mark.parametrize("text", ["マジで無理", "まじで無理", "まぢで無理", "ﾏｼﾞで無理"])
def test_maji_variants(text):
    assert "maji" in ids(text, "ja")


@pytest.mark.parametrize(
    "text", ["ちょーかわいい", "ちょ〜かわいい", "ちょ～かわいい", "チョーかわいい", "超かわいい", "ちょ〜〜〜かわいい"]
)
def test_chou_variants(text):
    assert "chou" in ids(text, "ja")


@pytest.mark.parametrize("text", ["ｳｹﾙ", "ウケる", "うける", "ウケたんだけど"])
def test_ukeru_half_and_full_width(text):
    assert "ukeru" in ids(text, "ja")


@pytest.mark.parametrize("text", ["それ草ｗ", "まじかｗｗｗ", "やばいw", "ウケるwww"])
def test_w_full_and_half_width(text):
    assert "w" in ids(text, "ja")


@pytest.mark.parametrize(
    "text, marker",
    [
        ("あーし的にはアリ", "aashi"),
        ("アーシも行く", "aashi"),
        ("あ〜しも行く", "aashi"),
        ("それな〜", "sorena"),
        ("ガチでエモい", "gachi"),
        ("ガチでエモい", "emoi"),
        ("わかりみが深い", "wakarimi"),
        ("行くっしょ", "ssho"),
        ("インスタ映えじゃん", "ageha"),
    ],
)
def test_japanese_markers(text, marker):
    assert marker in ids(text, "ja")


def test_normalize_folds_variants():
    assert normalize("ﾏｼﾞ ちょ〜〜 ＷＷ", "ja") == "まじ ちょー ww"
    assert normalize("SOOO “Cute”", "en") == "sooo “cute”"
    assert normalize("It’s", "en") == "it's"


# --------------------------------------------------------------------------- English


@pytest.mark.parametrize(
    "text, marker",
    [
        ("SOOO good", "sooo"),
        ("sooooo good", "sooo"),
        ("totallyyy", "totally"),
        ("TOTALLY", "totally"),
        ("Literallyyy dead", "literally"),
        ("OMG", "omg"),
        ("omggg", "omg"),
        ("UGHHH", "ugh"),
        ("my BESTIE", "bestie"),
        ("I can’t even", "cant_even"),
        ("and I was like, no", "like_filler"),
        ("Ugh, as if!", "whatever"),
        ("She's the best, period.", "no_cap"),
        ("You ate that!", "slay"),
        ("No cap.", "no_cap"),
    ],
)
def test_english_case_and_stretching(text, marker):
    assert marker in ids(text, "en")


# --------------------------------------------------------------------------- false-positive guards


@pytest.mark.parametrize(
    "text",
    [
        "ありがちな話です。",
        "ただし、注意が必要です。",
        "予算を超える金額です。",
        "制限を超えました。",
        "まじめに働いています。",
        "ガチョウが池にいます。",
        "それなら、明日にしましょう。",
        "それなりに満足しています。",
        "悩みが深いようです。",
        "夕日に映える海がきれいです。",
        "ちょっと待ってください。",
        "じゃんけんで決めましょう。",
        "まだしばらくかかります。",
        "今日は晴れです。",
        "行ってから考えます。",
        "この件について確認してから連絡します。",
        "ウェブサイトを更新しました。",
    ],
)
def test_japanese_plain_text_has_no_marker(text):
    assert style_score(text, "ja").matches == []


@pytest.mark.parametrize(
    "text",
    [
        "I would like a coffee.",
        "I like it.",
        "It looks as if it will rain.",
        "It was a busy period.",
        "It looks just like yours.",
        "It is like walking on air.",
        "I ate it for lunch.",
        "We need a solution so the team can finish.",
        "She was totalled in the crash report.",
        "The software is sold as is.",
    ],
)
def test_english_plain_text_has_no_marker(text):
    assert style_score(text, "en").matches == []


# --------------------------------------------------------------------------- score arithmetic and errors


def test_score_is_weight_per_100_characters():
    weights = {m.id: m.weight for m in load_lexicon("ja")}
    text = "マジ" + "あ" * 48  # 50 characters, one maji marker
    result = style_score(text, "ja")
    assert result.matches == [("maji", "まじ")]
    assert result.total_weight == weights["maji"]
    assert result.score == pytest.approx(100 * weights["maji"] / 50)
    doubled = style_score(text + "あ" * 50, "ja")
    assert doubled.score == pytest.approx(result.score / 2)


def test_score_counts_repeats_and_strips_outer_whitespace():
    weights = {m.id: m.weight for m in load_lexicon("en")}
    result = style_score("  OMG omg  ", "en")
    assert [m for m, _ in result.matches] == ["omg", "omg"]
    assert result.score == pytest.approx(100 * 2 * weights["omg"] / len("OMG omg"))


def test_empty_text_scores_zero():
    assert style_score("", "ja").score == 0.0
    assert style_score("   ", "en").matches == []


@pytest.mark.parametrize("lang", ["fr", "JA", ""])
def test_unknown_language(lang):
    with pytest.raises(ValueError, match="unknown language"):
        style_score("bonjour", lang)


def test_guess_lang():
    assert guess_lang("あーしマジ無理") == "ja"
    assert guess_lang("漢字") == "ja"
    assert guess_lang("OMG totally") == "en"
