"""Shared fixtures: the bundled tokenizer/model and tiny random Qwen2/Llama models built in-process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One intra-op thread: these models are tiny, and on a shared 2-core box a second OpenMP thread that has to
# wait for a busy core makes every forward pass many times slower. STEERING_TEST_THREADS overrides.
THREADS = int(os.environ.get("STEERING_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)

from steering.models import LoadedModel  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: loads the bundled model, launches the app or drives a browser (deselect: -m 'not slow')",
    )


def subprocess_env() -> dict:
    """Environment for `python -m steering` subprocesses: the repo importable, one thread per op."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", str(THREADS))
    env.setdefault("MKL_NUM_THREADS", str(THREADS))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def cli_env() -> dict:
    return subprocess_env()


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from steering.bundled import bundled_model_dir

    return bundled_model_dir()


@pytest.fixture(scope="session")
def tokenizer(bundled_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_dir)
    if tok.pad_token is None:  # as load_model does
        tok.pad_token = tok.eos_token
    return tok


def build_tiny(config_cls, tokenizer, name: str, dtype: torch.dtype = torch.float32, seed: int = 0, **extra):
    """A random 4-layer, hidden-64 causal LM of `config_cls`'s family sharing the bundled tokenizer."""
    from transformers import AutoModelForCausalLM

    config = config_cls(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=name, name=name)


@pytest.fixture(scope="session")
def make_tiny(tokenizer):
    """build_tiny bound to the bundled tokenizer: make_tiny("qwen2"|"llama", name=..., dtype=..., seed=...)."""

    def make(family: str = "qwen2", name: str | None = None, dtype: torch.dtype = torch.float32, seed: int = 0):
        from transformers import LlamaConfig, Qwen2Config

        config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[family]
        return build_tiny(config_cls, tokenizer, name or f"tiny-{family}", dtype=dtype, seed=seed)

    return make


@pytest.fixture(scope="session")
def tiny_qwen2(tokenizer) -> LoadedModel:
    from transformers import Qwen2Config

    return build_tiny(Qwen2Config, tokenizer, "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tokenizer) -> LoadedModel:
    from transformers import LlamaConfig

    return build_tiny(LlamaConfig, tokenizer, "tiny-llama")


@pytest.fixture(scope="session")
def bundled() -> LoadedModel:
    from steering.models import load_model

    return load_model("bundled")


# --------------------------------------------------------------------------- the app, launched in-process


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    """app.py launched in-process on a free local port for one test module (closed afterwards); its URL without
    the trailing slash. Skips when gradio (or the app's other extras) is missing."""
    app = pytest.importorskip("app")
    app.demo.launch(  # with the queue app_layout set up, as `python app.py` launches it
        prevent_thread_lock=True, server_port=free_port(), server_name="127.0.0.1", quiet=True, **app.launch_kwargs()
    )
    yield app.demo.local_url.rstrip("/")
    app.demo.close()
