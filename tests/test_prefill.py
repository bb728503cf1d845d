"""Prefill (steering/prefill.py): rows pushed alike on their prompts share one pass over their common start; the
first tokens' logits, the meter and every greedy reply are what each row gets on its own."""

from __future__ import annotations

import math

import pytest
import torch

from steering.generate import GenerationSettings
from steering.meter import default_meter_layer
from steering.prefill import MIN_SHARED, PASS_COST_POSITIONS, length_groups, prefill, prompt_key, shared_starts
from steering.row_decode import run_batch
from steering.scheduler import Row, Scheduler
from steering.steer import Steering
from tests.helpers import hooks_left
from tests.test_row_steer import CONVERSATIONS, clamp_vector
from tests.test_scheduler import solo


@pytest.fixture(scope="module")
def vectors():
    return clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0), clamp_vector(64, [0, 1, 2, 3], 2, 0.5, 3.0)


def greedy(tokens: int = 10, penalty: float = 1.0) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens, repetition_penalty=penalty)


def states(loaded, rows: list[Row]):
    ticket = Scheduler(max_batch_rows=32).prepare(loaded, rows)
    for row in ticket._rows:
        row.start(loaded)
    return ticket._rows


def assert_prefilled_as_if_alone(loaded, rows: list[Row], together) -> torch.Tensor:
    """Prefilling `together` (the started states of `rows`) gives each row the mask length, first logits, last
    position and meter value of prefilling it alone, and leaves no hook; returns the positions."""
    _, mask, positions, logits, values = prefill(loaded, together)
    assert mask.sum(dim=1).tolist() == [len(r.prompt.input_ids) for r in together]
    for i, row in enumerate(rows):
        _, _, own_positions, own_logits, own_values = prefill(loaded, states(loaded, [row]))
        torch.testing.assert_close(logits[i], own_logits[0], rtol=1e-4, atol=1e-4)
        assert logits[i].argmax() == own_logits[0].argmax()
        assert positions[i, -1] == own_positions[0, -1]
        if row.meter_layer is not None:
            assert math.isclose(values[i], own_values[0], rel_tol=1e-4, abs_tol=1e-4)
    assert hooks_left(loaded.model) == 0
    return positions


def test_prompt_keys_group_rows_pushed_alike_on_their_prompts(tiny_qwen2, vectors):
    a, b = vectors
    key = lambda steering: prompt_key(states(tiny_qwen2, [Row(CONVERSATIONS[0], steering)])[0].plan)  # noqa: E731
    assert key(None) is None
    assert key(Steering(a, "1-2", 3.0, apply_to="generated")) is None  # the prompt is not pushed: as plain
    assert key(Steering(a, "1-2", 3.0, apply_to="last")) is None  # only its last position, never shared
    same = key(Steering(a, "1-2", 3.0))
    assert same is not None and same == key(Steering(a, "1-2", 3.0, half_life=4.0))  # decay starts after the prompt
    for other in (
        Steering(a, "1-2", 2.0),
        Steering(a, "1-3", 3.0),
        Steering(b, "1-2", 3.0),
        Steering(a, "1-2", 3.0, "raw"),
        Steering(a, "1-2", 3.0, mode="clamp"),
    ):
        assert key(other) != same, other


def test_shared_starts_need_two_rows_enough_tokens_and_leave_each_row_its_own(tiny_qwen2, vectors):
    a, _ = vectors
    rows = states(
        tiny_qwen2,
        [
            Row(CONVERSATIONS[0]),
            Row(CONVERSATIONS[0], Steering(a, "1-2", 3.0, apply_to="generated")),  # the same prompt, unpushed
            Row(CONVERSATIONS[2]),
            Row(CONVERSATIONS[1], Steering(a, "1-2", 3.0)),  # alone in its group
        ],
    )
    [(members, length)] = shared_starts(rows)
    assert members == [0, 1, 2]
    first, third = rows[0].prompt.input_ids, rows[2].prompt.input_ids
    common = next(k for k in range(len(first)) if first[k] != third[k])
    assert length == common >= MIN_SHARED  # the system prompt and the user turn's opening
    twins = states(tiny_qwen2, [Row(CONVERSATIONS[0]), Row(CONVERSATIONS[0])])
    assert shared_starts(twins) == [([0, 1], len(twins[0].prompt.input_ids) - 1)]  # one token left to each


def test_shared_prefill_gives_each_row_its_own_first_logits_and_meter(tiny_qwen2, vectors):
    a, _ = vectors
    steering = Steering(a, "1-2", 3.0)
    layer = default_meter_layer(steering, tiny_qwen2.num_layers)
    rows = [
        Row(CONVERSATIONS[3], steering, meter_layer=layer),
        Row(CONVERSATIONS[5], steering, meter_layer=layer),
        Row(CONVERSATIONS[6], None),
        Row(CONVERSATIONS[1], Steering(a, "0-3", 2.0, "raw", "last")),
        Row(CONVERSATIONS[2], None),
    ]
    together = states(tiny_qwen2, rows)
    assert len(shared_starts(together)) == 2
    assert_prefilled_as_if_alone(tiny_qwen2, rows, together)


def test_rows_that_share_a_start_get_their_solo_greedy_reply(tiny_qwen2, vectors):
    a, b = vectors
    prepare = Scheduler(max_batch_rows=32).prepare
    pushed = Steering(b, "0,3", -2.0, "raw", mode="norm_preserving")
    requests = [
        [Row(CONVERSATIONS[i], None, greedy(12)), Row(CONVERSATIONS[i], Steering(a, "1-2", 3.0), greedy(12))]
        for i in (0, 2, 3)
    ] + [
        [Row(CONVERSATIONS[1], pushed, greedy(9, 1.3)), Row(CONVERSATIONS[5], pushed, greedy(14))],
        [Row(CONVERSATIONS[6], Steering(a, "0-3", 6.0, "raw", "last", half_life=2.0), greedy(11))],
        [Row(CONVERSATIONS[4], Steering(a, "3", 2.0, apply_to="generated"), greedy(9, 1.2))],
    ]
    tickets = [prepare(tiny_qwen2, r) for r in requests]
    assert len(shared_starts([row for t in tickets for row in t._rows])) == 3
    run_batch(tiny_qwen2, tickets)
    for ticket, request in zip(tickets, requests):
        assert ticket.result(timeout=0).texts == [solo(tiny_qwen2, row) for row in request], request
    assert hooks_left(tiny_qwen2.model) == 0


def test_length_groups_compute_the_fewest_positions():
    lengths = [23, 41, 24, 25, 26, 29, 24, 30, 45, 23]
    groups = length_groups(lengths, 32)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row once
    assert all(g == sorted(g) for g in groups)  # rows keep their order inside a pass
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest)  # shortest first
    cost = sum(len(g) * top for g, top in zip(groups, longest)) + 32 * len(groups)
    assert cost < len(lengths) * max(lengths) + 32  # better than one padded pass
    assert [lengths[i] for i in groups[-1]] == [41, 45]  # the long rows apart
    assert length_groups([20, 22, 21], 32) == [[0, 1, 2]]  # alike: one pass, in order
    assert length_groups([5, 500], 0) == [[0], [1]]  # free passes: none padded


def long_conversation(turns: int) -> list[dict]:
    messages = []
    for t in range(turns):
        messages += [
            {"role": "user", "content": f"Question {t}: what should I cook tonight, and why?"},
            {"role": "assistant", "content": f"Answer {t}: a warm soup, since it is cold outside today."},
        ]
    return messages + [{"role": "user", "content": "Thanks!"}]


def test_rows_of_very_different_lengths_prefill_in_several_passes_as_if_alone(tiny_qwen2, vectors):
    a, _ = vectors
    steering = Steering(a, "1-2", 3.0)
    layer = default_meter_layer(steering, tiny_qwen2.num_layers)
    rows = [
        Row(CONVERSATIONS[0], steering, meter_layer=layer),
        Row(long_conversation(6), None),
        Row(CONVERSATIONS[4], Steering(a, "0-3", 2.0, "raw", "last")),
        Row(long_conversation(5), steering, meter_layer=layer),
        Row(CONVERSATIONS[2], None),
    ]
    together = states(tiny_qwen2, rows)
    lengths = [len(r.prompt.input_ids) for r in together]
    rests = list(lengths)
    for members, shared in shared_starts(together):  # (the system prompt is computed once per group)
        for i in members:
            rests[i] -= shared
    assert len(length_groups(rests, PASS_COST_POSITIONS)) > 1
    positions = assert_prefilled_as_if_alone(tiny_qwen2, rows, together)
    assert positions[:, -1].tolist() == [n - 1 for n in lengths]


def test_rows_prefilled_in_several_passes_get_their_solo_greedy_reply(tiny_qwen2, vectors):
    a, b = vectors
    prepare = Scheduler(max_batch_rows=32).prepare
    requests = [
        [Row(CONVERSATIONS[0], None, greedy(12)), Row(CONVERSATIONS[0], Steering(a, "1-2", 3.0), greedy(12))],
        [Row(long_conversation(6), None, greedy(10)), Row(long_conversation(6), Steering(a, "1-2", 3.0), greedy(10))],
        [Row(long_conversation(4), Steering(b, "0,3", -2.0, "raw", half_life=2.0), greedy(9, 1.3))],
        [Row(CONVERSATIONS[4], Steering(a, "3", 2.0, apply_to="generated"), greedy(11))],
    ]
    tickets = [prepare(tiny_qwen2, r) for r in requests]
    rows = [row for t in tickets for row in t._rows]
    assert len(length_groups([len(r.prompt.input_ids) for r in rows], PASS_COST_POSITIONS)) > 1
    run_batch(tiny_qwen2, tickets)
    for ticket, request in zip(tickets, requests):
        assert ticket.result(timeout=0).texts == [solo(tiny_qwen2, row) for row in request], request
    assert hooks_left(tiny_qwen2.model) == 0
