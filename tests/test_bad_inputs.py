"""Bad inputs, end to end: each is answered with one clear message (library exception, CLI `error: ...` with exit
code 2, or a Gradio error/warning in the app) and nothing that already exists is overwritten or lost.

docs/bad_inputs.md is the table these tests back; rows already covered elsewhere point at those tests instead.
Everything here runs on the tiny in-process model (conftest's tiny_qwen2) or fails before any model is loaded, so
the whole file takes seconds. The CLI runs in-process through steering.cli.main with load_model replaced by the
tiny model (the offline hub id sets HF_HUB_OFFLINE in-process, as tests/test_models.py does).
"""

from __future__ import annotations

import html
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
    """The app module with the tiny model as the shared model, an empty temporary vectors/ folder, and the
    sessions' own files (uploads, extractions) under tmp_path/own (removed afterwards)."""
    app = pytest.importorskip("app")
    from steering.catalog import VectorCatalog
    from steering.session import ModelSession

    monkeypatch.setattr(app, "HOLDER", ModelSession(loaded=tiny_qwen2))
    folder = tmp_path / "vectors"
    folder.mkdir()
    catalog = VectorCatalog(folder, scratch=tmp_path / "own")
    monkeypatch.setattr(app, "CATALOG", catalog)
    yield app
    catalog.close()


def no_progress(*args, **kwargs):
    return None


def offered(files) -> list[str]:
    """The names of the files an on_extract download update offers."""
    return [Path(item["orig_name"]).name for item in files.value]


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
    summary, files, _table, _dropdown, _note, own, _help = extract_in_app(
        app_env, big_jsonl, max_pairs=MAX_PAIRS, progress=lambda *args, **kwargs: calls.append((args, kwargs))
    )
    assert f"{MAX_PAIRS} pairs" in summary
    assert calls and calls[-1][0][0] == (2 * MAX_PAIRS, 2 * MAX_PAIRS)
    assert files.visible and offered(files) == ["gyaru.pt", "gyaru.json"]  # the download shows both files
    (saved,) = map(Path, own)  # in this session's own folder; the shared folder stays empty
    assert saved.parent.parent == app_env.CATALOG.scratch and load_vector(saved).meta.pairs == MAX_PAIRS
    assert list(app_env.CATALOG.folder.iterdir()) == []


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


def test_app_extract_with_a_traversal_name_saves_inside_vectors_without_clobbering(app_env, tmp_path, monkeypatch):
    """The name is cleaned into the session's own folder; saving to the shared folder numbers, never clobbers."""
    folder = app_env.CATALOG.folder
    (folder / "evil.pt").write_bytes(b"an older vector")
    summary, files, _table, _dropdown, _note, own, _help = extract_in_app(
        app_env, "en", dataset="en", name="../../evil"
    )
    (saved,) = map(Path, own)
    assert saved.name == "evil.pt" and saved.parent.parent == tmp_path / "own" and "evil.pt" in summary
    assert offered(files) == ["evil.pt", "evil.json"]
    monkeypatch.setattr(app_env.RULES, "shared_saves", True)
    _dropdown, _note = app_env.on_save_shared(str(saved), own)
    assert (folder / "evil-2.pt").exists() and (folder / "evil-2.json").exists()
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
    monkeypatch.setattr(app_env.RULES, "policy", session.ModelPolicy(allow_any=True))  # a server that lets it through
    with pytest.warns(UserWarning, match="could not load model"):
        status, *_ = app_env.on_load_model(spec, [], progress=no_progress)
    status = html.unescape(status)  # markdown: the user's text is escaped
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


# ==================================================================== requests that could crash the shared server
# Each input below used to run for minutes, fill memory, read uninitialised memory or silently do nothing.


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """cli.main in-process: (exit code, stdout, stderr); a usage error comes back as its exit code."""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # (main returns argparse's exit code itself; this only guards a regression)
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def long_text_dataset(path: Path, text: str, field: str = "gyaru") -> Path:
    """Two good (short) pairs, then line 3 whose `field` is `text`."""
    lines = [{"standard": f"A plain sentence {i}.", "gyaru": f"OMG gal sentence {i}!"} for i in (1, 2)]
    lines.append({"standard": "A plain sentence.", "gyaru": "OMG a gal sentence!", field: text})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- 1. text length caps


def test_cli_extract_50mb_line_is_refused_by_characters_before_any_model(tmp_path, capsys, no_model):
    """The 50 MB line that ran 156 s at 6.8 GB before failing to allocate 54 GB: now refused by its length."""
    import time

    from steering.settings import CHARS_PER_TOKEN, MAX_TEXT_TOKENS

    data = long_text_dataset(tmp_path / "huge.jsonl", "x" * (50 << 20), field="standard")
    out = tmp_path / "v.pt"
    t0 = time.perf_counter()
    rc, _, err = run_main(["extract", "--data", str(data), "--out", str(out)], capsys)
    assert time.perf_counter() - t0 < 30
    limit = CHARS_PER_TOKEN * MAX_TEXT_TOKENS
    assert_clean_error(
        rc, err, f'huge.jsonl line 3, field "standard": 52,428,800 characters, over the limit of {limit:,} characters'
    )
    assert not out.exists()


def test_extract_refuses_an_over_long_text_without_tokenizing_it(tmp_path, tiny_qwen2, monkeypatch):
    """The character check comes first (16 per allowed token): the tokenizer never sees the text."""
    from steering import extract as extract_module
    from steering.pipeline import extract_from_dataset

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a text over the character cap was tokenized")

    monkeypatch.setattr(extract_module, "render_reply", no_tokenizing)
    cap = min(64, tiny_qwen2.context_length)
    data = long_text_dataset(tmp_path / "long.jsonl", "y" * (16 * cap + 1))
    with pytest.raises(
        DatasetError, match=r'long\.jsonl line 3, field "gyaru": 1,025 characters, over the limit of 1,024'
    ):
        extract_from_dataset(tiny_qwen2, data, layers="1-2", max_text_tokens=64)


def test_cli_extract_text_over_the_token_cap_names_file_line_and_field(tmp_path, capsys, tiny_cli):
    """Under the character cap but over --max-text-tokens: counted in tokens once the model is there, before it runs."""
    data = long_text_dataset(tmp_path / "pairs.jsonl", "so like " * 12)  # ~25 tokens, 96 characters
    out = tmp_path / "v.pt"
    rc, _, err = run_main(
        ["extract", "--data", str(data), "--layers", "1-2", "--max-text-tokens", "20", "--out", str(out)], capsys
    )
    assert_clean_error(rc, err, 'pairs.jsonl line 3, field "gyaru": ', "tokens, over the limit of 20 tokens per text")
    assert not out.exists()


def test_extract_text_over_the_model_context_is_refused(tmp_path, tiny_qwen2):
    """The model's context caps a text too (the tiny model has 512 positions), whatever max_text_tokens says."""
    from steering.extract import extract
    from steering.pipeline import extract_from_dataset

    long = "word " * 600  # ~600 tokens, 3,000 characters: under 16 × 512 characters
    data = long_text_dataset(tmp_path / "ctx.json", long, field="standard")
    with pytest.raises(
        ValueError, match=r'ctx\.json line 3, field "standard": \d+ tokens, over the limit of 512 tokens'
    ):
        extract_from_dataset(tiny_qwen2, data, layers="1-2", max_text_tokens=4096)
    with pytest.raises(ValueError, match=r"text 4 of 4: \d+ tokens, over the limit of 512 tokens"):  # no labels
        extract(tiny_qwen2, ["a", "b"], ["c", long], layers=[1])


def test_a_single_message_over_the_cap_is_refused_before_tokenizing(tiny_qwen2, monkeypatch):
    """A long conversation is still cut from the left; one message that alone is far over the cap is refused."""
    from steering import generate

    limit = generate.max_message_chars(tiny_qwen2)
    assert limit == 16 * max(tiny_qwen2.context_length, 2048)
    monkeypatch.setattr(generate, "apply_template", lambda *a, **k: pytest.fail("the message was tokenized"))
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "z" * (limit + 1)}]
    with pytest.raises(ValueError, match=rf"message 2 \(assistant\) is {limit + 1:,} characters, over the {limit:,}"):
        generate.prepare_prompt(tiny_qwen2, messages, generate.GenerationSettings(max_new_tokens=2))


def test_cli_prompts_file_line_over_the_cap_is_named(tmp_path, capsys, tiny_cli, tiny_qwen2, tiny_vector_file):
    from steering.generate import max_message_chars

    limit = max_message_chars(tiny_qwen2)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n" + "q" * (limit + 1) + "\n", encoding="utf-8")
    argv = ["generate", "--vector", str(tiny_vector_file), "--scale", "raw", "--max-new-tokens", "2"]
    rc, out, err = run_main([*argv, "--prompts", str(prompts)], capsys)
    assert_clean_error(rc, err, f"prompts.txt line 2: prompt of {limit + 1:,} characters, over the limit of {limit:,}")
    assert out == ""  # refused before the first prompt was answered
    rc, out, err = run_main([*argv, "q" * (limit + 1)], capsys)
    assert_clean_error(rc, err, f"prompt: {limit + 1:,} characters, over the {limit:,}-character limit")
    rc, out, err = run_main([*argv, "hi", "--system", "s" * (limit + 1)], capsys)
    assert_clean_error(rc, err, f"the system prompt is {limit + 1:,} characters, over the {limit:,}-character limit")
    rc, out, err = run_main(
        ["sweep", "--vector", str(tiny_vector_file), "--prompts", str(prompts), "--layers", "1-2", "--strengths", "1"],
        capsys,
    )
    assert_clean_error(rc, err, f"prompts.txt line 2: prompt of {limit + 1:,} characters")


# ------------------------------------------------------------------------ 2. destinations checked before work


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["extract", "--out", "FILE/x.pt"], "--out FILE/x.pt: FILE is not a folder"),
        (["export", "V", "--format", "gguf", "--out", "FILE/y.gguf"], "--out FILE/y.gguf: FILE is not a folder"),
        (["export", "V", "--format", "safetensors", "--out", "FILE/y.safetensors"], "FILE is not a folder"),
        (["sweep", "--vector", "V", "--report", "FILE/"], "--report FILE: FILE is not a folder"),
        (["sweep", "--vector", "V", "--report", "FILE/sub"], "--report FILE/sub: FILE is not a folder"),
        (["compare", "--report", "FILE/"], "--report FILE: FILE is not a folder"),
        (["compare", "--ship", "FILE/"], "--ship FILE: FILE is not a folder"),
    ],
)
def test_cli_unwritable_destination_fails_before_any_model(tmp_path, capsys, monkeypatch, no_model, argv, needle):
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("a user's file", encoding="utf-8")
    save_vector(unit_vector(), tmp_path / "V.pt")
    argv = [str(tmp_path / "V.pt") if a == "V" else a for a in argv]
    rc, _, err = run_main(argv, capsys)
    assert_clean_error(rc, err, needle)
    assert Path("FILE").read_text(encoding="utf-8") == "a user's file"
    assert temp_files_left(tmp_path) == []  # the writability probe is removed


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_cli_out_in_proc_is_not_writable(capsys, no_model):
    """/proc refuses new files even to root (whose permission bits say "writable"): the check really tries."""
    rc, _, err = run_main(["extract", "--max-pairs", "2", "--out", "/proc/x.pt"], capsys)
    assert_clean_error(rc, err, "--out /proc/x.pt: /proc is not writable")


def test_check_writable_destination(tmp_path):
    from steering.files import DestinationError, check_writable_destination

    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert check_writable_destination(tmp_path / "new" / "deeper" / "v.pt", "out") == tmp_path / "new/deeper/v.pt"
    assert not (tmp_path / "new").exists()  # nothing is created
    assert check_writable_destination(tmp_path / "dir", "--report", folder=True) == tmp_path / "dir"
    with pytest.raises(DestinationError, match=r"^--out .*file/x\.pt: .*file is not a folder$"):
        check_writable_destination(tmp_path / "file" / "x.pt", "--out")
    with pytest.raises(DestinationError, match=r"dir is a folder, not a file"):
        check_writable_destination(tmp_path / "dir", "--out")
    with pytest.raises(DestinationError, match=r"file is not a folder"):
        check_writable_destination(tmp_path / "file", "--report", folder=True)
    assert issubclass(DestinationError, ValueError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_save_vector_under_a_file_is_a_clear_error(tmp_path):
    """Library saves run the same check (it used to end in NotADirectoryError or FileExistsError)."""
    (tmp_path / "FILE").write_text("x")
    with pytest.raises(ValueError, match=r"FILE is not a folder"):
        save_vector(unit_vector(), tmp_path / "FILE" / "x.pt")
    with pytest.raises(ValueError, match=r"FILE is not a folder"):
        export_vector(save_vector(unit_vector(), tmp_path / "v.pt"), "gguf", tmp_path / "FILE" / "y.gguf")


# ------------------------------------------------------------------------------------ 3. float32 overflow


def test_strength_beyond_float32_safety_is_refused(tiny_qwen2):
    from steering.settings import MAX_STRENGTH

    vector = unit_vector()
    for bad in (1e39, -1e39, MAX_STRENGTH * 1.01, [0.0, 1e39]):
        with pytest.raises(ValueError, match=r"strength .* is beyond ±10000, the most any strength may be"):
            with steer(tiny_qwen2, Steering(vector, [1, 2], bad, "raw")):
                pass
    with pytest.warns(UserWarning, match="expect broken text"):  # the bound itself is allowed (with the warning)
        with steer(tiny_qwen2, Steering(vector, [1, 2], MAX_STRENGTH, "raw")):
            pass
    assert hooks_left(tiny_qwen2.model) == 0


def test_cli_strength_beyond_float32_safety_fails_before_any_model(capsys, no_model, tiny_vector_file):
    rc, out, err = run_main(["generate", "hi", "--vector", str(tiny_vector_file), "--strength", "1e39"], capsys)
    assert_clean_error(rc, err, "strength 1e+39 is beyond ±10000")
    assert out == ""  # it used to exit 0 with an empty reply
    rc, _, err = run_main(["sweep", "--vector", str(tiny_vector_file), "--strengths", "0,1e39"], capsys)
    assert_clean_error(rc, err, "--strengths: strength '1e39' is beyond ±10000")


@pytest.mark.parametrize(
    "layer_two, needle",
    [
        (torch.zeros(64), "layer 2 has norm 0 (all zeros?): it has no direction"),
        (torch.full((64,), 1e30), "layer 2 holds a value of 1e+30, beyond ±1e+15"),
        (torch.full((64,), 1e-30), "layer 2 has norm 8e-30 (all zeros?)"),
    ],
)
def test_vector_that_would_steer_nothing_or_overflow_is_refused_at_load(tmp_path, capsys, layer_two, needle):
    bad = tmp_path / "bad.pt"
    torch.save({1: torch.ones(64), 2: layer_two}, bad)
    with pytest.raises(VectorFileError, match=re.escape(f"{bad}: {needle}")):
        load_vector(bad)
    rc, _, err = run_main(["info", str(bad)], capsys)
    assert_clean_error(rc, err, "bad.pt: " + needle)
    with pytest.raises(VectorFileError, match=re.escape(needle)):  # and it is never written
        save_vector(SteeringVector({1: torch.ones(64), 2: layer_two}), tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()


def test_in_memory_zero_direction_is_refused_by_steering(tiny_qwen2):
    vector = SteeringVector({1: torch.ones(64), 2: torch.zeros(64)}, {}, {})
    with pytest.raises(ValueError, match=r"layer 2: the vector's direction has norm 0 .* it cannot steer"):
        with steer(tiny_qwen2, Steering(vector, [1, 2], 1.0, "raw")):
            pass
    assert hooks_left(tiny_qwen2.model) == 0


# ----------------------------------------------------------------------------------- 4. unchecked numbers


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["extract", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["extract", "--batch-size", "-1"], "--batch-size must be at least 1, got -1"),
        (["extract", "--batch-size", "2.5"], "--batch-size must be a whole number, got '2.5'"),
        (["extract", "--max-pairs", "0"], "--max-pairs must be at least 1, got 0"),
        (["extract", "--heldout", "1.5"], "--heldout must be less than 1, got 1.5"),
        (["extract", "--heldout", "-0.1"], "--heldout must be at least 0, got -0.1"),
        (["extract", "--heldout", "nan"], "--heldout must be a finite number, got nan"),
        (["extract", "--seed", "-1"], "--seed must be at least 0, got -1"),
        (["extract", "--seed", str(2**63)], f"--seed must be at most 2**63 - 1 ({2**63 - 1}), got {2**63}"),
        (["extract", "--max-text-tokens", "0"], "--max-text-tokens must be at least 1, got 0"),
        (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
        (["generate", "hi", "--max-new-tokens", "-5"], "--max-new-tokens must be at least 1, got -5"),
        (["generate", "hi", "--top-k", "-1"], "--top-k must be at least 0, got -1"),
        (["generate", "hi", "--top-p", "2"], "--top-p must be at most 1, got 2"),
        (["generate", "hi", "--top-p", "0"], "--top-p must be greater than 0, got 0"),
        (["generate", "hi", "--temperature", "-1"], "--temperature must be at least 0, got -1"),
        (["generate", "hi", "--temperature", "inf"], "--temperature must be a finite number, got inf"),
        (["generate", "hi", "--repetition-penalty", "0"], "--repetition-penalty must be greater than 0, got 0"),
        (["generate", "hi", "--half-life", "0"], "--half-life must be greater than 0, got 0"),
        (["generate", "hi", "--seed", str(2**64)], "--seed must be at most 2**63 - 1"),
        (["sweep", "--strengths", ""], "--strengths: empty; write at least one strength"),
        (["sweep", "--layers", ""], "--layers: empty; write at least one layer option"),
        (["sweep", "--max-prompts", "0"], "--max-prompts must be at least 1, got 0"),
        (["sweep", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
        (["compare", "--dev", "0"], "--dev must be at least 1, got 0"),
    ],
)
def test_cli_numbers_out_of_range_are_refused_before_any_model(
    tmp_path, capsys, no_model, tiny_vector_file, argv, needle
):
    command, rest = argv[0], argv[1:]
    required = {
        "extract": ["--max-pairs", "2", "--out", str(tmp_path / "v.pt")],
        "generate": ["--vector", str(tiny_vector_file)],
        "sweep": ["--vector", str(tiny_vector_file)],
        "compare": [],
    }[command]
    rc, out, err = run_main([command, *required, *rest], capsys)  # the bad value comes last: it wins over defaults
    assert_clean_error(rc, err, needle)
    assert out == "" and err.count("\n") == 1  # one line
    assert not (tmp_path / "v.pt").exists()


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("max_new_tokens", math.nan, "max_new_tokens must be a whole number, got nan"),
        ("max_new_tokens", 2.5, "max_new_tokens must be a whole number, got 2.5"),
        ("max_new_tokens", "12", "max_new_tokens must be a whole number, got '12'"),
        ("max_new_tokens", 0, "max_new_tokens must be at least 1, got 0"),
        ("seed", 2**63, "seed must be at most 2**63 - 1"),
        ("seed", -1, "seed must be at least 0, got -1"),
        ("seed", 1.5, "seed must be a whole number, got 1.5"),
        ("top_p", 2.0, "top_p must be at most 1, got 2"),
        ("top_k", -1, "top_k must be at least 0, got -1"),
        ("temperature", math.inf, "temperature must be a finite number, got inf"),
        ("repetition_penalty", -1.0, "repetition_penalty must be greater than 0, got -1"),
    ],
)
def test_generation_settings_refuse_bad_values_naming_the_field(field, value, needle):
    from steering.generate import GenerationSettings

    with pytest.raises(ValueError, match=re.escape(needle)):
        GenerationSettings(**{field: value})
    settings = GenerationSettings()
    setattr(settings, field, value)  # changed after construction: refused when used
    with pytest.raises(ValueError, match=re.escape(needle)):
        settings.generate_kwargs()


def test_generation_settings_accept_whole_floats_and_the_seed_bounds():
    from steering.generate import GenerationSettings

    settings = GenerationSettings(max_new_tokens=64.0, seed=2**63 - 1, top_k=50.0)  # a UI slider's floats
    assert settings.max_new_tokens == 64 and isinstance(settings.max_new_tokens, int) and settings.top_k == 50
    assert GenerationSettings(seed=0).seed == 0 and GenerationSettings(seed=None).seed is None


@pytest.mark.parametrize("batch_size", [0, -1])
def test_library_batch_size_below_one_is_refused(tiny_qwen2, batch_size):
    """-1 used to skip every batch and return torch.empty's uninitialised memory as 'hidden states'."""
    from steering.capture import capture
    from steering.extract import extract

    with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {batch_size}"):
        capture(tiny_qwen2, ["a", "b"], [1], batch_size=batch_size)
    with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {batch_size}"):
        extract(tiny_qwen2, ["a", "b"], ["c", "d"], layers=[1], batch_size=batch_size)


def test_library_max_pairs_zero_is_refused(tiny_qwen2):
    """max_pairs=0 used to mean 'every pair' (0 or None)."""
    from steering.pipeline import extract_from_dataset

    with pytest.raises(ValueError, match="max_pairs must be at least 1 .*got 0"):
        extract_from_dataset(tiny_qwen2, "en", max_pairs=0)


def test_sidecar_with_a_string_recommended_strength_is_refused(tmp_path, capsys):
    """Already a clear error (tests/test_metadata.py covers the metadata side): the CLI says which file and field."""
    path = save_vector(unit_vector(), tmp_path / "v.pt")
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    meta["recommended"] = {"layers": "1-2", "strength": "4"}
    sidecar_path(path).write_text(json.dumps(meta), encoding="utf-8")
    rc, _, err = run_main(["info", str(path)], capsys)
    assert_clean_error(rc, err, "v.json", "recommended.strength")


# --------------------------------------------------------------------- 5. random bytes vs a pickle payload


@pytest.mark.parametrize(
    "content", [b"not a torch file at all", bytes(range(7, 256)) * 4, b"\x00" * 64], ids=["text", "random", "zeros"]
)
def test_random_bytes_are_not_a_torch_file_not_a_pickle_payload(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(VectorFileError, match=r"junk\.pt: not a torch file \(it starts with bytes [0-9a-f ]+, neither"):
        load_vector(path)


def test_bytes_that_only_look_like_torch_are_corrupt_not_a_payload(tmp_path):
    """A zip or pickle magic number followed by garbage: damaged, and said so (not 'a pickle payload')."""
    for name, content in (
        ("zip.pt", b"PK\x03\x04" + bytes(range(256))),
        ("pickle.pt", b"\x80\x02" + bytes(range(7, 107))),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(VectorFileError, match=r"not a readable torch file \(truncated or corrupt\?\)") as info:
            load_vector(path)
        assert "pickle payload" not in str(info.value) and "weights_only" not in str(info.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_real_pickle_payload_is_still_refused(tmp_path, legacy):
    import pickle

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    if legacy:  # a bare pickle stream, as torch wrote before 1.6 (starts with b"\x80")
        evil.write_bytes(pickle.dumps({1: Payload(marker)}, protocol=2))
    else:  # torch.save's zip archive (starts with b"PK\x03\x04")
        torch.save({1: torch.ones(64), 2: Payload(marker)}, evil)
    with pytest.raises(VectorFileError, match=r"refused — .*a pickle payload could run code"):
        load_vector(evil)
    assert not marker.exists()


def test_a_legacy_torch_file_still_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({1: torch.ones(64), 2: -torch.ones(64)}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    assert load_vector(path).layers == [1, 2]


# --------------------------------------------------------------------------------------- 6. temporary files


def test_users_own_tmp_files_survive_every_write(tmp_path, capsys):
    """A user's mine.pt.tmp, mine.json.tmp, mine.gguf.tmp and mine.safetensors.tmp beside the outputs survive a
    save, an export (CLI too), an overwrite and a failed write; no temporary of ours is left."""
    own = {
        tmp_path / f"mine.{suffix}.tmp": f"user {suffix}".encode() for suffix in ("pt", "json", "gguf", "safetensors")
    }
    for path, data in own.items():
        path.write_bytes(data)
    pt = save_vector(unit_vector(), tmp_path / "mine.pt")
    save_vector(unit_vector(seed=1), pt, overwrite=True)
    export_vector(pt, "gguf", tmp_path / "mine.gguf")
    rc, _, err = run_main(
        ["export", str(pt), "--format", "safetensors", "--out", str(tmp_path / "mine.safetensors")], capsys
    )
    assert rc == 0, err
    with pytest.raises(VectorFileError):  # a failed save (NaN) writes nothing
        save_vector(nan_vector(), pt, overwrite=True)
    for path, data in own.items():
        assert path.read_bytes() == data, path.name
    ours = [p.name for p in temp_files_left(tmp_path) if p not in own]
    assert ours == []
