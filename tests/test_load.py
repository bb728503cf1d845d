"""app.py under load and faults (issue 7): concurrent sessions, a client that goes away mid-stream, a generation
that raises. The app runs in-process (conftest.app_url); every session is its own gradio_client.Client.

Kept small for a shared 2-core box: the bundled model, greedy, 8 new tokens (the disconnect test asks for 200
and stops after the first update).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

gradio_client = pytest.importorskip("gradio_client")
app = pytest.importorskip("app")

from steering.data import load_prompts  # noqa: E402
from tests.helpers import hooks_left  # noqa: E402

VECTOR = app.CATALOG.folder / "smollm2-135m-instruct_gal_en.pt"  # shipped, calibrated, English
LAYERS = "12-16"
STRENGTHS = [0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 4.0, 5.0]
TOKENS = 8

pytestmark = [
    pytest.mark.slow,  # the launched app on the bundled model
    pytest.mark.skipif(not VECTOR.is_file(), reason=f"{VECTOR.name} is not shipped here"),
]


def text_of(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def session(url: str):
    """A fresh client session with its vector list filled, as a page load does."""
    client = gradio_client.Client(url, verbose=False)
    client.predict(api_name="/startup")
    return client


def chat_args(message: str, strength: float, tokens: int = TOKENS) -> tuple:
    return (message, str(VECTOR), LAYERS, strength, "calibrated", "all", tokens, 0.0, 0)


def replies(result) -> tuple[str, str]:
    """(plain, steered) reply text of one /chat result."""
    plain, steered, *_ = result
    return text_of(plain[-1]), text_of(steered[-1])


def chat_once(url: str, message: str, strength: float) -> tuple[str, str]:
    return replies(session(url).predict(*chat_args(message, strength), api_name="/chat"))


@pytest.fixture(scope="module")
def url(app_url):
    app.HOLDER.load("bundled")  # whatever an earlier module loaded: these tests run on the bundled model
    return app_url


@pytest.fixture(scope="module")
def model(url):
    return app.HOLDER.get().model


def test_concurrent_sessions_get_their_solo_replies(url, model):
    prompts = load_prompts("en")[: len(STRENGTHS)]
    jobs = list(zip(prompts, STRENGTHS))
    solo = [chat_once(url, message, strength) for message, strength in jobs]  # sequential, one session each
    assert len(set(solo)) > 1, "different prompts and strengths should not all give one reply"

    start = threading.Barrier(len(jobs))

    def concurrent(job):
        message, strength = job
        client = session(url)
        start.wait(timeout=60)  # every session is connected before any sends
        return replies(client.predict(*chat_args(message, strength), api_name="/chat"))

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(concurrent, jobs, timeout=600))  # re-raises any session's error here
    for (message, strength), alone, loaded in zip(jobs, solo, together):
        assert loaded == alone, f"strength {strength}, {message!r}: concurrent reply differs from the solo one"
    assert hooks_left(model) == 0


def wait_for_updates(job, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(job.outputs()) < count:
        assert not job.done(), f"the job ended before {count} updates: {job.status()}"
        assert time.monotonic() < deadline, "no streamed update in time"
        time.sleep(0.02)


def test_client_that_goes_away_mid_stream_frees_the_model(url, model, monkeypatch):
    """Cancel a 200-token reply after its first streamed tokens: its rows leave the scheduler's batch early (they
    would otherwise write exactly 200 tokens: min_new_tokens is forced below), no hook is left, the next request
    completes."""
    import dataclasses

    submit = app.SCHEDULER.submit

    def forced_length(loaded, rows):
        return submit(loaded, [dataclasses.replace(row, min_new_tokens=row.settings.max_new_tokens) for row in rows])

    monkeypatch.setattr(app.SCHEDULER, "submit", forced_length)
    steps = app.SCHEDULER.stats.steps
    client = session(url)
    job = client.submit(*chat_args("Tell me a very long story about a cat.", 2.0, tokens=200), api_name="/chat")
    wait_for_updates(job, 2)  # the empty first update, then streamed text
    job.cancel()

    deadline = time.monotonic() + 120
    while app.SCHEDULER.load()["running_rows"]:  # the rows leave at the step after the cancel
        assert time.monotonic() < deadline, "generation did not stop after the client went away"
        time.sleep(0.05)
    taken = app.SCHEDULER.stats.steps - steps
    assert taken < 199, f"generation ran to the end ({taken} steps) after the client left"
    assert hooks_left(model) == 0

    monkeypatch.undo()
    plain, steered = chat_once(url, "How are you today?", 2.0)
    assert plain and steered
    assert hooks_left(model) == 0


def test_error_inside_generation_is_shown_and_the_app_recovers(url, model, monkeypatch):
    calls, original = [], model.forward

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated device failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", fails_once)
    with pytest.raises(gradio_client.exceptions.AppError, match="simulated device failure"):
        session(url).predict(*chat_args("Hello!", 2.0), api_name="/chat")
    assert hooks_left(model) == 0

    plain, steered = chat_once(url, "Hello!", 2.0)  # the very next request works
    assert len(calls) > 2 and plain and steered  # a prefill, then a forward pass per token
    assert hooks_left(model) == 0
