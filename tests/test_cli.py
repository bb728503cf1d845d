"""`python -m steering`: extract → info round trip on the bundled model, data stats, and clean error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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


@pytest.fixture(scope="module")
def run_cli(cli_env):
    def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "steering", *args],
            cwd=ROOT,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, run_cli):
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"id": i, "topic": t, "standard": s, "gyaru": g}) + "\n" for i, t, s, g in PAIRS),
        encoding="utf-8",
    )
    out = folder / "v.pt"
    result = run_cli(
        "extract",
        "--model",
        "bundled",
        "--data",
        str(data),
        "--layers",
        "8-10",
        "--max-pairs",
        "5",
        "--out",
        str(out),
        "--json",
    )
    return result, out, data


def test_extract_json(extracted):
    result, out, _ = extracted
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got: {result.stdout[:500]}"
    report = json.loads(lines[0])
    assert report["out"] == str(out)
    assert sorted(report["layers"]) == ["10", "8", "9"]
    for stats in report["layers"].values():
        assert {"mean_diff_norm", "pc1_explained_variance", "residual_norm", "heldout_auc"} <= stats.keys()
        assert stats["train_pairs"] + stats["heldout_pairs"] == 5
    assert {"load_s", "capture_s", "fit_s"} <= report["timings"].keys()
    assert all(isinstance(v, float) and v >= 0 for v in report["timings"].values())
    meta = report["meta"]
    assert meta["model"] == "bundled" and meta["pairs"] == 5 and meta["num_layers"] == 30
    assert meta["hidden_size"] == 576 and meta["suggested_layer"] in (8, 9, 10)
    assert out.exists() and out.with_suffix(".json").exists()
    assert "Traceback" not in result.stderr


def test_info_json(extracted, run_cli):
    _, out, _ = extracted
    result = run_cli("info", str(out), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["layers"] == [8, 9, 10]
    assert info["hidden_size"] == 576
    assert info["meta"]["method"] == "mean_diff"
    assert sorted(info["stats"]) == ["10", "8", "9"]


def test_info_plain(extracted, run_cli):
    _, out, _ = extracted
    result = run_cli("info", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 layers (8–10), hidden size 576" in result.stdout
    assert "mean_diff" in result.stdout
    assert "ho_auc" in result.stdout  # the per-layer table


def test_extract_refuses_to_overwrite(extracted, run_cli):
    _, out, data = extracted
    before = out.read_bytes()
    # refused before any model is loaded: a model spec that cannot load proves the order
    result = run_cli("extract", "--model", "./no-such-model", "--data", str(data), "--out", str(out))
    assert result.returncode == 2
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == before


def test_data_stats(run_cli):
    result = run_cli("data", "stats", "en")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr


def test_missing_data_file_is_a_clean_error(tmp_path, run_cli):
    missing = tmp_path / "no-such-pairs.jsonl"
    result = run_cli("extract", "--model", "./no-such-model", "--data", str(missing), "--out", str(tmp_path / "v.pt"))
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "no-such-pairs.jsonl" in result.stderr and "file not found" in result.stderr  # checked before the model
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "v.pt").exists()


def test_bad_vector_file_is_a_clean_error(tmp_path, run_cli):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    result = run_cli("info", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_generate_and_sweep_commands(run_cli, tmp_path):
    shipped = str(ROOT / "vectors" / "smollm2-135m-instruct_gal_en.pt")
    out = run_cli("generate", "--vector", shipped, "--max-new-tokens", "6", "--json", "How was your weekend?")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["plain"] != row["steered"]  # the shipped recommended setting changes the reply
    assert row["settings"]["layers"] == [12, 13, 14, 15, 16] and row["settings"]["repetition_penalty"] == 1.3
    report = tmp_path / "report"
    out = run_cli(
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
    assert out.returncode == 0, out.stderr
    table = json.loads(out.stdout)
    assert [(c["layers"], c["strength"]) for c in table["cells"]] == [("12-14", 0.0), ("12-14", 3.0)]
    assert (report / "sweep_smollm2-135m-instruct_gal_en.md").exists()
