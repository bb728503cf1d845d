"""The OpenAI-compatible API (steering/api.py): /v1/models and /v1/chat/completions (plain, steered, streamed),
OpenAI-shaped errors, the bearer key and when one is required. Fast tests use FastAPI's TestClient or a real
uvicorn server with the official `openai` client on a tiny random model; the slow one drives the launched app
(bundled model) through the same client."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from steering.api import OpenAIApi
from steering.generate import GenerationSettings, generate_rows
from steering.metadata import Recommended
from steering.scheduler import Scheduler
from steering.serve import ApiKeyRequired, api_key_policy
from steering.steer import Steering
from steering.vector_files import save_vector
from tests.helpers import hooks_left
from tests.test_row_steer import clamp_vector

fastapi = pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

HI = [{"role": "user", "content": "Hi! What should I cook tonight?"}]
VECTOR = "tiny_gal.pt"
RECOMMENDED = Recommended(layers="1-2", strength=2.0, scale="calibrated", apply_to="generated", repetition_penalty=1.2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A vectors folder: one fitting vector with a recommended setting, one for another model, one junk file."""
    folder = tmp_path_factory.mktemp("vectors")
    vector = clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)
    vector.meta.recommended = RECOMMENDED
    save_vector(vector, folder / VECTOR)
    save_vector(clamp_vector(32, [0, 1], 3, 0.0, 1.0), folder / "other_model.pt")
    (folder / "junk.pt").write_bytes(b"not a vector")
    (folder / "notes.txt").write_text("not a vector either")
    return folder


@pytest.fixture(scope="module")
def service(tiny_qwen2, folder):
    scheduler = Scheduler(max_batch_rows=16, max_queue=16, gather_seconds=0.02)
    api = OpenAIApi(lambda: tiny_qwen2, folder, scheduler)
    yield api
    scheduler.close()


@pytest.fixture
def client(service):
    service.api_key = None
    return TestClient(FastAPI(routes=service.routes))


def body(**extra) -> dict:
    return {"model": "tiny-qwen2", "messages": HI, "max_tokens": 8, "temperature": 0, **extra}


def solo(loaded, steering: Steering | None, tokens: int = 8, penalty: float = 1.0) -> str:
    settings = GenerationSettings(max_new_tokens=tokens, repetition_penalty=penalty)
    strength = steering.strength if steering is not None else 0.0
    return generate_rows(loaded, [HI], [strength], steering, settings).texts[0]


def recommended_steering(folder, strength: float = 2.0) -> Steering:
    from steering.vector_files import load_vector

    return Steering(load_vector(folder / VECTOR), "1-2", strength, "calibrated", "generated", "add")


# --------------------------------------------------------------------------------------------- TestClient


def test_models_lists_the_model_then_the_vectors_that_fit(client):
    response = client.get("/v1/models")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data[0]["id"] == "tiny-qwen2" and data[0]["object"] == "model" and data[0]["num_layers"] == 4
    assert [entry["id"] for entry in data[1:]] == [VECTOR]  # not the other model's vector, not the junk
    assert data[1]["kind"] == "steering_vector"
    assert data[1]["recommended"] == {
        "layers": "1-2",
        "strength": 2.0,
        "scale": "calibrated",
        "mode": "add",
        "apply_to": "generated",
        "half_life": None,
        "repetition_penalty": 1.2,
    }


def test_plain_completion_is_the_plain_greedy_reply(client, tiny_qwen2):
    response = client.post("/v1/chat/completions", json=body())
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny-qwen2" and "steering" not in out
    assert out["choices"][0]["message"] == {"role": "assistant", "content": solo(tiny_qwen2, None)}
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert (
        usage["completion_tokens"] <= 8 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )


def test_steering_fills_what_it_leaves_out_from_the_recommended_setting(client, tiny_qwen2, folder):
    response = client.post("/v1/chat/completions", json=body(steering={"vector": VECTOR, "strength": 3}))
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["steering"] == {
        "vector": VECTOR,
        "layers": "1-2",
        "strength": 3.0,
        "scale": "calibrated",
        "mode": "add",
        "apply_to": "generated",
        "half_life": None,
        "repetition_penalty": 1.2,
    }
    expected = solo(tiny_qwen2, recommended_steering(folder, 3.0), penalty=1.2)
    assert out["choices"][0]["message"]["content"] == expected
    assert expected != solo(tiny_qwen2, None, penalty=1.2)
    # every key given: nothing from the recommendation
    spec = {"vector": VECTOR, "strength": 4, "layers": [0, 3], "scale": "raw", "mode": "clamp", "apply_to": "all",
            "half_life": 5, "repetition_penalty": 1.0}  # fmt: skip
    out = client.post("/v1/chat/completions", json=body(steering=spec)).json()
    assert out["steering"]["layers"] == "0,3" and out["steering"]["half_life"] == 5.0
    vector = recommended_steering(folder).vector
    steering = Steering(vector, [0, 3], 4.0, "raw", "all", "clamp", 5.0)
    assert out["choices"][0]["message"]["content"] == solo(tiny_qwen2, steering)


def test_a_vector_named_as_the_model_steers_at_its_recommended_setting(client, tiny_qwen2, folder):
    out = client.post("/v1/chat/completions", json=body(model=VECTOR)).json()
    assert out["model"] == VECTOR and out["steering"]["strength"] == 2.0
    assert out["choices"][0]["message"]["content"] == solo(tiny_qwen2, recommended_steering(folder), penalty=1.2)


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_streaming_chunks_add_up_to_the_reply_and_end_with_done(client, tiny_qwen2, folder):
    spec = {"vector": VECTOR, "strength": 3}
    request = body(stream=True, stream_options={"include_usage": True}, steering=spec)
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(ch["delta"].get("content", "") for c in chunks for ch in c["choices"])
    assert text == solo(tiny_qwen2, recommended_steering(folder, 3.0), penalty=1.2)
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes in (["length"], ["stop"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(
    ("request_body", "status", "param", "code"),
    [
        ({"model": "gpt-4o", "messages": HI}, 404, "model", "model_not_found"),
        (body(steering={"vector": "missing.pt"}), 404, "steering.vector", "vector_not_found"),
        (body(steering={"vector": "../tiny_gal.pt"}), 400, "steering.vector", None),
        (body(steering={"vector": "/etc/passwd"}), 400, "steering.vector", None),
        (body(steering={"vector": "notes.txt"}), 404, "steering.vector", "vector_not_found"),
        (body(steering={"vector": "junk.pt"}), 400, "steering.vector", "vector_unreadable"),
        (body(steering={"vector": "other_model.pt"}), 400, "steering.vector", "vector_does_not_fit"),
        (body(steering={"vector": VECTOR, "colour": "pink"}), 400, "steering.colour", None),
        (body(steering={"vector": VECTOR, "strength": "lots"}), 400, "steering.strength", None),
        (body(steering={"vector": VECTOR, "layers": "40"}), 400, "steering", None),
        (body(steering={"vector": VECTOR, "mode": "shout"}), 400, "steering", None),
        (body(steering={"strength": 2}), 400, "steering.vector", None),
        (body(steering="tiny_gal.pt"), 400, "steering", None),
        ({"model": "tiny-qwen2"}, 400, "messages", None),
        (body(messages=[{"role": "tool", "content": "x"}]), 400, "messages", None),
        (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400, "messages", None),
        (body(messages=[{"role": "user", "content": "   "}]), 400, None, None),
        (body(temperature=5), 400, "temperature", None),
        (body(top_p=0), 400, "top_p", None),
        (body(max_tokens=0), 400, "max_tokens", None),
        (body(max_tokens=10**9), 400, "max_tokens", None),
        (body(n=99), 400, "n", None),
        (body(seed=-1), 400, "seed", None),
        (body(logprobs=True), 400, "logprobs", "unsupported_parameter"),
        (body(stop=[""]), 400, None, None),
        (body(response_format={"type": "json_object"}), 400, "response_format", None),
    ],
)
def test_errors_have_openais_shape_and_status(client, request_body, status, param, code):
    response = client.post("/v1/chat/completions", json=request_body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json(client):
    response = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = client.post("/v1/chat/completions", json=[1, 2])
    assert response.status_code == 400


def test_the_bearer_key(service, client):
    service.api_key = "s3cret-key"
    assert client.get("/v1/models").status_code == 401
    response = client.post("/v1/chat/completions", json=body(), headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/models", headers={"Authorization": "Basic s3cret-key"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200


def test_busy_is_429_with_retry_after(tiny_qwen2, folder):
    scheduler = Scheduler(max_queue=0)  # nothing may wait: every request is turned away
    try:
        client = TestClient(FastAPI(routes=OpenAIApi(lambda: tiny_qwen2, folder, scheduler).routes))
        response = client.post("/v1/chat/completions", json=body())
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "busy" and "busy, try again" in response.json()["error"]["message"]
    finally:
        scheduler.close()


def test_n_choices_and_seeded_sampling(client):
    request = body(n=3, temperature=0.9, seed=11, max_tokens=6)
    first = client.post("/v1/chat/completions", json=request).json()
    again = client.post("/v1/chat/completions", json=request).json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [c["message"]["content"] for c in again["choices"]]  # the same seed, the same replies
    assert len(set(texts)) > 1  # each choice has its own seed (seed + index)


@pytest.mark.parametrize(
    ("host", "share", "key", "serve", "space", "expected"),
    [
        ("127.0.0.1", False, None, True, False, (True, None)),
        ("localhost", False, " k3y ", True, False, (True, "k3y")),
        ("0.0.0.0", False, "k3y", True, False, (True, "k3y")),
        ("0.0.0.0", False, None, False, False, (False, None)),
        ("0.0.0.0", False, None, True, True, (False, None)),  # a Space without the secret: the page only
        ("127.0.0.1", True, "k3y", True, False, (True, "k3y")),
    ],
)
def test_api_key_policy(host, share, key, serve, space, expected):
    assert api_key_policy(host, share, key, serve, space) == expected


def test_api_key_policy_refuses_an_open_api_on_a_reachable_address():
    with pytest.raises(ApiKeyRequired, match="--api-key KEY"):
        api_key_policy("0.0.0.0", False, None)
    with pytest.raises(ApiKeyRequired, match="--share"):
        api_key_policy("127.0.0.1", True, None)
    with pytest.raises(ApiKeyRequired, match="without spaces"):
        api_key_policy("0.0.0.0", False, "two words")


# --------------------------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(service):
    """The router on uvicorn on a free local port, in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    from tests.conftest import free_port

    port = free_port()
    config = uvicorn.Config(FastAPI(routes=service.routes), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def openai_client(url: str, key: str = "unused"):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def test_the_openai_client_lists_chats_and_streams(server, service, tiny_qwen2, folder):
    service.api_key = None
    client = openai_client(server)
    assert [m.id for m in client.models.list()] == ["tiny-qwen2", VECTOR]
    steering = {"vector": VECTOR, "strength": 3}
    reply = client.chat.completions.create(
        model="tiny-qwen2", messages=HI, max_tokens=8, temperature=0, extra_body={"steering": steering}
    )
    expected = solo(tiny_qwen2, recommended_steering(folder, 3.0), penalty=1.2)
    assert reply.choices[0].message.content == expected
    assert reply.usage.completion_tokens >= 1 and reply.model_extra["steering"]["layers"] == "1-2"
    stream = client.chat.completions.create(
        model="tiny-qwen2", messages=HI, max_tokens=8, temperature=0, stream=True, extra_body={"steering": steering}
    )
    parts, reasons = [], []
    for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(parts) == expected and reasons[-1] in ("stop", "length")
    plain = client.chat.completions.create(model="tiny-qwen2", messages=HI, max_tokens=8, temperature=0)
    assert plain.choices[0].message.content == solo(tiny_qwen2, None)


def test_the_openai_client_sees_typed_errors(server, service):
    openai = pytest.importorskip("openai")
    service.api_key = None
    client = openai_client(server)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-qwen2", messages=HI, extra_body={"steering": {"vector": "../x"}})
    service.api_key = "s3cret-key"
    try:
        with pytest.raises(openai.AuthenticationError):
            openai_client(server, "wrong").models.list()
        assert openai_client(server, "s3cret-key").models.list().data[0].id == "tiny-qwen2"
    finally:
        service.api_key = None


def test_concurrent_openai_clients_each_get_their_own_reply(server, service, tiny_qwen2, folder):
    service.api_key = None
    strengths = [None, 1.0, 3.0, -2.0, None, 4.0]
    results, errors = {}, []

    def call(i: int) -> None:
        extra = {} if strengths[i] is None else {"steering": {"vector": VECTOR, "strength": strengths[i]}}
        try:
            reply = openai_client(server).chat.completions.create(
                model="tiny-qwen2", messages=HI, max_tokens=8, temperature=0, extra_body=extra
            )
            results[i] = reply.choices[0].message.content
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    batches = service.scheduler.stats.batches
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(strengths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i, strength in enumerate(strengths):
        steering = None if strength is None else recommended_steering(folder, strength)
        assert results[i] == solo(tiny_qwen2, steering, penalty=1.0 if strength is None else 1.2)
    assert service.scheduler.stats.batches - batches < len(strengths)  # some requests shared a batch
    assert hooks_left(tiny_qwen2.model) == 0


def test_a_client_that_disconnects_mid_stream_cancels_its_rows(server, service, tiny_qwen2, monkeypatch):
    httpx = pytest.importorskip("httpx")
    service.api_key = None
    tickets = []
    submit = service.scheduler.submit
    monkeypatch.setattr(service.scheduler, "submit", lambda *a, **k: tickets.append(submit(*a, **k)) or tickets[-1])
    request = body(stream=True, max_tokens=400)
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{server}/chat/completions", json=request) as response:
        lines = response.iter_lines()
        while not next(lines).startswith('data: {"id"'):
            pass
        next(lines)  # and some content
    deadline = time.monotonic() + 30
    while not tickets[0].done and time.monotonic() < deadline:
        time.sleep(0.05)
    result = tickets[0].result(timeout=0)
    assert result.finished == ["cancelled"] and result.token_counts[0] < 400
    assert hooks_left(tiny_qwen2.model) == 0


# --------------------------------------------------------------------------------------------- the app (slow)


@pytest.mark.slow
def test_the_app_serves_the_api_on_its_own_port(app_url):
    """The launched app (bundled model, shipped vectors): /v1 beside the page, on the same port."""
    app = pytest.importorskip("app")
    name = "smollm2-135m-instruct_gal_en.pt"
    if not (app.CATALOG.folder / name).is_file():
        pytest.skip(f"{name} is not shipped here")
    client = openai_client(f"{app_url}/v1")
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "bundled" and name in ids
    steered = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": "How was your weekend?"}],
        max_tokens=16,
        temperature=0,
        extra_body={"steering": {"vector": name, "strength": 4}},
    )
    plain = client.chat.completions.create(
        model="bundled", messages=[{"role": "user", "content": "How was your weekend?"}], max_tokens=16, temperature=0
    )
    assert steered.choices[0].message.content and plain.choices[0].message.content
    assert steered.choices[0].message.content != plain.choices[0].message.content
    assert steered.model_extra["steering"]["layers"] == "12-16"
    assert torch.is_grad_enabled()  # the worker's inference mode never leaks into the test thread


def test_the_command_line_and_environment_give_the_key():
    from steering.serve import server_args

    args = server_args([], {})
    assert (args.api_key, args.no_api, args.on_space) == (None, False, False)
    assert server_args(["--api-key", "k1"], {"STEERING_API_KEY": "k2"}).api_key == "k1"
    assert server_args([], {"STEERING_API_KEY": "k2"}).api_key == "k2"
    args = server_args(["--no-api"], {"SPACE_ID": "someone/studio"})
    assert args.no_api and args.on_space and args.host == "0.0.0.0"
    assert api_key_policy(args.host, args.share, args.api_key, not args.no_api, args.on_space) == (False, None)


def test_the_app_refuses_an_open_api_on_a_reachable_address(monkeypatch):
    app = pytest.importorskip("app")
    monkeypatch.delenv("STEERING_API_KEY", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("STEERING_MODEL", raising=False)
    monkeypatch.setattr(app, "RULES", app.RULES)  # main() sets it: put it back afterwards
    monkeypatch.setattr(app.API, "api_key", app.API.api_key)
    launched = []
    monkeypatch.setattr(app.demo, "launch", lambda *a, **k: launched.append(k))
    with pytest.raises(SystemExit, match="--api-key KEY"):
        app.main(["--host", "0.0.0.0"])
    assert not launched and app.API.api_key is None
    app.main(["--host", "0.0.0.0", "--no-api"])
    assert launched[-1]["app_kwargs"] is None  # the page only
    app.main(["--host", "127.0.0.1"])
    assert launched[-1]["app_kwargs"] == {"routes": app.API.routes} and app.API.api_key is None


def test_an_oversized_body_is_refused(client):
    response = client.post(
        "/v1/chat/completions", content=b"x" * ((8 << 20) + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["type"] == "invalid_request_error"


def test_a_client_that_gives_up_on_a_non_streamed_request_cancels_it(server, service, monkeypatch):
    httpx = pytest.importorskip("httpx")
    service.api_key = None
    tickets = []
    submit = service.scheduler.submit
    monkeypatch.setattr(service.scheduler, "submit", lambda *a, **k: tickets.append(submit(*a, **k)) or tickets[-1])
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server}/chat/completions", json=body(max_tokens=400, min_tokens=400), timeout=0.5)
    deadline = time.monotonic() + 30
    while not (tickets and tickets[0].done) and time.monotonic() < deadline:
        time.sleep(0.05)
    result = tickets[0].result(timeout=0)
    assert result.finished == ["cancelled"] and result.token_counts[0] < 400
