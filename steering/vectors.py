"""Steering-vector files: the reference format (`{layer: tensor[hidden]}` via torch.save) plus a JSON sidecar.

Loading never runs code from a file: .pt goes through torch.load(weights_only=True) and must hold only a dict
of int layers to 1-D float tensors.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__

SUFFIXES = (".pt", ".safetensors", ".gguf")


class VectorFileError(ValueError):
    """A vector file is unreadable, unsafe, or does not fit the model; the message says which and why."""


@dataclass
class SteeringVector:
    """Unit directions per layer plus metadata (model, method, dataset...) and per-layer stats."""

    directions: dict[int, torch.Tensor]
    meta: dict = field(default_factory=dict)
    stats: dict[int, dict] = field(default_factory=dict)
    path: Path | None = None

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).numel())

    @property
    def has_sidecar(self) -> bool:
        return bool(self.meta)

    @property
    def calibrated(self) -> bool:
        """Whether every layer has its mean-difference norm recorded (extraction stats, from a sidecar or inside a
        .safetensors/.gguf file): the calibrated strength scale needs it; a bare reference-style file has none."""
        return all(isinstance(s := self.stats.get(layer), dict) and "mean_diff_norm" in s for layer in self.directions)

    @property
    def name(self) -> str:
        return self.path.stem if self.path else self.meta.get("name", "vector")


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def _check_tensor(layer, tensor, where: str, hidden: int | None) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or not tensor.is_floating_point():
        raise VectorFileError(f"{where}: layer {layer} is not a 1-D float tensor")
    if hidden is not None and tensor.numel() != hidden:
        raise VectorFileError(f"{where}: layer {layer} has size {tensor.numel()}, other layers {hidden}")
    if not torch.isfinite(tensor).all():
        raise VectorFileError(f"{where}: layer {layer} holds NaN or inf values")
    return tensor.float()


def validate_directions(raw, where: str) -> dict[int, torch.Tensor]:
    """Check a loaded mapping is {int layer: finite 1-D float tensor of one size}."""
    if not isinstance(raw, dict) or not raw:
        raise VectorFileError(f"{where}: expected a non-empty dict of {{layer: tensor}}, got {type(raw).__name__}")
    out: dict[int, torch.Tensor] = {}
    hidden = None
    for key, tensor in raw.items():
        try:  # int keys (reference format) or their decimal strings; never floats/bools (int(3.7) would be 3)
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise TypeError
            layer = int(key)
        except (TypeError, ValueError):
            raise VectorFileError(f"{where}: key {key!r} is not a layer number") from None
        if layer < 0:
            raise VectorFileError(f"{where}: negative layer {layer}")
        if layer in out:
            raise VectorFileError(f"{where}: layer {layer} appears twice")
        out[layer] = _check_tensor(layer, tensor, where, hidden)
        hidden = out[layer].numel()
    return dict(sorted(out.items()))


def _load_pt(path: Path) -> dict:
    if path.stat().st_size == 0:
        raise VectorFileError(f"{path}: empty (zero-byte) file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise VectorFileError(
                f"{path}: refused — the file holds Python objects beyond tensors "
                f"(a pickle payload could run code); only {{layer: tensor}} files load"
            ) from None
        raise VectorFileError(f"{path}: not a readable torch file (truncated or corrupt?): {first}") from None


def load_vector(path: str | Path) -> SteeringVector:
    """Load a vector file (.pt with optional .json sidecar, .safetensors or llama.cpp .gguf)."""
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"vector file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        directions = validate_directions(_load_pt(path), str(path))
    elif suffix in (".safetensors", ".gguf"):
        from .interop import read_vector

        raw, meta, stats = read_vector(path)  # meta and stats travel inside the file
        directions = validate_directions(raw, str(path))
    else:
        raise VectorFileError(f"{path}: unknown vector format {suffix!r}: expected one of {', '.join(SUFFIXES)}")
    if suffix == ".pt":
        meta, stats = _load_sidecar(sidecar_path(path))
    return SteeringVector(directions=directions, meta=meta, stats=stats, path=path)


def _load_sidecar(path: Path) -> tuple[dict, dict[int, dict]]:
    if not path.exists():
        return {}, {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        stats = {int(k): v for k, v in data.pop("layers", {}).items()}
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        warnings.warn(f"{path}: sidecar is not valid JSON ({exc}); loading the vector without metadata", stacklevel=3)
        return {}, {}
    return data, stats


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_preflight(path: str | Path, overwrite: bool = False) -> Path:
    """The checks save_vector makes before writing (.pt suffix, no clobbering), to run before any long work."""
    path = Path(path)
    if path.suffix != ".pt":
        raise VectorFileError(f"{path}: vector files are saved as .pt (export other formats with `export`)")
    if not overwrite and (path.exists() or sidecar_path(path).exists()):
        raise VectorFileError(f"{path} already exists; choose another name or pass overwrite=True")
    return path


def save_vector(vector: SteeringVector, path: str | Path, overwrite: bool = False) -> Path:
    """Write NAME.pt (reference format, int keys, float32) and NAME.json; refuses to clobber unless asked.

    Refuses (writing nothing) directions that load_vector would refuse: NaN/inf values, mixed sizes, non-1-D.
    """
    path = save_preflight(path, overwrite)
    validate_directions(vector.directions, str(path))
    side = sidecar_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **vector.meta,
        "hidden_size": vector.hidden_size,
        "vector_layers": vector.layers,
        "library_version": __version__,
    }
    meta.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tmp = path.with_suffix(".pt.tmp")
    side_tmp = side.with_suffix(".json.tmp")
    try:  # both files are written aside first: a failed save (disk full...) leaves no partial file behind
        torch.save({int(k): v.detach().float().cpu().contiguous() for k, v in vector.directions.items()}, tmp)
        side_tmp.write_text(
            json.dumps(_json_safe({**meta, "layers": vector.stats}), ensure_ascii=False, indent=2), encoding="utf-8"
        )
        tmp.replace(path)
        side_tmp.replace(side)
    finally:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
    vector.path, vector.meta = path, meta
    return path


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


def check_fits(vector: SteeringVector, hidden_size: int, num_layers: int, model_name: str = "the model") -> None:
    """Refuse a vector made for another model (hidden size or layers out of range)."""
    where = vector.path or vector.name
    if vector.hidden_size != hidden_size:
        made_for = vector.meta.get("model", "another model")
        raise VectorFileError(
            f"{where}: hidden size {vector.hidden_size} does not fit {model_name} "
            f"(hidden size {hidden_size}); it was made for {made_for}"
        )
    too_deep = [layer for layer in vector.layers if layer >= num_layers]
    if too_deep:
        raise VectorFileError(f"{where}: layers {too_deep} do not exist in {model_name} ({num_layers} layers)")
    expected = vector.meta.get("num_layers")
    if expected is not None and int(expected) != num_layers:
        raise VectorFileError(f"{where}: made for a {expected}-layer model; {model_name} has {num_layers} layers")
