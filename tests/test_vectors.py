"""steering.vectors: the in-memory vector, the checks every file's contents pass, JSON-safe metadata, fit checks."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from steering.vector_files import load_vector, save_vector
from steering.vectors import VectorFileError, check_fits, json_safe
from tests.samples import HIDDEN, make_vector


def test_calibrated_needs_every_layers_mean_diff_norm(tmp_path):
    vec = make_vector()
    assert vec.calibrated
    vec.stats[9].pop("mean_diff_norm")
    assert not vec.calibrated
    bare = tmp_path / "bare.pt"
    torch.save({layer: torch.randn(HIDDEN) for layer in (3, 4)}, bare)
    assert not load_vector(bare).calibrated
    assert load_vector(save_vector(make_vector(), tmp_path / "full.pt")).calibrated


def test_string_digit_keys_accepted(tmp_path):
    path = tmp_path / "strkeys.pt"
    torch.save({"5": torch.ones(4)}, path)
    assert load_vector(path).layers == [5]


@pytest.mark.parametrize(
    "content, message",
    [
        ([torch.ones(4)], r"expected a non-empty dict.*got list"),
        ({}, r"expected a non-empty dict"),
        ({"abc": torch.ones(4)}, r"key 'abc' is not a layer number"),
        ({"layer8": torch.ones(4)}, r"key 'layer8' is not a layer number"),
        ({3.7: torch.ones(4)}, r"key 3.7 is not a layer number"),
        ({True: torch.ones(4)}, r"key True is not a layer number"),
        ({3: torch.ones(4), "3": torch.ones(4)}, r"layer 3 appears twice"),
        ({-1: torch.ones(4)}, r"negative layer -1"),
        ({8: torch.ones(2, 4)}, r"layer 8 is not a 1-D float tensor"),
        ({8: torch.ones(4, dtype=torch.long)}, r"layer 8 is not a 1-D float tensor"),
        ({8: [1.0, 2.0]}, r"layer 8 is not a 1-D float tensor"),
        ({8: torch.tensor([1.0, float("nan"), 0.0])}, r"layer 8 holds NaN or inf"),
        ({8: torch.tensor([1.0, float("inf")])}, r"layer 8 holds NaN or inf"),
        ({8: torch.ones(4), 9: torch.ones(5)}, r"layer 9 has size 5, other layers 4"),
    ],
)
def test_bad_contents_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(content, path)
    with pytest.raises(VectorFileError, match=message) as info:
        load_vector(path)
    assert str(path) in str(info.value)


def test_check_fits():
    vec = make_vector(hidden=64, model="tiny")
    check_fits(vec, 64, 30)  # fits: no error
    with pytest.raises(VectorFileError) as info:
        check_fits(vec, HIDDEN, 30, "SmolLM2-135M-Instruct")
    message = str(info.value)
    assert "64" in message and "576" in message and "SmolLM2-135M-Instruct" in message and "tiny" in message
    deep = make_vector(layers=(3, 40))
    with pytest.raises(VectorFileError, match=r"\[40\].*30 layers"):
        check_fits(deep, HIDDEN, 30)
    other_depth = make_vector(num_layers=24)
    with pytest.raises(VectorFileError, match=r"24-layer model.*30 layers"):
        check_fits(other_depth, HIDDEN, 30)


def test_json_safe_makes_strict_json():
    value = {1: [float("nan"), 2.5, (float("inf"), "x")], "k": {"deep": float("-inf")}}
    assert json_safe(value) == {"1": [None, 2.5, [None, "x"]], "k": {"deep": None}}
    json.loads(json.dumps(json_safe(value), allow_nan=False))
