"""Per-row decoding (steering/row_decode.py): stop strings checked and held back, RowState's text and endings,
RowLogits' per-row repetition penalty / minimum length / seeded sampling on hand-made logits, advance's endings and
publish, and run_batch on the tiny random model (tests/test_scheduler.py drives the same code end to end)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from steering.generate import GenerationSettings, PreparedPrompt, generate_rows
from steering.row_decode import (
    CANCELLED,
    LENGTH,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    STOP,
    RowLogits,
    RowState,
    advance,
    check_stops,
    publish,
    run_batch,
)
from steering.scheduler import Row, Scheduler, Ticket
from steering.steer import Steering
from tests.helpers import hooks_left
from tests.test_row_steer import CONVERSATIONS, clamp_vector

# --------------------------------------------------------------------------------------------- helpers


class PieceTokenizer:
    """A tokenizer whose token i decodes to pieces[i] (bytes, so a character may be split over two tokens);
    ids in `special` are dropped by skip_special_tokens, as the end-of-sequence token is."""

    def __init__(self, pieces, special=()):
        self.pieces = [p.encode() if isinstance(p, str) else p for p in pieces]
        self.special = set(special)

    def decode(self, ids, skip_special_tokens=False):
        kept = [i for i in ids if not (skip_special_tokens and i in self.special)]
        return b"".join(self.pieces[i] for i in kept).decode("utf-8", errors="replace")


def loaded_with(pieces, special=()):
    """Just what RowState.start needs from a LoadedModel."""
    return SimpleNamespace(tokenizer=PieceTokenizer(pieces, special))


def state(pieces=(), stops=(), max_new=50, min_new=0, prompt=(1, 2, 3), **settings) -> RowState:
    row = RowState(
        PreparedPrompt(list(prompt)), None, GenerationSettings(max_new_tokens=max_new, **settings), stops, min_new
    )
    row.start(loaded_with(pieces))
    return row


def pushed(row: RowState, tokens) -> list[str]:
    """The visible text after each token."""
    shown = []
    for token in tokens:
        row.push(token)
        shown.append(row.text)
    return shown


# --------------------------------------------------------------------------------------------- check_stops


def test_check_stops_accepts_none_one_string_or_a_list():
    assert check_stops(None) == ()
    assert check_stops("\n\n") == ("\n\n",)
    assert check_stops(["User:", "###"]) == ("User:", "###")
    assert check_stops(("a",) * MAX_STOP_STRINGS) == ("a",) * MAX_STOP_STRINGS
    assert check_stops(["x" * MAX_STOP_CHARS]) == ("x" * MAX_STOP_CHARS,)
    assert check_stops([]) == ()


@pytest.mark.parametrize(
    ("stop", "match"),
    [
        ([""], "1 to 200 characters"),
        ("", "1 to 200 characters"),
        (["x" * (MAX_STOP_CHARS + 1)], "1 to 200 characters"),
        (["ok", 5], "got 5"),
        ([None], "got None"),
        (["a"] * (MAX_STOP_STRINGS + 1), "at most 8 stop strings, got 9"),
        (b"ab", "text"),  # bytes are not text: each item is an int
    ],
)
def test_check_stops_refuses(stop, match):
    with pytest.raises(ValueError, match=match) as caught:
        check_stops(stop)
    assert str(caught.value).startswith("stop:")


# --------------------------------------------------------------------------------------------- RowState


def test_a_row_shows_its_text_and_ends_at_max_new_tokens():
    row = state(["Hi", " there", "!"], max_new=3)
    assert (row.text, row.count, row.finished) == ("", 0, None)
    assert pushed(row, [0, 1]) == ["Hi", "Hi there"]
    assert row.finished is None and row.count == 2
    row.push(2)
    assert (row.text, row.count, row.finished) == ("Hi there!", 3, LENGTH)


def test_a_greedy_row_has_no_seed_and_a_sampled_row_takes_its_own():
    assert not state().sampled and state().seed is None
    seeded = state(temperature=0.8, seed=1234)
    assert seeded.sampled and seeded.seed == 1234
    drawn = [state(temperature=0.8, seed=None).seed for _ in range(3)]  # no seed given: a fresh random one each
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in drawn) and len(set(drawn)) == 3


def test_half_a_character_is_never_shown():
    row = state([b"caf", b"\xc3", b"\xa9", b"!"])
    assert pushed(row, [0, 1, 2, 3]) == ["caf", "caf", "café", "café!"]


def test_a_stop_string_cuts_the_reply_and_is_never_shown():
    row = state(["Hel", "lo", " wor", "ld"], stops=("o w",))
    shown = pushed(row, [0, 1, 2])
    # "Hello" ends with "o", which could start "o w": held back until the stop string forms
    assert shown == ["Hel", "Hell", "Hell"]
    assert row.finished == STOP and row.count == 3
    row.end(LENGTH)  # a later end changes nothing
    assert (row.text, row.finished) == ("Hell", STOP)


def test_the_earliest_of_several_stop_strings_wins():
    row = state(["one two three"], stops=("three", "two", "nowhere"))
    row.push(0)
    assert (row.text, row.finished) == ("one ", STOP)


def test_a_partial_stop_that_does_not_form_is_shown_once_it_cannot():
    row = state(["a", "l", "o", "n", "g"], stops=("lol", "ong!"))
    shown = pushed(row, [0, 1, 2, 3, 4])
    # "al": "l" may start "lol"; "alo": "lo" may; "alon": "on" may start "ong!"; "along": "ong" may
    assert shown == ["a", "a", "a", "al", "al"]
    assert row.finished is None
    row.end(STOP)  # end of sequence: nothing can form any more, everything is shown
    assert (row.text, row.finished) == ("along", STOP)


def test_the_longest_possible_stop_prefix_is_held_back():
    row = state(["x", "a", "a", "b", "c"], stops=("aab", "abc"))
    # "xa" (1 of "aab"/"abc"), "xaa" (2 of "aab"), then "xaab" forms "aab"
    assert pushed(row, [0, 1, 2, 3]) == ["x", "x", "x", "x"]
    assert row.finished == STOP


def test_ending_at_length_shows_held_back_text_and_cancelling_does_not():
    row = state(["ab", "x"], stops=("xyz",), max_new=2)
    assert pushed(row, [0]) == ["ab"]
    row.push(1)  # the last token: "x" might start "xyz", but the row ends here
    assert (row.text, row.finished) == ("abx", LENGTH)
    cancelled = state(["ab", "x"], stops=("xyz",))
    pushed(cancelled, [0, 1])
    cancelled.end(CANCELLED)
    assert (cancelled.text, cancelled.finished) == ("ab", CANCELLED)


def test_a_stop_string_found_by_the_last_allowed_token_ends_with_stop_not_length():
    row = state(["go", " END"], stops=("END",), max_new=2)
    pushed(row, [0, 1])
    assert (row.text, row.finished) == ("go ", STOP)


def test_ending_flushes_an_incomplete_character():
    row = state([b"ok", b"\xe2\x80"])
    assert pushed(row, [0, 1]) == ["ok", "ok"]
    row.end(LENGTH)
    assert row.text.startswith("ok") and row.text.endswith("\ufffd")  # as the final decode has it


# --------------------------------------------------------------------------------------------- RowLogits

VOCAB, PAD, EOS = 12, 11, 10
TOKEN_PIECES = [f"<{i}>" for i in range(VOCAB + 3)]  # every id decodes (ids past VOCAB: a larger embedding table)


def logits_rows(*rows: dict) -> list[RowState]:
    """Started RowStates for RowLogits from dicts of prompt / penalty / min_new / RowState settings."""
    states = []
    for spec in rows:
        spec = dict(spec)
        prompt = spec.pop("prompt", [1, 2, 3])
        min_new = spec.pop("min_new", 0)
        penalty = spec.pop("penalty", 1.0)
        states.append(state(TOKEN_PIECES, prompt=prompt, min_new=min_new, repetition_penalty=penalty, **spec))
    return states


def test_repetition_penalty_is_per_row_over_its_own_tokens_only():
    # prompts of 3, 5 and 4 tokens, then two generated tokens each. Row 2's prompt holds an id past the LM head's
    # vocabulary (a larger embedding table), which must be ignored, not crash.
    rows = logits_rows(
        {"prompt": [3, 5, 5], "penalty": 1.5},
        {"prompt": [1, 2, 4, 6, 8], "penalty": 1.0},
        {"prompt": [0, 9, VOCAB + 2, 2], "penalty": 2.0},
    )
    generated = [[7, 3], [5, 5], [6, 0]]
    for row, tokens in zip(rows, generated):
        pushed(row, tokens)
    scores = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0)) * 3
    scores[:, PAD] = 2.5  # a token no row holds stays as it is
    scores[0, 3], scores[0, 5], scores[2, 9] = -1.0, 1.5, -0.5  # negative scores are multiplied, positive divided
    before = scores.clone()
    out = RowLogits(rows, [EOS, PAD])(scores)

    def transformers_row(i: int, penalty: float) -> torch.Tensor:
        ids = [t for t in rows[i].prompt.input_ids + generated[i] if t < VOCAB]
        return RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([ids]), before[i : i + 1].clone())[0]

    torch.testing.assert_close(out[0], transformers_row(0, 1.5), rtol=0, atol=0)
    torch.testing.assert_close(out[1], before[1], rtol=0, atol=0)  # penalty 1.0: untouched
    torch.testing.assert_close(out[2], transformers_row(2, 2.0), rtol=0, atol=0)
    assert out[0, PAD] == before[0, PAD] and out[2, PAD] == before[2, PAD]
    assert out[0, 3] == -1.5 and out[0, 5] == 1.0 and out[2, 9] == -1.0  # each token once, however often repeated


def test_penalties_differ_per_row_in_one_batch():
    rows = logits_rows({"prompt": [4], "penalty": 2.0}, {"prompt": [4], "penalty": 0.5})
    out = RowLogits(rows, [EOS])(torch.full((2, VOCAB), 3.0))
    assert out[0, 4] == 1.5 and out[1, 4] == 6.0  # a penalty under 1 favours repeats
    assert (out[:, [0, 1, 2, 3, 5]] == 3.0).all()


def test_min_new_tokens_masks_the_stop_ids_until_reached():
    rows = logits_rows({"min_new": 2}, {"min_new": 0})
    processor = RowLogits(rows, [EOS, PAD])
    base = torch.zeros(2, VOCAB)
    base[:, EOS] = 10.0  # the end of sequence is the greedy pick
    for step in range(4):
        out = processor(base.clone())
        if step < 2:
            assert out[0, EOS] == -math.inf and out[0, PAD] == -math.inf
            assert out[0].argmax() != EOS
        else:
            assert torch.equal(out[0], base[0])
        assert torch.equal(out[1], base[1])  # the other row may end at once
        for row in rows:
            row.push(5)


def test_greedy_rows_take_the_argmax_and_a_sampled_row_its_draw():
    rows = logits_rows({}, {}, {"temperature": 1.0, "seed": 3})
    scores = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1))
    before = scores.clone()
    out = RowLogits(rows, [EOS])(scores)
    assert torch.equal(out[:2], before[:2])
    # a sampled row leaves only its drawn token, so the argmax takes that one
    assert torch.isfinite(out[2]).sum() == 1 and out[2].max() == 0.0
    chosen = RowLogits(logits_rows({}, {}, {"temperature": 1.0, "seed": 3}), [EOS]).choose(before.clone())
    assert chosen[:2] == before[:2].argmax(dim=-1).tolist() and chosen[2] == int(out[2].argmax())


def test_a_finished_row_is_left_alone():
    rows = logits_rows({"min_new": 5, "temperature": 1.0, "seed": 3})
    rows[0].finished = STOP
    scores = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(2))
    before = scores.clone()
    out = RowLogits(rows, [EOS])(scores)
    assert torch.equal(out, before)
    assert rows[0].generator is None  # nothing drawn


STEP_SCORES = torch.randn(40, VOCAB, generator=torch.Generator().manual_seed(42)) * 2


def draws(specs: list[dict], target: int, steps: int = 40) -> list[int]:
    """The tokens row `target` draws over `steps` steps, given STEP_SCORES as its logits at each step (the other
    rows get other logits); every row takes its drawn token, as the live batch does."""
    rows = logits_rows(*specs)
    processor = RowLogits(rows, [EOS])
    noise = torch.Generator().manual_seed(99)
    drawn = []
    for step in range(steps):
        scores = torch.randn(len(rows), VOCAB, generator=noise) * 4
        scores[target] = STEP_SCORES[step]
        picked = processor.choose(scores)
        drawn.append(picked[target])
        for row, token in zip(rows, picked):
            row.push(token)
    return drawn


SAMPLED = {"temperature": 0.7, "top_k": 6, "top_p": 0.9, "seed": 7}


def test_sampling_is_transformers_warpers_and_a_draw_from_the_rows_own_generator():
    generator = torch.Generator().manual_seed(SAMPLED["seed"])
    warpers = [TemperatureLogitsWarper(0.7), TopKLogitsWarper(6), TopPLogitsWarper(0.9)]
    expected = []
    for step in range(40):
        warped = STEP_SCORES[step : step + 1].clone()
        for warper in warpers:
            warped = warper(None, warped)
        expected.append(int(torch.multinomial(warped[0].softmax(dim=-1), 1, generator=generator)))
    assert draws([SAMPLED], 0) == expected


def test_a_seeded_row_draws_the_same_whatever_shares_its_batch():
    alone = draws([SAMPLED], 0)
    assert len(set(alone)) > 3  # it really samples
    crowd = [
        {},  # greedy
        {"temperature": 1.3, "seed": 7},  # the same seed, other settings
        {"temperature": 0.9, "top_p": 0.5, "seed": None},
        SAMPLED,  # the same row again: its own generator, not a shared one
        {"temperature": 1.0, "seed": 11, "penalty": 1.4, "min_new": 10},
    ]
    assert draws([*crowd[:3], SAMPLED, *crowd[3:]], 3) == alone
    assert draws([SAMPLED, *crowd], 0) == alone
    assert draws([SAMPLED], 0) == alone  # reproducible
    assert draws([{**SAMPLED, "seed": 8}], 0) != alone


def test_rows_without_a_seed_draw_differently():
    first, second = draws([{"temperature": 1.0, "seed": None}], 0), draws([{"temperature": 1.0, "seed": None}], 0)
    assert first != second


def many_draws(scores: torch.Tensor, steps: int = 300, **settings) -> set[int]:
    processor = RowLogits(logits_rows({"seed": 5, **settings}), [EOS])
    return {processor.choose(scores[None].clone())[0] for _ in range(steps)}


def test_top_k_keeps_only_the_k_best():
    scores = torch.linspace(1.0, 0.0, VOCAB)  # nearly flat: without top-k every token turns up
    assert many_draws(scores, temperature=1.0) == set(range(VOCAB))
    assert many_draws(scores, temperature=1.0, top_k=3) == {0, 1, 2}
    assert many_draws(scores, temperature=1.0, top_k=1000) == set(range(VOCAB))  # more than the vocabulary


def test_top_p_keeps_the_smallest_set_over_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    scores = probs.log()
    assert many_draws(scores, temperature=1.0) == {0, 1, 2, 3}
    assert many_draws(scores, temperature=1.0, top_p=0.75) == {0, 1}
    assert many_draws(scores, temperature=1.0, top_p=0.85) == {0, 1, 2}
    assert many_draws(scores, temperature=1.0, top_p=0.01) == {0}  # the best token always stays
    kept = TopPLogitsWarper(0.75)(None, scores[None].clone())[0].isfinite().nonzero().flatten().tolist()
    assert set(kept) == {0, 1}


def test_a_tiny_top_p_still_keeps_the_best_token():
    # these 64 scores' probabilities sum, in float32, to a hair under 1 - 1e-7: without keeping the top token
    # every token would be masked
    scores = torch.randn(64, generator=torch.Generator().manual_seed(5))
    assert many_draws(scores, steps=20, temperature=1.0, top_p=1e-7) == {int(scores.argmax())}


def test_a_sampled_row_draws_no_end_of_sequence_before_min_new_tokens():
    rows = logits_rows({"temperature": 1.0, "seed": 0, "min_new": 3})
    processor = RowLogits(rows, [EOS])
    scores = torch.zeros(VOCAB)
    scores[EOS] = 30.0  # certain, once allowed
    picked = []
    for _ in range(5):
        picked.append(processor.choose(scores[None].clone())[0])
        rows[0].push(4)
    assert EOS not in picked[:3] and picked[3:] == [EOS, EOS]


# --------------------------------------------------------------------------------------------- advance, publish


def ticket_of(loaded, *rows: RowState) -> Ticket:
    return Ticket(loaded, list(rows))


def stepper(tickets: list[Ticket], stop_ids: set[int]):
    """One step of the live batch's bookkeeping: each row takes its token (values: each row's meter value), then
    every ticket hears; returns which rows have ended."""
    pairs = [(t, r) for t in tickets for r in t._rows]

    def step(*tokens, values=None) -> list[bool]:
        advance(pairs, tokens, values or [None] * len(tokens), stop_ids)
        publish(tickets)
        return [r.finished is not None for _, r in pairs]

    return step


def test_advance_ends_rows_and_publish_tells_each_ticket():
    pieces = ["Hi", " you", "!", "<eos>"]
    loaded = loaded_with(pieces, special={3})
    rows = [
        RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=3), (), 0),
        RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=3), (), 0),
        RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=9), ("you",), 0),
    ]
    for row in rows:
        row.start(loaded)
    a, b = ticket_of(loaded, rows[0], rows[1]), ticket_of(loaded, rows[2])
    step = stepper([a, b], {3})

    assert step(0, 0, 0) == [False, False, False]
    assert [r.text for r in rows] == ["Hi", "Hi", "Hi"]
    assert a.first_token is not None and b.first_token is not None and not a.done
    assert a._snapshot().texts == ["Hi", "Hi"]

    assert step(3, 1, 1) == [True, False, True]  # end of sequence; "you" is a stop string
    assert (rows[0].finished, rows[0].count, rows[0].text) == (STOP, 1, "Hi")
    assert (rows[2].finished, rows[2].text) == (STOP, "Hi ")
    assert b.done and not a.done

    assert step(0, 2, 0) == [True, True, True]  # row 1 reaches its 3 tokens; ended rows ignore their tokens
    assert (rows[1].finished, rows[1].text, rows[1].count) == (LENGTH, "Hi you!", 3)
    assert rows[0].count == 1 and rows[2].text == "Hi "
    assert a.done
    result = a.result(timeout=0)
    assert result.finished == [STOP, LENGTH] and result.texts == ["Hi", "Hi you!"] and result.token_counts == [1, 3]


def test_a_cancelled_ticket_ends_only_its_own_rows():
    loaded = loaded_with(["a", "b"])
    rows = [RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=9), (), 0) for _ in range(3)]
    for row in rows:
        row.start(loaded)
    keep, leave = ticket_of(loaded, rows[0]), ticket_of(loaded, rows[1], rows[2])
    step = stepper([keep, leave], {7})
    step(0, 0, 0)
    leave.cancel()
    assert step(1, 1, 1) == [False, True, True]
    assert [r.finished for r in rows] == [None, CANCELLED, CANCELLED]
    assert rows[1].text == "a" and rows[1].count == 1  # the cancelled step's token is not taken
    assert leave.done and not keep.done and rows[0].text == "ab"


def test_a_metered_row_keeps_each_tokens_value_whole_characters_merged():
    from steering.meter import RowMeter

    loaded = loaded_with(["a", "b", "é".encode()[:1], "é".encode()[1:]])
    metered = RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=9), (), 0, RowMeter(0, None))
    plain = RowState(PreparedPrompt([1]), None, GenerationSettings(max_new_tokens=9), (), 0)
    for row in (metered, plain):
        row.start(loaded)
    ticket = ticket_of(loaded, metered, plain)
    step = stepper([ticket], {7})
    for k, token in enumerate((0, 2, 3, 1), start=1):
        step(token, token, values=[10.0 * k, math.nan])
    assert metered.pieces == [("a", 10.0), ("é", 25.0), ("b", 40.0)] and plain.pieces is None
    assert ticket._snapshot().pieces == [metered.pieces, None]


# --------------------------------------------------------------------------------------------- run_batch


def greedy(tokens: int, penalty: float = 1.0) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens, repetition_penalty=penalty)


def solo(loaded, row: Row) -> str:
    strength = row.steering.strength if row.steering is not None else 0.0
    return generate_rows(loaded, [row.messages], [strength], row.steering, row.settings).texts[0]


def test_run_batch_gives_greedy_rows_their_solo_reply_and_each_row_its_own_length(tiny_qwen2):
    prepare = Scheduler(max_batch_rows=8).prepare  # checks and templates; nothing is queued or started
    vector = clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)
    first = [Row(CONVERSATIONS[0], None, greedy(6)), Row(CONVERSATIONS[0], Steering(vector, "1-2", 3.0), greedy(6))]
    second = [
        Row(CONVERSATIONS[1], None, greedy(9, 1.3)),
        Row(CONVERSATIONS[2], None, greedy(5), min_new_tokens=5),
    ]
    tickets = [prepare(tiny_qwen2, first), prepare(tiny_qwen2, second)]
    run_batch(tiny_qwen2, tickets)
    assert all(t.done and t.started is not None for t in tickets)
    a, b = (t.result(timeout=0) for t in tickets)
    assert a.texts == [solo(tiny_qwen2, row) for row in first]
    assert b.texts[0] == solo(tiny_qwen2, second[0])  # its own repetition penalty among rows without one
    assert all(0 < n <= 6 for n in a.token_counts) and 0 < b.token_counts[0] <= 9
    assert b.token_counts[1] == 5 and b.finished[1] == LENGTH  # no end of sequence before min_new_tokens
    assert hooks_left(tiny_qwen2.model) == 0


def test_run_batch_seeded_row_is_the_same_alone_and_in_company(tiny_qwen2):
    prepare = Scheduler(max_batch_rows=8).prepare
    sampled = GenerationSettings(max_new_tokens=8, temperature=1.0, top_k=50, seed=5)
    row = Row(CONVERSATIONS[3], None, sampled)
    alone = prepare(tiny_qwen2, [row])
    run_batch(tiny_qwen2, [alone])
    mates = prepare(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(4)), row, Row(CONVERSATIONS[0], None, sampled)])
    run_batch(tiny_qwen2, [mates])
    assert mates.result(timeout=0).texts[1] == alone.result(timeout=0).texts[0]


def test_run_batch_fails_every_ticket_when_generate_raises(tiny_qwen2, monkeypatch):
    prepare = Scheduler(max_batch_rows=8).prepare
    vector = clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)
    errors = iter([RuntimeError("out of memory (simulated)"), KeyboardInterrupt()])

    def broken(*args, **kwargs):
        raise next(errors)

    monkeypatch.setattr(tiny_qwen2.model, "forward", broken)
    tickets = [
        prepare(tiny_qwen2, [Row(CONVERSATIONS[0], Steering(vector, "1", 2.0), greedy(4))]),
        prepare(tiny_qwen2, [Row(CONVERSATIONS[1], None, greedy(4))] * 2),
    ]
    run_batch(tiny_qwen2, tickets)  # an Exception is the callers' to hear, not the worker's
    for ticket in tickets:
        assert ticket.done
        with pytest.raises(RuntimeError, match="simulated"):
            ticket.result(timeout=0)
        assert all(r.finished == CANCELLED for r in ticket._rows)
    assert hooks_left(tiny_qwen2.model) == 0
    interrupted = prepare(tiny_qwen2, [Row(CONVERSATIONS[0], None, greedy(4))])
    with pytest.raises(KeyboardInterrupt):  # the callers hear it, and so does the worker
        run_batch(tiny_qwen2, [interrupted])
    with pytest.raises(KeyboardInterrupt):
        interrupted.result(timeout=0)
    assert hooks_left(tiny_qwen2.model) == 0
