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

import importlib
import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write, check_writable_destination
from .messages import Text, composed
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

NOT_FOUND = Text(en="vector file not found: {path}", ja="ベクトルファイルが見つかりません: {path}")
EMPTY_FILE = Text(en="{path}: empty (zero-byte) file", ja="{path}: 空のファイルです（0 バイト）")
NOT_GGUF_OR_SAFETENSORS = Text(
    en="{path}: not a .gguf or .safetensors file", ja="{path}: .gguf でも .safetensors でもないファイルです"
)
NEEDS_PACKAGE = Text(
    en="{path}: {suffix} files need the Python package {package}, which is not installed here (pip install {package})",
    ja="{path}: {suffix} ファイルには Python パッケージ {package} が必要ですが、ここにはインストールされていません"
    "（pip install {package}）",
)
NO_GGUF_MAGIC = Text(
    en="{path}: not a GGUF file (it does not start with the GGUF magic bytes)",
    ja="{path}: GGUF ファイルではありません（GGUF のマジックバイトで始まっていません）",
)
UNREADABLE = Text(  # kind: GGUF or safetensors
    en="{path}: not a readable {kind} file (truncated or corrupt?): {reason}",
    ja="{path}: {kind} ファイルとして読めません（途中で切れているか壊れている？）: {reason}",
)
UNREADABLE_KV = Text(
    en="{path}: unreadable GGUF metadata value {key!r} (corrupt file?)",
    ja="{path}: GGUF のメタデータの値 {key!r} が読めません（ファイルが壊れている？）",
)
A_MODEL_FILE = Text(en="a {found!r} model file", ja="{found!r} のモデルファイル")
NO_ARCHITECTURE = Text(en="a GGUF file without general.architecture", ja="general.architecture のない GGUF ファイル")
NOT_A_CONTROL_VECTOR = Text(
    en="{path}: {what}, not a llama.cpp control vector (general.architecture must be '{arch}'); pass a "
    "control-vector .gguf, e.g. one made by `python -m steering export`",
    ja="{path}: {what}で、llama.cpp の制御ベクトルではありません（general.architecture は '{arch}' である必要が"
    "あります）。制御ベクトルの .gguf（`python -m steering export` で作ったものなど）を渡してください",
)
NOT_A_DIRECTION = Text(
    en="{path}: tensor {name!r} is not a control-vector direction (llama.cpp control vectors hold only direction.N "
    "tensors)",
    ja="{path}: テンソル {name!r} は制御ベクトルの方向ではありません（llama.cpp の制御ベクトルに入れられるのは "
    "direction.N のテンソルだけです）",
)
DIRECTION_ZERO = Text(
    en="{path}: direction.0 is invalid in a llama.cpp control vector (block 0 cannot be steered there; direction.N "
    "steers the output of block N, N >= 1)",
    ja="{path}: llama.cpp の制御ベクトルでは direction.0 は無効です（そこではブロック 0 をステアリングできません。"
    "direction.N はブロック N の出力をステアリングします。N >= 1）",
)
NOT_1D_FLOAT = Text(
    en="{path}: tensor {name} is not a 1-D float tensor (type {kind}, shape {shape}); expected F32 [n_embd]",
    ja="{path}: テンソル {name} は 1 次元の浮動小数点テンソルではありません（型 {kind}、形 {shape}）。"
    "F32 [n_embd] にしてください",
)
LAYER_TWICE = Text(
    en="{path}: layer {layer} appears twice ({name})", ja="{path}: レイヤー {layer} が 2 回出てきます（{name}）"
)
VALUE_COUNT = Text(
    en="{path}: tensor {name} holds {count} values, its header says {expected}",
    ja="{path}: テンソル {name} の値は {count} 個ですが、ヘッダーには {expected} 個とあります",
)
NO_DIRECTIONS = Text(
    en="{path}: the control vector holds no direction tensors", ja="{path}: 制御ベクトルに方向のテンソルがありません"
)
NOT_A_LAYER = Text(
    en="{path}: tensor {key!r} is not a layer direction (expected keys layer.N, direction.N or N)",
    ja="{path}: テンソル {key!r} はレイヤーの方向ではありません（キーは layer.N、direction.N か N にしてください）",
)
NOT_AN_OBJECT = Text(en="not a JSON object", ja="JSON オブジェクトではありません")
BAD_SIDECAR = Text(
    en="{path}: the embedded steering metadata is not valid ({reason}); loading without it",
    ja="{path}: 埋め込まれたステアリングのメタデータが正しくありません（{reason}）。メタデータなしで読み込みます",
)
BAD_METADATA = Text(
    en="{path}: embedded steering metadata: {reason}", ja="{path}: 埋め込まれたステアリングのメタデータ: {reason}"
)
UNKNOWN_SCALE = Text(
    en="{path}: unknown {key} {scale!r}; treating the file as a foreign vector",
    ja="{path}: 不明な {key} {scale!r} です。外部のベクトルとして扱います",
)
WRONG_SUFFIX = Text(
    en="{path}: a {fmt} file must end in {suffix} (load_vector goes by the suffix)",
    ja="{path}: {fmt} のファイル名は {suffix} で終わる必要があります（load_vector は拡張子で形式を決めます）",
)
IS_A_FOLDER = Text(en="{path} is a folder", ja="{path} はフォルダです")
ALREADY_EXISTS = Text(
    en="{path} already exists; choose another name or pass overwrite=True (--overwrite)",
    ja="{path} はもうあります。別の名前にするか overwrite=True（--overwrite）を渡してください",
)
ONLY_LAYER_ZERO = Text(
    en="{name}: holds only layer 0, which a llama.cpp control vector cannot express (block 0's output is never "
    "steered there)",
    ja="{name}: レイヤー 0 しかありません。llama.cpp の制御ベクトルでは表せません（そこではブロック 0 の出力は"
    "ステアリングされません）",
)
LAYER_ZERO_LEFT_OUT = Text(
    en="layer 0 left out of the GGUF: llama.cpp cannot steer block 0 (direction.0 is rejected)",
    ja="レイヤー 0 は GGUF に入れていません: llama.cpp ではブロック 0 をステアリングできません（direction.0 は拒否されます）",
)


def _package(module: str, path: Path):
    """`module` imported, or VectorFileError naming the package that `path` (.gguf or .safetensors) needs."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise VectorFileError(NEEDS_PACKAGE(path=path, suffix=path.suffix.lower(), package=package)) from None


# --------------------------------------------------------------------------------------------------- reading


def read_vector(path: str | Path) -> tuple[dict[int, torch.Tensor], VectorMeta, dict[int, dict]]:
    """(unit directions, meta, stats) from a .gguf or .safetensors vector file."""
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(NOT_FOUND(path=path))
    if path.stat().st_size == 0:
        raise VectorFileError(EMPTY_FILE(path=path))
    reader = {".gguf": _read_gguf, ".safetensors": _read_safetensors}.get(path.suffix.lower())
    if reader is None:
        raise VectorFileError(NOT_GGUF_OR_SAFETENSORS(path=path))
    return _finish(path, *reader(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _read_gguf(path: Path):
    gguf = _package("gguf", path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise VectorFileError(NO_GGUF_MAGIC(path=path))
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, IndexError, struct/numpy errors...
        raise VectorFileError(UNREADABLE(path=path, kind="GGUF", reason=_first_line(exc))) from None

    def kv(key: str):
        field = reader.fields.get(key)
        if field is None:
            return None
        try:
            return field.contents()
        except Exception:  # noqa: BLE001
            raise VectorFileError(UNREADABLE_KV(path=path, key=key)) from None

    arch = kv("general.architecture")
    if arch != ARCH:
        what = A_MODEL_FILE(found=arch) if isinstance(arch, str) else NO_ARCHITECTURE()
        raise VectorFileError(composed(NOT_A_CONTROL_VECTOR, path=path, what=what, arch=ARCH))
    float_types = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}
    raw: dict[int, torch.Tensor] = {}
    try:
        for tensor in reader.tensors:
            name = tensor.name
            match = _GGUF_NAME.fullmatch(name)
            if not match:
                raise VectorFileError(NOT_A_DIRECTION(path=path, name=name))
            layer = int(match.group(1))
            if layer == 0:
                raise VectorFileError(DIRECTION_ZERO(path=path))
            dims = [int(d) for d in tensor.shape]
            while len(dims) > 1 and dims[-1] == 1:  # ggml_n_dims ignores trailing 1s
                dims.pop()
            if len(dims) != 1 or tensor.tensor_type not in float_types:
                kind = getattr(tensor.tensor_type, "name", tensor.tensor_type)
                raise VectorFileError(
                    NOT_1D_FLOAT(path=path, name=name, kind=kind, shape=[int(d) for d in tensor.shape])
                )
            if layer in raw:
                raise VectorFileError(LAYER_TWICE(path=path, layer=layer, name=name))
            data = np.array(tensor.data, dtype=float_types[tensor.tensor_type], copy=True).reshape(-1)
            if data.size != dims[0]:
                raise VectorFileError(VALUE_COUNT(path=path, name=name, count=data.size, expected=dims[0]))
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
        raise VectorFileError(UNREADABLE(path=path, kind="GGUF", reason=_first_line(exc))) from None
    if not raw:
        raise VectorFileError(NO_DIRECTIONS(path=path))
    return raw, scale, sidecar, extra


def _read_safetensors(path: Path):
    safe_open = _package("safetensors", path).safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError for bad headers, truncation...
        raise VectorFileError(UNREADABLE(path=path, kind="safetensors", reason=_first_line(exc))) from None
    raw: dict[int, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = _ST_NAME.fullmatch(key)
        if not match:
            raise VectorFileError(NOT_A_LAYER(path=path, key=key))
        layer = int(match.group(1))
        if layer in raw:
            raise VectorFileError(LAYER_TWICE(path=path, layer=layer, name=key))
        raw[layer] = tensor
    return raw, metadata.get(SCALE_KEY), metadata.get("steering"), {"source_format": "safetensors"}


def _parse_sidecar(path: Path, sidecar) -> tuple[VectorMeta, dict[int, dict]] | None:
    if not isinstance(sidecar, str):
        return None
    try:
        data = json.loads(sidecar)
        if not isinstance(data, dict):
            raise ValueError(NOT_AN_OBJECT())
        layers = data.pop("layers", {}) or {}
        stats = {int(k): dict(v) for k, v in layers.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        warnings.warn(composed(BAD_SIDECAR, path=path, reason=exc), stacklevel=4)
        return None
    try:  # well-formed JSON with a wrong-typed value: refused like a .pt sidecar's
        return VectorMeta.from_dict(data), stats
    except MetadataError as exc:
        raise VectorFileError(composed(BAD_METADATA, path=path, reason=exc)) from None


def _finish(path: Path, raw: dict, scale, sidecar, extra: dict):
    directions = validate_directions(raw, str(path))  # 1-D, float, one size, finite — before any arithmetic
    parsed = _parse_sidecar(path, sidecar)
    if scale is None and parsed is not None:
        scale = SCALE_UNIT  # our own metadata without a scale key: our directions are unit vectors
    if scale is not None and scale not in SCALES:
        warnings.warn(UNKNOWN_SCALE(path=path, key=SCALE_KEY, scale=scale), stacklevel=4)
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
        raise VectorFileError(WRONG_SUFFIX(path=path, fmt=fmt, suffix=FORMATS[fmt]))
    if path.is_dir():
        raise VectorFileError(IS_A_FOLDER(path=path))
    if path.exists() and not overwrite:
        raise VectorFileError(ALREADY_EXISTS(path=path))
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
    gguf = _package("gguf", Path(path))
    path = check_export_path(path, "gguf", overwrite)
    validate_directions(vector.directions, str(vector.path or vector.name))  # NaN/inf: refuse, write nothing
    layers = [layer for layer in vector.layers if layer != 0]
    extra = {}
    if 0 in vector.directions:
        if not layers:
            raise VectorFileError(ONLY_LAYER_ZERO(name=vector.path or vector.name))
        warnings.warn(LAYER_ZERO_LEFT_OUT(), stacklevel=2)
        extra["gguf_dropped_layers"] = [0]
    scale = SCALE_MEAN_DIFF if _calibrated(vector, layers) else SCALE_UNIT
    hint = model_hint or model_hint_for(vector.meta)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, ARCH)
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
    save_file = _package("safetensors.torch", Path(path)).save_file
    path = check_export_path(path, "safetensors", overwrite)
    validate_directions(vector.directions, str(vector.path or vector.name))  # NaN/inf: refuse, write nothing
    # clone(): layers may share one tensor (e.g. a hand-made {layer: v for layer in ...} .pt), which save_file refuses
    tensors = {
        f"layer.{layer}": vector.directions[layer].detach().float().cpu().contiguous().clone()
        for layer in vector.layers
    }
    metadata = {"format": "pt", "steering": _sidecar_json(vector), SCALE_KEY: SCALE_UNIT}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
