"""`generate` from the command line: a prompts file runs in batched calls, each reply what a lone call gives."""

from __future__ import annotations

from steering import cli_chat
from steering.generate import GenerationSettings, generate_batch
from steering.steer import Steering
from tests.helpers import random_steering_vector

PROMPTS = ["Hi!", "What should I cook tonight with rice and eggs?", "Tell me a joke.", "Why is the sky blue?"]


def test_prompts_file_rows_match_one_call_per_prompt(tiny_qwen2, monkeypatch):
    monkeypatch.setattr(cli_chat, "PROMPTS_PER_CALL", 3)  # 4 prompts: a call of 3 and a call of 1
    steering = Steering(random_steering_vector(), "1-2", 0.0)
    settings = GenerationSettings(max_new_tokens=8)
    rows = list(cli_chat._generate_rows(tiny_qwen2, steering, settings, PROMPTS, 3.0))
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["timings"]["prompts_in_call"] for r in rows] == [3, 3, 3, 1]
    for row in rows:
        alone = generate_batch(tiny_qwen2, [{"role": "user", "content": row["prompt"]}], [0.0, 3.0], steering, settings)
        assert [row["plain"], row["steered"]] == alone.texts
    assert rows[0]["plain"] != rows[0]["steered"]


def test_side_by_side_wraps_both_columns():
    text = cli_chat._side_by_side("plain " * 30, "steered " * 5, width=20)
    lines = text.splitlines()
    assert lines[0].startswith("PLAIN") and "| STEERED" in lines[0]
    assert all(" | " in line for line in lines[2:]) and len(lines) > 4
