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


@pytest.fixture
def tiny_vector_file(tmp_path, monkeypatch, tiny_qwen2):
    """A calibrated vector for the tiny model (layers 1, 2) saved as a .pt with its sidecar; every model load
    answers with the tiny model and the sweep's recommendation is pinned to the last cell (the random model's
    replies have no gal words, so recommend() would pick none; test_sweep tests recommend())."""
    import torch

    from steering import models, sweep
    from steering.vector_files import save_vector
    from steering.vectors import SteeringVector

    monkeypatch.setattr(models, "load_model", lambda *args, **kwargs: tiny_qwen2)
    monkeypatch.setattr(sweep, "recommend", lambda cells: cells[-1])
    monkeypatch.chdir(tmp_path)
    directions = {layer: torch.ones(64) / 8 for layer in (1, 2)}
    stats = {layer: {"mean_diff_norm": 2.0} for layer in (1, 2)}
    vector = SteeringVector(directions, {"model": "tiny-qwen2", "lang": "en"}, stats)
    return save_vector(vector, tmp_path / "tiny.pt")


def run_sweep(capsys, path, strengths: str, tokens: int, *extra: str) -> dict:
    argv = ["sweep", "--vector", str(path), "--layers", "1-2", "--strengths", strengths, "--max-prompts", "2"]
    assert main([*argv, "--max-new-tokens", str(tokens), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_sweep_recommend_records_the_evidence_cells_in_the_vector(tiny_vector_file, capsys):
    """`sweep --recommend` writes the recommended setting and every judged cell (the app's strength note reads
    them back with vector_view.evidence_of); a later sweep adds its cells, replacing those of the same setting and
    reply length; a sweep without --recommend writes nothing."""
    from steering.vector_files import load_vector
    from steering.vector_view import evidence_of

    out = run_sweep(capsys, tiny_vector_file, "0,1", 4, "--recommend")
    vector = load_vector(tiny_vector_file)
    rows = evidence_of(vector)
    assert [(r["layers"], r["strength"]) for r in rows] == [(c["layers"], c["strength"]) for c in out["cells"]]
    assert [(r["layers"], r["strength"]) for r in rows] == [("1-2", 0.0), ("1-2", 1.0)]
    assert [r["broken_share"] for r in rows] == [c["broken_share"] for c in out["cells"]]
    assert [r["marker_share"] for r in rows] == [c["marker_share"] for c in out["cells"]]
    assert {(r["tokens"], r["replies"], r["scale"], r["mode"], r["apply_to"]) for r in rows} == {
        (4, 2, "calibrated", "add", "all")
    }
    rec = vector.meta.recommended
    assert (rec.layers, rec.strength) == ("1-2", 1.0) and "sweep of 2 prompts at 4 new tokens" in rec.evidence

    run_sweep(capsys, tiny_vector_file, "1,2", 4, "--recommend")  # 1 again at 4 tokens: replaced; 2: added
    strengths = sorted(r["strength"] for r in evidence_of(load_vector(tiny_vector_file)))
    assert strengths == [0.0, 1.0, 2.0]
    run_sweep(capsys, tiny_vector_file, "1", 3, "--recommend")  # another reply length: a row of its own
    rows = evidence_of(load_vector(tiny_vector_file))
    assert sorted((r["strength"], r["tokens"]) for r in rows) == [(0.0, 4), (1.0, 3), (1.0, 4), (2.0, 4)]

    run_sweep(capsys, tiny_vector_file, "3", 4)  # no --recommend: the file is left as it was
    assert evidence_of(load_vector(tiny_vector_file)) == rows
