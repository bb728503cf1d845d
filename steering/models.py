"""Load a chat LLM (bundled default, hub id, local folder or .gguf) and find its decoder layers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .messages import Text

BUNDLED = "bundled"
BUNDLED_LABEL = Text(en="bundled (SmolLM2-135M-Instruct)", ja="同梱モデル（SmolLM2-135M-Instruct）")
NEEDS_CUDA_LABEL = Text(en="{spec} (4-bit: needs CUDA)", ja="{spec}（4 ビット: CUDA が必要）")
# Models the app offers by name, as (label, spec) (a label of None is the spec itself); any hub id, local folder or
# .gguf path loads too.
_SUGGESTED: list[tuple[Text | None, str]] = [
    (BUNDLED_LABEL, BUNDLED),
    (None, "Qwen/Qwen2.5-0.5B-Instruct"),
    (None, "Qwen/Qwen2.5-1.5B-Instruct"),
    (None, "Qwen/Qwen2.5-7B-Instruct"),
    (None, "Qwen/Qwen2.5-14B-Instruct"),
    (NEEDS_CUDA_LABEL, "unsloth/Qwen2.5-32B-Instruct-bnb-4bit"),
]


def suggested_models(ui_lang: str | None = "en") -> list[tuple[str, str]]:
    """The models the app offers by name, as (label, spec), their labels in `ui_lang` ("en" or "ja")."""
    return [(spec if label is None else label.say(ui_lang, spec=spec), spec) for label, spec in _SUGGESTED]


SUGGESTED_MODELS = suggested_models("en")  # English labels

# Attribute paths from the causal-LM wrapper to its list of decoder blocks, by architecture family.
LAYER_PATHS = (
    "model.layers",  # Llama, SmolLM, Qwen2/2.5/3, Mistral, Gemma
    "model.language_model.layers",  # Gemma 3 and other multimodal wrappers
    "transformer.h",  # GPT-2 style
    "gpt_neox.layers",
    "model.decoder.layers",  # OPT
)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to try."""


NO_DECODER_LAYERS = Text(
    en="cannot find the decoder layers of {model}: looked for {paths}. Supported: Qwen2/2.5/3, Llama/SmolLM, Mistral, "
    "Gemma, GPT-2 style models.",
    ja="{model} のデコーダー層が見つかりません（{paths} を探しました）。対応しているのは Qwen2/2.5/3、Llama/SmolLM、"
    "Mistral、Gemma、GPT-2 系のモデルです。",
)
UNKNOWN_DTYPE = Text(
    en="unknown dtype {dtype!r}: expected one of {choices}",
    ja="dtype {dtype!r} は使えません: {choices} のどれかにしてください",
)
GGUF_NOT_FOUND = Text(en="GGUF file not found: {path}", ja="GGUF ファイルが見つかりません: {path}")
NO_CONFIG = Text(
    en="{path} is a folder but holds no config.json: not a transformers model folder",
    ja="{path} はフォルダですが config.json がありません: transformers のモデルフォルダではありません",
)
PATH_NOT_FOUND = Text(en="model path not found: {spec}", ja="モデルのパスが見つかりません: {spec}")
UNKNOWN_QUANTIZE = Text(
    en="unknown quantize={quantize!r}: expected None or '4bit'",
    ja="quantize={quantize!r} は使えません: None か '4bit' にしてください",
)
FOUR_BIT_NEEDS_CUDA = Text(
    en="4-bit loading needs a CUDA GPU; none is available here. Pick a non-quantized model (e.g. "
    "Qwen/Qwen2.5-0.5B-Instruct or the bundled one).",
    ja="4 ビットでの読み込みには CUDA の GPU が必要ですが、ここにはありません。量子化されていないモデル（"
    "Qwen/Qwen2.5-0.5B-Instruct や同梱のモデルなど）を選んでください。",
)
PREQUANTIZED_NEEDS_CUDA = Text(
    en="{spec} is a 4-bit (bitsandbytes) model and needs a CUDA GPU; none is available here. Pick a non-quantized "
    "model (e.g. Qwen/Qwen2.5-0.5B-Instruct or the bundled one).",
    ja="{spec} は 4 ビット（bitsandbytes）のモデルで CUDA の GPU が必要ですが、ここにはありません。量子化されていない"
    "モデル（Qwen/Qwen2.5-0.5B-Instruct や同梱のモデルなど）を選んでください。",
)
LOAD_FAILED = Text(
    en="could not load model {spec!r}: {reason}\nIf this is a Hugging Face hub id, the hub must be reachable (or the "
    "model already in the HF cache); a local folder or .gguf path must exist.",
    ja="モデル {spec!r} を読み込めませんでした: {reason}\nHugging Face の hub id なら hub につながる必要があります（"
    "またはモデルが HF のキャッシュにあること）。ローカルのフォルダや .gguf のパスは実在している必要があります。",
)


@dataclass
class LoadedModel:
    """A model and its tokenizer, with the facts steering needs."""

    model: Any
    tokenizer: Any
    spec: str
    name: str

    @property
    def layers(self) -> torch.nn.ModuleList:
        return find_decoder_layers(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        text_config = getattr(config, "text_config", None) or config
        return int(getattr(text_config, "hidden_size", None) or text_config.n_embd)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.model.parameters() if p.is_floating_point()).dtype

    @property
    def context_length(self) -> int:
        config = self.model.config
        text_config = getattr(config, "text_config", None) or config
        for key in ("max_position_embeddings", "n_positions", "seq_length"):
            if getattr(text_config, key, None):
                return int(getattr(text_config, key))
        return 2048

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "name": self.name,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
        }


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's decoder blocks in order; a clear error when the architecture is not one we know."""
    for path in LAYER_PATHS:
        layers = _get_path(model, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return layers
    raise ValueError(NO_DECODER_LAYERS(model=type(model).__name__, paths=", ".join(LAYER_PATHS)))


def base_model(model: Any) -> Any:
    """The transformer body without the LM head (capture never needs logits)."""
    body = getattr(model, "base_model", None)
    return body if body is not None and body is not model else model


def _default_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return _default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(UNKNOWN_DTYPE(dtype=dtype, choices=", ".join(names)))
    return names[dtype]


def _source(spec: str) -> tuple[str, dict]:
    """Map a spec to the from_pretrained argument and extra keyword arguments."""
    if spec == BUNDLED:
        from .bundled import bundled_model_dir

        return str(bundled_model_dir()), {}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(GGUF_NOT_FOUND(path=path))
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(NO_CONFIG(path=path))
        return str(path), {}
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(PATH_NOT_FOUND(spec=spec))
    return spec, {}


def _needs_4bit(spec: str, quantize: str | None) -> bool:
    """Whether `spec` loads in 4 bits; raises ModelLoadError when that needs a CUDA GPU this machine lacks."""
    prequantized = "bnb-4bit" in spec.lower()
    if quantize not in (None, "none", "4bit"):
        raise ValueError(UNKNOWN_QUANTIZE(quantize=quantize))
    if quantize != "4bit" and not prequantized:
        return False
    if not torch.cuda.is_available():
        raise ModelLoadError(FOUR_BIT_NEEDS_CUDA() if quantize == "4bit" else PREQUANTIZED_NEEDS_CUDA(spec=spec))
    return True


def _quantization_kwargs(spec: str, quantize: str | None, dtype: torch.dtype) -> dict:
    if not _needs_4bit(spec, quantize):
        return {}
    if "bnb-4bit" in spec.lower():
        return {"device_map": "auto"}
    from transformers import BitsAndBytesConfig  # imported only on the CUDA path

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
    )
    return {"quantization_config": config, "device_map": "auto"}


def check_loadable(spec: str, quantize: str | None = None) -> None:
    """Raise ModelLoadError now, loading nothing, for a spec that load_model would refuse: 4-bit without CUDA, a
    missing local path or .gguf, a folder without config.json. A hub id passes (only a download can tell)."""
    if spec != BUNDLED:  # the bundled model's folder is built on first use: nothing to check before that
        _source(spec)
    _needs_4bit(spec, quantize)


def load_model(
    spec: str = BUNDLED, quantize: str | None = None, dtype: str | torch.dtype | None = None, device: str | None = None
) -> LoadedModel:
    """Load `spec` (bundled, hub id, local folder or .gguf file) in eval mode, ready for chat templates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _resolve_dtype(dtype, device)
    source, extra = _source(spec)
    quant = _quantization_kwargs(spec, quantize, torch_dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **extra, **quant)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(LOAD_FAILED(spec=spec, reason=str(exc).splitlines()[0][:300])) from exc
    if not quant and device != "cpu":
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    find_decoder_layers(model)  # fail now, not mid-extraction
    name = (
        "SmolLM2-135M-Instruct" if spec == BUNDLED else Path(spec).stem if spec.endswith(".gguf") else Path(spec).name
    )
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, name=name)
