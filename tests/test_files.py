"""steering.files: atomic writes through unique temporaries beside the target, folders, and the file lock."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from steering.files import (
    atomic_write,
    atomic_write_all,
    atomic_write_bytes,
    atomic_write_dir,
    atomic_write_text,
    file_lock,
)


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "out.json"
    assert atomic_write_text(target, "ギャル") == target
    assert target.read_text(encoding="utf-8") == "ギャル"
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == ["out.json"]


def test_the_temporary_is_beside_the_target_and_unique(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.exists() and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")

    atomic_write(tmp_path / "a.pt", write)
    atomic_write(tmp_path / "a.pt", write)
    assert seen[0] != seen[1]
    assert names(tmp_path) == ["a.pt"]


@pytest.mark.parametrize("name", ["mine.pt", "NAME.json", "NAME.gguf", "NAME.safetensors", "report.csv"])
def test_users_own_tmp_file_survives(tmp_path, name):
    """The old writers used NAME.tmp / NAME.pt.tmp as a fixed temporary and clobbered a user's file of that name."""
    own = {tmp_path / f"{name}.tmp": b"user's own", tmp_path / f"{name.rsplit('.', 1)[0]}.tmp": b"also mine"}
    for path, data in own.items():
        path.write_bytes(data)
    atomic_write_bytes(tmp_path / name, b"result")
    assert {p: p.read_bytes() for p in own} == own
    assert (tmp_path / name).read_bytes() == b"result"


def test_failure_removes_the_temporary_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "v.gguf"
    target.write_bytes(b"old")
    (tmp_path / "v.gguf.tmp").write_bytes(b"user's own")

    def half_write(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["v.gguf", "v.gguf.tmp"]
    assert (tmp_path / "v.gguf.tmp").read_bytes() == b"user's own"


def test_failure_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "new.pt", lambda tmp: (_ for _ in ()).throw(ValueError("bad")))
    assert names(tmp_path) == []


def test_write_all_replaces_none_when_one_write_fails(tmp_path):
    pt, side = tmp_path / "v.pt", tmp_path / "v.json"
    pt.write_bytes(b"old pt")
    side.write_bytes(b"old json")

    def fail(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_all({pt: lambda tmp: tmp.write_bytes(b"new pt"), side: fail})
    assert pt.read_bytes() == b"old pt" and side.read_bytes() == b"old json"
    assert names(tmp_path) == ["v.json", "v.pt"]
    assert atomic_write_all({pt: lambda tmp: tmp.write_bytes(b"1"), side: lambda tmp: tmp.write_bytes(b"2")}) == [
        pt,
        side,
    ]
    assert (pt.read_bytes(), side.read_bytes()) == (b"1", b"2")


def test_written_files_get_the_usual_permissions(tmp_path):
    """mkstemp makes private 0600 files; a saved vector or report is as readable as any file the user makes."""
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write_bytes(tmp_path / "v.pt", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    folder = atomic_write_dir(tmp_path / "model", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask


def test_write_dir(tmp_path):
    (tmp_path / "model.tmp").mkdir()  # a user's folder with the name the old conversion used for its temporary
    (tmp_path / "model.tmp" / "keep").write_text("mine")
    out = atomic_write_dir(tmp_path / "model", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert names(out) == ["config.json"]
    assert (tmp_path / "model.tmp" / "keep").read_text() == "mine"
    atomic_write_dir(out, lambda tmp: (tmp / "model.safetensors").write_bytes(b"w"))  # replaces a leftover
    assert names(out) == ["model.safetensors"]
    assert names(tmp_path) == ["model", "model.tmp"]


def test_failed_write_dir_leaves_no_folder(tmp_path):
    def fail(tmp):
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        atomic_write_dir(tmp_path / "model", fail)
    assert names(tmp_path) == []


@pytest.mark.skipif(os.name == "nt", reason="no advisory file locks on Windows")
def test_file_lock_serializes_and_says_when_it_waits(tmp_path):
    lock = tmp_path / "x.lock"
    order, waited = [], []

    def worker(name):
        with file_lock(lock, waiting=lambda: waited.append(name)):
            order.append(f"{name} in")
            time.sleep(0.2)
            order.append(f"{name} out")

    with file_lock(lock):
        thread = threading.Thread(target=worker, args=("b",))
        thread.start()
        time.sleep(0.2)
        order.append("a out")
    thread.join(timeout=10)
    assert order == ["a out", "b in", "b out"]
    assert waited == ["b"]
    assert lock.exists()  # left in place on purpose
