"""Bad inputs, end to end: each is answered with one clear message (library exception, CLI `error: ...` with exit
code 2, or a Gradio error/warning in the app) and nothing that already exists is overwritten or lost.

docs/bad_inputs.md is the table these tests back; rows already covered elsewhere point at those tests instead.
Everything here runs on the tiny in-process model (conftest's tiny_qwen2) or fails before any model is loaded, so
the whole file takes seconds. The CLI runs in-process through steering.cli.main with load_model replaced by the
tiny model (the offline hub id sets HF_HUB_OFFLINE in-process, as tests/test_models.py does).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

from steering import cli, models, session
from steering.data import DatasetError, load_dataset
from steering.interop import export_gguf, export_safetensors
from steering.steer import SANE_STRENGTH, Steering, steer
from steering.vector_files import export_vector, load_vector, save_vector, sidecar_path, unique_path
from steering.vectors import SteeringVector, VectorFileError
from tests.helpers import hooks_left, pair_line, write_big_jsonl

BIG_LINES = 20_000
MAX_PAIRS = 8


# --------------------------------------------------------------------------------------------------- helpers


def unit_vector(hidden: int = 64, layers=(1, 2), seed: int = 0, norm: float | None = 2.0, **meta) -> SteeringVector:
    """Unit directions with (or without, norm=None) a recorded mean-difference norm per layer."""
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in layers:
        v = torch.randn(hidden, generator=gen)
        directions[layer] = v / v.norm()
    stats = {layer: {"mean_diff_norm": norm} for layer in layers} if norm is not None else {}
    return SteeringVector(directions, {"model": "tiny-qwen2", "lang": "en", **meta}, stats)


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory) -> Path:
    """20,000 lines: 19,999 valid pairs, then a broken last line that only a reader of the whole file meets."""
    return write_big_jsonl(tmp_path_factory.mktemp("big") / "big.jsonl", BIG_LINES)


@pytest.fixture
def tiny_cli(monkeypatch, tiny_qwen2):
    """Run steering.cli.main in-process with every load_model answering with the tiny model."""
    monkeypatch.setattr(models, "load_model", lambda *args, **kwargs: tiny_qwen2)
    return cli.main


@pytest.fixture
def no_model(monkeypatch):
    """load_model must never be reached: the input is refused first."""

    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called for an input that should be refused before it")

    monkeypatch.setattr(models, "load_model", refuse)


def assert_clean_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


class Payload:
    """Unpickling this runs `touch MARKER` — if a loader ever executed code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def temp_files_left(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------ datasets: CLI and app

BAD_DATASETS = {
    "broken-json": (
        "broken.jsonl",
        pair_line(1) + "\n" + pair_line(2) + '\n{"standard": "a", "gyaru": \n',
        "line 3: invalid JSON",
    ),
    "zero-byte": ("zero.jsonl", "", "empty file (0 bytes)"),
    "blank-lines": ("blank.jsonl", "\n  \n\n", "no entries"),
    "empty-list": ("empty.json", "[]", "no entries"),
    "wrong-schema-jsonl": (
        "chat.jsonl",
        '{"prompt": "hi", "response": "hello"}\n',
        "does not look like a contrast-pair file: found keys prompt, response",
    ),
    "wrong-schema-csv": ("table.csv", "name,age\nAnn,3\n", "does not look like a contrast-pair file"),
    "missing-gyaru": ("half.jsonl", pair_line(1) + '\n{"standard": "only one side"}\n', 'line 2, field "gyaru"'),
}


def write_bad_dataset(folder: Path, case: str) -> tuple[Path, str]:
    name, content, needle = BAD_DATASETS[case]
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path, needle


@pytest.mark.parametrize(
    "line, column",
    [('{"standard": "a", "gyaru": ', 28), ('{"standard": "a" "gyaru": "b"}', 18), ('{"standard": "a"} x\r', 19)],
)
def test_broken_json_line_names_the_column_within_that_line(tmp_path, line, column):
    path = tmp_path / "broken.jsonl"
    path.write_text(pair_line(1) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"broken\.jsonl line 2: invalid JSON: .* \(column {column}\)$"):
        load_dataset(path)


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_cli_extract_bad_dataset_is_one_error_line(tmp_path, capsys, no_model, case):
    data, needle = write_bad_dataset(tmp_path, case)
    before = data.read_bytes()
    out = tmp_path / "v.pt"
    rc = cli.main(["extract", "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert_clean_error(rc, err, data.name, needle)
    assert not out.exists() and not sidecar_path(out).exists()
    assert data.read_bytes() == before  # the dataset itself is never touched


@pytest.fixture
def app_env(monkeypatch, tmp_path, tiny_qwen2):
    """The app module with the tiny model as the shared model and an empty temporary vectors/ folder."""
    app = pytest.importorskip("app")
    from steering.catalog import VectorCatalog
    from steering.session import ModelSession

    monkeypatch.setattr(app, "HOLDER", ModelSession(loaded=tiny_qwen2))
    folder = tmp_path / "vectors"
    folder.mkdir()
    monkeypatch.setattr(app, "CATALOG", VectorCatalog(folder))
    return app


def no_progress(*args, **kwargs):
    return None


def extract_in_app(app, data_file, max_pairs=4, name="gyaru", dataset="upload", progress=no_progress):
    return app.on_extract(
        dataset,
        str(data_file) if data_file else None,
        "gyaru-vs-standard",
        max_pairs,
        "1-2",
        "mean_diff",
        "last",
        name,
        [],
        progress=progress,
    )


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_app_extract_bad_dataset_is_a_gradio_error(app_env, tmp_path, case):
    import gradio as gr

    data, needle = write_bad_dataset(tmp_path, case)
    with pytest.raises(gr.Error) as info:
        extract_in_app(app_env, data)
    assert data.name in info.value.message and needle in info.value.message
    assert list(app_env.CATALOG.folder.iterdir()) == []  # nothing saved, nothing half-written


def test_app_extract_without_an_uploaded_file(app_env):
    import gradio as gr

    with pytest.raises(gr.Error, match="upload a dataset file first"):
        extract_in_app(app_env, None)


# ------------------------------------------------------------------------------------ a 20,000-line dataset


def test_cli_extract_20000_lines_honours_max_pairs_and_shows_progress(tmp_path, capsys, tiny_cli, big_jsonl):
    out = tmp_path / "big.pt"
    rc = tiny_cli(
        ["extract", "--data", str(big_jsonl), "--max-pairs", str(MAX_PAIRS), "--layers", "1-2", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "capture" in captured.err  # the tqdm bar on stderr
    assert f"saved {out}" in captured.out
    meta = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert meta["pairs"] == MAX_PAIRS
    assert meta["layers"]["1"]["train_pairs"] + meta["layers"]["1"]["heldout_pairs"] == MAX_PAIRS
    assert load_vector(out).layers == [1, 2]


def test_cli_extract_20000_lines_without_max_pairs_names_the_broken_last_line(tmp_path, capsys, no_model, big_jsonl):
    """Using every pair means validating every line: the cut-off line 20,000 is named, before any model loads."""
    out = tmp_path / "big.pt"
    rc = cli.main(["extract", "--data", str(big_jsonl), "--out", str(out)])
    assert_clean_error(rc, capsys.readouterr().err, f"line {BIG_LINES}: invalid JSON")
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-5"])
def test_cli_max_pairs_below_one_refused(tmp_path, capsys, no_model, big_jsonl, value):
    rc = cli.main(["extract", "--data", str(big_jsonl), "--max-pairs", value, "--out", str(tmp_path / "v.pt")])
    assert_clean_error(rc, capsys.readouterr().err, "--max-pairs must be at least 1")


def test_app_extract_20000_lines_honours_max_pairs_and_reports_progress(app_env, big_jsonl):
    calls = []
    summary, files, *_ = extract_in_app(
        app_env, big_jsonl, max_pairs=MAX_PAIRS, progress=lambda *args, **kwargs: calls.append((args, kwargs))
    )
    assert f"{MAX_PAIRS} pairs" in summary
    assert calls and calls[-1][0][0] == (2 * MAX_PAIRS, 2 * MAX_PAIRS)
    saved = Path(files[0])
    assert saved.parent == app_env.CATALOG.folder and load_vector(saved).meta.pairs == MAX_PAIRS


# ----------------------------------------------------------------------------- vector for another model


def test_cli_generate_vector_for_another_model(tmp_path, capsys, tiny_cli):
    wide = save_vector(unit_vector(hidden=128), tmp_path / "wide.pt")
    rc = tiny_cli(["generate", "hi", "--vector", str(wide), "--max-new-tokens", "2"])
    assert_clean_error(rc, capsys.readouterr().err, "hidden size 128 does not fit tiny-qwen2 (hidden size 64)")
    deep = save_vector(unit_vector(layers=(1, 10)), tmp_path / "deep.pt")
    rc = tiny_cli(["generate", "hi", "--vector", str(deep), "--max-new-tokens", "2"])
    assert_clean_error(rc, capsys.readouterr().err, "layers [10] do not exist in tiny-qwen2 (4 layers)")


# ------------------------------------------------------------------------- unsafe, broken and NaN files


def test_cli_info_refuses_a_pickle_payload(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({1: torch.ones(64), 2: Payload(marker)}, evil)
    before = evil.read_bytes()
    rc = cli.main(["info", str(evil)])
    assert_clean_error(rc, capsys.readouterr().err, "refused", "pickle payload could run code")
    assert not marker.exists(), "loading the vector ran code from it"
    assert evil.read_bytes() == before


def broken_files(folder: Path) -> dict[str, Path]:
    """A good vector in every format, then truncated and zero-byte copies of each."""
    good = save_vector(unit_vector(), folder / "good.pt")
    sources = {
        ".pt": good,
        ".gguf": export_vector(good, "gguf", folder / "good.gguf"),
        ".safetensors": export_vector(good, "safetensors", folder / "good.safetensors"),
    }
    out = {}
    for suffix, src in sources.items():
        data = src.read_bytes()
        (folder / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        (folder / f"zero{suffix}").write_bytes(b"")
        out[f"cut{suffix}"], out[f"zero{suffix}"] = folder / f"cut{suffix}", folder / f"zero{suffix}"
    return out


def test_cli_export_of_a_broken_file_leaves_no_partial_output(tmp_path, capsys):
    for name, src in broken_files(tmp_path).items():
        target = tmp_path / f"out-{name}.gguf"
        rc = cli.main(["export", str(src), "--format", "gguf", "--out", str(target)])
        assert_clean_error(rc, capsys.readouterr().err, src.name)
        assert not target.exists(), name
        # an existing export survives a failed --overwrite from a broken source
        target.write_bytes(b"keep me")
        rc = cli.main(["export", str(src), "--format", "gguf", "--out", str(target), "--overwrite"])
        assert rc == 2 and target.read_bytes() == b"keep me", name
        capsys.readouterr()
    assert temp_files_left(tmp_path) == []


def test_failed_writes_keep_the_old_file_and_leave_no_temp(tmp_path, monkeypatch):
    """A write that dies half-way (disk full...) replaces nothing: the old .pt/.json, .gguf and .safetensors stay."""
    vector = unit_vector()
    pt = save_vector(vector, tmp_path / "v.pt")
    gguf = export_gguf(vector, tmp_path / "v.gguf")
    st = export_safetensors(vector, tmp_path / "v.safetensors")
    before = {p: p.read_bytes() for p in (pt, sidecar_path(pt), gguf, st)}

    def half_write(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\x80\x02partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="No space left"):
        save_vector(unit_vector(seed=1), pt, overwrite=True)
    monkeypatch.undo()

    import gguf as gguf_module
    import safetensors.torch

    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(gguf_module.GGUFWriter, "write_tensors_to_file", fail)
    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError):
        export_gguf(unit_vector(seed=1), gguf, overwrite=True)
    with pytest.raises(OSError):
        export_safetensors(unit_vector(seed=1), st, overwrite=True)
    assert {p: p.read_bytes() for p in before} == before
    assert temp_files_left(tmp_path) == []


def test_export_of_layers_sharing_one_tensor(tmp_path):
    """A hand-made reference file that uses one tensor for every layer (torch.save keeps the sharing)."""
    shared = torch.randn(64)
    src = tmp_path / "same.pt"
    torch.save({layer: shared for layer in (1, 2, 3)}, src)
    for fmt in ("safetensors", "gguf"):
        out = export_vector(src, fmt, tmp_path / f"same.{fmt}")
        vector = load_vector(out)
        assert vector.layers == [1, 2, 3]
        assert torch.allclose(vector.directions[3] / vector.directions[3].norm(), shared / shared.norm(), atol=1e-6)


def nan_vector() -> SteeringVector:
    vector = unit_vector()
    vector.directions[2] = vector.directions[2].clone()
    vector.directions[2][3] = float("nan")
    return vector


def test_nan_directions_are_never_written(tmp_path):
    for write, name in ((save_vector, "nan.pt"), (export_gguf, "nan.gguf"), (export_safetensors, "nan.safetensors")):
        with pytest.raises(VectorFileError, match="layer 2 holds NaN or inf"):
            write(nan_vector(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_nan_direction_is_refused_by_steering(tiny_qwen2):
    for scale in ("raw", "calibrated"):
        with pytest.raises(ValueError, match="layer 2: the vector's direction holds NaN or inf"):
            with steer(tiny_qwen2, Steering(nan_vector(), [1, 2], 1.0, scale)):
                pass
    assert hooks_left(tiny_qwen2.model) == 0


@pytest.mark.parametrize("recorded", ["NaN", "Infinity", "null", '"abc"', "0", "-1.5"])
def test_damaged_recorded_norm_is_refused_on_the_calibrated_scale(tmp_path, tiny_qwen2, recorded):
    """A hand-edited sidecar: the file still loads, raw steering works, calibrated steering says what is wrong."""
    path = save_vector(unit_vector(), tmp_path / "v.pt")
    side = sidecar_path(path)
    side.write_text(
        side.read_text(encoding="utf-8").replace('"mean_diff_norm": 2.0', f'"mean_diff_norm": {recorded}'),
        encoding="utf-8",
    )
    vector = load_vector(path)
    with pytest.raises(ValueError, match="recorded mean-difference norm is .* not a finite positive number"):
        with steer(tiny_qwen2, Steering(vector, [1, 2], 1.0, "calibrated")):
            pass
    with steer(tiny_qwen2, Steering(vector, [1, 2], 1.0, "raw")):
        pass
    assert hooks_left(tiny_qwen2.model) == 0


def test_cli_generate_with_a_damaged_sidecar_is_a_clean_error(tmp_path, capsys, tiny_cli):
    path = save_vector(unit_vector(), tmp_path / "v.pt")
    side = sidecar_path(path)
    side.write_text(
        side.read_text(encoding="utf-8").replace('"mean_diff_norm": 2.0', '"mean_diff_norm": null'), encoding="utf-8"
    )
    rc = tiny_cli(["generate", "hi", "--vector", str(path), "--max-new-tokens", "2"])
    assert_clean_error(rc, capsys.readouterr().err, "recorded mean-difference norm is None")


# ------------------------------------------------------------------------------- names for saved vectors


@pytest.mark.parametrize(
    "name, stem",
    [
        ("../../x", "x"),
        ("a/b", "b"),
        ("a\\b", "b"),
        ("con", "con_"),
        ("NUL.txt", "NUL_.txt"),
        ("", "vector"),
        ("名前 with spaces", "名前_with_spaces"),
        ("ギャル", "ギャル"),
        ("x" * 500, "x" * 80),
        ("y" * 79 + ".tail", "y" * 79),
    ],
)
def test_save_names_stay_inside_the_folder_and_never_clobber(tmp_path, name, stem):
    folder = tmp_path / "vectors"
    first = unique_path(folder, name)
    assert first == folder / f"{stem}.pt"
    save_vector(unit_vector(seed=0), first)
    kept = first.read_bytes()
    second = unique_path(folder, name)
    assert second == folder / f"{stem}-2.pt"
    save_vector(unit_vector(seed=1), second)
    assert first.read_bytes() == kept
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [f"{stem}.pt", f"{stem}.json", f"{stem}-2.pt", f"{stem}-2.json"]
    )


def test_app_extract_with_a_traversal_name_saves_inside_vectors_without_clobbering(app_env, tmp_path):
    folder = app_env.CATALOG.folder
    (folder / "evil.pt").write_bytes(b"an older vector")
    summary, files, *_ = extract_in_app(app_env, "en", dataset="en", name="../../evil")
    saved = Path(files[0])
    assert saved == folder / "evil-2.pt" and "evil-2.pt" in summary
    assert (folder / "evil.pt").read_bytes() == b"an older vector"
    assert not (tmp_path / "evil.pt").exists() and not (folder.parent.parent / "evil.pt").exists()


# ------------------------------------------------------------------------------------------ app uploads


def test_app_upload_over_the_size_limit_is_refused(app_env, tmp_path):
    import gradio as gr

    big = tmp_path / "huge.pt"
    with open(big, "wb") as f:  # sparse: no disk space used
        f.truncate((app_env.MAX_UPLOAD_MB << 20) + 1)
    with pytest.raises(gr.Error) as info:
        app_env.on_upload_vector([str(big)], ["/earlier/upload.pt"], None)
    assert info.value.message == f"huge.pt: larger than {app_env.MAX_UPLOAD_MB} MB"
    assert app_env.launch_kwargs()["max_file_size"] == f"{app_env.MAX_UPLOAD_MB}mb"  # the server's own limit


@pytest.mark.parametrize(
    "case, needle",
    [
        ("other-model", "hidden size 128 does not fit tiny-qwen2"),
        ("pickle", "refused"),
        ("cut.pt", "truncated or corrupt"),
        ("zero.gguf", "empty (zero-byte) file"),
        ("cut.safetensors", "truncated or corrupt"),
        ("nan", "holds NaN or inf"),
    ],
)
def test_app_upload_of_a_bad_vector_warns_and_keeps_the_list(app_env, tmp_path, case, needle):
    marker = tmp_path / "PWNED"
    if case == "other-model":
        path = save_vector(unit_vector(hidden=128), tmp_path / "wide.pt")
    elif case == "pickle":
        path = tmp_path / "evil.pt"
        torch.save({1: torch.ones(64), 2: Payload(marker)}, path)
    elif case == "nan":
        path = tmp_path / "nan.pt"
        torch.save({1: torch.tensor([1.0, float("nan")] * 32)}, path)
    else:
        path = broken_files(tmp_path)[case]
    earlier = ["/earlier/upload.pt"]
    with pytest.warns(UserWarning, match=re.escape(needle)):  # gr.Warning outside a request: a toast in the browser
        dropdown, uploads, note = app_env.on_upload_vector([str(path)], earlier, None)
    assert uploads == earlier
    assert not any(Path(value).name == path.name for _, value in dropdown.choices)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ prompts


@pytest.fixture
def tiny_vector_file(tmp_path) -> Path:
    return save_vector(unit_vector(), tmp_path / "tiny.pt")


def test_cli_empty_prompt_refused_before_loading_a_model(capsys, no_model, tiny_vector_file):
    for prompt in ([], [""], ["   \n "]):
        rc = cli.main(["generate", *prompt, "--vector", str(tiny_vector_file)])
        assert_clean_error(rc, capsys.readouterr().err, "empty prompt")


def chat_in_app(app, message, vector: Path, strength=1.0, scale="raw", max_new_tokens=2):
    history = {"plain": [], "steered": []}
    return app.on_chat(
        message, str(vector), "1-2", strength, scale, "all", max_new_tokens, 0.0, 0, 1.0, history, [str(vector)]
    )


def test_app_empty_message_is_a_gradio_error(app_env, tiny_vector_file):
    import gradio as gr

    with pytest.raises(gr.Error, match="write a message first"):
        next(chat_in_app(app_env, "  \n ", tiny_vector_file))


def test_cli_long_prompt_is_cut_from_the_left_with_a_notice(capsys, tiny_cli, tiny_qwen2, tiny_vector_file):
    rc = tiny_cli(
        [
            "generate",
            "word " * 2000 + "last?",
            "--vector",
            str(tiny_vector_file),
            "--scale",
            "raw",
            "--strength",
            "1",
            "--max-new-tokens",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    kept = tiny_qwen2.context_length - 2
    assert "notice: the conversation (" in err and f"kept the last {kept} tokens" in err


def test_app_long_prompt_shows_the_left_cut_notice(app_env, tiny_vector_file, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = list(chat_in_app(app_env, "word " * 2000 + "last?", tiny_vector_file))
    shown = json.dumps(outputs, default=str) + capsys.readouterr().out + " ".join(str(w.message) for w in caught)
    assert "kept the last" in shown


# ---------------------------------------------------------------------------------------------- strengths


def test_strength_limits_warn_and_non_finite_strengths_are_refused(tiny_qwen2):
    vector = unit_vector()
    for scale, limit in SANE_STRENGTH.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # at the limit: no warning
            with steer(tiny_qwen2, Steering(vector, [1, 2], -limit, scale)):
                pass
        with pytest.warns(UserWarning, match=rf"beyond ±{limit:g}; expect broken text"):
            with steer(tiny_qwen2, Steering(vector, [1, 2], limit * 1.5, scale)):
                pass
    for bad in (math.inf, -math.inf, math.nan, [0.0, math.inf]):
        with pytest.raises(ValueError, match="strength must be a finite number"):
            with steer(tiny_qwen2, Steering(vector, [1, 2], bad, "raw")):
                pass
    assert hooks_left(tiny_qwen2.model) == 0


def test_cli_absurd_strength_warns_and_still_answers(capsys, tiny_cli, tiny_vector_file):
    with pytest.warns(UserWarning, match=r"strength 1000 on the raw scale is beyond ±200; expect broken text"):
        rc = tiny_cli(
            [
                "generate",
                "hi",
                "--vector",
                str(tiny_vector_file),
                "--scale",
                "raw",
                "--strength",
                "1000",
                "--max-new-tokens",
                "2",
            ]
        )
    assert rc == 0, capsys.readouterr().err


def test_cli_non_finite_strength_is_a_clean_error(capsys, tiny_cli, tiny_vector_file):
    for value in ("nan", "inf"):
        rc = tiny_cli(
            ["generate", "hi", "--vector", str(tiny_vector_file), "--strength", value, "--max-new-tokens", "2"]
        )
        assert_clean_error(rc, capsys.readouterr().err, f"strength must be a finite number, got {value}")


def test_app_strength_slider_is_bounded(app_env):
    import gradio as gr

    for scale, (lo, hi, _step) in app_env.STRENGTH_RANGE.items():
        assert hi <= SANE_STRENGTH[scale]  # the slider never reaches the "expect broken text" zone
        assert app_env.strength_slider(scale, 1e9).value == hi
        assert app_env.strength_slider(scale, -1e9).value == lo
    slider = next(b for b in app_env.demo.blocks.values() if getattr(b, "elem_id", None) == "strength")
    with pytest.raises(gr.Error, match="greater than maximum value"):  # an API call past the range
        slider.preprocess(1000.0)


def test_app_nan_strength_is_a_gradio_error(app_env, tiny_vector_file, tiny_qwen2):
    import gradio as gr

    with pytest.raises(gr.Error, match="strength must be a finite number"):
        list(chat_in_app(app_env, "hi", tiny_vector_file, strength=math.nan))
    assert hooks_left(tiny_qwen2.model) == 0


# ------------------------------------------------------------------------------- unknown model id offline


def test_cli_unknown_model_offline_is_a_clean_error(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: set the constant it already derived too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "v.pt"
    spec = "nobody-at-all-xyz/no-such-model-123"
    rc = cli.main(["extract", "--model", spec, "--data", "en", "--max-pairs", "4", "--out", str(out)])
    assert_clean_error(rc, capsys.readouterr().err, f"error: could not load model '{spec}'", "hub")
    assert not out.exists()


def test_app_unknown_model_offline_is_a_status_message(app_env, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = "nobody-at-all-xyz/no-such-model-123"
    with pytest.warns(UserWarning, match="could not load model"):
        status, *_ = app_env.on_load_model(spec, [], progress=no_progress)
    assert status.startswith(f"⚠ could not load model '{spec}'")
    assert status.endswith(app_env.model_status(app_env.HOLDER.loaded))  # and says which model is loaded now


def test_app_failed_load_brings_the_previous_model_back(app_env, monkeypatch):
    previous = app_env.HOLDER.loaded
    calls = []

    def fake_load(spec, *args, **kwargs):
        calls.append(spec)
        if spec == "broken/model":
            raise models.ModelLoadError("could not load model 'broken/model': offline")
        return previous

    monkeypatch.setattr(session, "load_model", fake_load)
    monkeypatch.setattr(session, "check_loadable", lambda spec: None)
    with pytest.raises(models.ModelLoadError):
        app_env.HOLDER.load("broken/model")
    assert calls == ["broken/model", previous.spec]
    assert app_env.HOLDER.loaded is previous


def test_refusal_classes_reach_the_cli_error_path():
    """The CLI's `error: ...` path catches ValueError: every refusal class above must be one."""
    assert issubclass(DatasetError, ValueError) and issubclass(VectorFileError, ValueError)
    assert issubclass(models.ModelLoadError, RuntimeError)
