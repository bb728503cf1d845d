"""Vector files on disk: the reference .pt (`{layer: tensor[hidden]}` via torch.save) plus its JSON sidecar, the
format dispatch by suffix (.pt here, .safetensors/.gguf in interop), export between formats, and file naming.

Loading never runs code from a file: .pt goes through torch.load(weights_only=True) and must hold only a dict
of int layers to 1-D float tensors.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from .files import atomic_write_all, check_writable_destination
from .interop import FORMATS, check_export_path, export_gguf, export_safetensors, read_vector
from .messages import Text, composed, localized, rendered
from .metadata import MetadataError, VectorMeta
from .vectors import SteeringVector, VectorFileError, json_safe, validate_directions

SUFFIXES = (".pt", ".safetensors", ".gguf")

EMPTY_FILE = Text(en="{path}: empty (zero-byte) file", ja="{path}: 空のファイルです（0 バイト）")
NOT_TORCH = Text(
    en="{path}: not a torch file (it starts with bytes {head}, neither a zip archive as torch.save writes nor a pickle)",
    ja="{path}: torch のファイルではありません（先頭のバイトが {head} で、torch.save が書く zip でも pickle でもありません）",
)
PICKLE_PAYLOAD = Text(
    en="{path}: refused — the file holds Python objects beyond tensors (a pickle payload could run code); only "
    "{{layer: tensor}} files load",
    ja="{path}: 読み込みを断りました — テンソル以外の Python オブジェクトが入っています（pickle の中身はコードを実行"
    "できます）。読み込めるのは {{layer: tensor}} のファイルだけです",
)
UNREADABLE_TORCH = Text(
    en="{path}: not a readable torch file (truncated or corrupt?): {reason}",
    ja="{path}: torch のファイルとして読めません（途中で切れているか壊れている？）: {reason}",
)
NOT_FOUND = Text(en="vector file not found: {path}", ja="ベクトルファイルが見つかりません: {path}")
UNKNOWN_FORMAT = Text(
    en="{path}: unknown vector format {suffix!r}: expected one of {choices}",
    ja="{path}: ベクトルの形式 {suffix!r} は使えません: {choices} のどれかにしてください",
)
SIDECAR_NOT_OBJECT = Text(
    en="expected a JSON object, got {kind}", ja="JSON オブジェクトにしてください（{kind} でした）"
)
SIDECAR_NOT_JSON = Text(
    en="{path}: sidecar is not valid JSON ({reason}); loading the vector without metadata",
    ja="{path}: サイドカーが正しい JSON ではありません（{reason}）。メタデータなしでベクトルを読み込みます",
)
SAVE_AS_PT = Text(
    en="{path}: vector files are saved as .pt (export other formats with `export`)",
    ja="{path}: ベクトルファイルは .pt で保存します（ほかの形式は `export` で書き出してください）",
)
ALREADY_EXISTS = Text(
    en="{path} already exists; choose another name or pass overwrite=True",
    ja="{path} はもうあります。別の名前にするか overwrite=True を渡してください",
)
UNKNOWN_EXPORT = Text(
    en="unknown export format {fmt!r}: expected one of {choices}",
    ja="書き出し形式 {fmt!r} は使えません: {choices} のどれかにしてください",
)


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


# --------------------------------------------------------------------------------------------------- loading


# How a torch file starts: torch.save writes a zip archive; files from before torch 1.6 (and plain pickle.dump)
# are a pickle stream, whose protocol 2+ opcode is 0x80. Anything else is not a torch file at all.
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"


def _load_pt(path: Path) -> dict:
    if path.stat().st_size == 0:
        raise VectorFileError(EMPTY_FILE(path=path))
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)):
        raise VectorFileError(NOT_TORCH(path=path, head=head.hex(" ")))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        text = str(exc)
        # Only the weights_only unpickler's refusal of a global (a class or function to call) means "a pickle
        # payload"; any other failure (a cut zip, bytes that merely start like a pickle) is a damaged file.
        if "unsupported global" in text.lower():
            raise VectorFileError(PICKLE_PAYLOAD(path=path)) from None
        raise VectorFileError(UNREADABLE_TORCH(path=path, reason=_reason(exc))) from None


def _reason(exc: Exception) -> str:
    """The informative line of a torch.load failure (not its boilerplate about weights_only and filing issues)."""
    boilerplate = ("weights only load failed", "please file an issue", "check the documentation")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.lower().startswith(boilerplate)]
    return ((useful or lines or [type(exc).__name__])[0])[:200]


def load_vector(path: str | Path) -> SteeringVector:
    """Load a vector file (.pt with optional .json sidecar, .safetensors or llama.cpp .gguf)."""
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(NOT_FOUND(path=path))
    suffix = path.suffix.lower()
    if suffix == ".pt":
        directions = validate_directions(_load_pt(path), str(path))
    elif suffix in (".safetensors", ".gguf"):
        raw, meta, stats = read_vector(path)  # meta and stats travel inside the file
        directions = validate_directions(raw, str(path))
    else:
        raise VectorFileError(UNKNOWN_FORMAT(path=path, suffix=suffix, choices=", ".join(SUFFIXES)))
    if suffix == ".pt":
        meta, stats = _load_sidecar(sidecar_path(path))
    return SteeringVector(directions=directions, meta=meta, stats=stats, path=path)


def _load_sidecar(path: Path) -> tuple[VectorMeta, dict[int, dict]]:
    if not path.exists():
        return VectorMeta(), {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(SIDECAR_NOT_OBJECT(kind=type(data).__name__))
        stats = {int(k): v for k, v in data.pop("layers", {}).items()}
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        warnings.warn(composed(SIDECAR_NOT_JSON, path=path, reason=exc), stacklevel=3)
        return VectorMeta(), {}
    try:  # well-formed JSON with a wrong-typed value: refuse rather than steer with a half-read setting
        return VectorMeta.from_dict(data), stats
    except MetadataError as exc:
        raise VectorFileError(rendered(lambda lang, exc=exc: f"{path}: {localized(exc, lang)}")) from None


# --------------------------------------------------------------------------------------------------- saving


def save_preflight(path: str | Path, overwrite: bool = False, what: str = "vector file") -> Path:
    """The checks save_vector makes before writing (.pt suffix, no clobbering, a folder that takes new files), to
    run before any long work; `what` names the argument in messages (the CLI passes '--out')."""
    path = Path(path)
    if path.suffix != ".pt":
        raise VectorFileError(SAVE_AS_PT(path=path))
    if not overwrite and (path.exists() or sidecar_path(path).exists()):
        raise VectorFileError(ALREADY_EXISTS(path=path))
    check_writable_destination(path, what)
    check_writable_destination(sidecar_path(path), what)  # a folder squatting on NAME.json
    return path


def save_vector(vector: SteeringVector, path: str | Path, overwrite: bool = False) -> Path:
    """Write NAME.pt (reference format, int keys, float32) and NAME.json; refuses to clobber unless asked.

    Refuses (writing nothing) directions that load_vector would refuse: NaN/inf values, mixed sizes, non-1-D.
    """
    path = save_preflight(path, overwrite)
    validate_directions(vector.directions, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = replace(
        vector.meta,
        hidden_size=vector.hidden_size,
        vector_layers=vector.layers,
        library_version=__version__,
        created=vector.meta.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    tensors = {int(k): v.detach().float().cpu().contiguous() for k, v in vector.directions.items()}
    sidecar = json.dumps(json_safe({**meta.to_dict(), "layers": vector.stats}), ensure_ascii=False, indent=2)
    # both files are written aside first: a failed save (disk full...) replaces neither and leaves no partial file
    atomic_write_all(
        {
            path: lambda tmp: torch.save(tensors, tmp),
            sidecar_path(path): lambda tmp: tmp.write_text(sidecar, encoding="utf-8"),
        }
    )
    vector.path, vector.meta = path, meta
    return path


def export_vector(
    src_path: str | Path,
    fmt: str,
    out_path: str | Path | None = None,
    overwrite: bool = False,
    model_hint: str | None = None,
) -> Path:
    """Convert a vector file (.pt, .safetensors or .gguf) to `fmt` ("gguf" or "safetensors") at out_path.

    out_path defaults to the source path with the format's suffix; an existing file is refused unless
    overwrite=True.
    """
    if fmt not in FORMATS:
        raise VectorFileError(UNKNOWN_EXPORT(fmt=fmt, choices=", ".join(FORMATS)))
    src_path = Path(src_path)
    out_path = Path(out_path) if out_path is not None else src_path.with_suffix(FORMATS[fmt])
    check_export_path(out_path, fmt, overwrite)  # refuse before loading anything
    vector = load_vector(src_path)
    if fmt == "gguf":
        return export_gguf(vector, out_path, model_hint=model_hint, overwrite=overwrite)
    return export_safetensors(vector, out_path, overwrite=overwrite)


# --------------------------------------------------------------------------------------------------- naming

# Device names Windows refuses as a file name, with or without an extension ("con.pt", "NUL.json").
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safe_name(name: str) -> str:
    """A file-name stem with no path parts or odd characters ('../x y' -> 'x_y'), at most 80 characters.

    Characters other than letters (any script: ギャル stays), digits, '.', '_' and '-' become '_'; a Windows
    device name gets a '_' ("con" -> "con_").
    """
    stem = Path(str(name).replace("\\", "/")).name
    stem = re.sub(r"\.(pt|json|gguf|safetensors)$", "", stem, flags=re.I)
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._-")
    stem = stem[:80].strip("._-") or "vector"
    base, dot, rest = stem.partition(".")
    if base.upper() in _RESERVED:
        stem = f"{base}_{dot}{rest}"
    return stem


def unique_path(folder: str | Path, name: str, suffix: str = ".pt") -> Path:
    """folder/NAME.pt with a sanitized name, numbered (NAME-2.pt, ...) rather than overwriting anything."""
    folder = Path(folder)
    stem = safe_name(name)
    candidate = folder / f"{stem}{suffix}"
    n = 2
    while candidate.exists() or sidecar_path(candidate).exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate
