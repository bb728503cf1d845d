"""The gyaru meter (steering/meter.py): projections recorded during the batched generation equal a separate capture
of the same forward pass token for token (after the push at a steered layer), recording never changes the text, a
batch mixes metered and unmetered requests, hooks go, pieces join to the reply (whole characters), and the HTML is
escaped and coloured from white to pink."""

from __future__ import annotations

import html
import math
import re
import threading
from types import SimpleNamespace

import pytest
import torch

from steering.capture import block_output
from steering.generate import GenerationSettings, PreparedPrompt, Utf8SafeDecoder, generate_rows
from steering.messages import localized
from steering.meter import (
    PINK,
    Meter,
    RowMeter,
    TokenPieces,
    default_meter_layer,
    meter_center,
    meter_html,
    meter_rows,
    meter_scale,
    pieces_upto,
    row_meter,
    turn_meter_html,
)
from steering.row_decode import RowState, run_batch
from steering.scheduler import Row, Scheduler
from steering.steer import Steering, steer
from tests.helpers import hooks_left
from tests.test_row_decode import loaded_with
from tests.test_row_steer import CONVERSATIONS, clamp_vector


@pytest.fixture(scope="module")
def vector():
    return clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)


def greedy(tokens: int = 10) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens)


def reference(loaded, prompt_ids: list[int], generated: list[int], steering, layer: int, unit) -> list[float]:
    """What the meter should hold per generated token, from ONE full forward pass over prompt + reply (the test's
    own second run): the projection at the position BEFORE each token (where it was chosen), read after the push."""
    seen = {}

    def hook(_module, _inputs, output):
        seen["hidden"] = block_output(output)[0].float()

    ids = torch.tensor([prompt_ids + generated[:-1]])  # the last token's own position is never run
    with steer(loaded, [steering] if steering is not None else []), torch.inference_mode():
        handle = loaded.layers[layer].register_forward_hook(hook)  # after the steering hooks: sees the push
        try:
            loaded.model(input_ids=ids)
        finally:
            handle.remove()
    start = len(prompt_ids) - 1
    return (seen["hidden"][start : start + len(generated)] @ unit).tolist()


def expected_pieces(tokenizer, ids: list[int], values: list[float], chars: int) -> list[tuple[str, float]]:
    """The pieces a row should show for these tokens and values (merged as the decoder emits text)."""
    decoder, pieces = Utf8SafeDecoder(tokenizer), TokenPieces()
    for token, value in zip(ids, values):
        pieces.add(decoder.push(token), value)
    pieces.add(decoder.flush(), None)
    return pieces.upto(chars)


def assert_pieces_close(got, want):
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("layer", [2, 3])  # a steered layer (read after its push) and one after the steering
def test_recorded_projections_equal_a_separate_capture_of_the_same_forward(tiny_qwen2, vector, layer):
    steering = Steering(vector, "1-2", 3.0)  # apply_to all, constant: a full forward pass is the same computation
    metered = [
        Row(CONVERSATIONS[0], None, greedy(), meter_layer=layer),
        Row(CONVERSATIONS[0], steering, greedy(), meter_layer=layer),
    ]
    other = [Row(CONVERSATIONS[3], Steering(vector, "0", 2.0), greedy(7))]  # a longer prompt: the rows are padded
    prepare = Scheduler(max_batch_rows=8).prepare
    tickets = [prepare(tiny_qwen2, other), prepare(tiny_qwen2, metered)]
    run_batch(tiny_qwen2, tickets)
    assert hooks_left(tiny_qwen2.model) == 0
    assert tickets[0].result(timeout=0).pieces == [None]  # the unmetered request records nothing
    result = tickets[1].result(timeout=0)
    unit = row_meter(tiny_qwen2, vector, layer).unit
    for state, text, pieces, row in zip(tickets[1]._rows, result.texts, result.pieces, metered):
        ids = state.decoder.ids
        assert ids and "".join(t for t, _ in pieces) == text
        values = reference(tiny_qwen2, state.prompt.input_ids, ids, row.steering, layer, unit)
        assert_pieces_close(pieces, expected_pieces(tiny_qwen2.tokenizer, ids, values, len(text)))
    # the steered row is pushed along the direction at layer 2: its values sit far above the plain row's
    plain, steered = ([v for _, v in p] for p in result.pieces)
    assert min(steered) > max(plain)


def test_the_meter_reads_after_the_push_not_before(tiny_qwen2, vector):
    """At a steered layer the recorded value includes the push (strength × step along the unit direction)."""
    steering = Steering(vector, "2", 2.0, "raw")  # raw: the push adds exactly 2.0 along the unit direction
    ticket = Scheduler().prepare(tiny_qwen2, [Row(CONVERSATIONS[2], steering, greedy(4), meter_layer=2)])
    run_batch(tiny_qwen2, [ticket])
    state = ticket._rows[0]
    unit = row_meter(tiny_qwen2, vector, 2).unit
    pushed = reference(tiny_qwen2, state.prompt.input_ids, state.decoder.ids, steering, 2, unit)
    got = ticket.result(timeout=0).pieces[0]
    assert_pieces_close(got, expected_pieces(tiny_qwen2.tokenizer, state.decoder.ids, pushed, len(state.text)))


def test_metering_never_changes_the_replies(tiny_qwen2, vector):
    def rows(meter: int | None) -> list[Row]:
        return [
            Row(CONVERSATIONS[1], None, greedy(12), meter_layer=meter),
            Row(CONVERSATIONS[1], Steering(vector, "1-2", 4.0, apply_to="generated"), greedy(12), meter_layer=meter),
            Row(CONVERSATIONS[5], Steering(vector, "0-3", 1.5, mode="clamp"), greedy(9)),
        ]

    prepare = Scheduler(max_batch_rows=8).prepare
    off, on = prepare(tiny_qwen2, rows(None)), prepare(tiny_qwen2, rows(1))
    run_batch(tiny_qwen2, [off])
    run_batch(tiny_qwen2, [on])
    off_result, on_result = off.result(timeout=0), on.result(timeout=0)
    assert on_result.texts == off_result.texts
    assert on_result.token_counts == off_result.token_counts
    solo = rows(None)[1]
    alone = generate_rows(tiny_qwen2, [solo.messages], [4.0], solo.steering, solo.settings).texts[0]
    assert on_result.texts[1] == alone
    assert off_result.pieces == [None, None, None] and on_result.pieces[2] is None
    assert hooks_left(tiny_qwen2.model) == 0


def test_a_meter_is_checked_when_the_request_is_prepared(tiny_qwen2, vector):
    prepare = Scheduler().prepare
    narrow = clamp_vector(64, [1, 2], 3, 0.0, 1.0)
    with pytest.raises(ValueError, match="no direction at meter layer 3") as caught:
        prepare(tiny_qwen2, [Row(CONVERSATIONS[0], Steering(narrow, "1-2", 1.0), meter_layer=3)])
    assert "レイヤー 3" in localized(caught.value, "ja")
    for bad in (4, -1, 1.5, True):
        with pytest.raises(ValueError, match="not a layer of the model"):
            prepare(tiny_qwen2, [Row(CONVERSATIONS[0], Steering(vector, "1", 1.0), meter_layer=bad)])
    with pytest.raises(ValueError, match="needs a steered row"):  # a plain row alone has no direction to read
        prepare(tiny_qwen2, [Row(CONVERSATIONS[0], None, meter_layer=1)])


def test_hooks_go_on_any_exit_and_other_threads_are_not_recorded(tiny_qwen2, vector):
    meters = [row_meter(tiny_qwen2, vector, 1), None, row_meter(tiny_qwen2, vector, 3)]
    ids = torch.tensor([[1, 2, 3]] * 3)
    with pytest.raises(RuntimeError, match="boom"):
        with meter_rows(tiny_qwen2, meters) as meter:
            assert hooks_left(tiny_qwen2.model) == 2  # one hook per read layer
            other = threading.Thread(target=lambda: tiny_qwen2.model(input_ids=ids))
            other.start()
            other.join()
            assert all(hook.calls == 0 for hook in meter.hooks.values())  # another thread's forward pass
            with torch.inference_mode():
                tiny_qwen2.model(input_ids=ids)
            values = meter.read(1)
            assert math.isfinite(values[0]) and math.isnan(values[1]) and math.isfinite(values[2])
            assert all(math.isnan(v) for v in meter.read(2))  # a value never lands on the wrong pass
            raise RuntimeError("boom")
    assert hooks_left(tiny_qwen2.model) == 0
    with meter_rows(tiny_qwen2, [None, None]) as nothing:
        assert nothing is None and hooks_left(tiny_qwen2.model) == 0


def test_meter_read_of_unseen_layers_is_nan():
    meter = Meter([RowMeter(1, torch.ones(4)), None], {1: SimpleNamespace(last=None, calls=0)})
    assert all(math.isnan(v) for v in meter.read())


# --------------------------------------------------------------------------------------------- pieces


def metered_state(pieces, stops=(), max_new=50) -> RowState:
    row = RowState(
        PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=max_new), stops, 0, RowMeter(0, torch.ones(4))
    )
    row.start(loaded_with(pieces))
    return row


def test_a_character_split_over_tokens_is_one_piece_with_the_mean_value():
    ko, n, ha = "こ".encode(), "ん".encode(), "は".encode()
    row = metered_state([ko[:2], ko[2:] + n, "にち".encode(), ha[:1], ha[1:] + b"!"])
    for token, value in enumerate([1.0, 2.0, 3.0, 4.0, 6.0]):
        row.push(token, value)
        assert "".join(t for t, _ in row.pieces) == row.text and "\ufffd" not in row.text
    assert row.pieces == [("こん", 1.5), ("にち", 3.0), ("は!", 5.0)]
    plain = RowState(PreparedPrompt([1]), None, GenerationSettings(), (), 0)
    assert plain.pieces is None and plain.text == ""


def test_a_japanese_reply_from_the_byte_level_tokenizer_joins_to_its_text(tokenizer):
    reply = "あーしマジ最高じゃん！超ウケる〜✨\nまたね"
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(reply) / 2  # byte-level BPE: many characters span several tokens
    row = RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=len(ids)), (), 0, RowMeter(0, None))
    row.start(SimpleNamespace(tokenizer=tokenizer))
    for i, token in enumerate(ids):
        row.push(token, float(i))
        assert "".join(t for t, _ in row.pieces) == row.text  # at every step, never half a character
    assert row.text == reply and row.finished == "length"
    assert len(row.pieces) < len(ids) and all("\ufffd" not in t for t, _ in row.pieces)
    html_text = meter_html([(t, v / len(ids)) for t, v in row.pieces], "ja", 2)
    assert "".join(html.unescape(s) for s in re.findall(r"<span[^>]*>(.*?)</span>", html_text, re.S)) == reply


def test_pieces_follow_a_stop_string_and_the_final_flush():
    row = metered_state(["Hi", " th", "ere", " STO", "P now"], stops=("STOP",))
    for token, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        row.push(token, value)
    assert row.text == "Hi there " and row.pieces[-1] == (" ", 4.0)  # "STO" may begin the stop: held back
    row.push(4, 5.0)
    assert row.finished == "stop" and row.text == "Hi there "
    assert row.pieces == [("Hi", 1.0), (" th", 2.0), ("ere", 3.0), (" ", 4.0)]
    cut = metered_state(["ab", "é".encode()[:1]], max_new=2)
    cut.push(0, 1.0)
    cut.push(1, 7.0)  # the row ends on half a character: the flush shows it, with its token's value
    assert cut.text == "ab\ufffd" and cut.pieces == [("ab", 1.0), ("\ufffd", 7.0)]


def test_pieces_upto_cuts_inside_a_piece():
    pieces = [("ab", 1.0), ("cd", 2.0)]
    assert pieces_upto(pieces, 3) == [("ab", 1.0), ("c", 2.0)]
    assert pieces_upto(pieces, 2) == [("ab", 1.0)] and pieces_upto(pieces, 0) == []
    assert pieces_upto(pieces, 9) == pieces


# --------------------------------------------------------------------------------------------- colour and HTML


def test_html_escapes_hostile_pieces_and_keeps_newlines():
    out = meter_html([("<script>alert(1)</script>", 2.0), ('"><img src=x onerror=alert(1)>\n', 0.5)], "en", 2)
    assert "<script>" not in out and "<img" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&quot;&gt;&lt;img" in out
    assert "\n</span>" in out and "white-space:pre-wrap" in out
    spans = re.findall(r'<span style="background:(rgb\([^)]*\))" title="([^"]*)">', out)
    assert spans == [(f"rgb{PINK}".replace(" ", ""), "+2.00"), ("rgb(255,180,218)", "+0.50")]
    assert "layer 2" in out and "not a judgement of the style" in out


def test_colours_go_from_white_to_pink_and_the_caption_speaks_the_page_language():
    out = meter_html([("a", -3.0), ("b", 0.0), ("c", math.nan), ("d", 1.0)], "ja", 5, "std")
    backgrounds = re.findall(r"background:(rgb\([^)]*\))", out)
    assert backgrounds == ["rgb(255,255,255)"] * 3 + ["rgb(255,105,180)"]
    assert 'title="?"' in out and "レイヤー 5" in out and "標準偏差" in out and "スタイルの判定ではありません" in out
    assert "layer" not in meter_html([], "ja", 5)


def test_the_scale_is_the_recorded_gap_else_the_plain_spread_else_the_largest_deviation(vector):
    assert meter_scale(vector, 1, [0.0, 1.0], [5.0], 0.5) == (3.0, "gap")  # gyaru 2.0 − baseline −1.0
    bare = SimpleNamespace(stats={})
    assert meter_scale(bare, 1, [0.0, 2.0], [5.0], 1.0) == (1.0, "std")
    assert meter_scale(bare, 1, [1.0], [5.0, -2.0], 1.0) == (4.0, "max")
    assert meter_scale(None, 1, [], [], 0.0) == (1.0, "max")
    assert meter_center(vector, 1, [1.0, 3.0, math.nan]) == 2.0
    assert meter_center(vector, 1, []) == -1.0 and meter_center(bare, 1, []) == 0.0


def test_a_turns_meter_is_relative_to_the_plain_reply(vector):
    plain = [("Fine", 1.0), (".", 3.0)]  # mean 2.0
    out = turn_meter_html([("OMG", 5.0), ("!", 2.0)], plain, vector, 1, "en")  # scale: the gap, 3.0
    assert re.findall(r'title="([^"]*)"', out) == ["+1.00", "+0.00"]
    assert turn_meter_html(None, plain, vector, 1, "en") == ""


def test_the_default_read_layer(vector):
    assert default_meter_layer(Steering(vector, "0-3"), 4) == 2  # the middle of the steered layers
    assert default_meter_layer(Steering(vector, "1"), 4) == 1
    suggested = clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)
    suggested.meta.suggested_layer = 3
    assert default_meter_layer(Steering(suggested, "1-2"), 4) == 3
    suggested.meta.suggested_layer = 0  # before the steered layers: the push has not reached it
    assert default_meter_layer(Steering(suggested, "1-2"), 4) == 2


# --------------------------------------------------------------------------------------------- the bundled model


@pytest.mark.slow
def test_the_bundled_model_feels_the_push_where_it_steers(bundled):
    """A real gal vector (layers 8-12) read at its default layer: the replies are those of the unmetered turn, the
    recorded values match a separate capture, and the steered reply sits above the plain one (the push is felt)."""
    from steering.chat import Turn, stream_turn
    from steering.extract import extract
    from steering.vectors import SteeringVector

    pos = ["OMG, like, this cafe is totally iconic, bestie!", "Like, the vibes at this party are sooo good!"]
    neg = ["This cafe is well known in the city.", "The atmosphere at this party is pleasant."]
    result = extract(bundled, pos, neg, layers="8-12", heldout_fraction=0.0)
    vector = SteeringVector(result.directions, {"model": "bundled"}, result.stats)
    steering = Steering(vector, "8-12", 4.0)
    layer = default_meter_layer(steering, bundled.num_layers)
    assert layer == 10
    turn = Turn.start(None, "What should I cook for dinner tonight?")
    settings = greedy(12)
    off = list(stream_turn(bundled, turn, steering, settings, "en"))[-1]
    scheduler = Scheduler(gather_seconds=0.0)
    try:
        on = list(stream_turn(bundled, turn, steering, settings, "en", scheduler=scheduler, meter_layer=layer))[-1]
        rows = [Row(c, s, settings, meter_layer=layer) for c, s in zip(turn.contexts(), (None, steering))]
        ticket = scheduler.submit(bundled, rows)
        got = ticket.result(timeout=300)
    finally:
        scheduler.close()
    assert on[:5] == off[:5] and got.texts == [off[4][side][-1]["content"] for side in ("plain", "steered")]
    unit = row_meter(bundled, vector, layer).unit
    for state, text, pieces, row in zip(ticket._rows, got.texts, got.pieces, rows):
        values = reference(bundled, state.prompt.input_ids, state.decoder.ids, row.steering, layer, unit)
        want = expected_pieces(bundled.tokenizer, state.decoder.ids, values, len(text))
        assert [t for t, _ in pieces] == [t for t, _ in want]
        assert [v for _, v in pieces] == pytest.approx([v for _, v in want], rel=1e-3, abs=1e-2)
    plain, steered = ([v for _, v in p] for p in got.pieces)
    assert sum(steered) / len(steered) > sum(plain) / len(plain)
    assert hooks_left(bundled.model) == 0
