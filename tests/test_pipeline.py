"""steering.pipeline: a dataset file to a SteeringVector with full metadata (extract_from_dataset), and to a saved
.pt + .json (extract_and_save), on conftest's tiny 4-layer Qwen2 and small temporary datasets."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest
import torch

from steering.pipeline import extract_and_save, extract_from_dataset
from steering.vector_files import load_vector, sidecar_path
from steering.vectors import VectorFileError
from tests.helpers import write_big_jsonl

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 10
LAYERS = [1, 2, 3]
BIG_LINES = 20_000
MAX_PAIRS = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The first PAIRS entries of the bundled English set (id, topic, standard, casual, gyaru) in a temp file."""
    lines = (ROOT / "data" / "gal_en.jsonl").read_text(encoding="utf-8").splitlines()[:PAIRS]
    assert all({"id", "topic", "standard", "casual", "gyaru"} <= json.loads(line).keys() for line in lines)
    path = tmp_path_factory.mktemp("pipeline") / "mini_pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def extracted(tiny_qwen2, dataset):
    return extract_from_dataset(tiny_qwen2, data=dataset, layers="1-3", heldout_fraction=0.2, seed=0)


def test_metadata_is_recorded(extracted, dataset, tiny_qwen2):
    vector, timings = extracted
    meta = vector.meta
    assert meta.method == "mean_diff" and meta.position == "mean" and meta.contrast == "gyaru-vs-standard"
    assert meta.lang == "en"
    assert meta.pairs == PAIRS
    assert meta.suggested_layer in LAYERS
    assert meta.model == tiny_qwen2.spec and meta.model_name == tiny_qwen2.name
    assert meta.hidden_size == 64 and meta.num_layers == 4
    assert meta.dataset == "mini_pairs"
    assert meta.dataset_sha256 == hashlib.sha256(dataset.read_bytes()).hexdigest()
    assert meta.heldout_fraction == 0.2 and meta.seed == 0
    assert datetime.fromisoformat(meta.created).tzinfo is not None
    assert vector.layers == LAYERS and vector.hidden_size == 64
    assert {"capture_s", "fit_s"} <= timings.keys()


def test_per_layer_stats_place_gyaru_above_the_baseline(extracted):
    vector, _ = extracted
    assert sorted(vector.stats) == LAYERS
    for layer, stats in vector.stats.items():
        assert {"gyaru_projection", "baseline_projection", "mean_diff_norm", "heldout_auc"} <= stats.keys(), layer
        assert stats["train_pairs"] + stats["heldout_pairs"] == PAIRS
        assert torch.isclose(vector.directions[layer].norm(), torch.tensor(1.0), atol=1e-5)
    gyaru = sum(s["gyaru_projection"] for s in vector.stats.values()) / len(vector.stats)
    baseline = sum(s["baseline_projection"] for s in vector.stats.values()) / len(vector.stats)
    assert gyaru > baseline
    # with mean_diff the gap along the unit direction is exactly the training mean difference's norm
    for stats in vector.stats.values():
        assert stats["gyaru_projection"] - stats["baseline_projection"] == pytest.approx(
            stats["mean_diff_norm"], rel=1e-6
        )


def test_options_reach_the_metadata(tiny_qwen2, dataset):
    vector, _ = extract_from_dataset(
        tiny_qwen2,
        data=dataset,
        contrast="gyaru-vs-casual",
        layers=[2],
        method="pca_center",
        read_position="last",
        max_pairs=6,
        heldout_fraction=0.0,
        seed=3,
    )
    meta = vector.meta
    assert (meta.contrast, meta.method, meta.position, meta.pairs, meta.seed) == (
        "gyaru-vs-casual",
        "pca_center",
        "last",
        6,
        3,
    )
    assert vector.layers == [2] and meta.suggested_layer == 2
    assert vector.stats[2]["heldout_pairs"] == 0 and "heldout_auc" not in vector.stats[2]


def test_casual_contrast_needs_the_casual_column(tiny_qwen2, tmp_path):
    path = tmp_path / "no_casual.jsonl"
    path.write_text(json.dumps({"id": "a", "standard": "Good morning.", "gyaru": "Mornin bestie!"}) + "\n")
    with pytest.raises(ValueError, match="casual"):
        extract_from_dataset(tiny_qwen2, data=path, contrast="gyaru-vs-casual")


def test_extract_and_save_round_trips(tiny_qwen2, dataset, tmp_path):
    out = tmp_path / "sub" / "v.pt"
    vector, timings = extract_and_save(tiny_qwen2, out, data=dataset, layers="1-3")
    assert {"capture_s", "fit_s", "total_s"} <= timings.keys() and timings["total_s"] >= timings["capture_s"]
    assert out.is_file() and sidecar_path(out).is_file() and vector.path == out
    back = load_vector(out)
    assert back.layers == vector.layers == LAYERS
    for layer in LAYERS:
        assert torch.equal(back.directions[layer], vector.directions[layer])
    assert back.stats == vector.stats
    assert back.meta.to_dict() == vector.meta.to_dict()
    assert (back.meta.pairs, back.meta.lang, back.meta.suggested_layer) == (PAIRS, "en", vector.meta.suggested_layer)
    side = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert side["method"] == "mean_diff" and side["contrast"] == "gyaru-vs-standard" and side["pairs"] == PAIRS
    assert {"gyaru_projection", "baseline_projection"} <= side["layers"]["2"].keys()


def test_extract_and_save_refuses_to_overwrite_unless_asked(tiny_qwen2, dataset, tmp_path):
    out = tmp_path / "v.pt"
    extract_and_save(tiny_qwen2, out, data=dataset, layers="1-2", max_pairs=4)
    before = out.read_bytes(), sidecar_path(out).read_bytes()
    with pytest.raises(VectorFileError, match="already exists"):
        extract_and_save(tiny_qwen2, out, data=dataset, layers="2-3", max_pairs=4)
    assert (out.read_bytes(), sidecar_path(out).read_bytes()) == before
    vector, _ = extract_and_save(tiny_qwen2, out, overwrite=True, data=dataset, layers="2-3", max_pairs=4)
    assert load_vector(out).layers == vector.layers == [2, 3]


# ------------------------------------------------------------------------------------ a 20,000-line dataset


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory) -> Path:
    return write_big_jsonl(tmp_path_factory.mktemp("big") / "big.jsonl", BIG_LINES)


def test_max_pairs_reads_only_what_it_needs(tiny_qwen2, big_jsonl):
    """Only MAX_PAIRS entries are read (the broken line 20,000 is never reached), memory stays far below the
    file's size, and progress is reported for every captured text."""
    extract_from_dataset(tiny_qwen2, data=big_jsonl, layers="1-2", max_pairs=4)  # warm-up: lazy imports, caches
    calls: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        vector, _ = extract_from_dataset(
            tiny_qwen2,
            data=big_jsonl,
            layers="1-2",
            max_pairs=MAX_PAIRS,
            progress=lambda done, total: calls.append((done, total)),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = big_jsonl.stat().st_size
    assert size > 7_000_000
    assert peak < size / 10, f"peak {peak} bytes for a {size}-byte file"
    assert vector.meta.pairs == MAX_PAIRS
    assert calls and calls[-1] == (2 * MAX_PAIRS, 2 * MAX_PAIRS)  # both sides of every pair
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_negative_max_pairs_refused(tiny_qwen2, big_jsonl):
    with pytest.raises(ValueError, match="max_pairs must be at least 1"):
        extract_from_dataset(tiny_qwen2, data=big_jsonl, max_pairs=-3)


def test_a_new_vector_recommends_the_shipped_studys_setting_around_its_suggested_layer(extracted):
    from steering.settings import FRESH_SETTING, default_band

    vector, _ = extracted
    rec = vector.meta.recommended
    assert rec.layers == default_band(vector)  # the suggested layer ± 2, those the vector has
    assert (rec.mode, rec.apply_to, rec.strength) == (
        FRESH_SETTING["mode"],
        FRESH_SETTING["apply_to"],
        FRESH_SETTING["strength"],
    )
    assert "not measured on this one" in rec.evidence
