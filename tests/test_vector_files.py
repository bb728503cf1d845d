"""steering.vector_files: reference-format .pt files and sidecars, refusal of unsafe/broken files, naming."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from steering.vector_files import load_vector, safe_name, save_vector, sidecar_path, unique_path
from steering.vectors import SteeringVector, VectorFileError
from tests.samples import HIDDEN, make_vector


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
    assert loaded.meta.model == "bundled"
    assert loaded.meta.method == "mean_diff"
    assert loaded.meta.hidden_size == HIDDEN
    assert loaded.meta.vector_layers == [8, 9, 10]
    assert loaded.meta.created and loaded.meta.library_version
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
    assert vec.meta.is_empty and vec.stats == {}
    assert not vec.has_sidecar
    assert vec.layers == [20, 21, 22, 23]
    assert vec.hidden_size == HIDDEN


def test_broken_sidecar_warns_and_loads(tmp_path):
    path = save_vector(make_vector(), tmp_path / "v.pt")
    sidecar_path(path).write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="not valid JSON"):
        vec = load_vector(path)
    assert vec.meta.is_empty and vec.layers == [8, 9, 10]


@pytest.mark.parametrize("sidecar", ["[1, 2]", "null", '{"layers": {"a": 1}}', '{"layers": [1]}', '"text"'])
def test_malformed_sidecar_warns_and_loads(tmp_path, sidecar):
    path = save_vector(make_vector(), tmp_path / "v.pt")
    sidecar_path(path).write_text(sidecar, encoding="utf-8")
    with pytest.warns(UserWarning, match="sidecar"):
        vec = load_vector(path)
    assert vec.meta.is_empty and vec.stats == {} and vec.layers == [8, 9, 10]


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


def test_save_leaves_the_users_own_tmp_files_alone(tmp_path):
    """Temporaries get unique names: a user's mine.pt.tmp / mine.json.tmp beside the output survive a save."""
    own = {tmp_path / "mine.pt.tmp": b"user pt", tmp_path / "mine.json.tmp": b"user json"}
    for path, data in own.items():
        path.write_bytes(data)
    save_vector(make_vector(), tmp_path / "mine.pt")
    save_vector(make_vector(seed=1), tmp_path / "mine.pt", overwrite=True)
    assert {p: p.read_bytes() for p in own} == own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json", "mine.json.tmp", "mine.pt", "mine.pt.tmp"]


def test_failed_sidecar_write_replaces_neither_file(tmp_path, monkeypatch):
    """The .pt and its sidecar are renamed only after both are written: a pair never gets out of step."""
    path = save_vector(make_vector(), tmp_path / "v.pt")
    before = {p: p.read_bytes() for p in (path, sidecar_path(path))}
    real_write_text = Path.write_text

    def fail_for_the_sidecar(self, *args, **kwargs):
        if "v.json" in self.name and self.name.endswith(
            ".tmp"
        ):  # the sidecar's temporary: the .pt was already written aside
            raise OSError("No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail_for_the_sidecar)
    with pytest.raises(OSError, match="No space left"):
        save_vector(make_vector(seed=1), path, overwrite=True)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.pt"]
