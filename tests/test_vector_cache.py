"""vector_cache.py: a vector file is read once until it (or its sidecar) changes; every caller gets its own copy."""

from __future__ import annotations

import os

import pytest
import torch

from steering.vector_cache import VectorFileCache
from steering.vector_files import load_vector, save_vector, sidecar_path
from steering.vectors import VectorFileError
from tests.helpers import random_steering_vector


@pytest.fixture
def saved(tmp_path):
    return save_vector(random_steering_vector(seed=1), tmp_path / "v.pt")


def test_an_unchanged_file_is_read_once_and_gives_the_same_vector(saved):
    cache = VectorFileCache(load_vector)
    first, second = cache.read(saved), cache.read(str(saved))
    assert cache.reads == 1
    assert first.layers == second.layers and first.meta == second.meta and first.path == second.path
    assert all(torch.equal(first.directions[k], second.directions[k]) for k in first.layers)


def test_each_caller_gets_its_own_copy(saved):
    cache = VectorFileCache(load_vector)
    mine = cache.read(saved)
    mine.directions[mine.layers[0]].mul_(-1)
    mine.meta.dataset = "changed by one caller"
    del mine.directions[mine.layers[-1]]
    theirs = cache.read(saved)
    fresh = load_vector(saved)
    assert theirs.layers == fresh.layers and theirs.meta.dataset == fresh.meta.dataset
    assert all(torch.equal(theirs.directions[k], fresh.directions[k]) for k in fresh.layers)


def test_a_rewritten_file_is_read_again(saved):
    cache = VectorFileCache(load_vector)
    before = cache.read(saved)
    save_vector(random_steering_vector(seed=2), saved, overwrite=True)
    after = cache.read(saved)
    assert cache.reads == 2
    assert not torch.equal(after.directions[1], before.directions[1])
    assert torch.equal(after.directions[1], load_vector(saved).directions[1])


def test_a_changed_or_removed_sidecar_is_read_again(saved):
    cache = VectorFileCache(load_vector)
    assert cache.read(saved).meta.hidden_size == 64
    sidecar = sidecar_path(saved)
    stat = os.stat(saved)
    sidecar.unlink()
    os.utime(saved, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the .pt itself looks untouched
    assert cache.read(saved).meta.is_empty and cache.reads == 2


def test_a_file_that_fails_to_load_is_not_kept(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a vector")
    cache = VectorFileCache(load_vector)
    for _ in range(2):
        with pytest.raises(VectorFileError):
            cache.read(bad)
    assert cache.reads == 0


def test_the_least_recently_read_file_goes_beyond_max_files(tmp_path):
    paths = [save_vector(random_steering_vector(seed=i), tmp_path / f"v{i}.pt") for i in range(3)]
    cache = VectorFileCache(load_vector, max_files=2)
    for path in (paths[0], paths[1], paths[0], paths[2]):  # v1 is now the least recent
        cache.read(path)
    assert cache.reads == 3
    cache.read(paths[0])
    assert cache.reads == 3
    cache.read(paths[1])
    assert cache.reads == 4
