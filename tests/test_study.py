"""The readability study end to end on a tiny model: dev grid, recommendation, test cases, report."""

from __future__ import annotations

import json

import pytest

from steering.study import STUDY_LENGTHS, StudyPlan, run_study, split_prompts, study_json, study_markdown, target_checks
from steering.vectors import SteeringVector
from tests.helpers import random_steering_vector

PROMPTS = [f"Question number {i}: what do you think about cats and dogs?" for i in range(12)]


@pytest.fixture
def vector() -> SteeringVector:
    return random_steering_vector(seed=2, lang="en")


def test_dev_and_test_prompts_never_overlap_and_cover_the_list():
    dev, test = split_prompts(list(range(64)), 16, 32)
    assert len(dev) == 16 and len(test) == 32 and not set(dev) & set(test)
    assert max(dev) >= 60 and max(test) >= 60  # spread over the whole list (its topics), not its head


def test_study_runs_every_case_and_reports_it(tiny_qwen2, vector):
    plan = StudyPlan(
        layers="1-2",
        strengths={"add": (2.0,), "norm_preserving": (3.0,), "clamp": (1.0,)},
        schedules=(("add", 2.0, 4.0),),
        apply_to=("generated",),
        repetition_penalties=(1.1,),
        dev=2,
        test=2,
        max_new_tokens=6,
    )
    logs = []
    study = run_study(tiny_qwen2, vector, plan, logs.append, prompts=PROMPTS)
    assert len(study.dev_cells) == 5  # plain + one strength per mode + one schedule
    assert any(c.setting.half_life == 4.0 for c in study.dev_cells)
    assert study.recommended is not None  # met the limits, or the most gal-and-readable fallback
    assert set(study.dev_prompts).isdisjoint(study.test_prompts)
    cases = list(dict.fromkeys(r["case"] for r in study.test_rows))
    assert cases[:2] == ["plain model", "prompted (system prompt)"]
    assert {(r["turn"], r["tokens"]) for r in study.test_rows} == {(t, n) for t in (1, 2) for n in STUDY_LENGTHS}
    plain = [r for r in study.test_rows if r["case"] == "plain model"]
    assert all(r["perplexity_ratio"] == pytest.approx(1.0) for r in plain if r["perplexity"])
    text = study_markdown(study, "tiny")
    assert "### Dev grid (6 new tokens)" in text and "### Test prompts" in text
    saved = json.loads(json.dumps(study_json(study)))
    assert len(saved["dev_cells"]) == 5 and saved["plan"]["dev"] == 2 and "meets_limits" in saved
    assert any("recommended" in line for line in logs)


def test_targets_read_the_recommended_rows():
    rows = [
        {
            "case": "steered (recommended)",
            "turn": 1,
            "tokens": n,
            "marker_share": 0.8,
            "broken_share": b,
            "perplexity_ratio": 2.0,
            "gal_readable_share": 0.7,
        }
        for n, b in zip(STUDY_LENGTHS, (0.0, 0.1))
    ]
    rows.append({"case": "steered + prompted", "turn": 1, "tokens": 256, "gal_readable_share": 0.75})
    checks = {name: ok for name, ok, _ in target_checks(rows)}
    assert checks["broken ≤ 5 % at 128 tokens"] and not checks["broken ≤ 5 % at 256 tokens"]
    assert checks["markers ≥ 70 % at 256 tokens"]
    assert checks["steering + prompt no worse than steering alone (gal and readable, 256 tokens)"]
