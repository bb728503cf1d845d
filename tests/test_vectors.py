"""steering.vectors: reference-format files, sidecars, refusal of unsafe/broken files, naming and fit checks."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest
import torch

from steering.vectors import (
    SteeringVector,
    VectorFileError,
    check_fits,
    load_vector,
    safe_name,
    save_vector,
    sidecar_path,
    unique_path,
)

HIDDEN = 576


def make_vector(layers=(8, 9, 10), hidden=HIDDEN, seed=0, **meta) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in layers:
        v = torch.randn(hidden, generator=gen)
        directions[layer] = v / v.norm()
    stats = {layer: {"mean_diff_norm": 1.5 + layer, "heldout_auc": 0.75, "nan_stat": float("nan")} for layer in layers}
    return SteeringVector(directions, {"model": "bundled", "method": "mean_diff", **meta}, stats)


def test_round_trip(tmp_path):
    vec = make_vector(num_layers=30)
    path = save_vector(vec, tmp_path / "gal.pt")
    assert path == tmp_path / "gal.pt" and path.exists() and sidecar_path(path).exists()
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_vector(path)
    assert loaded.layers == [8, 9, 10]
    assert loaded.hidden_size == HIDDEN
    assert loaded.path == path and loaded.name == "gal"
    for layer in vec.layers:
        assert torch.equal(loaded.directions[layer], vec.directions[layer])
    assert loaded.meta["model"] == "bundled"
    assert loaded.meta["method"] == "mean_diff"
    assert loaded.meta["hidden_size"] == HIDDEN
    assert loaded.meta["vector_layers"] == [8, 9, 10]
    assert "created" in loaded.meta and "library_version" in loaded.meta
    assert loaded.has_sidecar
    assert sorted(loaded.stats) == [8, 9, 10]  # int keys again
    assert loaded.stats[9]["mean_diff_norm"] == 10.5
    assert loaded.stats[9]["nan_stat"] is None  # NaN stats become JSON null, not invalid JSON
    json.loads(sidecar_path(path).read_text(encoding="utf-8"))  # strict JSON


def test_reference_format(tmp_path):
    path = save_vector(make_vector(), tmp_path / "ref.pt")
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict)
    assert all(type(k) is int for k in raw)
    assert sorted(raw) == [8, 9, 10]
    for tensor in raw.values():
        assert isinstance(tensor, torch.Tensor)
        assert tensor.dtype == torch.float32
        assert tensor.shape == (HIDDEN,)
    assert raw[9].is_contiguous()


def test_save_converts_to_float32_cpu(tmp_path):
    vec = SteeringVector({3: torch.ones(8, dtype=torch.bfloat16)})
    path = save_vector(vec, tmp_path / "bf.pt")
    assert torch.load(path, weights_only=True)[3].dtype == torch.float32


def test_bare_reference_file_loads_with_empty_meta(tmp_path):
    path = tmp_path / "gal_vector.pt"
    torch.save({layer: torch.randn(HIDDEN) for layer in range(20, 24)}, path)
    vec = load_vector(path)
    assert vec.meta == {} and vec.stats == {}
    assert not vec.has_sidecar
    assert vec.layers == [20, 21, 22, 23]
    assert vec.hidden_size == HIDDEN


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


def test_broken_sidecar_warns_and_loads(tmp_path):
    path = save_vector(make_vector(), tmp_path / "v.pt")
    sidecar_path(path).write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="not valid JSON"):
        vec = load_vector(path)
    assert vec.meta == {} and vec.layers == [8, 9, 10]


@pytest.mark.parametrize("sidecar", ["[1, 2]", "null", '{"layers": {"a": 1}}', '{"layers": [1]}', '"text"'])
def test_malformed_sidecar_warns_and_loads(tmp_path, sidecar):
    path = save_vector(make_vector(), tmp_path / "v.pt")
    sidecar_path(path).write_text(sidecar, encoding="utf-8")
    with pytest.warns(UserWarning, match="sidecar"):
        vec = load_vector(path)
    assert vec.meta == {} and vec.stats == {} and vec.layers == [8, 9, 10]


class Payload:
    """Unpickling this would create `marker` — if the loader ever ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class OpenPayload(Payload):
    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload_cls", [Payload, OpenPayload])
@pytest.mark.parametrize("wrap", ["torch_save_dict", "torch_save_bare", "raw_pickle"])
def test_pickle_payload_refused(tmp_path, payload_cls, wrap):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = payload_cls(marker)
    if wrap == "torch_save_dict":
        torch.save({8: torch.ones(HIDDEN), 9: payload}, path)
    elif wrap == "torch_save_bare":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps({8: payload}, protocol=2))
    assert not marker.exists()
    with pytest.raises(VectorFileError, match="refused") as info:
        load_vector(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "loading a vector file ran code from it"


@pytest.mark.parametrize("payload_cls", [Payload, OpenPayload])
def test_payload_is_live(tmp_path, payload_cls):
    """Control: an unrestricted unpickler does run the payload, so the refusal test above means something."""
    marker = tmp_path / "PWNED"
    result = pickle.loads(pickle.dumps(payload_cls(marker)))
    if hasattr(result, "close"):
        result.close()
    assert marker.exists()


def test_truncated_file_refused(tmp_path):
    good = save_vector(make_vector(), tmp_path / "good.pt")
    data = good.read_bytes()
    for n in (8, len(data) // 2, len(data) - 20):
        bad = tmp_path / f"cut{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(VectorFileError, match=r"truncated or corrupt"):
            load_vector(bad)


def test_zero_byte_file_refused(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(VectorFileError, match=r"empty \(zero-byte\)"):
        load_vector(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(VectorFileError, match="not found"):
        load_vector(tmp_path / "nope.pt")
    other = tmp_path / "v.npy"
    other.write_bytes(b"x")
    with pytest.raises(VectorFileError, match="unknown vector format '.npy'"):
        load_vector(other)


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


def test_save_refuses_overwrite(tmp_path):
    path = save_vector(make_vector(seed=0), tmp_path / "v.pt")
    pt_bytes, json_bytes = path.read_bytes(), sidecar_path(path).read_bytes()
    with pytest.raises(VectorFileError, match="already exists"):
        save_vector(make_vector(seed=1), path)
    assert path.read_bytes() == pt_bytes and sidecar_path(path).read_bytes() == json_bytes
    save_vector(make_vector(seed=1), path, overwrite=True)
    assert path.read_bytes() != pt_bytes


def test_save_refuses_when_only_sidecar_exists(tmp_path):
    side = tmp_path / "w.json"
    side.write_text('{"keep": true}', encoding="utf-8")
    with pytest.raises(VectorFileError, match="already exists"):
        save_vector(make_vector(), tmp_path / "w.pt")
    assert side.read_text(encoding="utf-8") == '{"keep": true}'
    assert not (tmp_path / "w.pt").exists()


def test_save_requires_pt_suffix(tmp_path):
    with pytest.raises(VectorFileError, match=r"\.pt"):
        save_vector(make_vector(), tmp_path / "v.safetensors")


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "/abs/path/x.pt", "..\\..\\win", ".hidden", "a b/c d"])
def test_safe_name(name):
    stem = safe_name(name)
    assert stem
    assert "/" not in stem and "\\" not in stem
    assert not stem.startswith(".") and not stem.startswith("-")
    assert ".." not in stem


def test_safe_name_values():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my vector.pt") == "my_vector"
    assert safe_name("..") == "vector"
    assert len(safe_name("x" * 500)) <= 80


def test_unique_path_numbers_instead_of_clobbering(tmp_path):
    first = unique_path(tmp_path, "gal")
    assert first == tmp_path / "gal.pt"
    save_vector(make_vector(), first)
    second = unique_path(tmp_path, "gal")
    assert second == tmp_path / "gal-2.pt"
    (tmp_path / "gal-3.json").write_text("{}", encoding="utf-8")  # a stray sidecar also blocks a name
    save_vector(make_vector(), second)
    assert unique_path(tmp_path, "gal") == tmp_path / "gal-4.pt"
    assert unique_path(tmp_path, "../../gal").parent == tmp_path
