"""Crash-safe file writing: every output goes to a uniquely named temporary beside it, then is renamed over it.

A reader never sees a half-written file, a failed write (disk full, an exception in the writer) leaves the old file
byte-for-byte and no temporary behind, and nothing else in the folder is touched — a user's own `NAME.pt.tmp`
included, since each temporary gets a fresh name from `tempfile`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; conversions there are simply not serialized
    fcntl = None

from .messages import Text

TEMP_SUFFIX = ".tmp"

# `what` names the argument ('--out'), `path` the output, `folder` the folder that is wrong.
NOT_A_FOLDER = Text(en="{what} {path}: {folder} is not a folder", ja="{what} {path}: {folder} はフォルダではありません")
IS_A_FOLDER = Text(
    en="{what} {path}: {path} is a folder, not a file", ja="{what} {path}: {path} はフォルダで、ファイルではありません"
)
NOT_WRITABLE = Text(
    en="{what} {path}: {folder} is not writable ({reason})", ja="{what} {path}: {folder} に書き込めません（{reason}）"
)

Writer = Callable[[Path], object]


class DestinationError(ValueError):
    """An output path that cannot be written: its folder is a file, missing its permissions, or not a folder."""


def check_writable_destination(path: str | Path, what: str, folder: bool = False) -> Path:
    """Refuse, before any long work, an output that could never be written; nothing is created.

    `path` is a file to be written (folder=False) or a folder to be filled (folder=True, e.g. a report folder);
    missing folders on the way are fine (the writer makes them) as long as the nearest existing one is a folder
    that takes new files. `what` names the argument in messages: `--out FILE/x.pt: FILE is not a folder`.
    Writability is tested by creating and removing a uniquely named temporary file there (permission bits say
    nothing for root, /proc or a read-only mount).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise DestinationError(NOT_A_FOLDER(what=what, path=path, folder=path))
    if not folder and path.is_dir():
        raise DestinationError(IS_A_FOLDER(what=what, path=path))
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DestinationError(NOT_A_FOLDER(what=what, path=path, folder=existing))
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-check.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise DestinationError(
            NOT_WRITABLE(what=what, path=path, folder=existing, reason=exc.strerror or exc)
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any writer threads exist
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _temp_file_beside(path: Path) -> Path:
    """A new empty file in path's folder with a name no one else has (".NAME.<random>.tmp")."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    os.chmod(name, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); a saved file gets the usual permissions
    return Path(name)


def atomic_write_all(writers: Mapping[str | Path, Writer]) -> list[Path]:
    """Run each `write(tmp)` on its own temporary file, then rename every temporary over its destination.

    All writes finish before the first rename, so one failing write replaces none of the files (a .pt and its
    sidecar stay a matching pair). On any failure the temporaries are removed and the exception goes on.
    """
    temps: dict[Path, Path] = {}
    try:
        for dest, write in writers.items():
            dest = Path(dest)
            temps[dest] = _temp_file_beside(dest)
            write(temps[dest])
        for dest, tmp in temps.items():
            os.replace(tmp, dest)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return list(temps)


def atomic_write(path: str | Path, write: Writer) -> Path:
    """Call `write(tmp)` on a unique temporary file beside `path`, then rename it over `path`."""
    return atomic_write_all({path: write})[0]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def atomic_write_dir(path: str | Path, write: Writer) -> Path:
    """Fill a private temporary folder beside `path` with `write(tmp_dir)`, then rename it to `path`.

    A folder already at `path` is replaced: callers that may race hold a `file_lock` and check for a finished
    result first. On failure the temporary folder is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        write(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # an unfinished leftover (a rename cannot replace a non-empty folder)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextlib.contextmanager
def file_lock(path: str | Path, waiting: Callable[[], object] | None = None) -> Iterator[Path]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the `with` block; waits for others,
    calling `waiting()` first when it has to.

    The lock file itself is left in place: deleting it would let a waiting process lock a file no one else sees.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if fcntl is not None:
            _lock(handle.fileno(), waiting)
        try:
            yield path
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _lock(fd: int, waiting: Callable[[], object] | None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if waiting is not None:
            waiting()
        fcntl.flock(fd, fcntl.LOCK_EX)
