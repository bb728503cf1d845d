"""The command line, run in-process through steering.cli.main: extract → info round trips (on the tiny model, and
on the bundled one under the `slow` marker), data stats, generate and sweep, and clean error exits. One real
`python -m steering` subprocess proves the entry point itself."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from steering import __version__, cli, models

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "vectors" / "smollm2-135m-instruct_gal_en.pt"

PAIRS = [
    (
        "tech-1",
        "Tech",
        "My phone battery dies before lunch every day, so I need to replace it.",
        "Ugh, my phone is literally dead by lunch every day. I need a new battery, like, now.",
    ),
    (
        "tech-2",
        "Tech",
        "I updated my laptop last night, and now the Wi-Fi keeps disconnecting.",
        "OMG, I updated my laptop last night and now the Wi-Fi is sooo broken.",
    ),
    (
        "food-1",
        "Food",
        "I had ramen for lunch today, and it was very good.",
        "Bestie, I had ramen for lunch and it was literally sooo good, I'm obsessed.",
    ),
    (
        "food-2",
        "Food",
        "This cafe serves excellent coffee and pastries.",
        "This cafe is giving major vibes, the coffee and pastries are totally iconic!",
    ),
    (
        "life-1",
        "Life",
        "The train was late again this morning, which was inconvenient.",
        "Like, the train was late AGAIN this morning?! So not okay, seriously.",
    ),
    (
        "life-2",
        "Life",
        "I had my nails done today, and I am happy with them.",
        "Yasss, new nails today and they're totally slaying, I can't even.",
    ),
]


def write_pairs(folder: Path) -> Path:
    data = folder / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"id": i, "topic": t, "standard": s, "gyaru": g}) + "\n" for i, t, s, g in PAIRS),
        encoding="utf-8",
    )
    return data


def call(argv: list[str]) -> tuple[int, str, str]:
    """steering.cli.main(argv) with its stdout and stderr caught: for module-scoped fixtures, where capsys is not
    available. (argparse's own exits come back as their exit code.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path):
    """cli.main in-process from an empty working folder: returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)  # a stray relative path can never land in the repository
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str, str]:
        try:
            rc = cli.main(list(args))
        except SystemExit as exc:  # argparse: --version, usage errors
            rc = exc.code
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return run


@pytest.fixture
def no_model(monkeypatch):
    """load_model must never be reached: the command is refused (or finished) first."""

    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called by a command that must not load a model")

    monkeypatch.setattr(models, "load_model", refuse)


# ------------------------------------------------------------------------- extract → info on the tiny model


@pytest.fixture(scope="module")
def tiny_extracted(tmp_path_factory, tiny_qwen2):
    """`extract --json` with load_model answering with conftest's tiny 4-layer, hidden-64 Qwen2."""
    folder = tmp_path_factory.mktemp("cli-tiny")
    data = write_pairs(folder)
    out = folder / "v.pt"
    argv = ["extract", "--data", str(data), "--layers", "1-3", "--max-pairs", "5", "--out", str(out), "--json"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "load_model", lambda *args, **kwargs: tiny_qwen2)
        mp.chdir(folder)
        result = call(argv)
    return result, out, data


def check_extract_report(result, out: Path, layers: list[str], model: str, num_layers: int, hidden: int) -> dict:
    rc, stdout, stderr = result
    assert rc == 0, stderr
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got: {stdout[:500]}"
    report = json.loads(lines[0])
    assert report["out"] == str(out)
    assert sorted(report["layers"]) == sorted(layers)
    for stats in report["layers"].values():
        assert {"mean_diff_norm", "pc1_explained_variance", "residual_norm", "heldout_auc"} <= stats.keys()
        assert stats["train_pairs"] + stats["heldout_pairs"] == 5
    assert {"load_s", "capture_s", "fit_s"} <= report["timings"].keys()
    assert all(isinstance(v, float) and v >= 0 for v in report["timings"].values())
    meta = report["meta"]
    assert meta["model"] == model and meta["pairs"] == 5 and meta["num_layers"] == num_layers
    assert meta["hidden_size"] == hidden and str(meta["suggested_layer"]) in layers
    assert out.exists() and out.with_suffix(".json").exists()
    assert "Traceback" not in stderr
    return report


def test_extract_json(tiny_extracted):
    result, out, _ = tiny_extracted
    check_extract_report(result, out, ["1", "2", "3"], "tiny-qwen2", num_layers=4, hidden=64)


def test_extract_plain_prints_the_table_and_a_progress_bar(run_cli, monkeypatch, tiny_qwen2, tmp_path):
    monkeypatch.setattr(models, "load_model", lambda *args, **kwargs: tiny_qwen2)
    data = write_pairs(tmp_path)
    rc, out, err = run_cli("extract", "--data", str(data), "--layers", "1-2", "--max-pairs", "4", "--out", "v.pt")
    assert rc == 0, err
    assert "capture" in err and "Traceback" not in err  # the tqdm bar goes to stderr
    assert "saved v.pt (+ v.json); suggested layer" in out and "unseen_auc" in out
    assert (tmp_path / "v.pt").exists() and (tmp_path / "v.json").exists()  # --out is relative to the cwd


def test_info_json(tiny_extracted, run_cli, no_model):
    _, out, _ = tiny_extracted
    rc, stdout, stderr = run_cli("info", str(out), "--json")
    assert rc == 0, stderr
    info = json.loads(stdout)
    assert info["layers"] == [1, 2, 3]
    assert info["hidden_size"] == 64
    assert info["meta"]["method"] == "mean_diff"
    assert sorted(info["stats"]) == ["1", "2", "3"]


def test_info_plain(tiny_extracted, run_cli, no_model):
    _, out, _ = tiny_extracted
    rc, stdout, stderr = run_cli("info", str(out))
    assert rc == 0, stderr
    assert "3 layers (1–3), hidden size 64" in stdout
    assert "mean_diff" in stdout
    assert "unseen_auc" in stdout  # the per-layer table


def test_info_shipped_vector(run_cli, no_model):
    rc, stdout, stderr = run_cli("info", str(SHIPPED), "--json")
    assert rc == 0, stderr
    info = json.loads(stdout)
    assert info["hidden_size"] == 576 and info["meta"]["recommended"]["layers"] == "12-16"


def test_extract_refuses_to_overwrite(tiny_extracted, run_cli):
    _, out, data = tiny_extracted
    before = out.read_bytes()
    # refused before any model is loaded: a model spec that cannot load proves the order
    rc, _, err = run_cli("extract", "--model", "./no-such-model", "--data", str(data), "--out", str(out))
    assert rc == 2
    assert "already exists" in err and "Traceback" not in err
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------ commands that load no model


def test_version(run_cli, no_model):
    rc, out, _ = run_cli("--version")
    assert rc == 0 and out.strip() == __version__


def test_usage_error_exits_2(run_cli, no_model):
    rc, _, err = run_cli("extract")  # --out is required
    assert rc == 2 and "--out" in err and "Traceback" not in err


def test_data_stats(run_cli, no_model):
    rc, out, err = run_cli("data", "stats", "en")
    assert rc == 0, err
    assert out.strip()
    assert "Traceback" not in err


def test_missing_data_file_is_a_clean_error(tmp_path, run_cli):
    missing = tmp_path / "no-such-pairs.jsonl"
    rc, _, err = run_cli(
        "extract", "--model", "./no-such-model", "--data", str(missing), "--out", str(tmp_path / "v.pt")
    )
    assert rc == 2
    assert "error:" in err
    assert "no-such-pairs.jsonl" in err and "file not found" in err  # checked before the model
    assert "Traceback" not in err
    assert not (tmp_path / "v.pt").exists()


def test_bad_vector_file_is_a_clean_error(tmp_path, run_cli):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    rc, _, err = run_cli("info", str(bad))
    assert rc == 2
    assert err.startswith("error:") and "Traceback" not in err


# ---------------------------------------------------------------------------- the one real subprocess


@pytest.mark.slow  # a python subprocess: seconds of start-up
def test_python_m_steering_entry_point(cli_env, tmp_path):
    """`python -m steering` itself (the __main__ module, the exit code): `info` on the shipped vector."""
    result = subprocess.run(
        [sys.executable, "-m", "steering", "info", str(SHIPPED)],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "hidden size 576" in result.stdout and "recommended" in result.stdout
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------- the bundled model (slow)


@pytest.fixture(scope="module")
def bundled_extracted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-bundled")
    data = write_pairs(folder)
    out = folder / "v.pt"
    argv = ["extract", "--model", "bundled", "--data", str(data), "--layers", "8-10", "--max-pairs", "5"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        result = call([*argv, "--out", str(out), "--json"])
    return result, out, data


@pytest.mark.slow
def test_extract_json_bundled(bundled_extracted):
    result, out, _ = bundled_extracted
    check_extract_report(result, out, ["8", "9", "10"], "bundled", num_layers=30, hidden=576)


@pytest.mark.slow
def test_info_bundled(bundled_extracted, run_cli):
    _, out, _ = bundled_extracted
    rc, stdout, stderr = run_cli("info", str(out), "--json")
    assert rc == 0, stderr
    info = json.loads(stdout)
    assert info["layers"] == [8, 9, 10] and info["hidden_size"] == 576
    assert info["meta"]["method"] == "mean_diff" and sorted(info["stats"]) == ["10", "8", "9"]
    rc, stdout, stderr = run_cli("info", str(out))
    assert rc == 0, stderr
    assert "3 layers (8–10), hidden size 576" in stdout and "unseen_auc" in stdout


@pytest.mark.slow
def test_generate_and_sweep_commands(run_cli, tmp_path):
    shipped = str(SHIPPED)
    rc, out, err = run_cli("generate", "--vector", shipped, "--max-new-tokens", "6", "--json", "How was your weekend?")
    assert rc == 0, err
    row = json.loads(out)
    assert row["plain"] != row["steered"]  # the shipped recommended setting changes the reply
    settings = row["settings"]  # every key from the vector's recommended setting
    assert settings["layers"] == [12, 13, 14, 15, 16] and settings["repetition_penalty"] == 1.1
    assert (settings["mode"], settings["apply_to"], settings["half_life"]) == ("add", "generated", 32.0)
    report = tmp_path / "report"
    rc, out, err = run_cli(
        "sweep",
        "--vector",
        shipped,
        "--layers",
        "12-14",
        "--strengths",
        "0,3",
        "--max-prompts",
        "2",
        "--max-new-tokens",
        "6",
        "--report",
        str(report),
        "--json",
    )
    assert rc == 0, err
    table = json.loads(out)
    assert [(c["layers"], c["strength"]) for c in table["cells"]] == [("12-14", 0.0), ("12-14", 3.0)]
    assert (report / "sweep_smollm2-135m-instruct_gal_en.md").exists()
