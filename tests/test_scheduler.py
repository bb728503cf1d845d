"""The scheduler (steering/scheduler.py): concurrent callers share batches and each get exactly their solo reply;
cancelling one leaves the others alone; limits answer SchedulerBusy; per-row decoding; no hooks left behind."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import closing, nullcontext

import pytest

from steering.generate import GenerationSettings, generate_rows
from steering.scheduler import Row, Scheduler, SchedulerBusy, SchedulerClosed
from steering.steer import Steering
from tests.helpers import hooks_left
from tests.test_row_steer import CONVERSATIONS, clamp_vector

WAIT = 120  # seconds: a generous bound so a broken scheduler fails instead of hanging


@pytest.fixture(scope="module")
def vectors():
    return clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0), clamp_vector(64, [0, 1, 2, 3], 2, 0.5, 3.0)


@pytest.fixture
def scheduler():
    s = Scheduler(max_batch_rows=16, max_queue=16, gather_seconds=0.05)
    yield s
    s.close()


def greedy(tokens: int = 10, penalty: float = 1.0) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens, repetition_penalty=penalty)


def solo(loaded, row: Row) -> str:
    strength = row.steering.strength if row.steering is not None else 0.0
    return generate_rows(loaded, [row.messages], [strength], row.steering, row.settings).texts[0]


def caller_requests(vectors) -> list[list[Row]]:
    """Six callers: plain + steered pairs (like the app's columns), single rows, their own decoding settings."""
    a, b = vectors
    return [
        [Row(CONVERSATIONS[0], None, greedy()), Row(CONVERSATIONS[0], Steering(a, "1-2", 3.0), greedy())],
        [Row(CONVERSATIONS[1], Steering(b, "0,3", -2.0, "raw", "generated", "norm_preserving"), greedy(14))],
        [
            Row(CONVERSATIONS[2], None, greedy(6, 1.3)),
            Row(CONVERSATIONS[2], Steering(b, "2", 4.0, mode="clamp"), greedy(6, 1.3)),
        ],
        [Row(CONVERSATIONS[3], Steering(a, "0-3", 6.0, "raw", "last", half_life=2.0), greedy(12))],
        [Row(CONVERSATIONS[6], None, greedy(8))],
        [Row(CONVERSATIONS[5], Steering(a, "3", 2.0, apply_to="generated"), greedy(10, 1.2))],
    ]


def test_concurrent_callers_each_get_their_solo_reply_in_one_batch(tiny_qwen2, vectors, scheduler):
    requests = caller_requests(vectors)
    results, errors = {}, []
    barrier = threading.Barrier(len(requests))

    def caller(i: int) -> None:
        barrier.wait()
        try:
            results[i] = scheduler.chat(tiny_qwen2, requests[i], timeout=WAIT)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    for i, rows in enumerate(requests):
        assert results[i].texts == [solo(tiny_qwen2, row) for row in rows], f"caller {i}"
        assert all(0 < n <= row.settings.max_new_tokens for n, row in zip(results[i].token_counts, rows))
        assert all(reason in ("stop", "length") for reason in results[i].finished)
    # all nine rows arrived together: they ran in one or two batches, not one per caller
    assert scheduler.stats.largest_batch >= 5 and scheduler.stats.batches <= 3
    assert hooks_left(tiny_qwen2.model) == 0


def test_a_cancelled_caller_stops_and_the_others_finish(tiny_qwen2, vectors, scheduler):
    a, _ = vectors
    keep = [Row(CONVERSATIONS[1], Steering(a, "1-2", 2.0), greedy(24)), Row(CONVERSATIONS[4], None, greedy(24))]
    leave = [Row(CONVERSATIONS[3], None, greedy(200)), Row(CONVERSATIONS[3], Steering(a, "2", 3.0), greedy(200))]
    kept = scheduler.submit(tiny_qwen2, keep)
    left = scheduler.submit(tiny_qwen2, leave)
    with closing(left.updates(timeout=WAIT)) as updates:  # a caller leaving mid-stream closes its iterator
        for step, _update in enumerate(updates):
            if step == 2:
                break
    assert left.cancelled
    result = kept.result(timeout=WAIT)
    assert result.texts == [solo(tiny_qwen2, row) for row in keep]
    assert left.result(timeout=WAIT).finished == ["cancelled", "cancelled"]
    assert max(left.result(timeout=0).token_counts) < 200
    assert hooks_left(tiny_qwen2.model) == 0


def test_when_every_row_is_cancelled_the_batch_stops(tiny_qwen2, scheduler):
    ticket = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(400))])
    next(iter(ticket.updates(timeout=WAIT)))  # the batch is running
    t0 = time.perf_counter()
    ticket.cancel()
    after = scheduler.chat(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(4))], timeout=WAIT)
    assert after.texts == [solo(tiny_qwen2, Row(CONVERSATIONS[0], None, greedy(4)))]
    assert ticket.result(timeout=0).token_counts[0] < 400
    assert time.perf_counter() - t0 < 30  # not 500 tokens of the abandoned batch first
    assert hooks_left(tiny_qwen2.model) == 0


def test_busy_beyond_the_queue_and_too_many_rows(tiny_qwen2):
    scheduler = Scheduler(max_batch_rows=2, max_queue=1, gather_seconds=0.0)
    try:
        running = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(400))])
        next(iter(running.updates(timeout=WAIT)))  # it runs: the queue is empty again
        waiting = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(2))])
        with pytest.raises(SchedulerBusy, match="busy, try again"):
            scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(2))])
        with pytest.raises(ValueError, match="3 rows in one request, more than the 2"):
            scheduler.prepare(tiny_qwen2, [Row(CONVERSATIONS[0])] * 3)
        running.cancel()
        assert waiting.result(timeout=WAIT).finished[0] in ("stop", "length")
    finally:
        scheduler.close()
    assert hooks_left(tiny_qwen2.model) == 0


def test_bad_rows_are_refused_before_queueing(tiny_qwen2, vectors, scheduler):
    a, _ = vectors
    with pytest.raises(ValueError, match="empty prompt"):
        scheduler.submit(tiny_qwen2, [Row([{"role": "user", "content": "  "}])])
    with pytest.raises(ValueError, match="layers"):
        scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], Steering(a, "7", 1.0))])
    with pytest.raises(ValueError, match="min_new_tokens"):
        scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(4), min_new_tokens=5)])
    with pytest.raises(ValueError, match="stop"):
        scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(4), stop=[""])])
    with pytest.raises(ValueError, match="at least one row"):
        scheduler.submit(tiny_qwen2, [])
    assert scheduler.load() == {"waiting": 0, "running": 0, "running_rows": 0, "incoming": 0}


def test_seeded_sampling_does_not_depend_on_batch_mates(tiny_qwen2, vectors, scheduler):
    a, _ = vectors
    sampled = GenerationSettings(
        max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=40, seed=7, repetition_penalty=1.2
    )
    row = Row(CONVERSATIONS[1], Steering(a, "1", 2.0), sampled)
    alone = scheduler.chat(tiny_qwen2, [row], timeout=WAIT).texts[0]
    crowd = [Row(CONVERSATIONS[0], None, greedy()), row, Row(CONVERSATIONS[2], None, sampled)]
    assert scheduler.chat(tiny_qwen2, crowd, timeout=WAIT).texts[1] == alone
    other_seed = GenerationSettings(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=40, seed=8)
    other = scheduler.chat(tiny_qwen2, [Row(CONVERSATIONS[1], Steering(a, "1", 2.0), other_seed)], timeout=WAIT)
    assert other.texts[0] != alone


def test_stream_grows_and_stop_strings_cut_the_reply(tiny_qwen2, scheduler):
    row = Row(CONVERSATIONS[1], None, greedy(16))
    full = solo(tiny_qwen2, row)
    frames = list(scheduler.submit(tiny_qwen2, [row]).stream(timeout=WAIT))
    assert frames[-1] == [full]
    assert all(b[0].startswith(a[0]) for a, b in zip(frames, frames[1:]))  # append-only
    assert not any(f[0].endswith("\ufffd") for f in frames[:-1])  # never half a character while streaming
    stop = full[len(full) // 2 : len(full) // 2 + 4]
    cut = full[: full.find(stop)]
    ticket = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(16), stop=[stop, "never-there"])])
    shown = [u.texts[0] for u in ticket.updates(timeout=WAIT)]
    assert shown[-1] == cut and ticket.result(timeout=0).finished == ["stop"]
    assert all(stop not in text for text in shown)
    assert all(cut.startswith(text) for text in shown)


def test_async_reader(tiny_qwen2, scheduler):
    row = Row(CONVERSATIONS[2], None, greedy(8))

    async def read() -> list[str]:
        ticket = scheduler.submit(tiny_qwen2, [row])
        return [u.texts[0] async for u in ticket.aupdates()]

    texts = asyncio.run(asyncio.wait_for(read(), WAIT))
    assert texts[-1] == solo(tiny_qwen2, row)


def test_a_failed_generation_reaches_every_caller_and_the_worker_goes_on(tiny_qwen2, scheduler, monkeypatch):
    real = tiny_qwen2.model.forward
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_qwen2.model, "forward", flaky)
    first = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(4))])
    with pytest.raises(RuntimeError, match="simulated"):
        first.result(timeout=WAIT)
    assert scheduler.chat(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(4))], timeout=WAIT).texts[0]
    assert hooks_left(tiny_qwen2.model) == 0


def test_close_fails_waiting_requests(tiny_qwen2):
    scheduler = Scheduler(max_batch_rows=1, max_queue=4, gather_seconds=0.0)
    running = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(400))])
    next(iter(running.updates(timeout=WAIT)))
    waiting = scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(2))])
    scheduler.close()
    with pytest.raises(SchedulerClosed):
        waiting.result(timeout=WAIT)
    assert running.result(timeout=WAIT).finished == ["cancelled"]
    with pytest.raises(SchedulerClosed):
        scheduler.submit(tiny_qwen2, [Row(CONVERSATIONS[0])])
    assert hooks_left(tiny_qwen2.model) == 0


def test_the_chat_columns_through_the_scheduler_match_their_own_generate_call(
    tiny_qwen2, vectors, scheduler, monkeypatch
):
    from steering.chat import Turn, stream_turn

    a, _ = vectors
    history = {
        "plain": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}],
        "steered": [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "OMG hi bestie, like, hello!!"},
        ],
    }
    turn = Turn.start(history, "What should I cook tonight?")
    steering = Steering(a, "1-2", 3.0, apply_to="generated")
    settings = greedy(10, 1.1)
    direct = list(stream_turn(tiny_qwen2, turn, steering, settings, "en"))
    scheduled = list(stream_turn(tiny_qwen2, turn, steering, settings, "en", scheduler=scheduler))
    assert scheduled[0] == direct[0] and scheduled[-1] == direct[-1]  # the empty view, then the judged replies
    # a reader that leaves after the first view stops its rows
    tickets = []
    submit = scheduler.submit
    monkeypatch.setattr(scheduler, "submit", lambda *a, **k: tickets.append(submit(*a, **k)) or tickets[-1])
    views = stream_turn(tiny_qwen2, turn, steering, greedy(300), "en", scheduler=scheduler)
    next(views)
    views.close()
    assert tickets[0].result(timeout=WAIT).finished == ["cancelled", "cancelled"]
    assert hooks_left(tiny_qwen2.model) == 0


def test_metered_and_unmetered_callers_share_a_batch(tiny_qwen2, vectors, scheduler):
    """A metered chat turn through the shared scheduler gives the same replies as without, its updates' pieces join
    to the texts at every step, and a caller without the meter sharing the batch gets no pieces."""
    from steering.chat import Turn, stream_turn

    a, _ = vectors
    turn = Turn.start(None, "What should I cook tonight?")
    steering = Steering(a, "1-2", 3.0)
    other_rows = [Row(CONVERSATIONS[4], None, greedy(12)), Row(CONVERSATIONS[4], Steering(a, "2", 2.0), greedy(12))]
    other = scheduler.submit(tiny_qwen2, other_rows)
    metered = list(stream_turn(tiny_qwen2, turn, steering, greedy(10), "en", scheduler=scheduler, meter_layer=1))
    plain = list(stream_turn(tiny_qwen2, turn, steering, greedy(10), "en", scheduler=scheduler))
    assert metered[-1][:5] == plain[-1][:5] and plain[-1][5] == "" and "layer 1" in metered[-1][5]
    result = other.result(timeout=WAIT)
    assert result.pieces == [None, None] and result.texts == [solo(tiny_qwen2, row) for row in other_rows]
    ticket = scheduler.submit(
        tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(8), meter_layer=2), Row(CONVERSATIONS[0], steering, greedy(8))]
    )
    for update in ticket.updates(timeout=WAIT):
        assert "".join(t for t, _ in update.pieces[0]) == update.texts[0] and update.pieces[1] is None
    deadline = time.perf_counter() + WAIT  # a ticket is done just before its batch leaves generate
    while scheduler.load()["running_rows"] and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert hooks_left(tiny_qwen2.model) == 0


def test_rows_of_any_lengths_share_a_batch_and_each_gets_its_solo_reply(tiny_qwen2):
    """A long prompt with a short reply and a short prompt with a long reply together pass the 512-token context as
    one padded block; each row ends on its own, so they share the batch and neither runs past its own length."""
    scheduler = Scheduler(max_batch_rows=8, max_queue=8, gather_seconds=0.05)
    try:
        long_prompt = [{"role": "user", "content": "word " * 380}]
        rows = [Row(long_prompt, None, greedy(8)), Row(CONVERSATIONS[0], None, greedy(130))]
        tickets = [scheduler.submit(tiny_qwen2, [row]) for row in rows]
        results = [t.result(timeout=WAIT) for t in tickets]
        assert tickets[0].prompt_tokens[0] + 130 > tiny_qwen2.context_length
        assert [r.texts[0] for r in results] == [solo(tiny_qwen2, row) for row in rows]
        assert scheduler.stats.batches == 1 and scheduler.stats.largest_batch == 2
        assert scheduler.stats.steps == 129  # the first token comes from the prefill
        assert scheduler.stats.step_seconds > 0 < scheduler.stats.admit_seconds
    finally:
        scheduler.close()


def test_a_reader_with_a_minimum_interval_gets_fewer_updates_and_the_same_reply(tiny_qwen2, scheduler):
    row = Row(CONVERSATIONS[1], None, greedy(24), min_new_tokens=24)
    every = list(scheduler.submit(tiny_qwen2, [row]).updates(timeout=WAIT))
    stamps, throttled = [], []
    for update in scheduler.submit(tiny_qwen2, [row]).updates(timeout=WAIT, min_interval=0.05):
        stamps.append(time.perf_counter())
        throttled.append(update)
    assert throttled[-1].texts == every[-1].texts and throttled[-1].done
    assert len(throttled) <= len(every)
    gaps = [b - a for a, b in zip(stamps, stamps[1:-1])]  # the end comes at once
    assert all(gap >= 0.045 for gap in gaps)  # (less a hair: stamped after each yield)
    halves = list(scheduler.submit(tiny_qwen2, [row]).updates(timeout=WAIT, every=2))
    assert halves[-1].texts == every[-1].texts
    assert len(halves) <= 14  # 24 steps: the first token, then every second step (or the end)


def test_a_reader_can_pace_itself_by_a_function_asked_before_each_update(tiny_qwen2, scheduler):
    row = Row(CONVERSATIONS[1], None, greedy(24), min_new_tokens=24)
    began = time.perf_counter()
    every = list(scheduler.submit(tiny_qwen2, [row]).updates(timeout=WAIT))
    pace = 3 * (time.perf_counter() - began) / len(every)  # three steps' time, on any machine
    asked, stamps, paced = [], [], []

    def interval() -> float:  # (a page asks the scheduler's load): 0 s, then `pace` from the third update on
        asked.append(time.perf_counter())
        return 0.0 if len(asked) < 3 else pace

    for update in scheduler.submit(tiny_qwen2, [row]).updates(timeout=WAIT, min_interval=interval):
        stamps.append(time.perf_counter())
        paced.append(update)
    assert paced[-1].texts == every[-1].texts and paced[-1].done
    assert len(asked) == len(paced) and all(a <= s for a, s in zip(asked, stamps))  # asked before each update
    gaps = [b - a for a, b in zip(stamps[2:], stamps[3:-1])]  # paced from the third on; the end comes at once
    assert all(gap >= 0.9 * pace for gap in gaps)
    assert len(paced) < len(every)


def announced_late(loaded, scheduler, announce: bool, submit: bool = True) -> list:
    """One request submitted at once and one 0.2 s later (four quiet gaps of gather_seconds), announced with
    `incoming` from before the first when `announce` (a late caller that does not `submit` leaves its announcement
    without a request). Returns both tickets (the second None when it did not submit)."""
    row = Row(CONVERSATIONS[0], None, greedy(4))
    ready, tickets = threading.Event(), [None, None]

    def late() -> None:
        with scheduler.incoming() if announce else nullcontext():
            ready.set()
            time.sleep(0.2)  # checking its fields, reading its vector...
            if submit:
                tickets[1] = scheduler.submit(loaded, [row])

    caller = threading.Thread(target=late)
    caller.start()
    ready.wait(WAIT)
    assert scheduler.load()["incoming"] == int(announce)  # (the late caller is still checking its request)
    tickets[0] = scheduler.submit(loaded, [row])
    caller.join(WAIT)
    for ticket in filter(None, tickets):
        ticket.result(timeout=WAIT)
    return tickets


def test_a_request_announced_as_incoming_joins_the_burst_it_was_sent_with(tiny_qwen2):
    for announce, admissions in ((True, [2]), (False, [1, 1])):
        scheduler = Scheduler(max_batch_rows=8, max_queue=8, gather_seconds=0.05, max_gather_seconds=10)
        try:
            announced_late(tiny_qwen2, scheduler, announce)
            assert list(scheduler.stats.recent_batches) == admissions, announce
        finally:
            scheduler.close()


def test_an_announcement_left_without_a_request_ends_the_wait(tiny_qwen2):
    """The announced caller gives up (a refused request): the burst starts then, not at max_gather_seconds."""
    scheduler = Scheduler(max_batch_rows=8, max_queue=8, gather_seconds=0.05, max_gather_seconds=30)
    try:
        first, gone = announced_late(tiny_qwen2, scheduler, announce=True, submit=False)
        assert gone is None and list(scheduler.stats.recent_batches) == [1]
        assert first.started - first.submitted < 10  # (0.25 s: the announcement, then one quiet gap)
    finally:
        scheduler.close()
