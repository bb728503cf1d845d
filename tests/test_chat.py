"""steering.chat: the side-by-side chat's bookkeeping (histories per column, one turn), its score lines, the steered
column's checked Steering, and one streamed turn on the tiny model."""

from __future__ import annotations

import html
import math
import re

import pytest
import torch

from steering.chat import (
    LABELS,
    PAGE_UPDATE_SECONDS,
    PAGE_UPDATES_PER_SECOND,
    SIDES,
    ChatRequest,
    Turn,
    column_label,
    column_steering,
    decoding,
    language_notice,
    new_history,
    page_update_interval,
    parse_half_life,
    pending_line,
    score_line,
    score_text,
    shown,
    stream_turn,
    user_text,
)
from steering.judge import score_reply
from steering.messages import Message, localized
from steering.vectors import SteeringVector
from tests.helpers import hooks_left


def make_vector(projections: bool = True, calibrated: bool = True) -> SteeringVector:
    gen = torch.Generator().manual_seed(3)
    directions = {layer: torch.nn.functional.normalize(torch.randn(64, generator=gen), dim=0) for layer in (1, 2)}
    stats = {}
    for layer in (1, 2):
        stats[layer] = {"mean_diff_norm": 3.0} if calibrated else {}
        if projections:
            stats[layer].update(gyaru_projection=2.0, baseline_projection=-1.0)
    return SteeringVector(directions, {"model": "tiny-qwen2", "lang": "en"}, stats)


# ------------------------------------------------------------------------------------------------ inputs


def test_a_blank_message_is_refused():
    for blank in (None, "", "  \n "):
        with pytest.raises(ValueError, match="write a message first"):
            user_text(blank)
    assert user_text("  hi there \n") == "hi there"


@pytest.mark.parametrize("constant", [None, "", "  ", 0, 0.0, "0"])
def test_half_life_empty_or_zero_is_a_constant_strength(constant):
    assert parse_half_life(constant) is None


def test_half_life_numbers_and_refusals():
    assert parse_half_life(16) == 16.0 and parse_half_life("2.5") == 2.5
    for bad in (-1, "-3", math.inf, math.nan, "soon"):
        with pytest.raises(ValueError, match="half-life"):
            parse_half_life(bad)


def test_decoding_turns_ui_floats_into_settings():
    settings = decoding(12.0, 0.7, 3.0, 1.2)
    assert (settings.max_new_tokens, settings.temperature, settings.seed, settings.repetition_penalty) == (
        12,
        0.7,
        3,
        1.2,
    )
    assert isinstance(settings.max_new_tokens, int) and isinstance(settings.seed, int)


# ------------------------------------------------------------------------------------------------ turns


def test_a_turn_continues_each_columns_own_history():
    history = {
        "plain": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        "steered": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "OMG hiii"}],
    }
    turn = Turn.start(history, " More? ")
    assert turn.message == "More?"
    plain, steered = turn.contexts()
    assert plain[-1] == steered[-1] == {"role": "user", "content": "More?"}
    assert plain[1]["content"] == "Hello." and steered[1]["content"] == "OMG hiii"
    after = turn.with_replies(["Sure.", "Totally!"])
    assert [m["content"] for m in after["steered"]] == ["Hi", "OMG hiii", "More?", "Totally!"]
    assert [m["content"] for m in after["plain"]][-1] == "Sure."
    assert len(history["plain"]) == 2  # the history given is never changed in place


def test_a_turn_on_no_history_starts_fresh_and_needs_two_replies():
    turn = Turn.start(None, "Hi")
    assert turn.history == new_history() == {side: [] for side in SIDES}
    with pytest.raises(ValueError, match="1 replies for 2 columns"):
        turn.with_replies(["only one"])


def test_view_scores_only_the_finished_replies_and_keeps_the_old_history_until_then():
    turn = Turn.start(None, "<b>hi</b>")
    plain, steered, plain_line, steered_line, history, meter = turn.view(["", "OMG"], False, "en")
    assert plain[0]["content"] == "&lt;b&gt;hi&lt;/b&gt;" and plain[1]["content"] == "…"  # escaped; still writing
    assert plain_line == f"**{LABELS['plain']}** — …" == "**Plain** — …" and "style" not in steered_line
    assert history == new_history() and meter == ""
    *_, plain_line, steered_line, history, meter = turn.view(["Fine.", "OMG bestie, totally!"], True, "en", "ja", "<m>")
    assert meter == "<m>" and plain_line.startswith("**ふつう** — スタイル")
    *_, plain_line, steered_line, history, _ = turn.view(["Fine.", "OMG bestie, totally!"], True, "en")
    assert plain_line.startswith(f"**{LABELS['plain']}**") and "markers: none" in plain_line
    assert "bestie" in steered_line and "totally" in steered_line
    assert history["steered"][-1] == {"role": "assistant", "content": "OMG bestie, totally!"}


def test_shown_escapes_markup_and_keeps_roles():
    messages = [{"role": "user", "content": "<script>x</script> & co"}, {"role": "assistant", "content": ""}]
    assert shown(messages) == [
        {"role": "user", "content": "&lt;script&gt;x&lt;/script&gt; &amp; co"},
        {"role": "assistant", "content": "…"},
    ]


# ------------------------------------------------------------------------------------------------ score lines


def test_score_text_names_the_markers_of_a_fluent_reply():
    text = score_text(score_reply("Hey bestie, that is like totally cute!", "en"))
    assert text.startswith("style ") and "markers: bestie, like_filler, totally" in text
    assert "breaks" not in text


def test_score_text_says_where_and_why_a_reply_breaks():
    score = score_reply("the the the the the the the the the the the the the the the the the the", "en")
    assert score.broken and score.onset_char is not None
    text = score_text(score)
    assert f"breaks at character {score.onset_char} ({', '.join(score.reasons)})" in text
    assert "markers: none" in text


def test_an_empty_reply_breaks_at_character_zero():
    assert "breaks at character 0 (empty)" in score_line("", "en", "Plain")


def test_score_line_is_markdown_safe():
    line = score_line("<b>OMG</b> bestie", "en", "Steered")
    assert line.startswith("**Steered** — style") and "<b>" not in line
    assert "<i>" not in score_line("hi", "en", "<i>x</i>")


# ------------------------------------------------------------------------------------------------ languages


def test_labels_and_lines_in_the_page_language():
    assert LABELS["plain"] == "Plain" and isinstance(LABELS["steered"], Message)
    assert column_label("plain", "ja") == "ふつう" and column_label("steered") == "Steered"
    assert pending_line(LABELS["steered"], "ja") == "**ギャル** — …"
    fluent = score_reply("It is a fine day today.", "en")
    assert score_text(fluent, "ja").startswith("スタイル ") and "マーカー: なし" in score_text(fluent, "ja")
    broken = score_reply("", "en")
    assert "⚠ 0文字目で崩れる (empty)" in score_text(broken, "ja")
    assert score_line("OMG bestie", "en", LABELS["steered"], "ja").startswith("**ギャル** — スタイル")
    assert score_line("OMG bestie", "en", LABELS["steered"]) == score_line("OMG bestie", "en", "Steered", "en")


def test_errors_carry_both_languages():
    with pytest.raises(ValueError) as blank:
        user_text(" ")
    assert str(blank.value) == "write a message first" and localized(blank.value, "ja") == "メッセージを書いてね"
    with pytest.raises(ValueError) as long:
        user_text("x" * 12, max_chars=10)
    assert "12 characters, over the 10-character limit" in str(long.value)
    assert "12 文字" in localized(long.value, "ja")
    for bad, word in (("soon", "トークン数ではありません"), (-1, "正のトークン数")):
        with pytest.raises(ValueError, match="half-life") as caught:
            parse_half_life(bad)
        assert word in localized(caught.value, "ja")


def test_language_notice_only_for_japanese_to_an_english_only_model():
    notice = language_notice("こんにちは、元気？", "en")
    assert isinstance(notice, Message) and "only knows English" in notice and "Qwen2.5" in notice
    assert "英語しか" in notice.in_lang("ja")
    assert language_notice("カタカナ only", "en") and language_notice("漢字", "en")
    assert language_notice("Hello, how are you?", "en") is None
    assert language_notice("こんにちは", "ja") is None
    assert language_notice("", "en") is None and language_notice(None, "en") is None


# ------------------------------------------------------------------------------------------------ steering


def test_column_steering_takes_the_tabs_values(tiny_qwen2):
    steering = column_steering(make_vector(), tiny_qwen2.num_layers, "  ", 2, "calibrated", "generated", "add", 0)
    assert steering.layers is None and steering.strength == 2.0 and steering.half_life is None
    assert (steering.scale, steering.apply_to, steering.mode) == ("calibrated", "generated", "add")
    steering = column_steering(make_vector(), tiny_qwen2.num_layers, "1-2", 1, "raw", "all", "clamp", "8")
    assert steering.layers == "1-2" and steering.half_life == 8.0 and steering.mode == "clamp"


def test_column_steering_refuses_clamp_without_recorded_projections(tiny_qwen2):
    vector = make_vector(projections=False)
    with pytest.raises(ValueError, match="mode 'clamp' needs the per-layer projections.*re-extract"):
        column_steering(vector, tiny_qwen2.num_layers, "1-2", 2.0, "calibrated", "all", "clamp")
    column_steering(vector, tiny_qwen2.num_layers, "1-2", 2.0, "calibrated", "all", "norm_preserving")  # fine


@pytest.mark.parametrize(
    "layers, scale, mode, half_life, message",
    [
        ("3", "calibrated", "add", None, "no direction for layers"),
        ("1-9", "calibrated", "add", None, "out of range"),
        ("1-2", "calibrated", "sideways", None, "unknown mode"),
        ("1-2", "calibrated", "add", -2, "half-life"),
    ],
)
def test_column_steering_refuses_before_generating(tiny_qwen2, layers, scale, mode, half_life, message):
    with pytest.raises(ValueError, match=message):
        column_steering(make_vector(), tiny_qwen2.num_layers, layers, 1.0, scale, "all", mode, half_life)


def test_column_steering_refuses_the_calibrated_scale_on_a_bare_vector(tiny_qwen2):
    with pytest.raises(ValueError, match="calibrated scale is unknown"):
        column_steering(make_vector(calibrated=False), tiny_qwen2.num_layers, "1-2", 1.0, "calibrated", "all")


def test_a_chat_request_checks_every_field_before_generating(tiny_qwen2):
    steering = ("1-2", 2, "calibrated", "generated", "add", 0)
    request = ChatRequest.check(tiny_qwen2, make_vector(), " Hi! ", None, steering, 8, 0.0, 0, 1.1)
    assert request.turn.message == "Hi!" and request.turn.history == new_history()
    assert request.steering.layers == "1-2" and request.steering.apply_to == "generated"
    assert request.settings.max_new_tokens == 8 and request.settings.repetition_penalty == 1.1
    with pytest.raises(ValueError, match="write a message"):
        ChatRequest.check(tiny_qwen2, make_vector(), "  ", None, steering, 8, 0.0, 0, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        ChatRequest.check(tiny_qwen2, make_vector(), "Hi", None, ("1-9", *steering[1:]), 8, 0.0, 0, 1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ChatRequest.check(tiny_qwen2, make_vector(), "Hi", None, steering, 2.5, 0.0, 0, 1.0)


# ------------------------------------------------------------------------------------------------ streaming


def test_stream_turn_streams_both_columns_then_the_judged_turn(tiny_qwen2):
    turn = Turn.start(None, "Hi! How are you?")
    steering = column_steering(make_vector(), tiny_qwen2.num_layers, "1-2", 0.0, "calibrated", "all")
    views = list(stream_turn(tiny_qwen2, turn, steering, decoding(6, 0.0, 0), "en"))
    assert len(views) >= 3  # before the first token, each step, the judged end
    first, last = views[0], views[-1]
    assert first[4] == new_history() and first[2].endswith("…")
    plain, steered, plain_line, steered_line, history, meter = last
    assert "style" in plain_line and "style" in steered_line and meter == ""
    assert [m["role"] for m in history["plain"]] == ["user", "assistant"]
    assert history["plain"][1]["content"] == history["steered"][1]["content"]  # strength 0: the same reply
    assert all(v[4] == new_history() for v in views[:-1])  # the history changes only once the turn is done
    assert hooks_left(tiny_qwen2.model) == 0


def test_stream_turn_on_a_scheduler_shows_the_finished_replies_once_judged(tiny_qwen2):
    """Each view is one server round trip for a page: the last update's replies come only in the judged view."""
    from steering.scheduler import Scheduler

    turn = Turn.start(None, "Hi! How are you?")
    steering = column_steering(make_vector(), tiny_qwen2.num_layers, "1-2", 3.0, "calibrated", "all")
    scheduler = Scheduler(max_batch_rows=4, gather_seconds=0.0)
    try:
        views = list(stream_turn(tiny_qwen2, turn, steering, decoding(9, 0.0, 0), "en", scheduler=scheduler))
    finally:
        scheduler.close()
    final = views[-1]
    assert "style" in final[2] and final[4]["plain"][-1]["role"] == "assistant"
    assert len(views) >= 3 and all(view[:2] != final[:2] for view in views[:-1])
    assert hooks_left(tiny_qwen2.model) == 0


def meter_text(meter: str) -> str:
    """The text of a meter's coloured spans, unescaped."""
    return "".join(html.unescape(s) for s in re.findall(r"<span[^>]*>(.*?)</span>", meter, re.S))


class Loaded:
    """A scheduler's load() with `running` requests."""

    def __init__(self, running: int):
        self.running = running

    def load(self) -> dict:
        return {"waiting": 0, "running": self.running, "running_rows": 2 * self.running, "incoming": 0}


def test_pages_share_an_update_budget_under_load():
    assert page_update_interval(Loaded(1)) == PAGE_UPDATE_SECONDS  # one chat: every PAGE_UPDATE_TOKENS tokens
    for running in (8, 16, 32):
        interval = page_update_interval(Loaded(running))
        assert running / interval == pytest.approx(PAGE_UPDATES_PER_SECOND)  # together: the budget, no more
    assert page_update_interval(Loaded(8)) == 0.5


def test_stream_turn_with_the_meter_colours_the_steered_reply_and_changes_nothing(tiny_qwen2):
    turn = Turn.start(None, "Hi! How are you?")
    steering = column_steering(make_vector(), tiny_qwen2.num_layers, "1-2", 3.0, "calibrated", "all")
    settings = decoding(8, 0.0, 0)
    off = list(stream_turn(tiny_qwen2, turn, steering, settings, "en"))
    on = list(stream_turn(tiny_qwen2, turn, steering, settings, "en", meter_layer=2, ui_lang="ja"))
    assert all(len(view) == 6 for view in on) and all(view[5] == "" for view in off)
    assert on[-1][4] == off[-1][4]  # the same replies (a private scheduler ran the metered turn)
    assert "レイヤー 2" in on[0][5] and meter_text(on[0][5]) == ""  # before the first token: the caption only
    for view in on:  # at every step the meter holds exactly the steered text shown so far
        assert (html.escape(meter_text(view[5]), quote=False) or "…") == view[1][-1]["content"]
    reply = on[-1][4]["steered"][-1]["content"]
    assert reply and meter_text(on[-1][5]) == reply
    assert on[-1][2].startswith("**ふつう** — スタイル")
    assert hooks_left(tiny_qwen2.model) == 0
    with pytest.raises(ValueError, match="no direction at meter layer 3"):
        next(stream_turn(tiny_qwen2, turn, steering, settings, "en", meter_layer=3))
    assert hooks_left(tiny_qwen2.model) == 0


def test_stream_turn_closed_early_removes_its_hooks(tiny_qwen2):
    turn = Turn.start(None, "Tell me a story.")
    steering = column_steering(make_vector(), tiny_qwen2.num_layers, "1-2", 4.0, "calibrated", "all")
    stream = stream_turn(tiny_qwen2, turn, steering, decoding(40, 0.0, 0), "en")
    next(stream)
    next(stream)
    stream.close()
    assert hooks_left(tiny_qwen2.model) == 0


def test_a_message_over_the_limit_is_refused_before_tokenizing():
    """A 3 MB message is refused by its length alone (the app passes generate.max_message_chars)."""
    huge = "あ" * 3_000_000
    with pytest.raises(ValueError, match=r"3,000,000 characters, over the 131,072-character limit"):
        Turn.start(None, huge, max_chars=131_072)
    assert Turn.start(None, "hi", max_chars=2).message == "hi"
    assert Turn.start(None, huge).message == huge  # no limit given: the library's own check applies later


@pytest.mark.parametrize("layers", ["0-100000000", "-100000000--1", "5,0-99999999999999"])
def test_a_huge_layer_range_is_refused_at_once(layers):
    import time

    vector = SteeringVector({1: torch.ones(64) / 8, 2: torch.ones(64) / 8}, {}, {})
    start = time.perf_counter()
    with pytest.raises(ValueError, match="out of range: the model has 4 layers"):
        column_steering(vector, 4, layers, 1.0, "raw", "all")
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "values, match",
    [
        ((math.nan, 0.0, 0), "max_new_tokens must be a whole number, got nan"),
        ((8, 0.0, 1e30), "seed must be at most 2\\*\\*63 - 1"),
        ((8, math.inf, 0), "temperature must be a finite number"),
        ((2.5, 0.0, 0), "max_new_tokens must be a whole number"),
    ],
)
def test_decoding_refuses_what_is_not_a_setting(values, match):
    with pytest.raises(ValueError, match=match):
        decoding(*values)
