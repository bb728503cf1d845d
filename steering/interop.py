"""Export and import steering vectors as llama.cpp control vectors (.gguf) and as .safetensors.

llama.cpp control-vector format (what `--control-vector FILE` / `--control-vector-scaled FILE S` load):
    general.architecture      = "controlvector"
    controlvector.model_hint  = "llama" / "qwen2" / ... (informational; the loader never reads it)
    controlvector.layer_count = number of direction tensors in the file (uint32, as repeng writes it)
    tensors direction.N       = float32, 1-D, n_embd elements; no other tensor names are allowed.

Layer numbering — our layer i is the output of decoder block i (0-based; the forward hook on
model.model.layers[i]). In llama.cpp, `direction.N` is added to the output of 0-based block N, so the mapping
is the identity: our layer i <-> direction.i. Evidence, from ggml-org/llama.cpp:
  * common/common.cpp, common_control_vector_load_one(): parses N from "direction.N", rejects the whole file
    when N == 0 ("invalid (zero) direction tensor layer index") or when any tensor is not direction.N, not F32
    or not 1-D, and accumulates `src * strength` at data[n_embd * (N - 1)] ("layer 1 at [0]"); the default
    layer range (common_init_from_params) is 1 .. n_layer.
  * src/llama-adapter.cpp, llama_adapter_cvec::init()/apply(): `tensors.push_back(nullptr); // there's never a
    tensor for layer 0`, then for il = 1 .. n_layer-1 fills tensors[il] from data[n_embd * (il - 1)]. The two
    "-1"s cancel: tensors[il] holds direction.il. apply_to(ctx, cur, il) is a plain ggml_add of tensors[il]
    (no normalization; the only scaling is the --control-vector-scaled factor).
  * src/models/llama.cpp (and the other model graphs): inside `for (int il = 0; il < n_layer; ++il)`, after
    the FFN residual add, `cur = build_cvec(cur, il); cb(cur, "l_out", il); inpL = cur;` — the vector lands
    on block il's output, the input of block il+1: exactly what our hook on model.model.layers[il] changes.
  * repeng's export_gguf writes direction.{layer} for its layer ids 1..L-1 and never direction.0.
Consequences: block 0 cannot be steered from llama.cpp (direction.0 makes llama.cpp drop the whole file), so
export leaves layer 0 out with a warning; import refuses direction.0 rather than guess.

Magnitudes — llama.cpp adds direction × scale as stored. When every exported layer has its mean-difference
norm recorded (extraction stats), the GGUF stores the calibrated push for strength 1.0 at that layer: the unit
direction × mean_diff_norm, i.e. the per-layer mean gyaru-minus-standard difference, and the KV
`steering.scale = "mean_diff"` says so. Then `--control-vector-scaled FILE 1.0` restricted to one layer
(--control-vector-layer-range N N) pushes one mean difference, like our calibrated strength 1.0 on that single
layer. Over k layers our calibrated strength S gives each layer S/k of its mean difference, so the llama.cpp
equivalent is `--control-vector-scaled FILE S/k` with the same layer range. Without stats the file holds unit
directions and `steering.scale = "unit"` (our raw scale: scale S = unit × S per layer).
Import normalizes back to unit directions and, for "mean_diff" files, restores mean_diff_norm into the stats.
Our JSON sidecar (meta plus per-layer stats) rides along as the GGUF string KV `steering.meta`; llama.cpp
ignores unknown KVs. Foreign files (no steering.scale) are normalized too; their stored norms are kept as the
per-layer stat `file_norm`.

Safetensors: keys "layer.N" (also read: "direction.N" and plain "N", all meaning block N) holding the float32
directions exactly as the .pt does (unit vectors from extraction; a lossless copy), metadata
{"steering": sidecar JSON, "steering.scale": "unit"}. Foreign safetensors (no "steering" metadata) are
normalized on import like foreign GGUFs.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write, check_writable_destination
from .metadata import MetadataError, VectorMeta
from .model_hints import model_hint_for
from .settings import EXPORT_FORMATS
from .vectors import SteeringVector, VectorFileError, json_safe, validate_directions

FORMATS = {fmt: f".{fmt}" for fmt in EXPORT_FORMATS}  # export format -> file suffix
ARCH = "controlvector"
SCALE_KEY = "steering.scale"
META_KEY = "steering.meta"
SCALE_MEAN_DIFF = "mean_diff"  # stored tensor = unit direction × mean_diff_norm
SCALE_UNIT = "unit"  # stored tensor = unit direction
SCALES = (SCALE_MEAN_DIFF, SCALE_UNIT)

_GGUF_NAME = re.compile(r"direction\.(\d+)")
_ST_NAME = re.compile(r"(?:layer\.|direction\.)?(\d+)")


# --------------------------------------------------------------------------------------------------- reading


def read_vector(path: str | Path) -> tuple[dict[int, torch.Tensor], VectorMeta, dict[int, dict]]:
    """(unit directions, meta, stats) from a .gguf or .safetensors vector file."""
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"vector file not found: {path}")
    if path.stat().st_size == 0:
        raise VectorFileError(f"{path}: empty (zero-byte) file")
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        raw, scale, sidecar, extra = _read_gguf(path)
    elif suffix == ".safetensors":
        raw, scale, sidecar, extra = _read_safetensors(path)
    else:
        raise VectorFileError(f"{path}: not a .gguf or .safetensors file")
    return _finish(path, raw, scale, sidecar, extra)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _read_gguf(path: Path):
    from gguf import GGMLQuantizationType, GGUFReader

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise VectorFileError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, IndexError, struct/numpy errors...
        raise VectorFileError(f"{path}: not a readable GGUF file (truncated or corrupt?): {_first_line(exc)}") from None

    def kv(key: str):
        field = reader.fields.get(key)
        if field is None:
            return None
        try:
            return field.contents()
        except Exception:  # noqa: BLE001
            raise VectorFileError(f"{path}: unreadable GGUF metadata value {key!r} (corrupt file?)") from None

    arch = kv("general.architecture")
    if arch != ARCH:
        what = f"a {arch!r} model file" if isinstance(arch, str) else "a GGUF file without general.architecture"
        raise VectorFileError(
            f"{path}: {what}, not a llama.cpp control vector (general.architecture must be "
            f"'{ARCH}'); pass a control-vector .gguf, e.g. one made by `python -m steering export`"
        )
    float_types = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
    raw: dict[int, torch.Tensor] = {}
    try:
        for tensor in reader.tensors:
            name = tensor.name
            match = _GGUF_NAME.fullmatch(name)
            if not match:
                raise VectorFileError(
                    f"{path}: tensor {name!r} is not a control-vector direction "
                    "(llama.cpp control vectors hold only direction.N tensors)"
                )
            layer = int(match.group(1))
            if layer == 0:
                raise VectorFileError(
                    f"{path}: direction.0 is invalid in a llama.cpp control vector (block 0 "
                    "cannot be steered there; direction.N steers the output of block N, N >= 1)"
                )
            dims = [int(d) for d in tensor.shape]
            while len(dims) > 1 and dims[-1] == 1:  # ggml_n_dims ignores trailing 1s
                dims.pop()
            if len(dims) != 1 or tensor.tensor_type not in float_types:
                kind = getattr(tensor.tensor_type, "name", tensor.tensor_type)
                raise VectorFileError(
                    f"{path}: tensor {name} is not a 1-D float tensor "
                    f"(type {kind}, shape {list(tensor.shape)}); expected F32 [n_embd]"
                )
            if layer in raw:
                raise VectorFileError(f"{path}: layer {layer} appears twice ({name})")
            data = np.array(tensor.data, dtype=float_types[tensor.tensor_type], copy=True).reshape(-1)
            if data.size != dims[0]:
                raise VectorFileError(f"{path}: tensor {name} holds {data.size} values, its header says {dims[0]}")
            raw[layer] = torch.from_numpy(data.astype(np.float32))
        scale, sidecar = kv(SCALE_KEY), kv(META_KEY)
        extra = {"source_format": "gguf"}
        hint, count = kv(f"{ARCH}.model_hint"), kv(f"{ARCH}.layer_count")
        if isinstance(hint, str):
            extra["model_hint"] = hint
        if isinstance(count, int):
            extra["layer_count"] = count
    except VectorFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - tensor data past the end of a truncated file, bad offsets...
        raise VectorFileError(f"{path}: not a readable GGUF file (truncated or corrupt?): {_first_line(exc)}") from None
    if not raw:
        raise VectorFileError(f"{path}: the control vector holds no direction tensors")
    return raw, scale, sidecar, extra


def _read_safetensors(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError for bad headers, truncation...
        raise VectorFileError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {_first_line(exc)}"
        ) from None
    raw: dict[int, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = _ST_NAME.fullmatch(key)
        if not match:
            raise VectorFileError(
                f"{path}: tensor {key!r} is not a layer direction (expected keys layer.N, direction.N or N)"
            )
        layer = int(match.group(1))
        if layer in raw:
            raise VectorFileError(f"{path}: layer {layer} appears twice ({key})")
        raw[layer] = tensor
    return raw, metadata.get(SCALE_KEY), metadata.get("steering"), {"source_format": "safetensors"}


def _parse_sidecar(path: Path, sidecar) -> tuple[VectorMeta, dict[int, dict]] | None:
    if not isinstance(sidecar, str):
        return None
    try:
        data = json.loads(sidecar)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        layers = data.pop("layers", {}) or {}
        stats = {int(k): dict(v) for k, v in layers.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        warnings.warn(f"{path}: the embedded steering metadata is not valid ({exc}); loading without it", stacklevel=4)
        return None
    try:  # well-formed JSON with a wrong-typed value: refused like a .pt sidecar's
        return VectorMeta.from_dict(data), stats
    except MetadataError as exc:
        raise VectorFileError(f"{path}: embedded steering metadata: {exc}") from None


def _finish(path: Path, raw: dict, scale, sidecar, extra: dict):
    directions = validate_directions(raw, str(path))  # 1-D, float, one size, finite — before any arithmetic
    parsed = _parse_sidecar(path, sidecar)
    if scale is None and parsed is not None:
        scale = SCALE_UNIT  # our own metadata without a scale key: our directions are unit vectors
    if scale is not None and scale not in SCALES:
        warnings.warn(f"{path}: unknown {SCALE_KEY} {scale!r}; treating the file as a foreign vector", stacklevel=4)
        scale = None
    meta, stats = parsed if parsed is not None else (VectorMeta.from_dict(extra), {})
    out: dict[int, torch.Tensor] = {}
    for layer, vec in directions.items():
        norm = float(vec.norm())
        if scale == SCALE_UNIT:
            out[layer] = vec  # already unit: keep the exact values
            continue
        out[layer] = vec / norm if norm > 0 else vec
        layer_stats = stats.setdefault(layer, {})
        if scale == SCALE_MEAN_DIFF:
            recorded = layer_stats.get("mean_diff_norm")
            if not isinstance(recorded, (int, float)) or not math.isfinite(recorded):
                layer_stats["mean_diff_norm"] = norm
        else:
            layer_stats["file_norm"] = norm
    return out, meta, stats


# --------------------------------------------------------------------------------------------------- writing


def _sidecar_json(vector: SteeringVector, **extra) -> str:
    meta = replace(vector.meta, **extra)
    return json.dumps(json_safe({**meta.to_dict(), "layers": vector.stats}), ensure_ascii=False)


def check_export_path(path: str | Path, fmt: str, overwrite: bool, what: str = "export file") -> Path:
    """Refuse an export path with the wrong suffix, an existing file (unless overwrite), a folder, or one whose
    folder cannot take new files (`what` names the argument in messages); makes its parent."""
    path = Path(path)
    if path.suffix.lower() != FORMATS[fmt]:
        raise VectorFileError(f"{path}: a {fmt} file must end in {FORMATS[fmt]} (load_vector goes by the suffix)")
    if path.is_dir():
        raise VectorFileError(f"{path} is a folder")
    if path.exists() and not overwrite:
        raise VectorFileError(f"{path} already exists; choose another name or pass overwrite=True (--overwrite)")
    check_writable_destination(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _calibrated(vector: SteeringVector, layers: list[int]) -> bool:
    for layer in layers:
        value = vector.stats.get(layer, {}).get("mean_diff_norm")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return False
    return True


def _unit(vec: torch.Tensor) -> torch.Tensor:
    vec = vec.detach().float().cpu()
    norm = float(vec.norm())
    return vec / norm if norm > 0 else vec


def export_gguf(
    vector: SteeringVector, path: str | Path, model_hint: str | None = None, overwrite: bool = False
) -> Path:
    """Write a llama.cpp control vector: direction.N = our layer N (block N's output); layer 0 is left out.

    Stores unit × mean_diff_norm per layer (steering.scale = "mean_diff") when every layer has that stat,
    otherwise unit directions (steering.scale = "unit"); see the module docstring.
    """
    from gguf import GGUFWriter

    path = check_export_path(path, "gguf", overwrite)
    validate_directions(vector.directions, str(vector.path or vector.name))  # NaN/inf: refuse, write nothing
    layers = [layer for layer in vector.layers if layer != 0]
    extra = {}
    if 0 in vector.directions:
        if not layers:
            raise VectorFileError(
                f"{vector.path or vector.name}: holds only layer 0, which a llama.cpp control "
                "vector cannot express (block 0's output is never steered there)"
            )
        warnings.warn(
            "layer 0 left out of the GGUF: llama.cpp cannot steer block 0 (direction.0 is rejected)", stacklevel=2
        )
        extra["gguf_dropped_layers"] = [0]
    scale = SCALE_MEAN_DIFF if _calibrated(vector, layers) else SCALE_UNIT
    hint = model_hint or model_hint_for(vector.meta)

    def write(tmp: Path) -> None:
        writer = GGUFWriter(tmp, ARCH)
        writer.add_name(vector.name)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(layers))
        writer.add_string(SCALE_KEY, scale)
        writer.add_string(META_KEY, _sidecar_json(vector, **extra))
        for layer in layers:
            unit = _unit(vector.directions[layer])
            if scale == SCALE_MEAN_DIFF:
                unit = unit * float(vector.stats[layer]["mean_diff_norm"])
            writer.add_tensor(f"direction.{layer}", unit.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(path, write)


def export_safetensors(vector: SteeringVector, path: str | Path, overwrite: bool = False) -> Path:
    """Write keys "layer.N" (the float32 directions exactly as held) with the JSON sidecar as metadata "steering"."""
    from safetensors.torch import save_file

    path = check_export_path(path, "safetensors", overwrite)
    validate_directions(vector.directions, str(vector.path or vector.name))  # NaN/inf: refuse, write nothing
    # clone(): layers may share one tensor (e.g. a hand-made {layer: v for layer in ...} .pt), which save_file refuses
    tensors = {
        f"layer.{layer}": vector.directions[layer].detach().float().cpu().contiguous().clone()
        for layer in vector.layers
    }
    metadata = {"format": "pt", "steering": _sidecar_json(vector), SCALE_KEY: SCALE_UNIT}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
