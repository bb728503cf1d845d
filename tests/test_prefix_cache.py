"""The prefix cache (steering/prefix_cache.py): what it keeps, finds and drops, how much of an ended row is
reusable per steering, and a chat's next turn through the scheduler computing only its new tokens while every
greedy reply stays its solo reply."""

from __future__ import annotations

import pytest
import torch

from steering.generate import GenerationSettings, PreparedPrompt
from steering.prefix_cache import MIN_REUSED, PrefixCache, reusable
from steering.row_decode import RowState
from steering.scheduler import Row, Scheduler
from steering.steer import Steering
from tests.helpers import hooks_left
from tests.test_row_steer import CONVERSATIONS, clamp_vector
from tests.test_scheduler import WAIT, solo


def kv(n: int, fill: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [torch.full((2, n, 4), fill)], [torch.full((2, n, 4), -fill)]


def test_longest_finds_the_most_shared_leading_tokens_with_the_same_key():
    cache = PrefixCache(max_tokens=100)
    cache.store(None, range(20), *kv(20, 1.0))
    cache.store("steered", range(30), *kv(30, 2.0))
    cache.store(None, [*range(10), 99, 98, 97], *kv(13, 3.0))
    entry, n = cache.longest(None, [*range(15), 7])
    assert n == 15 and entry.keys[0][0, 0, 0] == 1.0  # the first entry shares 15; the third only 10
    assert cache.longest("steered", range(40))[1] == 30
    assert cache.longest("other", range(40)) is None  # another push: nothing to share
    assert cache.longest(None, range(MIN_REUSED - 1)) is None  # too short to be worth it
    assert cache.longest(None, range(20))[1] == 19  # the last token is always computed
    assert (cache.lookups, cache.hits) == (5, 3)


def test_store_drops_superseded_and_least_recently_used_entries_beyond_the_budget():
    cache = PrefixCache(max_tokens=50)
    cache.store(None, range(10), *kv(10))
    cache.store(None, range(25), *kv(25))  # holds the first: it goes
    assert [len(e.tokens) for e in cache.entries.values()] == [25] and cache.tokens == 25
    cache.store("a", range(20), *kv(20))
    cache.longest(None, range(30))  # used: now the most recent
    cache.store("b", range(15), *kv(15))  # 60 tokens: the least recently used ("a") goes
    assert sorted(e.key or "" for e in cache.entries.values()) == ["", "b"] and cache.tokens == 40
    cache.store(None, range(60), *kv(60))  # over the whole budget: not kept
    cache.store(None, range(5), *kv(5))  # under MIN_REUSED: not kept
    assert cache.tokens == 40
    cache.for_model(object())  # another model: emptied
    assert not cache.entries and cache.tokens == 0


@pytest.fixture(scope="module")
def vector():
    return clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)


def ended_row(loaded, steering, prompt_len=20, generated=7) -> RowState:
    from steering.row_steer import plan_row

    row = RowState(PreparedPrompt(list(range(prompt_len))), plan_row(loaded, steering), GenerationSettings(), (), 0)
    row.fed += list(range(100, 100 + generated))
    return row


def test_reusable_counts_only_positions_a_new_prompt_would_push_alike(tiny_qwen2, vector):
    assert reusable(ended_row(tiny_qwen2, None)) == (None, 27)  # plain: everything it fed
    everywhere = reusable(ended_row(tiny_qwen2, Steering(vector, "1-2", 3.0)))
    assert everywhere[0] is not None and everywhere[1] == 27  # the same push on every position
    assert reusable(ended_row(tiny_qwen2, Steering(vector, "1-2", 3.0, half_life=4.0)))[1] == 20  # decayed reply
    assert reusable(ended_row(tiny_qwen2, Steering(vector, "1-2", 3.0, apply_to="generated"))) == (None, 20)
    assert reusable(ended_row(tiny_qwen2, Steering(vector, "1-2", 3.0, apply_to="last"))) == (None, 19)


def next_turn(conversation, reply, message="And then? Tell me more, please."):
    return [*conversation, {"role": "assistant", "content": reply}, {"role": "user", "content": message}]


@pytest.mark.parametrize(
    "steering",
    [None, "all", "generated", "half-life"],
)
def test_a_next_turn_reuses_its_conversation_and_gets_its_solo_reply(tiny_qwen2, vector, steering):
    steering = {
        None: None,
        "all": Steering(vector, "1-2", 3.0, mode="norm_preserving"),
        "generated": Steering(vector, "0-3", 2.0, apply_to="generated"),
        "half-life": Steering(vector, "2", 4.0, half_life=3.0),
    }[steering]
    scheduler = Scheduler(max_batch_rows=8, gather_seconds=0.0, prefix_cache_tokens=4096)
    try:
        settings = GenerationSettings(max_new_tokens=12)
        first = Row(CONVERSATIONS[3], steering, settings)
        reply = scheduler.chat(tiny_qwen2, [first], timeout=WAIT).texts[0]
        assert reply == solo(tiny_qwen2, first)
        second = Row(next_turn(CONVERSATIONS[3], reply), steering, settings)
        ticket = scheduler.submit(tiny_qwen2, [second])
        reused_before = scheduler.prefix_cache.reused_tokens
        assert ticket.result(timeout=WAIT).texts[0] == solo(tiny_qwen2, second)
        reused = scheduler.prefix_cache.reused_tokens - reused_before
        first_prompt = len(scheduler.prepare(tiny_qwen2, [first])._rows[0].prompt.input_ids)
        assert first_prompt - 1 <= reused < ticket.prompt_tokens[0]  # at least the first turn's prompt
    finally:
        scheduler.close()
    assert hooks_left(tiny_qwen2.model) == 0


def test_without_a_budget_nothing_is_kept(tiny_qwen2):
    scheduler = Scheduler(max_batch_rows=8, gather_seconds=0.0)
    try:
        scheduler.chat(tiny_qwen2, [Row(CONVERSATIONS[1], None, GenerationSettings(max_new_tokens=4))], timeout=WAIT)
        assert not scheduler.prefix_cache.entries and scheduler.prefix_cache.lookups == 0
    finally:
        scheduler.close()


@pytest.mark.parametrize("apply_to", ["all", "generated", "last"])
def test_a_reused_start_gives_the_logits_of_computing_it(tiny_qwen2, vector, apply_to):
    """Sharper than the replies: a prompt that continues exactly what an ended row fed (its prompt and reply
    tokens) gets, with the cached start, the first logits of computing it afresh (a start reused where the push
    differed would move them)."""
    from steering.live_batch import LiveBatch
    from steering.prefill import prefill
    from steering.row_steer import plan_row

    steering = Steering(vector, "0-3", 6.0, apply_to=apply_to)
    cache = PrefixCache(4096)
    batch = LiveBatch(tiny_qwen2, cache)
    first = Scheduler(max_batch_rows=8).prepare(
        tiny_qwen2, [Row(CONVERSATIONS[3], steering, GenerationSettings(max_new_tokens=12), min_new_tokens=12)]
    )
    batch.admit([first])
    while batch.rows:
        batch.step()
    fed = first._rows[0].fed
    rows = [
        RowState(PreparedPrompt(fed + [28, 1670, 30]), plan_row(tiny_qwen2, steering), GenerationSettings(), (), 0)
        for _ in range(2)
    ]
    for row in rows:
        row.start(tiny_qwen2)
    _, _, _, reused, _ = prefill(tiny_qwen2, rows[:1], cache)
    expected = {
        "all": len(fed),
        "generated": len(first._rows[0].prompt.input_ids),
        "last": len(first._rows[0].prompt.input_ids) - 1,
    }
    assert cache.hits == 1 and cache.reused_tokens == expected[apply_to]
    _, _, _, fresh, _ = prefill(tiny_qwen2, rows[1:], None)
    torch.testing.assert_close(reused, fresh, rtol=1e-4, atol=1e-4)
