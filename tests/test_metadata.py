"""steering.metadata: the typed sidecar (VectorMeta with its Recommended setting): every sidecar written so far
reads, unknown keys survive a round trip, the legacy `position` becomes `apply_to`, and wrong types are clear
errors naming the file and the key."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from steering.metadata import MetadataError, Recommended, VectorMeta
from steering.vector_files import load_vector, save_vector
from steering.vector_view import EVIDENCE_KEY, evidence_of
from steering.vectors import SteeringVector, VectorFileError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "vectors").glob("*.json"))


def _sidecar(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("layers")  # per-layer stats are not metadata
    return data


def _vector(meta, layers=(3, 4)) -> SteeringVector:
    return SteeringVector({layer: torch.ones(8) / 8**0.5 for layer in layers}, meta, {3: {"mean_diff_norm": 1.0}})


def _write_pt(tmp_path: Path, sidecar: dict, name: str = "v") -> Path:
    path = tmp_path / f"{name}.pt"
    torch.save({3: torch.ones(8)}, path)
    path.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- shipped sidecars


def test_there_are_shipped_sidecars():
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_sidecar_reads_typed(path):
    data = _sidecar(path)
    meta = VectorMeta.from_dict(data)
    # every key the project writes has a typed field, except the judged cells a sweep or study records (vector_view
    # keeps them in `extra` under EVIDENCE_KEY); those stay exactly as written
    assert set(meta.extra) <= {EVIDENCE_KEY}
    assert meta.extra.get(EVIDENCE_KEY) == data.get(EVIDENCE_KEY)
    assert meta.model == data["model"] and meta.lang == data["lang"] and meta.num_layers == data["num_layers"]
    assert meta.suggested_layer == data["suggested_layer"] and meta.pairs == data["pairs"]
    assert meta.vector_layers == data["vector_layers"]
    rec = meta.recommended
    # every key `generate` needs, each spelled as its flag
    keys = {"layers", "strength", "scale", "mode", "apply_to", "repetition_penalty", "half_life"}
    assert keys <= set(data["recommended"])
    assert rec.layers == data["recommended"]["layers"] == "12-16"
    assert rec.strength == data["recommended"]["strength"] and isinstance(rec.strength, float)
    assert (rec.scale, rec.mode, rec.apply_to) == ("calibrated", data["recommended"]["mode"], "generated")
    assert rec.repetition_penalty == data["recommended"]["repetition_penalty"]
    assert rec.evidence == data["recommended"].get("evidence")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sidecars_round_trip_with_unknown_keys(path):
    data = _sidecar(path)
    data["future_key"] = {"nested": [1, 2]}
    data["recommended"]["validated_on"] = "Qwen2.5-7B"
    meta = VectorMeta.from_dict(data)
    recorded = {EVIDENCE_KEY: data[EVIDENCE_KEY]} if EVIDENCE_KEY in data else {}
    assert meta.extra == {**recorded, "future_key": {"nested": [1, 2]}}
    assert meta.recommended.extra == {"validated_on": "Qwen2.5-7B"}
    written = meta.to_dict()
    assert written["future_key"] == {"nested": [1, 2]}
    assert written["recommended"]["validated_on"] == "Qwen2.5-7B"
    # every key survives; only the layers list became its spec and the mode is now explicit
    assert set(written) == set(data)
    assert {k: v for k, v in written.items() if k != "recommended"} == {
        k: v for k, v in data.items() if k != "recommended"
    }
    assert written["recommended"] == {**data["recommended"], "layers": "12-16", "mode": "add"}
    assert VectorMeta.from_dict(written) == meta
    assert VectorMeta.from_dict(json.loads(json.dumps(written))).to_dict() == written


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_vectors_survive_save_and_load(path, tmp_path):
    vector = load_vector(path.with_suffix(".pt"))
    recorded = dict(vector.meta.extra)  # the evidence cells, if the file records any
    assert set(recorded) <= {EVIDENCE_KEY}
    vector.meta.extra["kept"] = True
    out = save_vector(vector, tmp_path / path.with_suffix(".pt").name)
    again = load_vector(out)
    assert again.meta == vector.meta and again.meta.extra == {**recorded, "kept": True}
    assert evidence_of(again) == evidence_of(vector)
    assert again.stats == vector.stats


# --------------------------------------------------------------------------- what tests and tools have written


def test_sidecars_written_so_far_read():
    # sweep --recommend and compare --ship wrote layers as lists; older files had no mode or apply_to
    old = Recommended.from_dict(
        {"layers": [9, 10, 11], "strength": 3.5, "scale": "calibrated", "repetition_penalty": 1.3}
    )
    assert (old.layers, old.strength, old.mode, old.apply_to) == ("9-11", 3.5, "add", None)
    assert Recommended.from_dict({"layers": [3], "strength": 1}).layers == "3"
    assert Recommended.from_dict({"layers": [3, 5, 9]}).layers == "3,5,9"
    assert Recommended.from_dict({"layers": "-8--1"}).layers == "-8--1"
    assert Recommended.from_dict({}) == Recommended()
    assert VectorMeta.from_dict({}).is_empty and VectorMeta.from_dict({}).recommended is None
    foreign = VectorMeta.from_dict({"source_format": "gguf", "model_hint": "llama", "layer_count": 3})
    assert (foreign.source_format, foreign.model_hint, foreign.layer_count) == ("gguf", "llama", 3)
    assert VectorMeta.from_dict({"gguf_dropped_layers": [0]}).gguf_dropped_layers == [0]


def test_legacy_position_is_read_as_apply_to():
    rec = Recommended.from_dict({"layers": "8-12", "position": "generated"})
    assert rec.apply_to == "generated" and "position" not in rec.extra
    assert rec.to_dict() == {"layers": "8-12", "mode": "add", "apply_to": "generated"}
    both = Recommended.from_dict({"position": "last", "apply_to": "all"})  # the new key wins
    assert both.apply_to == "all"
    meta = VectorMeta.from_dict({"position": "mean", "recommended": {"position": "last"}})
    assert meta.position == "mean"  # the top-level key is extraction's read position: unchanged
    assert meta.recommended.apply_to == "last"


def test_legacy_position_through_a_file(tmp_path):
    path = _write_pt(tmp_path, {"lang": "en", "recommended": {"layers": [3], "strength": 2.0, "position": "last"}})
    assert load_vector(path).meta.recommended.apply_to == "last"


def test_nulls_read_as_absent():
    meta = VectorMeta.from_dict({"lang": None, "suggested_layer": None, "recommended": {"mode": None}})
    assert meta.lang is None and meta.suggested_layer is None and meta.recommended.mode == "add"
    assert "lang" not in meta.to_dict()


def test_a_dict_given_to_steering_vector_is_typed():
    vector = _vector({"model": "bundled", "recommended": {"layers": [3, 4], "strength": 2}, "custom": 1})
    assert isinstance(vector.meta, VectorMeta)
    assert vector.meta.recommended.layers == "3-4" and vector.meta.recommended.strength == 2.0
    assert vector.meta.extra == {"custom": 1}
    assert vector.has_sidecar and not _vector({}).has_sidecar


def test_save_writes_the_typed_fields(tmp_path):
    vector = _vector({"model": "bundled", "lang": "en"})
    vector.meta.recommended = Recommended(layers="3-4", strength=1.5, apply_to="generated")
    out = save_vector(vector, tmp_path / "typed.pt")
    written = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert written["recommended"] == {"layers": "3-4", "strength": 1.5, "mode": "add", "apply_to": "generated"}
    assert written["vector_layers"] == [3, 4] and written["hidden_size"] == 8 and "created" in written
    assert written["layers"]["3"] == {"mean_diff_norm": 1.0}
    assert load_vector(out).meta == vector.meta


def test_embedded_metadata_is_typed_too(tmp_path):
    from steering.interop import export_safetensors

    vector = _vector({"model": "bundled", "lang": "ja", "recommended": {"layers": [3], "position": "last"}})
    out = export_safetensors(vector, tmp_path / "v.safetensors")
    loaded = load_vector(out)
    assert loaded.meta.lang == "ja" and loaded.meta.recommended.apply_to == "last"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_an_extra_list_of_dicts_round_trips(tmp_path, suffix):
    # how evidence cells are kept: a list of JSON objects under an unknown key, nulls and nesting included
    rows = [
        {"layers": "3-4", "strength": 2.0, "half_life": None, "tokens": 64, "broken_share": 0.25, "tags": ["a"]},
        {"layers": "3", "strength": 0.0, "nested": {"deep": [1, {"x": None}]}},
    ]
    vector = _vector({"model": "bundled", EVIDENCE_KEY: rows, "other": [{"k": 1}]})
    assert vector.meta.extra == {EVIDENCE_KEY: rows, "other": [{"k": 1}]}
    if suffix == ".pt":
        out = save_vector(vector, tmp_path / "v.pt")
    else:
        from steering.interop import export_safetensors

        out = export_safetensors(vector, tmp_path / "v.safetensors")
    again = load_vector(out)
    assert again.meta.extra == {EVIDENCE_KEY: rows, "other": [{"k": 1}]}
    assert evidence_of(again) == (rows[0],)  # the second row has no broken share: not evidence


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    "sidecar, key",
    [
        ({"recommended": {"layers": [3], "strength": "4"}}, "recommended.strength"),
        ({"recommended": {"strength": float("nan")}}, "recommended.strength"),
        ({"recommended": {"strength": True}}, "recommended.strength"),
        ({"recommended": {"layers": [3, "4"]}}, "recommended.layers"),
        ({"recommended": {"layers": 12}}, "recommended.layers"),
        ({"recommended": {"layers": "8:12"}}, "recommended.layers"),
        ({"recommended": {"scale": 1}}, "recommended.scale"),
        ({"recommended": {"position": 3}}, "recommended.apply_to"),
        ({"recommended": {"repetition_penalty": "1.3"}}, "recommended.repetition_penalty"),
        ({"recommended": [12, 16]}, "recommended"),
        ({"suggested_layer": 1.5}, "suggested_layer"),
        ({"num_layers": "30"}, "num_layers"),
        ({"pairs": True}, "pairs"),
        ({"lang": 3}, "lang"),
        ({"vector_layers": [3, None]}, "vector_layers"),
    ],
)
def test_wrong_types_name_the_file_and_the_key(tmp_path, sidecar, key):
    with pytest.raises(MetadataError, match=rf"^{re.escape(key)}( is |: bad layer spec)"):
        VectorMeta.from_dict(sidecar)
    path = _write_pt(tmp_path, sidecar)
    with pytest.raises(VectorFileError) as info:
        load_vector(path)
    message = str(info.value)
    assert message.startswith(f"{path.with_suffix('.json')}: {key}")


def test_string_strength_message_is_clear(tmp_path):
    path = _write_pt(tmp_path, {"recommended": {"strength": "4"}})
    with pytest.raises(VectorFileError, match=r"v\.json: recommended\.strength is '4' \(a string\); expected a finite"):
        load_vector(path)


def test_wrong_types_in_embedded_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    sidecar = json.dumps({"recommended": {"strength": "4"}, "layers": {}})
    save_file({"layer.3": torch.ones(8)}, str(path), metadata={"steering": sidecar, "steering.scale": "unit"})
    with pytest.raises(VectorFileError, match=r"bad\.safetensors: embedded steering metadata: recommended\.strength"):
        load_vector(path)


def test_broken_json_still_loads_without_metadata(tmp_path):
    path = _write_pt(tmp_path, {})
    path.with_suffix(".json").write_text("{not json", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vector = load_vector(path)
    assert vector.meta == VectorMeta() and vector.meta.is_empty and caught


def test_replace_keeps_extra():
    meta = VectorMeta.from_dict({"model": "bundled", "x": 1})
    assert replace(meta, lang="en").to_dict() == {"model": "bundled", "lang": "en", "x": 1}
