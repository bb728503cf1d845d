"""Evaluation from the text: style, breakage flags against hand-labelled replies, perplexity, sweep, recommend."""

from __future__ import annotations

import math

import pytest

from steering.evaluate import (
    SweepCell,
    cells_table,
    perplexity,
    recommend,
    score_reply,
    summarize,
    sweep,
)

# Hand-labelled replies: (text, lang, broken?). Real outputs of the bundled model at several strengths, plus
# typical failure shapes.
LABELLED = [
    (
        "To make your phone battery last longer, lower the screen brightness and close apps you are not using.",
        "en",
        False,
    ),
    ("OMG, like, the beach was sooo iconic, bestie! We literally stayed until sunset.", "en", False),
    (
        "The eternal quest for a battery that lasts. I'm happy to help you optimize your phone's battery life.",
        "en",
        False,
    ),
    ("I'm a multi-faceted, multi-faceted, I'm a creative person who loves to cook.", "en", False),
    ("I'm so hungry.\n\nI'm so hungry.\n\nI'm so hungry.\n\nI'm so hungry.\n\nI'm so hungry.", "en", True),
    ("                                                ", "en", True),
    ("the the the the the the the the", "en", True),
    ("!!!!!!!!!!!!!!!!?????????####", "en", True),
    ("I'm all set to the next milestone. ###### ****** ###### ****** ###### ******", "en", True),
    ("Sounds awesome! You gotta have the right gear for this gig!!! Sooo much RAM, no cap.", "en", False),
    ("Ewok-nii! You can't just make it with thetina... 10x2XzkfKyZsFhGdUuYgD", "en", True),
    ("Uh..nope...trying! Nooooooo!!!!!!!!! Nwowwwsss-fiiutttzzzdddggggh", "en", True),
    ("SmollLAM-Fox! You're gonna wanna be thetadunzulfuhgahdumhkaywutu... 10x24", "en", True),
    ("今日はいい天気ですね。散歩に行きましょう。", "ja", False),
    ("あーしマジで今日の天気アガるんだけど！散歩いこ〜", "ja", False),
    ("Today is nice weather, let us go for a walk in the park.", "ja", True),
    ("ですですですですですですですですですですですですですです", "ja", True),
]


@pytest.mark.parametrize("text, lang, broken", LABELLED)
def test_broken_flag_matches_hand_labels(text, lang, broken):
    assert score_reply(text, lang).broken is broken


def test_style_comes_from_markers_in_the_text():
    gal = score_reply("OMG, like, this is totally iconic, bestie!", "en")
    plain = score_reply("This is a well known place in the city.", "en")
    assert gal.style > 0 and {"omg", "totally", "iconic", "bestie"} <= set(gal.markers)
    assert plain.style == 0 and plain.markers == []


def test_summarize_rates():
    summary = summarize(["あーしマジ無理", "今日は晴れです。", "あーしガチで草"], "ja")
    assert summary["aashi_rate"] == pytest.approx(2 / 3)
    assert summary["marker_share"] == pytest.approx(2 / 3)
    assert summary["broken_share"] == 0.0


@pytest.mark.slow
def test_perplexity_prefers_the_fluent_reply(bundled):
    prompt = "What is the capital of France?"
    fluent = perplexity(bundled, prompt, "The capital of France is Paris.")
    garbage = perplexity(bundled, prompt, "Paris the of is capital France banana the the.")
    assert math.isfinite(fluent) and fluent < garbage
    assert math.isnan(perplexity(bundled, prompt, ""))


def _cell(layers, strength, style, broken):
    return SweepCell(
        layers,
        strength,
        {
            "style": style,
            "broken_share": broken,
            "marker_share": 0.5,
            "replies": 4,
            "distinct_2": 0.9,
            "repeated_ngram_rate": 0.0,
        },
        [],
    )


def test_recommend_takes_the_best_style_within_the_breakage_budget():
    cells = [
        _cell([8], 0.0, 0.0, 0.0),
        _cell([8], 2.0, 3.0, 0.0),
        _cell([8], 4.0, 9.0, 0.5),
        _cell([10], 2.0, 4.0, 0.05),
    ]
    best = recommend(cells)
    assert (best.layers, best.strength) == ([10], 2.0)
    assert recommend([_cell([8], 4.0, 9.0, 0.5)]) is None
    # no style gained over the plain model at those layers: nothing to recommend
    assert recommend([_cell([8], 0.0, 1.0, 0.0), _cell([8], 2.0, 1.0, 0.0), _cell([8], 3.0, 0.0, 0.0)]) is None


@pytest.mark.slow
def test_sweep_runs_the_grid_and_strength_zero_is_plain(bundled):
    from steering.extract import extract
    from steering.generate import GenerationSettings, generate_batch
    from steering.vectors import SteeringVector

    result = extract(
        bundled,
        ["OMG, like, totally iconic, bestie!", "Ugh, I literally can't even."] * 2,
        ["That is very well known.", "I find this difficult."] * 2,
        layers="8-10",
        heldout_fraction=0.0,
    )
    vector = SteeringVector(result.directions, {}, result.stats)
    prompts = ["Hi!", "What is your favourite food?"]
    calls = []
    cells = sweep(
        bundled,
        vector,
        prompts,
        ["8-10", "9"],
        [0.0, 3.0],
        "en",
        max_new_tokens=6,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert [(c.layers, c.strength) for c in cells] == [([8, 9, 10], 0.0), ([8, 9, 10], 3.0), ([9], 0.0), ([9], 3.0)]
    assert calls == [(1, 2), (2, 2)]
    plain = generate_batch(
        bundled, [{"role": "user", "content": "Hi!"}], [0.0], None, GenerationSettings(max_new_tokens=6)
    ).texts[0]
    assert cells[0].replies[0] == plain
    assert cells[1].replies != cells[0].replies
    assert {r["layers"] for r in cells_table(cells)} == {"8-10", "9"}
