"""The vectors a user may pick: the files in one shared vectors folder plus that user's own files (uploads and the
vectors they extracted), filtered to those that fit the loaded model. Plain data in and out (paths, (label, path)
choices); the UI wraps it in its own widgets.

Own files live in the server's temporary directory, one folder per upload or extraction (a .pt keeps its .json
sidecar beside it), and are listed and opened only for the session that holds their paths. The catalog remembers
each folder it made and removes it when it is no longer needed: at once when nothing in an upload fits or an
extraction fails, when the user's session is discarded (`discard`), `ttl_s` seconds after it was made at the latest
(`expire`, run on every new folder and listing), or when the catalog is closed (process exit). Folders an earlier
run left behind (a killed server) go with the first new folder once they are older than `ttl_s`. `publish` copies
an own vector into the shared folder, for servers that allow it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .files import atomic_write_all
from .messages import Message, Text, localized, rendered
from .metadata import VectorMeta
from .models import LoadedModel
from .settings import model_lang
from .vector_cache import VectorFileCache
from .vector_files import SUFFIXES, load_vector, sidecar_path, unique_path
from .vectors import SteeringVector, VectorFileError, check_fits

MAX_UPLOAD_MB = 32
UPLOAD_PREFIX = "gyaru-upload-"
EXTRACT_PREFIX = "gyaru-extract-"
SESSION_TTL_S = 24 * 3600  # the longest an upload or extracted vector is kept (its session may end sooner)

PICK_A_VECTOR = Text(
    en="pick a vector first (extract one or upload a file)",
    ja="先にベクトルを選んでください（抽出するか、ファイルをアップロードしてください）",
)
UNKNOWN_VECTOR = Text(
    en="unknown vector {path!r}: pick one from the list",
    ja="ベクトル {path!r} は一覧にありません: 一覧から選んでください",
)
TOO_BIG = Text(en="{names}: larger than {limit} MB", ja="{names}: {limit} MB を超えています")
VECTORS_FIT = Text(en="{count} vectors fit {model}", ja="{model} に合うベクトル: {count} 件")
ONE_VECTOR_FITS = Text(en="1 vector fits {model}", ja="{model} に合うベクトル: 1 件")
SKIPPED = Text(
    en="; {count} skipped (other model or unreadable): {reasons}",
    ja="。{count} 件は除外（別のモデル用か、読めないファイル）: {reasons}",
)
OWN_EXTRACTION = Text(en="✎ {name} (this session)", ja="✎ {name}（このセッション）")
OWN_UPLOAD = Text(en="⬆ {name} (upload)", ja="⬆ {name}（アップロード）")
READER_MISSING = Text(
    en="{path}: cannot be read here: a Python package its format needs is missing ({reason})",
    ja="{path}: ここでは読めません: この形式に必要な Python パッケージがありません（{reason}）",
)
PUBLISH_OWN_ONLY = Text(
    en="pick one of your own vectors (an upload or an extraction) first",
    ja="共有できるのは自分のベクトルだけです: 先に自分のベクトル（アップロードか抽出したもの）を選んでください",
)


@dataclass
class VectorListing:
    """What a vector picker shows: its (label, path) choices (labels in the listing's language), the selected path,
    and a note on skipped files."""

    choices: list[tuple[str, str]]
    value: str | None
    note: str  # a Message: `localized(note, lang)` says it in the page's language


def preferred_vector(loaded: LoadedModel, metas: dict[str, VectorMeta]) -> str | None:
    """The vector a page opens with (from {path: meta}): one with a recommended setting, in the language the model
    speaks (English for the bundled model, Japanese otherwise), else the newest file."""
    want = model_lang(loaded.spec)

    def rank(path: str) -> tuple[bool, bool, float]:
        meta = metas[path]
        return meta.recommended is not None, meta.lang == want, Path(path).stat().st_mtime

    return max(metas, key=rank) if metas else None


FILES = VectorFileCache(load_vector)  # every catalog's reads: a file unchanged since its last read is not read again


def _load(path: str | Path) -> SteeringVector:
    """load_vector (through FILES), with an ImportError (a format whose reader is not installed) as a VectorFileError
    that says so in either language."""
    try:
        return FILES.read(path)
    except ImportError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise VectorFileError(READER_MISSING(path=path, reason=reason)) from None


def _fitting(path: Path, loaded: LoadedModel) -> SteeringVector:
    """The vector at `path`, or VectorFileError when it is unreadable or made for another model."""
    vector = _load(path)
    check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)
    return vector


class VectorCatalog:
    """The vectors in `folder` and in each session's own files; only those files are ever opened."""

    def __init__(
        self,
        folder: str | Path,
        max_upload_mb: int = MAX_UPLOAD_MB,
        ttl_s: float = SESSION_TTL_S,
        scratch: str | Path | None = None,
    ):
        self.folder = Path(folder)
        self.max_upload_mb = max_upload_mb
        self.ttl_s = ttl_s
        self.scratch = Path(scratch) if scratch is not None else None  # None: the system's temporary directory
        self._own_dirs: dict[Path, float] = {}  # folder -> when it was made (time.time())
        self._lock = threading.Lock()  # uploads, extractions and discards come from many request threads
        self._swept_leftovers = False

    # ------------------------------------------------------------------ listing and opening

    def files(self, own: list[str]) -> list[Path]:
        """The vector files in the folder (sorted by name), then this session's own files still on disk, in the
        order they came."""
        folder = self.folder
        found = sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
        return found + [Path(u) for u in own if Path(u).is_file()]

    def label(self, path: Path, ui_lang: str = "en") -> str:
        """How the picker names a file: a shared one by name, an own one marked (in `ui_lang`) as an upload or this
        session's."""
        if path.parent == self.folder:
            return path.name
        own = OWN_EXTRACTION if path.parent.name.startswith(EXTRACT_PREFIX) else OWN_UPLOAD
        return own.say(ui_lang, name=path.name)

    def fitting(
        self, loaded: LoadedModel, own: list[str], ui_lang: str = "en"
    ) -> tuple[list[tuple[str, str]], list[Message], dict]:
        """(label, path) of every file that fits the model (labels in `ui_lang`), the skip reasons (`FILE: why`, in
        either language), and each fitting file's metadata by path."""
        choices, skipped, metas = [], [], {}
        for path in self.files(own):
            try:
                vector = _fitting(path, loaded)
            except VectorFileError as exc:
                skipped.append(rendered(lambda lang, name=path.name, exc=exc: f"{name}: {localized(exc, lang)}"))
                continue
            choices.append((self.label(path, ui_lang), str(path)))
            metas[str(path)] = vector.meta
        return choices, skipped, metas

    def listing(
        self, loaded: LoadedModel, own: list[str], selected: str | None = None, ui_lang: str = "en"
    ) -> VectorListing:
        """The picker refreshed for the model: keeps `selected` when it still fits, else the preferred vector. The
        choices' labels are in `ui_lang`; the note is a Message (either language)."""
        self.expire()
        choices, skipped, metas = self.fitting(loaded, own, ui_lang)
        value = selected if selected in metas else preferred_vector(loaded, metas)

        def say(lang: str) -> str:
            fit = ONE_VECTOR_FITS if len(choices) == 1 else VECTORS_FIT
            note = fit.say(lang, count=len(choices), model=loaded.name)
            if skipped:
                reasons = "; ".join(localized(reason, lang) for reason in skipped)[:400]
                note += SKIPPED.say(lang, count=len(skipped), reasons=reasons)
            return note

        return VectorListing(choices, value, rendered(say))

    def is_shared(self, path: str | Path) -> bool:
        """Whether `path` names a vector file directly in the shared folder (after resolving `..` and links)."""
        path = Path(path)
        return path.suffix.lower() in SUFFIXES and path.resolve().parent == self.folder.resolve()

    def open(self, path: str | None, own: list[str]) -> SteeringVector:
        """Load a vector from the shared folder or this session's own files. ValueError (VectorFileError for a bad
        file, or one whose format's reader is not installed) names what is wrong; any other path is `unknown
        vector`, whether or not it exists."""
        if not path:
            raise ValueError(PICK_A_VECTOR())
        if not isinstance(path, str) or (path not in (own or []) and not self.is_shared(path)):
            raise ValueError(UNKNOWN_VECTOR(path=str(path)[:200]))
        return _load(path)

    # ------------------------------------------------------------------ own files

    def _new_folder(self, prefix: str) -> Path:
        """A new private folder under the scratch directory, remembered for removal."""
        self.expire()
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        if not self._swept_leftovers:
            self._swept_leftovers = True
            self.remove_leftovers()
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch))
        with self._lock:
            self._own_dirs[folder] = time.time()
        return folder

    def _drop(self, folders) -> None:
        """Forget and remove these folders (only those this catalog made)."""
        with self._lock:
            mine = [folder for folder in folders if self._own_dirs.pop(folder, None) is not None]
        for folder in mine:
            shutil.rmtree(folder, ignore_errors=True)

    def add_uploads(self, files: list[str], loaded: LoadedModel) -> tuple[list[str], list[str]]:
        """Copy uploaded files into a new temporary folder and keep the vectors that fit the model: (their paths,
        one message per refused file, each a Message when the error carried one). ValueError, before copying
        anything, for files over the size limit."""
        too_big = [Path(f).name for f in files if os.path.getsize(f) > self.max_upload_mb << 20]
        if too_big:
            raise ValueError(TOO_BIG(names=", ".join(too_big), limit=self.max_upload_mb))
        folder = self._new_folder(UPLOAD_PREFIX)  # one folder per upload keeps .pt and .json together
        for f in files:
            shutil.copy(f, folder / Path(f).name)
        added, refused = [], []
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
            try:
                _fitting(path, loaded)
                added.append(str(path))
            except VectorFileError as exc:
                refused.append(exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc))
        if not added:  # nothing usable: leave no temporary copies behind
            self._drop([folder])
        return added, refused

    def extraction_path(self, name: str) -> Path:
        """Where a session's new extraction is saved: NAME.pt (a cleaned name) in a new own folder. Pass it to
        `discard` if the extraction fails."""
        return unique_path(self._new_folder(EXTRACT_PREFIX), name)

    def publish(self, path: str | None, own: list[str]) -> Path:
        """Copy one of this session's own vectors (with its .json sidecar) into the shared folder under its own
        name, numbered rather than overwriting anything; the copy is listed to every visitor from then on."""
        if not path or path not in (own or []) or not Path(path).is_file():
            raise ValueError(PUBLISH_OWN_ONLY())
        source = Path(path)
        sources = {source: None}
        if sidecar_path(source).is_file():
            sources[sidecar_path(source)] = None
        with self._lock:  # two publishes never pick the same free name
            self.folder.mkdir(parents=True, exist_ok=True)
            target = unique_path(self.folder, source.stem, suffix=source.suffix)
            writers = {target: _copier(source)}
            if len(sources) > 1:
                writers[sidecar_path(target)] = _copier(sidecar_path(source))
            atomic_write_all(writers)
        return target

    def discard(self, own: list[str] | None) -> None:
        """Remove the folders of these own files (e.g. when their session ends); other paths are left alone."""
        self._drop({Path(path).parent for path in own or []})

    def expire(self, now: float | None = None) -> list[Path]:
        """Remove the own folders made more than ttl_s ago (sessions whose end the server never heard of)."""
        now = time.time() if now is None else now
        with self._lock:
            old = [folder for folder, made in self._own_dirs.items() if now - made > self.ttl_s]
        self._drop(old)
        return old

    def remove_leftovers(self, now: float | None = None) -> list[Path]:
        """Remove own-file folders (by their prefixes) in the scratch directory that no catalog of this process made
        and that were last changed more than ttl_s ago: what a killed server left behind."""
        now = time.time() if now is None else now
        root = self.scratch if self.scratch is not None else Path(tempfile.gettempdir())
        with self._lock:
            mine = set(self._own_dirs)
        old = []
        for folder in root.glob("gyaru-*"):
            try:
                stale = now - folder.stat().st_mtime > self.ttl_s
            except OSError:
                continue
            if (
                folder.name.startswith((UPLOAD_PREFIX, EXTRACT_PREFIX))
                and folder.is_dir()
                and stale
                and folder not in mine
            ):
                shutil.rmtree(folder, ignore_errors=True)
                old.append(folder)
        return old

    def close(self) -> None:
        """Remove every own folder this catalog made (at process exit)."""
        with self._lock:
            folders = list(self._own_dirs)
        self._drop(folders)


def _copier(source: Path):
    return lambda tmp: shutil.copyfile(source, tmp)
