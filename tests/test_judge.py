"""Judging replies from their text: style markers and the strict fluency judge combined, onsets, summaries."""

from __future__ import annotations

import pytest

from steering.judge import score_reply, summarize

# Real outputs of the bundled model and typical failure shapes: (text, lang, broken?).
LABELLED = [
    (
        "To make your phone battery last longer, lower the screen brightness and close apps you are not using.",
        "en",
        False,
    ),
    ("OMG, like, the beach was sooo iconic, bestie! We literally stayed until sunset.", "en", False),
    ("Sounds awesome! You gotta have the right gear for this gig!!! Sooo much RAM, no cap.", "en", False),
    ("I'm so hungry.\n\nI'm so hungry.\n\nI'm so hungry.\n\nI'm so hungry.\n\nI'm so hungry.", "en", True),
    ("                                                ", "en", True),
    ("the the the the the the the the the the", "en", True),
    ("!!!!!!!!!!!!!!!!?????????####", "en", True),
    ("Ewok-nii! You can't just make it with thetina... 10x2XzkfKyZsFhGdUuYgD", "en", True),
    ("Uh..nope...trying! Nooooooo!!!!!!!!! Nwowwwsss-fiiutttzzzdddggggh", "en", True),
    ("今日はいい天気ですね。散歩に行きましょう。", "ja", False),
    ("あーしマジで今日の天気アガるんだけど！散歩いこ〜", "ja", False),
    ("ですですですですですですですですですですですですですです", "ja", True),
]


@pytest.mark.parametrize("text, lang, broken", LABELLED)
def test_labelled_replies(text, lang, broken):
    assert score_reply(text, lang).broken is broken, score_reply(text, lang)


def test_style_and_fluency_are_both_reported():
    score = score_reply("OMG bestie, that's like, sooo totally cute!! I literally can't even", "en")
    assert not score.broken and score.onset_char is None and score.style > 5
    assert {"omg", "bestie", "literally"} <= set(score.markers)


def test_onset_in_tokens_points_at_the_collapse(tokenizer):
    text = (
        "Ugh, Mondays are the worst, ya know? Like, whatever, I'm getting boba. uh-outahtzzsss....Andiowwwwhfdddds...."
    )
    score = score_reply(text, "en", tokenizer)
    assert score.broken and score.onset_char > 40
    prefix_tokens = len(tokenizer(text[: score.onset_char], add_special_tokens=False)["input_ids"])
    assert abs(score.onset_token - prefix_tokens) <= 1


def test_gal_words_from_the_lexicon_are_known():
    score = score_reply("Bestie, slay! That vibe is iconic, literally obsessed, omg.", "en")
    assert not score.broken and score.unknown_share == 0


def test_summary_counts_gal_and_readable_separately():
    texts = [
        "OMG bestie, this is sooo cute!",
        "Like, totally! qwzxv bkdfg hjklq zxcvb nmqwr xkcdq vbnmz",
        "Fine, thanks.",
    ]
    s = summarize(texts, "en")
    assert s["replies"] == 3 and s["marker_share"] == pytest.approx(2 / 3)
    assert s["broken_share"] == pytest.approx(1 / 3) and s["gal_readable_share"] == pytest.approx(1 / 3)
    assert s["median_onset"] is not None


def test_prepare_loads_the_word_list_the_first_cut_reply_needs():
    from steering import fluency
    from steering.judge import prepare

    fluency._common_words.cache_clear()
    prepare(("en",))
    assert fluency._common_words.cache_info().currsize == 1
    assert not score_reply("The best way is to keep it between 20% and 80% so the batt", "en").broken
    assert fluency._common_words.cache_info().misses == 1  # (built by prepare, not by the reply)
