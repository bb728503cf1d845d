"""Vector files already read, kept by the state of the file and its sidecar: a chat turn (or a listing) does not read,
unpickle and check the same file again. Reading the bundled model's .pt costs about 7 ms of CPU, under the GIL, on
every turn of every user; eight users sending their turns together made that 60 ms of delay before their shared
prefill.

A file whose size, modification time or inode changed, or whose sidecar did (appeared, changed, went), is read
again. Each caller gets its own deep copy (0.6 ms for the bundled model's vector), so nothing one caller does to
its vector reaches another.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .vector_files import sidecar_path
from .vectors import SteeringVector

MAX_FILES = 64  # vectors kept; the least recently read goes first


def file_state(path: Path) -> tuple[int, int, int] | None:
    """(modification time in ns, size, inode) of the file at `path`, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class VectorFileCache:
    """`read(path)`: `load(path)`'s vector, read again only when the file or its sidecar changed. Thread-safe."""

    def __init__(self, load: Callable[[Path], SteeringVector], max_files: int = MAX_FILES):
        self.load, self.max_files = load, max_files
        self.reads = 0  # files actually read (the rest were served from the cache)
        self._kept: OrderedDict[str, tuple[tuple, SteeringVector]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: str | Path) -> SteeringVector:
        path = Path(path)
        state = (file_state(path), file_state(sidecar_path(path)))
        key = str(path)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == state:
                self._kept.move_to_end(key)
                return copy.deepcopy(kept[1])
        vector = self.load(path)  # a bad file raises here, and nothing is kept
        with self._lock:
            self.reads += 1
            self._kept[key] = (state, vector)
            self._kept.move_to_end(key)
            while len(self._kept) > self.max_files:
                self._kept.popitem(last=False)
        return copy.deepcopy(vector)
