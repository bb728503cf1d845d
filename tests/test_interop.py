"""steering.interop: llama.cpp control-vector GGUF and safetensors export/import, refusal of bad files, the CLI."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter

from steering.interop import check_export_path, export_gguf, export_safetensors, read_vector
from steering.messages import Message, localized
from steering.vector_files import export_vector, load_vector, save_vector
from steering.vectors import SteeringVector, VectorFileError, check_fits
from tests.helpers import has_japanese

HIDDEN = 576  # the bundled SmolLM2-135M-Instruct
NUM_LAYERS = 30
LAYERS = (8, 9, 10, 11, 12)


def assert_bilingual(exc: BaseException) -> str:
    """The error says itself in English (its str, no Japanese) and in Japanese; returns the Japanese."""
    english, japanese = localized(exc, "en"), localized(exc, "ja")
    assert english == str(exc) and not has_japanese(english), english
    assert has_japanese(japanese) and japanese != english, japanese
    return japanese


def make_vector(layers=LAYERS, hidden=HIDDEN, seed=0, stats=True) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in layers:
        v = torch.randn(hidden, generator=gen)
        directions[layer] = v / v.norm()
    layer_stats = (
        {layer: {"mean_diff_norm": 15.0 + layer / 3, "heldout_auc": 0.75} for layer in layers} if stats else {}
    )
    meta = {"model": "bundled", "model_name": "SmolLM2-135M-Instruct", "num_layers": NUM_LAYERS, "method": "mean_diff"}
    return SteeringVector(directions, meta, layer_stats)


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_vector(make_vector(), tmp_path / "gal.pt")


def assert_same_vector(loaded: SteeringVector, original: SteeringVector) -> None:
    assert loaded.layers == original.layers
    for layer in original.layers:
        assert loaded.directions[layer].dtype == torch.float32
        assert torch.allclose(loaded.directions[layer], original.directions[layer], atol=1e-6)
        assert loaded.stats[layer]["mean_diff_norm"] == pytest.approx(original.stats[layer]["mean_diff_norm"])
        assert loaded.stats[layer]["heldout_auc"] == original.stats[layer]["heldout_auc"]
    assert loaded.meta.model == "bundled" and loaded.meta.method == "mean_diff"


def write_gguf(path: Path, tensors: dict[str, np.ndarray], arch: str = "controlvector", **kv) -> Path:
    """A GGUF written the way repeng's export_gguf does it."""
    writer = GGUFWriter(path, arch)
    for key, value in kv.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ------------------------------------------------------------------------------------------------ round trips


def test_gguf_round_trip(saved, tmp_path):
    original = load_vector(saved)
    out = export_vector(saved, "gguf", tmp_path / "gal.gguf")
    loaded = load_vector(out)
    assert_same_vector(loaded, original)
    for layer in loaded.layers:  # back to unit directions
        assert float(loaded.directions[layer].norm()) == pytest.approx(1.0, abs=1e-5)
    assert read_vector(out)[2][9]["mean_diff_norm"] == pytest.approx(original.stats[9]["mean_diff_norm"])
    check_fits(loaded, HIDDEN, NUM_LAYERS)


def test_safetensors_round_trip(saved, tmp_path):
    original = load_vector(saved)
    out = export_vector(saved, "safetensors", tmp_path / "gal.safetensors")
    loaded = load_vector(out)
    assert_same_vector(loaded, original)
    for layer in original.layers:
        assert torch.equal(loaded.directions[layer], original.directions[layer])  # unit vectors stored as is
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == sorted(f"layer.{n}" for n in LAYERS)
        assert (
            json.loads(f.metadata()["steering"])["layers"]["9"]["mean_diff_norm"] == original.stats[9]["mean_diff_norm"]
        )


def test_gguf_without_stats_stores_unit_directions(tmp_path):
    vector = make_vector(stats=False)
    out = export_gguf(vector, tmp_path / "bare.gguf")
    reader = GGUFReader(out)
    assert reader.fields["steering.scale"].contents() == "unit"
    for tensor in reader.tensors:
        assert float(np.linalg.norm(tensor.data)) == pytest.approx(1.0, abs=1e-5)
    loaded = load_vector(out)
    assert loaded.layers == list(LAYERS)
    assert all("mean_diff_norm" not in loaded.stats.get(n, {}) for n in LAYERS)


def test_our_gguf_read_independently(saved, tmp_path):
    vector = load_vector(saved)
    out = export_gguf(vector, tmp_path / "gal.gguf", model_hint="llama")
    reader = GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == len(LAYERS)
    assert reader.fields["steering.scale"].contents() == "mean_diff"
    assert json.loads(reader.fields["steering.meta"].contents())["model"] == "bundled"
    names = {t.name: t for t in reader.tensors}
    assert sorted(names) == sorted(f"direction.{n}" for n in LAYERS)  # our layer N = direction.N (block N)
    for layer in LAYERS:
        tensor = names[f"direction.{layer}"]
        assert tensor.tensor_type.name == "F32" and list(tensor.shape) == [HIDDEN]
        # llama.cpp adds this as is: the layer's mean difference (unit × mean_diff_norm)
        expected = vector.directions[layer] * vector.stats[layer]["mean_diff_norm"]
        assert np.allclose(np.asarray(tensor.data), expected.numpy(), atol=1e-5)


def test_model_hint_from_meta(tmp_path):
    vector = make_vector()
    vector.meta.model_type = "qwen2"
    reader = GGUFReader(export_gguf(vector, tmp_path / "q.gguf"))
    assert reader.fields["controlvector.model_hint"].contents() == "qwen2"
    vector.meta.model_type = None
    reader = GGUFReader(export_gguf(vector, tmp_path / "b.gguf"))  # bundled SmolLM2 is a llama
    assert reader.fields["controlvector.model_hint"].contents() == "llama"


def test_layer_zero_left_out_of_gguf(tmp_path):
    vector = make_vector(layers=(0, 1, 2))
    with pytest.warns(UserWarning, match="layer 0"):
        out = export_gguf(vector, tmp_path / "z.gguf")
    assert sorted(t.name for t in GGUFReader(out).tensors) == ["direction.1", "direction.2"]
    assert load_vector(out).layers == [1, 2]
    with pytest.raises(VectorFileError, match="only layer 0"):
        export_gguf(make_vector(layers=(0,)), tmp_path / "only0.gguf")


def test_repeng_style_gguf_loads(tmp_path):
    """llama.cpp / repeng layout: direction.N for N in 1..L-1, arbitrary norms; N maps to our layer N."""
    gen = np.random.default_rng(0)
    arrays = {n: (gen.standard_normal(HIDDEN) * (n + 1)).astype(np.float32) for n in range(1, NUM_LAYERS)}
    path = write_gguf(
        tmp_path / "repeng.gguf",
        {f"direction.{n}": a for n, a in arrays.items()},
        **{"controlvector.model_hint": "llama", "controlvector.layer_count": len(arrays)},
    )
    vector = load_vector(path)
    assert vector.layers == list(range(1, NUM_LAYERS))
    for n, array in arrays.items():
        norm = float(np.linalg.norm(array))
        assert torch.allclose(vector.directions[n], torch.from_numpy(array / norm), atol=1e-6)
        assert vector.stats[n]["file_norm"] == pytest.approx(norm, rel=1e-5)
    assert vector.meta.model_hint == "llama" and vector.meta.source_format == "gguf"
    check_fits(vector, HIDDEN, NUM_LAYERS)  # fits the bundled model: no layer past 29


# --------------------------------------------------------------------------------------------------- refusals


def test_model_gguf_refused(tmp_path):
    path = write_gguf(
        tmp_path / "model.gguf",
        {"token_embd.weight": np.zeros((4, 8), np.float32)},
        arch="llama",
        **{"llama.block_count": 1},
    )
    with pytest.raises(VectorFileError, match="'llama' model file, not a llama.cpp control vector"):
        load_vector(path)


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"direction.0": np.ones(HIDDEN, np.float32)}, "direction.0 is invalid"),
        ({"direction.3": np.ones((2, HIDDEN), np.float32)}, "not a 1-D float tensor"),
        ({"direction.3": np.ones(HIDDEN, np.int32)}, "not a 1-D float tensor"),
        ({"output.weight": np.ones(HIDDEN, np.float32)}, "not a control-vector direction"),
        ({"direction.1": np.ones(HIDDEN, np.float32), "direction.2": np.ones(8, np.float32)}, "has size 8"),
        ({"direction.1": np.full(HIDDEN, np.nan, np.float32)}, "NaN"),
        ({}, "no direction tensors"),
    ],
)
def test_bad_control_vectors_refused(tmp_path, tensors, message):
    path = write_gguf(tmp_path / "bad.gguf", tensors, **{"controlvector.layer_count": len(tensors)})
    with pytest.raises(VectorFileError, match=message):
        load_vector(path)


def test_gguf_refusals_say_themselves_in_japanese(tmp_path):
    model = write_gguf(tmp_path / "model.gguf", {"token_embd.weight": np.zeros(8, np.float32)}, arch="llama")
    with pytest.raises(VectorFileError) as info:
        read_vector(model)
    assert "'llama' のモデルファイルで、llama.cpp の制御ベクトルではありません" in assert_bilingual(info.value)
    cases = {
        "direction.0": {"direction.0": np.ones(HIDDEN, np.float32)},
        "1-D": {"direction.3": np.ones((2, HIDDEN), np.float32)},
        "output.weight": {"output.weight": np.ones(HIDDEN, np.float32)},
        "no direction": {},
    }
    for name, tensors in cases.items():
        path = write_gguf(tmp_path / f"{len(tensors)}-{name.replace('.', '_')}.gguf", tensors)
        with pytest.raises(VectorFileError, match=name) as info:
            read_vector(path)
        assert str(path) in assert_bilingual(info.value)
    (tmp_path / "junk.gguf").write_bytes(b"JUNK" * 10)
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "cut.gguf").write_bytes(b"GGUF" + bytes(range(256)))
    (tmp_path / "vector.bin").write_bytes(b"x")
    for path, words in [
        (tmp_path / "junk.gguf", "GGUF ファイルではありません"),
        (tmp_path / "empty.gguf", "空のファイル"),
        (tmp_path / "cut.gguf", "GGUF ファイルとして読めません"),
        (tmp_path / "vector.bin", ".gguf でも .safetensors でもない"),
        (tmp_path / "missing.gguf", "見つかりません"),
    ]:
        with pytest.raises(VectorFileError) as info:
            read_vector(path)
        assert words in assert_bilingual(info.value)


def test_safetensors_refusals_say_themselves_in_japanese(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.embed.weight": torch.ones(HIDDEN)}, str(tmp_path / "keys.safetensors"))
    save_file({"layer.3": torch.ones(HIDDEN), "3": torch.ones(HIDDEN)}, str(tmp_path / "dup.safetensors"))
    save_file({"layer.3": torch.ones(HIDDEN)}, str(tmp_path / "meta.safetensors"), {"steering": '{"num_layers": "x"}'})
    (tmp_path / "cut.safetensors").write_bytes(b"\x08" + bytes(20))
    for name, words in [
        ("keys", "レイヤーの方向ではありません"),
        ("dup", "レイヤー 3 が 2 回出てきます"),
        ("meta", "埋め込まれたステアリングのメタデータ: num_layers が 'x'"),  # the metadata's error, in Japanese
        ("cut", "safetensors ファイルとして読めません"),
    ]:
        with pytest.raises(VectorFileError) as info:
            read_vector(tmp_path / f"{name}.safetensors")
        assert words in assert_bilingual(info.value)


def test_import_warnings_say_themselves_in_japanese(tmp_path):
    from safetensors.torch import save_file

    metadata = {"steering": "[1, 2]", "steering.scale": "cubits"}
    save_file({"layer.3": torch.ones(HIDDEN)}, str(tmp_path / "odd.safetensors"), metadata)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_vector(tmp_path / "odd.safetensors")[0].keys() == {3}
    messages = [w.message.args[0] for w in caught]
    assert all(isinstance(m, Message) and not has_japanese(m) and has_japanese(m.in_lang("ja")) for m in messages)
    assert any("not a JSON object" in m for m in messages) and any(
        "JSON オブジェクトではありません" in m.in_lang("ja") for m in messages
    )
    assert any("unknown steering.scale 'cubits'" in m for m in messages)


def test_export_refusals_say_themselves_in_japanese(saved, tmp_path):
    (tmp_path / "taken.gguf").write_bytes(b"x")
    (tmp_path / "folder.gguf").mkdir()
    for path, fmt, words in [
        (tmp_path / "gal.gguf", "safetensors", ".safetensors で終わる必要があります"),
        (tmp_path / "taken.gguf", "gguf", "はもうあります"),
        (tmp_path / "folder.gguf", "gguf", "はフォルダです"),
    ]:
        with pytest.raises(VectorFileError) as info:
            check_export_path(path, fmt, overwrite=False)
        assert words in assert_bilingual(info.value)
    with pytest.raises(VectorFileError) as info:
        export_gguf(make_vector(layers=(0,)), tmp_path / "only0.gguf")
    assert "レイヤー 0 しかありません" in assert_bilingual(info.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_gguf(make_vector(layers=(0, 1)), tmp_path / "z.gguf")
    (warning,) = [w.message.args[0] for w in caught]
    assert warning.startswith("layer 0 left out") and "レイヤー 0 は GGUF に入れていません" in warning.in_lang("ja")


@pytest.mark.parametrize("suffix", [".gguf", ".safetensors"])
def test_a_missing_reader_package_is_a_bilingual_vector_file_error(saved, tmp_path, monkeypatch, suffix):
    fmt = suffix.lstrip(".")
    good = export_vector(saved, fmt, tmp_path / f"good{suffix}")
    for module in ("gguf", "safetensors", "safetensors.torch"):
        monkeypatch.setitem(sys.modules, module, None)  # `import gguf` now raises ImportError
    with pytest.raises(VectorFileError, match=f"need the Python package {fmt}, which is not installed") as info:
        load_vector(good)
    assert f"Python パッケージ {fmt} が必要ですが" in assert_bilingual(info.value)
    export = export_gguf if fmt == "gguf" else export_safetensors
    with pytest.raises(VectorFileError, match=f"pip install {fmt}") as info:
        export(make_vector(), tmp_path / f"new{suffix}")
    assert_bilingual(info.value)
    assert not (tmp_path / f"new{suffix}").exists()


@pytest.mark.parametrize("suffix", [".gguf", ".safetensors"])
def test_truncated_and_empty_files_refused(saved, tmp_path, suffix):
    fmt = suffix.lstrip(".")
    good = export_vector(saved, fmt, tmp_path / f"good{suffix}")
    data = good.read_bytes()
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(VectorFileError, match="empty"):
        load_vector(tmp_path / f"empty{suffix}")
    for cut in (3, 40, len(data) // 2, len(data) - 7):
        bad = tmp_path / f"cut{cut}{suffix}"
        bad.write_bytes(data[:cut])
        with pytest.raises(VectorFileError, match="truncated or corrupt|not a GGUF file"):
            load_vector(bad)
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(VectorFileError, match="truncated or corrupt"):
        load_vector(garbage)


def test_safetensors_nan_and_foreign_keys_refused(tmp_path):
    from safetensors.torch import save_file

    bad = torch.ones(HIDDEN)
    bad[5] = float("nan")
    save_file({"layer.3": bad}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(VectorFileError, match="NaN"):
        load_vector(tmp_path / "nan.safetensors")
    save_file({"model.embed.weight": torch.ones(HIDDEN)}, str(tmp_path / "keys.safetensors"))
    with pytest.raises(VectorFileError, match="not a layer direction"):
        load_vector(tmp_path / "keys.safetensors")
    save_file({"layer.3": torch.ones(HIDDEN), "direction.3": torch.ones(HIDDEN)}, str(tmp_path / "dup.safetensors"))
    with pytest.raises(VectorFileError, match="appears twice"):
        load_vector(tmp_path / "dup.safetensors")


def test_foreign_safetensors_key_styles(tmp_path):
    from safetensors.torch import save_file

    save_file(
        {"direction.4": torch.full((HIDDEN,), 2.0), "7": torch.ones(HIDDEN, dtype=torch.float16)},
        str(tmp_path / "foreign.safetensors"),
    )
    vector = load_vector(tmp_path / "foreign.safetensors")
    assert vector.layers == [4, 7]
    assert float(vector.directions[4].norm()) == pytest.approx(1.0)
    assert vector.stats[4]["file_norm"] == pytest.approx(2.0 * HIDDEN**0.5)


def test_export_refuses_overwrite_and_wrong_suffix(saved, tmp_path):
    out = export_vector(saved, "gguf", tmp_path / "gal.gguf")
    before = out.read_bytes()
    with pytest.raises(VectorFileError, match="already exists"):
        export_vector(saved, "gguf", out)
    assert out.read_bytes() == before
    export_vector(saved, "gguf", out, overwrite=True)
    with pytest.raises(VectorFileError, match="must end in .safetensors"):
        export_vector(saved, "safetensors", tmp_path / "gal.gguf")
    with pytest.raises(VectorFileError, match="unknown export format"):
        export_vector(saved, "onnx", tmp_path / "gal.onnx")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("fmt", ["gguf", "safetensors"])
def test_export_leaves_the_users_own_tmp_file_alone(tmp_path, fmt):
    """The temporary gets a unique name: a user's NAME.gguf.tmp (or .safetensors.tmp) beside the output survives."""
    own = tmp_path / f"mine.{fmt}.tmp"
    own.write_bytes(b"user data")
    write = export_gguf if fmt == "gguf" else export_safetensors
    out = write(make_vector(), tmp_path / f"mine.{fmt}")
    write(make_vector(seed=1), out, overwrite=True)
    assert own.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, own.name])
    assert load_vector(out).layers == list(LAYERS)


# ---------------------------------------------------------------------------------------------------------- CLI


def test_cli_export(saved, tmp_path, capsys, monkeypatch):
    """`steering export`, run in-process through steering.cli.main."""
    from steering import cli

    monkeypatch.chdir(tmp_path)

    def run(*args):
        rc = cli.main(["export", str(saved), *args])
        return rc, capsys.readouterr()

    out = tmp_path / "cli.gguf"
    rc, first = run("--format", "gguf", "--out", str(out), "--json")
    assert rc == 0, first.err
    info = json.loads(first.out)
    assert info["layers"] == list(LAYERS) and info["scale"] == "mean_diff" and info["model_hint"] == "llama"
    assert load_vector(out).layers == list(LAYERS)
    rc, again = run("--format", "gguf", "--out", str(out))
    assert rc == 2 and "already exists" in again.err and "--overwrite" in again.err
    rc, forced = run("--format", "safetensors", "--out", str(tmp_path / "cli.safetensors"), "--overwrite")
    assert rc == 0, forced.err
    assert "exported" in forced.out
    assert load_vector(tmp_path / "cli.safetensors").layers == list(LAYERS)


# ---------------------------------------------------------------------------------------------- steering parity


@pytest.mark.slow
def test_imported_vector_steers_identically(bundled, saved, tmp_path):
    from steering.generate import GenerationSettings, generate_batch
    from steering.steer import Steering

    original = load_vector(saved)
    copies = [
        load_vector(export_vector(saved, "gguf", tmp_path / "s.gguf")),
        load_vector(export_vector(saved, "safetensors", tmp_path / "s.safetensors")),
    ]
    settings = GenerationSettings(max_new_tokens=8)
    messages = [{"role": "user", "content": "How was your weekend?"}]

    def texts(vector):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return generate_batch(bundled, messages, [0.0, 2.0], Steering(vector, list(LAYERS), 2.0), settings).texts

    reference = texts(original)
    assert reference[0] != reference[1]  # the vector does steer: the comparison below means something
    for copy in copies:
        assert texts(copy) == reference
