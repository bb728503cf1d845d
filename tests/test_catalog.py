"""steering.catalog: which vector files the app lists, opens and keeps for a user, and the upload folders it
removes. Runs on the tiny random Qwen2 model (hidden 64, 4 layers) from conftest."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from steering import catalog as catalog_module
from steering.catalog import EXTRACT_PREFIX, UPLOAD_PREFIX, VectorCatalog, preferred_vector
from steering.messages import Message, localized
from steering.vector_files import load_vector, save_vector
from steering.vectors import SteeringVector, VectorFileError
from tests.helpers import has_japanese


def unit_vector(hidden: int = 64, layers=(1, 2), **meta) -> SteeringVector:
    directions = {layer: torch.ones(hidden) / hidden**0.5 for layer in layers}
    stats = {layer: {"mean_diff_norm": 2.0} for layer in layers}
    return SteeringVector(directions, {"model": "tiny-qwen2", "lang": "en", **meta}, stats)


@pytest.fixture
def uploads_tmp(tmp_path, monkeypatch) -> Path:
    """The temporary directory uploads are copied under, private to this test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def catalog(tmp_path) -> VectorCatalog:
    """A vectors folder with one fitting vector, two for other models, a broken file and a non-vector file."""
    folder = tmp_path / "vectors"
    save_vector(unit_vector(), folder / "fits.pt")
    save_vector(unit_vector(hidden=128), folder / "wide.pt")
    save_vector(unit_vector(layers=(1, 9)), folder / "deep.pt")
    (folder / "broken.pt").write_bytes(b"not a torch file")
    (folder / "notes.txt").write_text("not a vector", encoding="utf-8")
    return VectorCatalog(folder)


def upload_file(tmp_path: Path, name: str, **kwargs) -> str:
    """A vector file as a browser upload would hand it over: somewhere outside the vectors folder."""
    return str(save_vector(unit_vector(**kwargs), tmp_path / "incoming" / name))


def test_lists_only_the_vectors_that_fit_the_model(catalog, tiny_qwen2):
    choices, skipped, metas = catalog.fitting(tiny_qwen2, [])
    assert choices == [("fits.pt", str(catalog.folder / "fits.pt"))]
    assert set(metas) == {str(catalog.folder / "fits.pt")}
    assert sorted(reason.split(":")[0] for reason in skipped) == ["broken.pt", "deep.pt", "wide.pt"]
    assert any("hidden size 128 does not fit tiny-qwen2" in reason for reason in skipped)
    assert not any("notes.txt" in reason for reason in skipped)  # not a vector suffix: never even opened


def test_listing_labels_uploads_and_keeps_a_fitting_selection(catalog, tiny_qwen2, tmp_path):
    upload = upload_file(tmp_path, "mine.pt")
    listing = catalog.listing(tiny_qwen2, [upload], selected=upload)
    assert listing.choices == [("fits.pt", str(catalog.folder / "fits.pt")), ("⬆ mine.pt (upload)", upload)]
    assert listing.value == upload
    assert listing.note.startswith("2 vectors fit tiny-qwen2; 3 skipped (other model or unreadable): ")
    assert localized(listing.note, "ja").startswith("tiny-qwen2 に合うベクトル: 2 件。3 件は除外（")
    assert "tiny-qwen2（4 レイヤー）にありません" in localized(listing.note, "ja")  # a reason, in Japanese
    # a selection that is not listed falls back to the preferred vector
    assert catalog.listing(tiny_qwen2, [], selected=upload).value == str(catalog.folder / "fits.pt")


def test_listing_labels_in_the_page_language(catalog, tiny_qwen2, tmp_path, uploads_tmp):
    upload, mine = upload_file(tmp_path, "mine.pt"), extract_into(catalog, "made")
    english = catalog.listing(tiny_qwen2, [upload, mine], selected=upload)
    japanese = catalog.listing(tiny_qwen2, [upload, mine], selected=upload, ui_lang="ja")
    assert english.choices == [
        ("fits.pt", str(catalog.folder / "fits.pt")),
        ("⬆ mine.pt (upload)", upload),
        ("✎ made.pt (this session)", mine),
    ]
    assert japanese.choices == [
        ("fits.pt", str(catalog.folder / "fits.pt")),
        ("⬆ mine.pt（アップロード）", upload),
        ("✎ made.pt（このセッション）", mine),
    ]
    assert not any(has_japanese(label) for label, _ in english.choices)
    assert japanese.value == english.value == upload
    assert japanese.note == english.note and isinstance(japanese.note, Message)  # the note: either language
    assert has_japanese(localized(japanese.note, "ja")) and not has_japanese(japanese.note)
    assert catalog.fitting(tiny_qwen2, [mine], "ja")[0][-1] == ("✎ made.pt（このセッション）", mine)


def test_a_missing_reader_package_is_a_bilingual_refusal(catalog, tiny_qwen2, monkeypatch, uploads_tmp):
    """An ImportError while loading (a format whose reader is not installed) never escapes as one."""
    shared = str(catalog.folder / "fits.pt")

    def no_reader(path):
        raise ImportError("No module named 'gguf'")

    monkeypatch.setattr(catalog_module.FILES, "load", no_reader)
    with pytest.raises(VectorFileError, match="a Python package its format needs is missing") as info:
        catalog.open(shared, [])
    assert "No module named 'gguf'" in str(info.value) and not has_japanese(str(info.value))
    assert "この形式に必要な Python パッケージがありません" in localized(info.value, "ja")
    listing = catalog.listing(tiny_qwen2, [])
    assert listing.choices == [] and "fits.pt: " in listing.note
    assert "Python パッケージがありません" in localized(listing.note, "ja")


def test_a_missing_gguf_package_refuses_an_upload_in_either_language(tiny_qwen2, tmp_path, monkeypatch, uploads_tmp):
    from steering.interop import export_gguf

    gguf = export_gguf(unit_vector(layers=(1, 2)), tmp_path / "incoming" / "cv.gguf")
    catalog = VectorCatalog(tmp_path / "vectors")
    monkeypatch.setitem(sys.modules, "gguf", None)
    added, (refused,) = catalog.add_uploads([str(gguf)], tiny_qwen2)
    assert added == [] and "need the Python package gguf" in refused and not has_japanese(refused)
    assert "Python パッケージ gguf が必要ですが" in localized(refused, "ja")


def test_an_empty_or_missing_folder_lists_nothing(tmp_path, tiny_qwen2):
    listing = VectorCatalog(tmp_path / "no-such-folder").listing(tiny_qwen2, [])
    assert (listing.choices, listing.value) == ([], None)
    assert listing.note == "0 vectors fit tiny-qwen2"


def test_open_reads_only_listed_files(catalog, tmp_path):
    assert catalog.open(str(catalog.folder / "fits.pt"), []).layers == [1, 2]
    stranger = upload_file(tmp_path, "stranger.pt")
    with pytest.raises(ValueError, match="unknown vector"):
        catalog.open(stranger, [])
    assert catalog.open(stranger, [stranger]).layers == [1, 2]  # once it is this user's upload
    with pytest.raises(ValueError, match="pick a vector first"):
        catalog.open(None, [])
    with pytest.raises(VectorFileError):
        catalog.open(str(catalog.folder / "broken.pt"), [])


def test_preferred_vector_is_recommended_and_in_the_models_language(tmp_path):
    metas = {}
    for age, (name, meta) in enumerate(
        [
            ("newest_without", {"lang": "en"}),
            ("older_without", {"lang": "en"}),
            ("ja_recommended", {"lang": "ja", "recommended": {"layers": [1], "strength": 1.0}}),
            ("en_recommended", {"lang": "en", "recommended": {"layers": [1], "strength": 1.0}}),
        ]
    ):
        path = save_vector(unit_vector(**meta), tmp_path / f"{name}.pt")
        os.utime(path, (2_000_000_000 - age, 2_000_000_000 - age))  # listed newest first
        metas[str(path)] = load_vector(path).meta  # as fitting() hands them over
    ja, en, newest, older = (
        str(tmp_path / f"{n}.pt") for n in ("ja_recommended", "en_recommended", "newest_without", "older_without")
    )
    bundled, qwen = SimpleNamespace(spec="bundled"), SimpleNamespace(spec="Qwen/Qwen2.5-7B-Instruct")
    assert preferred_vector(bundled, metas) == en
    assert preferred_vector(qwen, metas) == ja
    assert preferred_vector(bundled, {p: metas[p] for p in (older, newest)}) == newest
    assert preferred_vector(bundled, {}) is None


def test_an_upload_that_fits_is_kept_with_its_sidecar_until_discarded(catalog, tiny_qwen2, tmp_path, uploads_tmp):
    upload = Path(upload_file(tmp_path, "mine.pt"))
    added, refused = catalog.add_uploads([str(upload), str(upload.with_suffix(".json"))], tiny_qwen2)
    assert refused == [] and len(added) == 1
    copy = Path(added[0])
    assert copy.name == "mine.pt" and copy.parent.parent == uploads_tmp and copy.parent.name.startswith(UPLOAD_PREFIX)
    assert copy.with_suffix(".json").exists()  # the sidecar travels with the .pt
    assert catalog.open(str(copy), added).calibrated
    catalog.discard(added)
    assert list(uploads_tmp.iterdir()) == []
    assert upload.exists()  # the original is never touched


def test_an_upload_with_nothing_that_fits_leaves_no_folder(catalog, tiny_qwen2, tmp_path, uploads_tmp):
    wide = upload_file(tmp_path, "wide.pt", hidden=128)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"")
    added, refused = catalog.add_uploads([wide, str(junk)], tiny_qwen2)
    assert added == [] and len(refused) == 2
    assert any("hidden size 128 does not fit tiny-qwen2" in message for message in refused)
    assert any("隠れ層のサイズ 128 が tiny-qwen2" in localized(message, "ja") for message in refused)
    assert list(uploads_tmp.iterdir()) == []


def test_an_upload_over_the_size_limit_is_refused_before_copying(tmp_path, tiny_qwen2, uploads_tmp):
    big = tmp_path / "huge.pt"
    with open(big, "wb") as f:  # sparse: no disk space used
        f.truncate((1 << 20) + 1)
    with pytest.raises(ValueError, match=r"^huge\.pt: larger than 1 MB$"):
        VectorCatalog(tmp_path / "vectors", max_upload_mb=1).add_uploads([str(big)], tiny_qwen2)
    assert list(uploads_tmp.iterdir()) == []


def test_discard_removes_only_folders_the_catalog_made(catalog, tiny_qwen2, tmp_path, uploads_tmp):
    mine = catalog.add_uploads([upload_file(tmp_path, "a.pt")], tiny_qwen2)[0]
    other = VectorCatalog(catalog.folder).add_uploads([upload_file(tmp_path, "b.pt")], tiny_qwen2)[0]
    catalog.discard([str(catalog.folder / "fits.pt"), *other, "/no/such/upload.pt"])
    assert (catalog.folder / "fits.pt").exists() and Path(other[0]).exists() and Path(mine[0]).exists()
    catalog.discard(None)  # a session that never uploaded
    catalog.close()
    assert not Path(mine[0]).parent.exists() and Path(other[0]).exists()


# ------------------------------------------------------------------------------------------ a session's own vectors


def extract_into(catalog: VectorCatalog, name: str) -> str:
    """What the app's Extract tab does: a new own folder, the vector saved there."""
    return str(save_vector(unit_vector(), catalog.extraction_path(name)))


def test_an_extraction_is_listed_and_opened_only_for_its_session(catalog, tiny_qwen2, uploads_tmp):
    mine = extract_into(catalog, "../../mine")
    assert Path(mine).parent.parent == uploads_tmp and Path(mine).parent.name.startswith(EXTRACT_PREFIX)
    assert Path(mine).name == "mine.pt"  # the name is cleaned: never outside its folder
    listing = catalog.listing(tiny_qwen2, [mine], selected=mine)
    assert ("✎ mine.pt (this session)", mine) in listing.choices and listing.value == mine
    assert mine not in [path for _, path in catalog.listing(tiny_qwen2, []).choices]  # another session
    with pytest.raises(ValueError, match="unknown vector"):
        catalog.open(mine, [])
    assert catalog.open(mine, [mine]).layers == [1, 2]
    assert list(catalog.folder.glob("mine*")) == []  # the shared folder never saw it
    catalog.discard([mine])
    assert list(uploads_tmp.iterdir()) == []


def test_open_refuses_paths_outside_the_folder_the_same_way_whether_or_not_they_exist(catalog, tmp_path):
    messages = []
    for path in (
        "/etc/passwd",
        "/no/such/file.pt",
        str(catalog.folder / ".." / "outside.pt"),
        str(catalog.folder / "notes.txt"),
    ):
        with pytest.raises(ValueError, match="unknown vector") as info:
            catalog.open(path, [])
        messages.append(str(info.value).replace(repr(path), "PATH"))
    assert len(set(messages)) == 1
    with pytest.raises(ValueError, match="unknown vector"):
        catalog.open(["not", "a", "path"], [])


def test_own_folders_expire_after_the_ttl(tmp_path, tiny_qwen2, uploads_tmp):
    import time

    catalog = VectorCatalog(tmp_path / "vectors", ttl_s=60)
    old = extract_into(catalog, "old")
    catalog._own_dirs[Path(old).parent] -= 61  # made 61 s ago
    new = extract_into(catalog, "new")  # a new folder runs the expiry
    assert not Path(old).exists() and Path(new).exists()
    assert catalog.listing(tiny_qwen2, [old, new]).choices == [("✎ new.pt (this session)", new)]  # gone from the list
    assert catalog.expire(time.time() + 61) == [Path(new).parent] and list(uploads_tmp.iterdir()) == []


def test_close_removes_every_own_folder(tmp_path, tiny_qwen2, uploads_tmp):
    catalog = VectorCatalog(tmp_path / "vectors")
    extract_into(catalog, "a")
    catalog.add_uploads([upload_file(tmp_path, "b.pt")], tiny_qwen2)
    assert len(list(uploads_tmp.iterdir())) == 2
    catalog.close()
    assert list(uploads_tmp.iterdir()) == []


def test_publish_copies_an_own_vector_into_the_shared_folder_without_clobbering(catalog, tiny_qwen2, uploads_tmp):
    mine = extract_into(catalog, "fits")  # the shared folder already has fits.pt
    before = (catalog.folder / "fits.pt").read_bytes()
    shared = catalog.publish(mine, [mine])
    assert shared == catalog.folder / "fits-2.pt" and shared.with_suffix(".json").exists()
    assert (catalog.folder / "fits.pt").read_bytes() == before
    assert catalog.open(str(shared), []).calibrated  # every session sees it now
    for bad, own in ((str(catalog.folder / "fits.pt"), []), ("/etc/passwd", []), (None, [mine])):
        with pytest.raises(ValueError, match="your own vectors"):
            catalog.publish(bad, own)
    assert not list(catalog.folder.glob(".*.tmp"))


def test_folders_a_killed_server_left_behind_go_once_older_than_the_ttl(tmp_path, uploads_tmp):
    import time

    stale, fresh = uploads_tmp / f"{EXTRACT_PREFIX}old", uploads_tmp / f"{UPLOAD_PREFIX}new"
    unrelated = uploads_tmp / "someone-elses-old-folder"
    for folder in (stale, fresh, unrelated):
        folder.mkdir()
    long_ago = time.time() - 2 * 3600
    for folder in (stale, unrelated):
        os.utime(folder, (long_ago, long_ago))
    catalog = VectorCatalog(tmp_path / "vectors", ttl_s=3600)
    made = extract_into(catalog, "x")  # the first new folder sweeps
    assert not stale.exists() and fresh.exists() and unrelated.exists() and Path(made).exists()
