"""app.py through its HTTP API: the app runs in-process and gradio_client calls each named endpoint.

Generation is kept tiny (greedy, 12 new tokens) and extraction uses 6 pairs: the CPUs are shared.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
app = pytest.importorskip("app")

from steering.steer import hooks_left  # noqa: E402
from steering.vectors import load_vector  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    app.demo.queue(default_concurrency_limit=1).launch(
        prevent_thread_lock=True, server_port=free_port(), server_name="127.0.0.1", quiet=True, **app.launch_kwargs()
    )
    yield app.demo.local_url
    app.demo.close()


@pytest.fixture(scope="module")
def client(url):
    return gradio_client.Client(url, verbose=False)


@pytest.fixture(scope="module")
def vector_path(client):
    """One small extraction on the bundled English data; its files are removed afterwards."""
    summary, files, table, dropdown, note = client.predict(
        "en", None, "gyaru-vs-standard", 6, "8-12", "mean_diff", "last", "test-app-vector", api_name="/extract"
    )
    path = Path(dropdown["value"])  # the dropdown comes back as an update: new choices, new value
    yield path, summary, files, table
    for leftover in (path, path.with_suffix(".json")):
        leftover.unlink(missing_ok=True)


def text_of(message: dict) -> str:
    """A Chatbot message's text, whether content comes back as a string or as a list of parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def chat(url, vector: Path, strength: float, message: str = "How are you today?"):
    """One /chat call in a fresh session (each client has its own history)."""
    fresh = gradio_client.Client(url, verbose=False)
    fresh.predict(api_name="/startup")  # the session's vector list, as a page load would fill it
    return fresh.predict(message, str(vector), "8-12", strength, "calibrated", "all", 12, 0.0, 0, api_name="/chat")


def test_endpoints_are_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/load_model", "/extract", "/layers", "/chat"} <= names


def test_load_model_bundled(client):
    status, dropdown, note = client.predict("bundled", api_name="/load_model")
    assert "SmolLM2-135M-Instruct" in status and "30" in status


def test_load_4bit_without_cuda_is_a_message_not_a_crash(client):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the 4-bit model would really load")
    status, *_ = client.predict("unsloth/Qwen2.5-32B-Instruct-bnb-4bit", api_name="/load_model")
    assert "CUDA" in status
    status, *_ = client.predict("bundled", api_name="/load_model")  # back to the small model for the rest
    assert "SmolLM2-135M-Instruct" in status


def test_extract_writes_a_loadable_vector(vector_path):
    path, summary, files, table = vector_path
    assert path.parent == app.VECTOR_DIR and path.suffix == ".pt" and path.stem.startswith("test-app-vector")
    vector = load_vector(path)
    assert vector.layers == [8, 9, 10, 11, 12]
    assert vector.meta["pairs"] == 6 and vector.meta["lang"] == "en"
    assert "saved" in summary and path.name in summary
    assert {Path(f).suffix for f in files} == {".pt", ".json"}
    assert [row[0].split()[0] for row in table["data"]] == ["8", "9", "10", "11", "12"]


def test_layers_returns_a_figure(client, vector_path):
    path, *_ = vector_path
    figure, note = client.predict(str(path), list(app.SERIES)[:3], api_name="/layers")
    assert figure["type"] == "plotly" and "PC1" in figure["plot"]
    assert "suggested" in note


def test_upload_bare_vector_and_plot_its_layers(client, vector_path, tmp_path):
    """A reference-style .pt with no sidecar, uploaded: it joins this session's list and still plots."""
    path, *_ = vector_path
    bare = tmp_path / "bare-reference.pt"
    bare.write_bytes(path.read_bytes())
    dropdown, note = client.predict([gradio_client.handle_file(str(bare))], None, api_name="/upload_vector")
    uploaded = dropdown["value"]
    assert uploaded.endswith("bare-reference.pt") and uploaded in [value for _, value in dropdown["choices"]]
    figure, note = client.predict(uploaded, [], api_name="/layers")
    assert figure["type"] == "plotly" and "adjacent" in figure["plot"]
    assert "no sidecar" in note


def test_upload_rejects_a_vector_for_another_model(client, tmp_path):
    import torch

    other = tmp_path / "other-model.pt"
    torch.save({3: torch.ones(64)}, other)
    dropdown, note = client.predict([gradio_client.handle_file(str(other))], None, api_name="/upload_vector")
    assert not any(value.endswith("other-model.pt") for _, value in dropdown["choices"])


def test_chat_steered_differs_and_hooks_are_removed(url, vector_path):
    path, *_ = vector_path
    plain, steered, plain_score, steered_score, _msg = chat(url, path, 4.0)
    assert [m["role"] for m in plain] == ["user", "assistant"] == [m["role"] for m in steered]
    assert text_of(plain[1]) and text_of(steered[1])
    assert text_of(plain[1]) != text_of(steered[1])
    assert "style" in plain_score and "markers" in steered_score
    assert hooks_left(app.HOLDER.loaded.model) == 0


def test_chat_at_strength_zero_gives_identical_replies(url, vector_path):
    path, *_ = vector_path
    plain, steered, *_ = chat(url, path, 0.0)
    assert text_of(plain[1]) == text_of(steered[1])
    assert hooks_left(app.HOLDER.loaded.model) == 0


def test_chat_shows_markup_as_text(url, vector_path):
    path, *_ = vector_path
    plain, *_ = chat(url, path, 0.0, message="<b>hi</b> <script>alert(1)</script>")
    assert "<b>" not in text_of(plain[0]) and "&lt;b&gt;" in text_of(plain[0])


def test_chat_is_multi_turn_per_column(url, vector_path):
    """Each column keeps its own replies; the second turn is appended to both."""
    path, *_ = vector_path
    session = gradio_client.Client(url, verbose=False)
    session.predict(api_name="/startup")
    args = (str(path), "8-12", 4.0, "calibrated", "all", 8, 0.0, 0)
    plain1, steered1, *_ = session.predict("Hi!", *args, api_name="/chat")
    plain2, steered2, *_ = session.predict("Tell me more.", *args, api_name="/chat")
    assert [m["role"] for m in plain2] == ["user", "assistant", "user", "assistant"] == [m["role"] for m in steered2]
    assert text_of(plain2[1]) == text_of(plain1[1]) and text_of(steered2[1]) == text_of(steered1[1])
    assert text_of(steered2[2]) == "Tell me more."
