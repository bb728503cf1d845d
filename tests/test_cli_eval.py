"""`sweep` and `compare` from the command line: settings refused before any model loads, the study's plan, and
(slow) the whole study end to end on the bundled model at a smoke size."""

from __future__ import annotations

import json

import pytest

from steering import cli_eval
from steering.cli import build_parser, main
from steering.study import DEFAULT_SCHEDULES, DEFAULT_STRENGTHS


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: these arguments must be refused first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("steering.models.load_model", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--layers", "8:12"], "--layers: bad layer spec '8:12'"),
        (["compare", "--repetition-penalties", "0.5"], "repetition penalty 0.5 is below 1"),
        (["compare", "--dev", "0"], "--dev must be at least 1"),
        (["sweep", "--vector", "x.pt", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["sweep", "--vector", "x.pt", "--strengths", ""], "--strengths: empty"),
    ],
)
def test_bad_settings_are_refused_before_a_model_loads(no_model, capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_default_plan_covers_modes_apply_to_and_penalties():
    args = build_parser().parse_args(["compare"])
    plan = cli_eval._study_plan(args, "en")
    assert plan.strengths == DEFAULT_STRENGTHS and plan.schedules == DEFAULT_SCHEDULES
    assert set(plan.apply_to) == {"all", "generated"} and plan.repetition_penalties == (1.1, 1.3)
    assert (plan.dev, plan.test, plan.max_new_tokens) == (16, 32, 256)
    modes = {s.mode for s in plan.grid() if not s.plain}
    assert modes == {"add", "norm_preserving", "clamp"}


def test_quick_plan_is_a_smoke_run():
    plan = cli_eval._study_plan(build_parser().parse_args(["compare", "--quick", "--modes", "clamp"]), "en")
    assert (plan.dev, plan.test, plan.max_new_tokens) == (2, 2, 16) and list(plan.strengths) == ["clamp"]


@pytest.mark.slow
def test_compare_quick_writes_the_report_and_ships_a_vector(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--quick", "--report", "docs", "--ship", "vectors"]) == 0
    report = (tmp_path / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert "### Dev grid (16 new tokens)" in report and "### Test prompts" in report
    saved = json.loads((tmp_path / "docs" / "evaluation_en.json").read_text(encoding="utf-8"))
    shipped = json.loads((tmp_path / "vectors" / "smollm2-135m-instruct_gal_en.json").read_text(encoding="utf-8"))
    assert shipped["recommended"]["mode"] == saved["recommended"]["mode"]
    assert "readability study" in shipped["recommended"]["evidence"]
