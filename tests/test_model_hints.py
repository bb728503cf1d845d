"""steering.model_hints: the model family a vector's GGUF names, found from meta or files on disk, never a model."""

from __future__ import annotations

import json

import pytest
from gguf import GGUFWriter

from steering.metadata import VectorMeta
from steering.model_hints import DEFAULT_MODEL_HINT, model_hint_for


def hint(**meta) -> str:
    return model_hint_for(VectorMeta(**meta))


def test_meta_keys_come_first():
    assert hint(model_type="qwen2", model_hint="gemma", model="bundled") == "qwen2"
    assert hint(model_hint="gemma", model="bundled") == "gemma"
    assert hint(model_type="", model_hint="") == DEFAULT_MODEL_HINT  # blank: ignored


def test_bundled_model_is_a_llama(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_CACHE", str(tmp_path))  # not converted yet: SmolLM2 is a llama all the same
    assert hint(model="bundled") == "llama"
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral"}), encoding="utf-8")
    assert hint(model="bundled") == "mistral"


def test_local_folder_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}), encoding="utf-8")
    assert hint(model=str(tmp_path)) == "qwen2"
    (tmp_path / "config.json").write_text("{broken", encoding="utf-8")
    assert hint(model=str(tmp_path)) == DEFAULT_MODEL_HINT


def test_gguf_model_architecture(tmp_path):
    path = tmp_path / "model.gguf"
    writer = GGUFWriter(path, "phi3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert hint(model=str(path)) == "phi3"


@pytest.mark.parametrize("meta", [{}, {"model": ""}, {"model": None}, {"model": "no-such-org/no-such-model-xyz"}])
def test_unknown_models_get_the_default(meta, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hint(**meta) == DEFAULT_MODEL_HINT == "llama"


def test_a_failing_lookup_never_fails_the_export(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(40))  # the GGUF reader raises on it
    assert hint(model=str(broken)) == DEFAULT_MODEL_HINT
