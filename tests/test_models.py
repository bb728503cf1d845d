"""steering.models: decoder-layer discovery and load_model's behaviour and error messages (layer specs:
test_settings.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from steering.models import (
    BUNDLED,
    SUGGESTED_MODELS,
    LoadedModel,
    ModelLoadError,
    check_loadable,
    find_decoder_layers,
    load_model,
    suggested_models,
)
from tests.helpers import has_japanese

VOCAB = 128


def _tiny(family: str):
    from transformers import AutoModelForCausalLM, GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    configs = {
        "qwen2": lambda: Qwen2Config(**common),
        "llama": lambda: LlamaConfig(**common),
        "mistral": lambda: MistralConfig(**common),
        "gemma": lambda: GemmaConfig(**common, head_dim=16),
        "gpt2": lambda: GPT2Config(
            n_embd=64, n_layer=3, n_head=4, vocab_size=VOCAB, n_positions=128, bos_token_id=1, eos_token_id=2
        ),
    }
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(configs[family]()).eval()


@pytest.mark.parametrize(
    "family, path",
    [
        ("qwen2", "model.layers"),
        ("llama", "model.layers"),
        ("mistral", "model.layers"),
        ("gemma", "model.layers"),
        ("gpt2", "transformer.h"),
    ],
)
def test_find_decoder_layers(family, path):
    model = _tiny(family)
    layers = find_decoder_layers(model)
    expected = model
    for part in path.split("."):
        expected = getattr(expected, part)
    assert layers is expected
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == 3
    loaded = LoadedModel(model=model, tokenizer=None, spec=family, name=family)
    assert loaded.num_layers == 3
    assert loaded.hidden_size == 64
    assert loaded.dtype == torch.float32
    assert loaded.context_length == 128
    assert loaded.describe()["num_layers"] == 3


def test_find_decoder_layers_gemma3_nested_language_model():
    """Gemma 3 (multimodal) nests its text decoder under model.language_model; the vision tower's own encoder
    layers must not be mistaken for it."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config=dict(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            vocab_size=VOCAB,
            max_position_embeddings=128,
            sliding_window=32,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        mm_tokens_per_image=4,
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    layers = find_decoder_layers(model)
    assert layers is model.model.language_model.layers
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == config.text_config.num_hidden_layers == 3
    loaded = LoadedModel(model=model, tokenizer=None, spec="gemma3", name="gemma3")
    assert loaded.num_layers == 3
    assert loaded.hidden_size == 64  # from text_config, not the vision tower's 32
    assert loaded.context_length == 128


def test_suggested_model_labels_in_each_page_language():
    english, japanese = suggested_models("en"), suggested_models("ja")
    assert SUGGESTED_MODELS == english and suggested_models() == english  # existing callers: English
    assert [spec for _, spec in japanese] == [spec for _, spec in english] and english[0][1] == BUNDLED
    assert not any(has_japanese(label) for label, _ in english)
    assert has_japanese(japanese[0][0]) and "SmolLM2-135M-Instruct" in japanese[0][0]
    cuda = dict((spec, label) for label, spec in english)["unsloth/Qwen2.5-32B-Instruct-bnb-4bit"]
    assert cuda == "unsloth/Qwen2.5-32B-Instruct-bnb-4bit (4-bit: needs CUDA)"  # one language per label
    assert japanese[-1][0] == "unsloth/Qwen2.5-32B-Instruct-bnb-4bit（4 ビット: CUDA が必要）"
    assert suggested_models("ja-JP") == japanese and suggested_models("fr") == english


def test_find_decoder_layers_unknown_module():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"cannot find the decoder layers of Sequential") as info:
        find_decoder_layers(model)
    assert "model.layers" in str(info.value)  # says where it looked
    assert "Supported" in str(info.value)


# --------------------------------------------------------------------------- load_model errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("spec, quantize", [("bundled", "4bit"), ("someone/Model-7B-bnb-4bit", None)])
def test_4bit_without_cuda(spec, quantize):
    imported_before = "bitsandbytes" in sys.modules
    with pytest.raises(ModelLoadError, match="CUDA") as info:
        load_model(spec, quantize=quantize)
    assert "4-bit" in str(info.value)
    assert imported_before or "bitsandbytes" not in sys.modules, "the CPU error path must not import bitsandbytes"


def test_unknown_quantize():
    with pytest.raises(ValueError, match="quantize"):
        load_model("bundled", quantize="8bit")


def test_unknown_dtype():
    with pytest.raises(ValueError, match="dtype"):
        load_model("bundled", dtype="float8")


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: str(tmp / "no-such-model"),
        lambda tmp: str(tmp / "deep" / "er" / "model"),
        lambda tmp: "./definitely-not-a-model-folder",
        lambda tmp: str(tmp / "missing.gguf"),
    ],
)
def test_nonexistent_local_path(tmp_path, make):
    spec = make(tmp_path)
    with pytest.raises(ModelLoadError, match="not found") as info:
        load_model(spec)
    assert Path(spec).name in str(info.value)


def test_unknown_hub_id_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: set the constant it already derived too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = "nobody-at-all-xyz/no-such-model-123"
    with pytest.raises(ModelLoadError) as info:
        load_model(spec)
    message = str(info.value)
    assert spec in message
    assert "hub" in message.lower()
    assert "Traceback" not in message
    assert len(message) < 1000


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))


def test_check_loadable_fails_early_without_loading(tmp_path, monkeypatch):
    """The failures load_model would hit before touching weights are raised by check_loadable alone."""
    import transformers

    def never(*_args, **_kwargs):
        raise AssertionError("check_loadable must not load anything")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    for spec, match in [
        (str(tmp_path / "missing.gguf"), "not found"),
        (str(tmp_path / "no-such-model"), "not found"),
        (str(tmp_path), "config.json"),
    ]:
        with pytest.raises(ModelLoadError, match=match):
            check_loadable(spec)
    if not torch.cuda.is_available():
        for spec, quantize in [("bundled", "4bit"), ("someone/Model-7B-bnb-4bit", None)]:
            with pytest.raises(ModelLoadError, match="CUDA"):
                check_loadable(spec, quantize)
    with pytest.raises(ValueError, match="quantize"):
        check_loadable("bundled", "8bit")
    assert check_loadable("bundled") is None
    assert check_loadable("Qwen/Qwen2.5-0.5B-Instruct") is None  # a hub id: only a download can tell


@pytest.mark.slow
def test_load_bundled(bundled):
    assert bundled.spec == "bundled"
    assert bundled.name == "SmolLM2-135M-Instruct"
    assert bundled.num_layers == 30
    assert bundled.hidden_size == 576
    assert bundled.dtype == torch.float32
    assert bundled.device.type == "cpu"
    assert not bundled.model.training
    assert not any(p.requires_grad for p in bundled.model.parameters())
    assert bundled.tokenizer.pad_token is not None
    assert bundled.describe() == {
        "spec": "bundled",
        "name": "SmolLM2-135M-Instruct",
        "num_layers": 30,
        "hidden_size": 576,
        "dtype": "float32",
        "device": "cpu",
    }


@pytest.mark.slow
def test_load_gguf():
    from steering.bundled import cache_dir

    path = cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is not in the cache")
    loaded = load_model(str(path))
    assert loaded.num_layers == 30
    assert loaded.hidden_size == 576
    assert loaded.dtype == torch.float32
    assert loaded.name == "SmolLM2-135M-Instruct.Q4_1"
    assert loaded.tokenizer.pad_token is not None
    ids = loaded.tokenizer("Hello", return_tensors="pt")
    with torch.inference_mode():
        logits = loaded.model(**ids).logits
    assert torch.isfinite(logits).all()
