"""The live batch (steering/live_batch.py): rows that join between two tokens, with prompts longer or shorter than the
running rows, and rows that leave, each give their solo greedy reply; the meter and every steering option hold
across joins; a failing join fails only the joiners; a cache with sliding-window layers takes no joiners."""

from __future__ import annotations

import math

import pytest

from steering.generate import GenerationSettings
from steering.live_batch import LiveBatch
from steering.meter import default_meter_layer
from steering.row_decode import CANCELLED, run_batch
from steering.scheduler import Row, Scheduler
from steering.steer import Steering
from tests.conftest import build_tiny
from tests.helpers import hooks_left
from tests.test_row_steer import CONVERSATIONS, clamp_vector
from tests.test_scheduler import WAIT, solo

LONG = [{"role": "user", "content": "Tell me, in some detail and with care, " * 6 + "how rain forms."}]


@pytest.fixture(scope="module")
def vectors():
    return clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0), clamp_vector(64, [0, 1, 2, 3], 2, 0.5, 3.0)


def greedy(tokens: int, penalty: float = 1.0) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens, repetition_penalty=penalty)


def requests(vectors) -> list[list[Row]]:
    """Requests with every steering option: plain + steered pairs, two vectors, other layer sets, modes, positions,
    a half-life, penalties, lengths; the third has a prompt longer than anything running when it joins."""
    a, b = vectors
    return [
        [Row(CONVERSATIONS[0], None, greedy(12)), Row(CONVERSATIONS[0], Steering(a, "1-2", 3.0), greedy(12))],
        [Row(CONVERSATIONS[1], Steering(b, "0,3", -2.0, "raw", "generated", "norm_preserving"), greedy(16))],
        [Row(LONG, None, greedy(10, 1.3)), Row(LONG, Steering(b, "2", 4.0, mode="clamp"), greedy(10, 1.3))],
        [Row(CONVERSATIONS[3], Steering(a, "0-3", 6.0, "raw", "last", half_life=2.0), greedy(14))],
        [Row(CONVERSATIONS[4], Steering(a, "3", 2.0, apply_to="generated"), greedy(9, 1.2))],
    ]


def run_with_joins(loaded, tickets, join_at: dict[int, list]) -> LiveBatch:
    """Admit tickets[0] at once and each list in join_at at that step; step until every row ended."""
    batch = LiveBatch(loaded)
    batch.admit(tickets)
    step = 0
    while batch.rows or any(k > step for k in join_at):
        step += 1
        if step in join_at:
            batch.admit(join_at[step])
        batch.step()
    return batch


def test_rows_that_join_mid_flight_get_their_solo_greedy_reply(tiny_qwen2, vectors):
    prepare = Scheduler(max_batch_rows=16).prepare
    rows = requests(vectors)
    tickets = [prepare(tiny_qwen2, r) for r in rows]
    # two start together; the long prompt joins at step 3 (the running rows get padded), two short ones at step 6
    # (they get padded); rows end at their own lengths in between
    run_with_joins(tiny_qwen2, tickets[:2], {3: [tickets[2]], 6: tickets[3:]})
    for ticket, request in zip(tickets, rows):
        result = ticket.result(timeout=0)
        assert result.texts == [solo(tiny_qwen2, row) for row in request], request
        assert all(f in ("stop", "length") for f in result.finished)
    assert hooks_left(tiny_qwen2.model) == 0


def test_rows_leave_the_step_they_end_and_padding_only_they_used_goes(tiny_qwen2):
    prepare = Scheduler(max_batch_rows=8).prepare
    short, long = (
        prepare(tiny_qwen2, [Row(LONG, None, greedy(2))]),
        prepare(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(30))]),
    )
    batch = LiveBatch(tiny_qwen2)
    batch.admit([short, long])
    assert len(batch.rows) == 2 and batch.mask.sum(dim=1).tolist() == short.prompt_tokens + long.prompt_tokens
    batch.step()
    assert short.done and len(batch.rows) == 1
    # the long prompt's columns are gone: the row left has no padding (its shared system prompt start included)
    assert bool(batch.mask.all()) and batch.mask.shape[1] == long.prompt_tokens[0] + 1
    assert batch.cache.get_seq_length() == batch.mask.shape[1]
    while batch.rows:
        batch.step()
    assert long.result(timeout=0).texts[0] == solo(tiny_qwen2, Row(CONVERSATIONS[0], None, greedy(30)))


def test_a_cancelled_row_leaves_and_the_others_run_on(tiny_qwen2, vectors):
    prepare = Scheduler(max_batch_rows=8).prepare
    rows = requests(vectors)
    tickets = [prepare(tiny_qwen2, r) for r in rows[:3]]
    batch = LiveBatch(tiny_qwen2)
    batch.admit(tickets)
    batch.step()
    tickets[1].cancel()
    batch.step()
    assert tickets[1].done and tickets[1].result(timeout=0).finished == [CANCELLED]
    assert all(t is not tickets[1] for t in batch.tickets)
    while batch.rows:
        batch.step()
    for ticket, request in ((tickets[0], rows[0]), (tickets[2], rows[2])):
        assert ticket.result(timeout=0).texts == [solo(tiny_qwen2, row) for row in request]
    assert hooks_left(tiny_qwen2.model) == 0


def test_the_meter_of_a_row_that_joins_mid_flight_is_its_solo_meter(tiny_qwen2, vectors):
    prepare = Scheduler(max_batch_rows=8).prepare
    a, _ = vectors
    steering = Steering(a, "1-2", 3.0)
    layer = default_meter_layer(steering, tiny_qwen2.num_layers)
    metered = [
        Row(CONVERSATIONS[3], None, greedy(10), meter_layer=layer),
        Row(CONVERSATIONS[3], steering, greedy(10), meter_layer=layer),
    ]
    alone = prepare(tiny_qwen2, metered)
    run_batch(tiny_qwen2, [alone])
    joined = prepare(tiny_qwen2, metered)
    others = prepare(tiny_qwen2, requests(vectors)[1])
    run_with_joins(tiny_qwen2, [others], {4: [joined]})
    expected, got = alone.result(timeout=0), joined.result(timeout=0)
    assert got.texts == expected.texts
    for want, have in zip(expected.pieces, got.pieces):
        assert [t for t, _ in have] == [t for t, _ in want]
        assert all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-4) for (_, x), (_, y) in zip(want, have))


def test_a_failing_join_fails_only_the_joiners(tiny_qwen2, monkeypatch):
    prepare = Scheduler(max_batch_rows=8).prepare
    expected = solo(tiny_qwen2, Row(CONVERSATIONS[0], None, greedy(12)))
    running = prepare(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(12))])
    batch = LiveBatch(tiny_qwen2)
    batch.admit([running])
    batch.step()
    real = tiny_qwen2.model.forward

    def no_prefill(*args, input_ids=None, **kwargs):
        if input_ids.shape[1] > 1:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(tiny_qwen2.model, "forward", no_prefill)
    joiner = prepare(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(4))])
    batch.admit([joiner])
    with pytest.raises(RuntimeError, match="simulated"):
        joiner.result(timeout=0)
    while batch.rows:
        batch.step()
    assert running.result(timeout=0).texts[0] == expected
    assert hooks_left(tiny_qwen2.model) == 0


def test_a_request_joins_a_running_one_and_finishes_first(tiny_qwen2):
    scheduler = Scheduler(max_batch_rows=8, max_queue=8, gather_seconds=0.0)
    try:
        long_row = Row(CONVERSATIONS[1], None, greedy(300), min_new_tokens=300)  # no early end of sequence
        short_row = Row(CONVERSATIONS[2], None, greedy(5))
        running = scheduler.submit(tiny_qwen2, [long_row])
        reader = running.updates(timeout=WAIT)  # kept open: closing a reader cancels its request
        next(reader)
        short = scheduler.submit(tiny_qwen2, [short_row])
        assert short.result(timeout=WAIT).texts[0] == solo(tiny_qwen2, short_row)
        assert scheduler.stats.joined >= 1  # it joined the long one's batch: it did not wait for its end
        assert running.result(timeout=WAIT).token_counts == [300]
    finally:
        scheduler.close()


def test_a_sliding_window_cache_takes_no_joiners(tokenizer):
    from transformers import Qwen2Config

    sliding = build_tiny(
        Qwen2Config, tokenizer, "tiny-sliding", use_sliding_window=True, sliding_window=8, max_window_layers=2
    )
    scheduler = Scheduler(max_batch_rows=8, max_queue=8, gather_seconds=0.0)
    try:
        first_row = Row(CONVERSATIONS[1], None, greedy(40), min_new_tokens=40)  # still running when the second comes
        second_row = Row(CONVERSATIONS[2], None, greedy(5))
        first = scheduler.submit(sliding, [first_row])
        reader = first.updates(timeout=WAIT)  # kept open: closing a reader cancels its request
        next(reader)
        second = scheduler.submit(sliding, [second_row])
        assert first.result(timeout=WAIT).token_counts == [40]
        assert second.result(timeout=WAIT).texts[0] == solo(sliding, second_row)
        assert scheduler.stats.joined == 0 and second.started >= first.ended
    finally:
        scheduler.close()
    batch = LiveBatch(sliding)
    assert batch.joinable()  # empty: anything may start
    batch.admit([Scheduler().prepare(sliding, [first_row])])
    assert not batch.joinable()
    batch.close()
    assert hooks_left(sliding.model) == 0
