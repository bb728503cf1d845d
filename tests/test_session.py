"""steering.session: the shared model — lazy first load, replacement, the previous model back after a failed
load, and one load at a time. Loading is faked with the tiny random models from conftest; the one real load is
marked slow."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from steering import session as session_module
from steering.messages import localized
from steering.models import SUGGESTED_MODELS, ModelLoadError, suggested_models
from steering.session import ModelNotAllowed, ModelPolicy, ModelSession, model_status
from tests.helpers import has_japanese


@pytest.fixture
def fake_models(monkeypatch, make_tiny):
    """load_model returns a tiny model per spec ('broken/...' fails like an unreachable hub id); every call is
    recorded. check_loadable refuses 'refused/...' the way it refuses 4-bit without CUDA."""
    models = {spec: make_tiny("qwen2", name=spec) for spec in ("bundled", "model-a", "model-b")}
    calls: list[str] = []

    def load_model(spec):
        calls.append(spec)
        if spec.startswith("broken/"):
            raise ModelLoadError(f"could not load model {spec!r}: offline")
        return models[spec]

    def check_loadable(spec):
        if spec.startswith("refused/"):
            raise ModelLoadError(f"{spec}: 4-bit loading needs CUDA")

    monkeypatch.setattr(session_module, "load_model", load_model)
    monkeypatch.setattr(session_module, "check_loadable", check_loadable)
    return models, calls


def test_nothing_loads_until_first_use_then_the_default(fake_models):
    models, calls = fake_models
    shared = ModelSession()
    assert shared.loaded is None and calls == []
    assert shared.get() is models["bundled"] and shared.get() is models["bundled"]
    assert calls == ["bundled"]


def test_spec_never_loads_a_model(fake_models):
    models, calls = fake_models
    shared = ModelSession(default="model-a")
    assert shared.spec == "model-a" and calls == []  # the default's spec, nothing loaded for it
    shared.load("model-b")
    assert shared.spec == models["model-b"].spec and calls == ["model-b"]


def test_load_replaces_the_model_and_the_same_spec_is_not_reloaded(fake_models):
    models, calls = fake_models
    shared = ModelSession(loaded=models["model-a"])
    status: list[str] = []
    assert shared.load("model-b", on_status=status.append) is models["model-b"]
    assert shared.get() is models["model-b"] and status == ["Loading model-b …"]
    assert status[0].in_lang("ja") == "model-b を読み込み中 …"
    assert shared.load("model-b") is models["model-b"]
    assert calls == ["model-b"]


def test_a_failed_load_brings_the_previous_model_back(fake_models):
    models, calls = fake_models
    shared = ModelSession(loaded=models["model-a"])
    status: list[str] = []
    with pytest.raises(ModelLoadError, match="offline"):
        shared.load("broken/model", on_status=status.append)
    assert shared.loaded is models["model-a"]
    assert calls == ["broken/model", "model-a"]
    assert status == ["Loading broken/model …", "Loading model-a back …"]


def test_a_refused_spec_never_touches_the_current_model(fake_models):
    models, calls = fake_models
    shared = ModelSession(loaded=models["model-a"])
    with pytest.raises(ModelLoadError, match="needs CUDA"):
        shared.load("refused/4bit")
    assert shared.loaded is models["model-a"] and calls == []


def test_a_failed_first_load_leaves_the_default_for_later(fake_models):
    models, calls = fake_models
    shared = ModelSession()
    with pytest.raises(ModelLoadError):
        shared.load("broken/model")
    assert shared.loaded is None
    assert shared.get() is models["bundled"] and calls == ["broken/model", "bundled"]


def test_concurrent_loads_run_one_at_a_time(fake_models, monkeypatch):
    models, _ = fake_models
    inner = session_module.load_model
    running, overlaps, order = [0], [], []

    def slow_load(spec):
        running[0] += 1
        overlaps.append(running[0])
        time.sleep(0.05)  # long enough for the other threads to arrive while this load runs
        order.append(spec)
        running[0] -= 1
        return inner(spec)

    monkeypatch.setattr(session_module, "load_model", slow_load)
    shared = ModelSession()
    threads = [threading.Thread(target=shared.load, args=(spec,)) for spec in ("model-a", "model-b", "model-a")]
    threads.append(threading.Thread(target=shared.get))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(order) >= 2 and max(overlaps) == 1, "two loads ran at the same time"
    assert shared.loaded is models[order[-1]]  # the session holds what the last load produced


def test_use_during_a_load_waits_for_the_new_model(fake_models, monkeypatch):
    """While the old model is released and the new one loads, get() must wait, not load the default."""
    models, calls = fake_models
    inner, started = session_module.load_model, threading.Event()

    def slow_load(spec):
        started.set()
        time.sleep(0.1)
        return inner(spec)

    monkeypatch.setattr(session_module, "load_model", slow_load)
    shared = ModelSession(loaded=models["model-a"])
    loader = threading.Thread(target=shared.load, args=("model-b",))
    loader.start()
    assert started.wait(10)
    assert shared.get() is models["model-b"]
    loader.join(10)
    assert calls == ["model-b"]


def test_model_status_names_the_model(tiny_qwen2):
    assert model_status(None).startswith("No model loaded yet")
    assert model_status(tiny_qwen2) == "**tiny-qwen2** (`tiny-qwen2`) — 4 layers, hidden size 64, float32 on cpu"
    assert ModelSession(loaded=tiny_qwen2).status() == model_status(tiny_qwen2)


def test_model_status_in_each_page_language(tiny_qwen2):
    for loaded in (None, tiny_qwen2):
        assert not has_japanese(model_status(loaded, "en"))
        assert has_japanese(model_status(loaded, "ja"))
        assert ModelSession(loaded=loaded).status("ja") == model_status(loaded, "ja")
    assert "4 レイヤー" in model_status(tiny_qwen2, "ja") and "`tiny-qwen2`" in model_status(tiny_qwen2, "ja")


@pytest.mark.slow  # a python subprocess: seconds of start-up
def test_the_library_never_imports_gradio(repo_root, cli_env):
    """Every steering module (session, catalog, chat, scheduler, api, plots, ... serve the app) imports without
    gradio."""
    code = (
        "import importlib, pkgutil, sys, steering\n"
        "for m in pkgutil.iter_modules(steering.__path__): importlib.import_module('steering.' + m.name)\n"
        "sys.exit('gradio' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=cli_env, timeout=300)
    assert done.returncode == 0, "a library module imported gradio"


@pytest.mark.slow
def test_the_real_bundled_model_survives_a_missing_path(tmp_path):
    shared = ModelSession()
    loaded = shared.load("bundled")
    assert loaded.spec == "bundled" and shared.get() is loaded
    with pytest.raises(ModelLoadError, match="not found"):
        shared.load(str(tmp_path / "no-such-model.gguf"))
    assert shared.loaded is loaded


# ------------------------------------------------------------------------------------------ who may switch the model


def test_a_public_server_offers_only_the_presets_and_its_start_up_model(tmp_path):
    policy = ModelPolicy(allow_any=False, started_with="/srv/models/house-model")
    for spec in ("bundled", " Qwen/Qwen2.5-0.5B-Instruct ", "/srv/models/house-model", "", None):
        assert policy.check(spec) == (str(spec or "").strip() or "bundled")
    assert policy.allowed[-1] == "/srv/models/house-model" and policy.choices[-1][0].endswith("(started with)")
    assert policy.choices_in("ja")[-1] == ("/srv/models/house-model（起動時のモデル）", "/srv/models/house-model")
    assert [spec for _, spec in policy.choices_in("ja")] == policy.allowed
    assert policy.choices_in("ja")[0] == ("同梱モデル（SmolLM2-135M-Instruct）", "bundled")  # the presets' labels too
    assert not any(has_japanese(label) for label, _ in policy.choices)
    assert ModelPolicy().allowed == [spec for _, spec in ModelPolicy().presets]  # no start-up model: presets only


def test_preset_labels_follow_the_page_language_and_an_operators_own_presets_keep_theirs():
    assert ModelPolicy().choices == ModelPolicy().choices_in("en") == SUGGESTED_MODELS
    assert ModelPolicy().choices_in("ja") == suggested_models("ja")
    own = ModelPolicy(presets=(("house model", "org/house"), ("bundled", "bundled")))
    assert own.choices_in("ja") == own.choices == [("house model", "org/house"), ("bundled", "bundled")]


def test_a_refused_spec_gets_one_message_that_reveals_nothing(tmp_path):
    """An existing folder, a missing one, a .gguf, a hub id: the same words, which name none of them."""
    policy = ModelPolicy(allow_any=False)
    real = tmp_path / "real-model"
    real.mkdir()
    (real / "config.json").write_text("{}", encoding="utf-8")
    specs = ["/etc", str(real), str(tmp_path / "missing"), str(tmp_path / "x.gguf"), "someone/random-model-123"]
    messages = set()
    for spec in specs:
        with pytest.raises(ModelNotAllowed) as info:
            policy.check(spec)
        messages.add(str(info.value))
        assert spec not in str(info.value)
    assert len(messages) == 1
    (message,) = messages
    assert "--allow-any-model" in message and "bundled" in message and "not found" not in message
    assert issubclass(ModelNotAllowed, ValueError)
    # the page shows it in its own language: one language at a time
    with pytest.raises(ModelNotAllowed) as info:
        policy.check("/etc")
    assert not has_japanese(localized(info.value, "en")) and localized(info.value, "en") == message
    japanese = localized(info.value, "ja")
    assert has_japanese(japanese) and "--allow-any-model" in japanese and "/etc" not in japanese


def test_allow_any_lets_any_spec_through_to_the_loader(tmp_path):
    policy = ModelPolicy(allow_any=True)
    assert policy.check(str(tmp_path / "anything")) == str(tmp_path / "anything")
    assert policy.check("someone/any-model") == "someone/any-model"


def test_a_load_calls_the_release_hooks_before_the_new_model_loads(monkeypatch):
    from steering import session as session_module

    order = []
    monkeypatch.setattr(session_module, "check_loadable", lambda spec: None)
    monkeypatch.setattr(session_module, "load_model", lambda spec: order.append(f"load {spec}") or spec)
    holder = ModelSession(loaded=SimpleNamespace(spec="old"))
    holder.on_release.append(lambda: order.append("release"))
    holder.load("new")
    assert order == ["release", "load new"]
