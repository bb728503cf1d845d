"""The vectors a user may pick: the files in one vectors folder plus that user's own uploads, filtered to those that
fit the loaded model. Plain data in and out (paths, (label, path) choices); the UI wraps it in its own widgets.

Uploads are copied into one temporary folder per upload (a .pt keeps its .json sidecar beside it); the catalog
remembers the folders it made and removes them when they are no longer needed: at once when nothing in an upload
fits, else when the user's session is discarded (`discard`) or the catalog is closed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .metadata import VectorMeta
from .models import LoadedModel
from .settings import model_lang
from .vector_files import SUFFIXES, load_vector
from .vectors import SteeringVector, VectorFileError, check_fits

MAX_UPLOAD_MB = 32
UPLOAD_PREFIX = "gyaru-upload-"


@dataclass
class VectorListing:
    """What a vector picker shows: its (label, path) choices, the selected path, and a note on skipped files."""

    choices: list[tuple[str, str]]
    value: str | None
    note: str


def preferred_vector(loaded: LoadedModel, metas: dict[str, VectorMeta]) -> str | None:
    """The vector a page opens with (from {path: meta}): one with a recommended setting, in the language the model
    speaks (English for the bundled model, Japanese otherwise), else the newest file."""
    want = model_lang(loaded.spec)

    def rank(path: str) -> tuple[bool, bool, float]:
        meta = metas[path]
        return meta.recommended is not None, meta.lang == want, Path(path).stat().st_mtime

    return max(metas, key=rank) if metas else None


def _fitting(path: Path, loaded: LoadedModel) -> SteeringVector:
    """The vector at `path`, or VectorFileError/ImportError when it is unreadable or made for another model
    (ImportError: a format whose reader is not installed)."""
    vector = load_vector(path)
    check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)
    return vector


class VectorCatalog:
    """The vectors in `folder` and in uploads; only those files are ever opened."""

    def __init__(self, folder: str | Path, max_upload_mb: int = MAX_UPLOAD_MB):
        self.folder = Path(folder)
        self.max_upload_mb = max_upload_mb
        self._upload_dirs: set[Path] = set()
        self._lock = threading.Lock()  # uploads and discards come from many request threads

    def files(self, uploads: list[str]) -> list[Path]:
        """The vector files in the folder (sorted by name), then the uploads in upload order."""
        folder = self.folder
        found = sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
        return found + [Path(u) for u in uploads]

    def fitting(self, loaded: LoadedModel, uploads: list[str]) -> tuple[list[tuple[str, str]], list[str], dict]:
        """(label, path) of every file that fits the model, the skip reasons, and each fitting file's metadata by
        path."""
        choices, skipped, metas = [], [], {}
        for path in self.files(uploads):
            try:
                vector = _fitting(path, loaded)
            except (VectorFileError, ImportError) as exc:
                skipped.append(f"{path.name}: {exc}")
                continue
            label = path.name if path.parent == self.folder else f"⬆ {path.name} (upload)"
            choices.append((label, str(path)))
            metas[str(path)] = vector.meta
        return choices, skipped, metas

    def listing(self, loaded: LoadedModel, uploads: list[str], selected: str | None = None) -> VectorListing:
        """The picker refreshed for the model: keeps `selected` when it still fits, else the preferred vector."""
        choices, skipped, metas = self.fitting(loaded, uploads)
        value = selected if selected in metas else preferred_vector(loaded, metas)
        note = f"{len(choices)} 件 / vectors fit {loaded.name}"
        if skipped:
            note += f"; {len(skipped)} skipped (other model or unreadable): " + "; ".join(skipped)[:400]
        return VectorListing(choices, value, note)

    def open(self, path: str | None, uploads: list[str]) -> SteeringVector:
        """Load a listed vector. ValueError (VectorFileError for a bad file) names what is wrong."""
        if not path:
            raise ValueError("ベクトルを選んでね / pick a vector first (extract one or upload a file)")
        inside = Path(path).resolve().parent == self.folder.resolve()
        if not inside and path not in uploads:
            raise ValueError(f"unknown vector {path!r}")
        try:
            return load_vector(path)
        except ImportError as exc:  # a format whose reader is not installed
            raise VectorFileError(str(exc)) from None

    def add_uploads(self, files: list[str], loaded: LoadedModel) -> tuple[list[str], list[str]]:
        """Copy uploaded files into a new temporary folder and keep the vectors that fit the model: (their paths,
        one message per refused file). ValueError, before copying anything, for files over the size limit."""
        too_big = [Path(f).name for f in files if os.path.getsize(f) > self.max_upload_mb << 20]
        if too_big:
            raise ValueError(f"{', '.join(too_big)}: larger than {self.max_upload_mb} MB")
        folder = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))  # one folder per upload keeps .pt and .json together
        for f in files:
            shutil.copy(f, folder / Path(f).name)
        added, refused = [], []
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
            try:
                _fitting(path, loaded)
                added.append(str(path))
            except (VectorFileError, ImportError) as exc:
                refused.append(str(exc))
        if added:
            with self._lock:
                self._upload_dirs.add(folder)
        else:  # nothing usable: leave no temporary copies behind
            shutil.rmtree(folder, ignore_errors=True)
        return added, refused

    def discard(self, uploads: list[str] | None) -> None:
        """Remove the temporary folders of these uploads (e.g. when their session ends); other paths are left
        alone."""
        for path in uploads or []:
            folder = Path(path).parent
            with self._lock:
                if folder not in self._upload_dirs:
                    continue
                self._upload_dirs.discard(folder)
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every upload folder this catalog made (at process exit)."""
        with self._lock:
            folders, self._upload_dirs = self._upload_dirs, set()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
