"""No request can crash or poison the shared server: what app.py does with hostile input.

The first part calls the app's handlers in-process on the tiny random model (fast): who may switch the shared
model, layer ranges that would fill memory, a 3 MB message, paths outside the vectors folder, the per-session
vectors and the shared-folder save. The second part (slow) launches the app and fires every hostile input at it
through gradio_client, then proves the server still gives the same greedy reply as before.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from steering import session
from steering.catalog import SESSION_TTL_S, VectorCatalog
from steering.serve import ServerRules
from steering.session import ModelPolicy, ModelSession
from steering.vector_files import save_vector
from steering.vectors import SteeringVector
from tests.helpers import hooks_left

app = pytest.importorskip("app")
gr = pytest.importorskip("gradio")

HUGE_LAYERS = "0-100000000"
QUICK_S = 2.0  # "at once": generous for a shared 2-core box, far below what a hundred million layers would take


@pytest.fixture
def tiny_app(monkeypatch, tmp_path, tiny_qwen2):
    """The app module with the tiny model shared, an empty shared vectors folder, own files under tmp_path/own,
    and the policy of a public server (only the listed models, no shared saves)."""
    monkeypatch.setattr(app, "HOLDER", ModelSession(loaded=tiny_qwen2))
    (tmp_path / "vectors").mkdir()
    catalog = VectorCatalog(tmp_path / "vectors", scratch=tmp_path / "own")
    monkeypatch.setattr(app, "CATALOG", catalog)
    monkeypatch.setattr(app, "RULES", ServerRules(ModelPolicy(allow_any=False), shared_saves=False))
    yield app
    catalog.close()


@pytest.fixture
def shared_vector(tiny_app) -> Path:
    """A calibrated vector for the tiny model (layers 1, 2) in the shared folder."""
    directions = {layer: torch.ones(64) / 8 for layer in (1, 2)}
    stats = {layer: {"mean_diff_norm": 2.0} for layer in (1, 2)}
    vector = SteeringVector(directions, {"model": "tiny-qwen2", "lang": "en"}, stats)
    return save_vector(vector, tiny_app.CATALOG.folder / "tiny.pt")


def no_progress(*args, **kwargs):
    return None


def chat(app, vector, message="hi", layers="1-2", strength=1.0, tokens=2, seed=0, own=None):
    history = {"plain": [], "steered": []}
    args = (message, str(vector), layers, strength, "raw", "all", tokens, 0.0, seed, 1.0, history, own or [])
    return list(app.on_chat(*args))


def extract(app, layers="1-2", name="gyaru", own=None, dataset="en"):
    args = (dataset, None, "gyaru-vs-standard", 2, layers, "mean_diff", "last", name, own or [])
    return app.on_extract(*args, progress=no_progress)


# ------------------------------------------------------------------------------ who may switch the shared model


@pytest.mark.parametrize(
    "lang, warned, opening",
    [
        ("en", "listed models", "⚠ This server loads only its listed models"),
        ("ja", "一覧のモデルだけ", "⚠ このサーバーで読み込めるのは一覧のモデルだけです"),
    ],
)
def test_a_public_server_refuses_other_models_with_one_message_that_reveals_nothing(
    tiny_app, tmp_path, monkeypatch, lang, warned, opening
):
    looked_up = []
    monkeypatch.setattr(session, "check_loadable", lambda spec: looked_up.append(spec))
    monkeypatch.setattr(session, "load_model", lambda spec: looked_up.append(spec))
    real = tmp_path / "a-real-model"
    real.mkdir()
    (real / "config.json").write_text("{}", encoding="utf-8")
    kept = tiny_app.HOLDER.loaded
    statuses = set()
    for spec in ("/etc", str(real), str(tmp_path / "missing"), str(tmp_path / "m.gguf"), "someone/random-7f3a"):
        with pytest.warns(UserWarning, match=warned):  # the toast, in the page's language
            status, *_ = tiny_app.on_load_model(spec, [], lang, progress=no_progress)
        assert spec not in status
        statuses.add(status)
    assert len(statuses) == 1, "an existing and a missing path must read the same"
    (status,) = statuses
    assert status.startswith(opening) and "--allow-any-model" in status
    assert status.endswith(tiny_app.model_status(kept, lang))  # and which model everyone still has
    assert looked_up == [] and tiny_app.HOLDER.loaded is kept  # nothing on disk or on the hub was looked at


def test_the_listed_models_and_the_start_up_model_still_load(tiny_app, monkeypatch):
    loads = []
    monkeypatch.setattr(
        tiny_app.HOLDER, "load", lambda spec, on_status=None: loads.append(spec) or tiny_app.HOLDER.loaded
    )
    monkeypatch.setattr(tiny_app.RULES, "policy", ModelPolicy(allow_any=False, started_with="/srv/models/house"))
    for spec in ("bundled", "Qwen/Qwen2.5-0.5B-Instruct", "/srv/models/house", " "):
        tiny_app.on_load_model(spec, [], progress=no_progress)
    assert loads == ["bundled", "Qwen/Qwen2.5-0.5B-Instruct", "/srv/models/house", "bundled"]
    model_update = tiny_app.on_page_load([])[1]  # the page offers the start-up model by name too
    assert ("/srv/models/house (started with)", "/srv/models/house") in model_update.choices


def outputs_of(app_module, api_name: str) -> int:
    """How many outputs the page's event named `api_name` updates."""
    (fn,) = [fn for fn in app_module.demo.fns.values() if fn.api_name == api_name]
    return len(fn.outputs)


def test_a_refused_or_loaded_model_updates_exactly_the_model_bar_outputs(tiny_app, monkeypatch):
    # one value per output whether the load worked or not (Gradio drops extra values with a warning)
    with pytest.warns(UserWarning, match="listed models"):
        refused = tiny_app.on_load_model("someone/random-7f3a", [], progress=no_progress)
    monkeypatch.setattr(tiny_app.HOLDER, "load", lambda spec, on_status=None: tiny_app.HOLDER.loaded)
    loaded = tiny_app.on_load_model("bundled", [], progress=no_progress)
    assert len(refused) == len(loaded) == outputs_of(tiny_app, "load_model")
    assert len(tiny_app.on_page_load([])) == outputs_of(tiny_app, "startup")


@pytest.mark.parametrize(
    "argv, any_model, shared_saves",
    [
        (["--no-api"], True, True),  # 127.0.0.1: only this machine reaches it
        (["--no-api", "--host", "0.0.0.0"], False, False),
        (["--no-api", "--share"], False, False),
        (["--no-api", "--host", "0.0.0.0", "--allow-any-model", "--model", "/srv/m"], True, False),
        (["--no-api", "--host", "0.0.0.0", "--allow-shared-saves"], False, True),
    ],
)
def test_main_sets_what_visitors_may_do_from_the_command_line(tiny_app, monkeypatch, argv, any_model, shared_saves):
    for name in ("STEERING_ALLOW_ANY_MODEL", "STEERING_ALLOW_SHARED_SAVES", "STEERING_MODEL", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tiny_app.demo, "launch", lambda **kwargs: None)
    monkeypatch.setattr(tiny_app.HOLDER, "load", lambda spec, on_status=None: None)
    monkeypatch.setattr(tiny_app, "RULES", tiny_app.RULES)  # main() replaces it: put it back afterwards
    tiny_app.main(argv)
    assert (tiny_app.RULES.policy.allow_any, tiny_app.RULES.shared_saves) == (any_model, shared_saves)
    assert tiny_app.RULES.policy.started_with == ("/srv/m" if "--model" in argv else None)


# ----------------------------------------------------------------------------- layer ranges that fill memory


def refused_at_once(call, match: str = "out of range"):
    start = time.perf_counter()
    with pytest.raises(gr.Error, match=match):
        call()
    assert time.perf_counter() - start < QUICK_S


@pytest.mark.parametrize("layers", [HUGE_LAYERS, "-100000000--1", "1,0-99999999999999999999"])
def test_huge_layer_ranges_are_refused_at_once_in_chat_sweep_and_extract(tiny_app, shared_vector, tiny_qwen2, layers):
    refused_at_once(lambda: chat(tiny_app, shared_vector, layers=layers))
    sweep = (str(shared_vector), f"1-2 {layers}", "0,1", 2, 4, "raw")
    refused_at_once(lambda: tiny_app.on_sweep(*sweep, progress=no_progress))
    refused_at_once(lambda: extract(tiny_app, layers=layers))
    assert hooks_left(tiny_qwen2.model) == 0
    assert list((tiny_app.CATALOG.scratch).glob("*")) == []  # no own folder was made for the refused extraction


# ------------------------------------------------------------------------------------------ absurd values


def test_a_3mb_message_is_refused_before_it_is_tokenized(tiny_app, shared_vector, monkeypatch):
    tokenized = []
    tokenizer = tiny_app.HOLDER.loaded.tokenizer
    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: tokenized.append(1))
    refused_at_once(lambda: chat(tiny_app, shared_vector, message="x" * 3_000_000), "over the .*-character limit")
    assert tokenized == []


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(strength=math.nan), "strength must be a finite number"),
        (dict(strength=1e39), "strength"),
        (dict(seed=10**30), "seed must be at most"),
        (dict(tokens=math.nan), "max_new_tokens must be a whole number"),
    ],
)
def test_absurd_numbers_in_chat_are_clear_errors(tiny_app, shared_vector, tiny_qwen2, change, match):
    refused_at_once(lambda: chat(tiny_app, shared_vector, **change), match)
    assert hooks_left(tiny_qwen2.model) == 0


# ------------------------------------------------------------------------------- paths a client makes up


@pytest.mark.parametrize(
    "make_path",
    [
        lambda folder: "/etc/passwd",
        lambda folder: str(folder / ".." / "outside.pt"),
        lambda folder: str(folder / ".." / ".." / ".." / "etc" / "passwd"),
        lambda folder: str(folder / "tiny.json"),  # in the folder, but not a vector file
        lambda folder: "/no/such/vector.pt",
    ],
)
def test_vector_paths_outside_the_catalog_are_unknown(tiny_app, shared_vector, make_path):
    path = make_path(tiny_app.CATALOG.folder)
    for call in (
        lambda: chat(tiny_app, path),
        lambda: tiny_app.on_layers(path, [], []),
        lambda: tiny_app.on_vector_selected(path, []),
        lambda: tiny_app.on_save_shared(path, []),
    ):
        with pytest.raises(gr.Error, match="unknown vector|this server does not save"):
            call()


def test_an_extracted_vector_is_listed_only_to_its_session_and_saved_shared_only_where_allowed(
    tiny_app, shared_vector, monkeypatch
):
    summary, _files, _table, dropdown, _note, own, _help = extract(tiny_app, name="../../mine")
    (mine,) = own
    assert Path(mine).name == "mine.pt" and Path(mine).parent.parent == tiny_app.CATALOG.scratch
    assert dropdown.value == mine and ("✎ mine.pt (this session)", mine) in dropdown.choices
    others, _note = tiny_app.on_refresh(None, [])  # another session's list
    assert mine not in [value for _, value in others.choices]
    with pytest.raises(gr.Error, match="unknown vector"):
        chat(tiny_app, mine)  # another session cannot open it either
    assert chat(tiny_app, mine, own=own)[-1][0]  # its own session can
    with pytest.raises(gr.Error, match="this server does not save into the shared vectors folder"):
        tiny_app.on_save_shared(mine, own)
    assert not (tiny_app.CATALOG.folder / "mine.pt").exists()
    monkeypatch.setattr(tiny_app.RULES, "shared_saves", True)
    shared, _note = tiny_app.on_save_shared(mine, own)
    assert shared.value == str(tiny_app.CATALOG.folder / "mine.pt")
    everyone, _note = tiny_app.on_refresh(None, [])
    assert shared.value in [value for _, value in everyone.choices]
    own_state = next(b for b in tiny_app.demo.blocks.values() if isinstance(b, gr.State) and b.value == [])
    own_state.delete_callback(own)  # the session ends
    assert not Path(mine).exists() and Path(shared.value).exists()


def test_a_failed_extraction_leaves_no_own_folder(tiny_app, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(gr.Error, match="empty"):
        tiny_app.on_extract(
            "upload", str(empty), "gyaru-vs-standard", 2, "1-2", "mean_diff", "last", "x", [], progress=no_progress
        )
    assert list(tiny_app.CATALOG.scratch.glob("*")) == []


def test_own_files_have_a_lifetime(tiny_app):
    own_state = next(b for b in tiny_app.demo.blocks.values() if isinstance(b, gr.State) and b.value == [])
    assert own_state.time_to_live == SESSION_TTL_S == tiny_app.CATALOG.ttl_s
    assert tiny_app.demo.delete_cache == (3600, SESSION_TTL_S)  # Gradio's own copies of uploads and downloads


def test_the_vector_dropdown_accepts_a_value_without_a_page_load(tiny_app):
    dropdown = next(b for b in tiny_app.demo.blocks.values() if getattr(b, "elem_id", None) == "vector-dd")
    assert dropdown.allow_custom_value and dropdown.preprocess("/any/path.pt") == "/any/path.pt"


# --------------------------------------------------------------------------- the launched app, over HTTP (slow)

SHIPPED = Path(__file__).resolve().parent.parent / "vectors" / "smollm2-135m-instruct_gal_en.pt"
GREEDY = ("How are you today?", "12-16", 4.0, "calibrated", "all", 12, 0.0, 0)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The shipped English vector in a fresh shared folder, own files in a temporary one, a public server's
    policy; yields the shared vector's path."""
    folder = tmp_path_factory.mktemp("vectors")
    for suffix in (".pt", ".json"):
        shutil.copy(SHIPPED.with_suffix(suffix), folder / SHIPPED.with_suffix(suffix).name)
    catalog = VectorCatalog(folder, scratch=tmp_path_factory.mktemp("own"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "CATALOG", catalog)
        patch.setattr(app, "RULES", ServerRules(ModelPolicy(allow_any=False), shared_saves=False))
        yield folder / SHIPPED.name
    catalog.close()


@pytest.fixture(scope="module")
def url(served, app_url):
    return app_url  # conftest.app_url: launched after `served` patched the module


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if isinstance(p, dict))


def replies(client, vector: Path) -> tuple[str, str]:
    plain, steered, *_ = client.predict(GREEDY[0], str(vector), *GREEDY[1:], api_name="/chat")
    return text_of(plain[-1]), text_of(steered[-1])


def raw_call(url: str, api_name: str, data: list) -> tuple[str, str]:
    """One call through Gradio's REST API with the JSON written by hand (NaN included, which gradio_client refuses
    to send): (the final event, its data)."""
    import json

    import httpx

    body = json.dumps({"data": data})  # allow_nan: a hostile client sends the bare token NaN
    posted = httpx.post(f"{url}/gradio_api/call{api_name}", content=body, headers={"content-type": "application/json"})
    posted.raise_for_status()
    event, payload = "", ""
    with httpx.stream("GET", f"{url}/gradio_api/call{api_name}/{posted.json()['event_id']}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                payload = line.split(":", 1)[1].strip()
    return event, payload


@pytest.mark.slow
def test_chat_works_without_a_page_load(url, served):
    """An API client may call /chat first: no '… is not in the list of choices: []'."""
    gradio_client = pytest.importorskip("gradio_client")
    plain, steered = replies(gradio_client.Client(url, verbose=False), served)
    assert plain and steered and plain != steered


@pytest.mark.slow
def test_a_hostile_client_gets_clear_errors_and_the_server_keeps_its_replies(url, served, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    AppError = gradio_client.exceptions.AppError
    new = lambda: gradio_client.Client(url, verbose=False)  # noqa: E731 - a fresh session, no /startup
    before = replies(new(), served)
    model_before = app.HOLDER.loaded
    hostile = new()

    def refused(match: str, *args, api_name: str, client=hostile, limit: float = 30.0):
        start = time.perf_counter()
        with pytest.raises(AppError, match=match):
            client.predict(*args, api_name=api_name)
        assert time.perf_counter() - start < limit, f"{api_name} took too long to refuse"

    def chat_args(message=GREEDY[0], vector=served, layers="12-16", strength=4.0, tokens=12, seed=0):
        return message, str(vector), layers, strength, "calibrated", "all", tokens, 0.0, seed

    # huge layer ranges, refused from their ends
    refused("out of range", *chat_args(layers=HUGE_LAYERS), api_name="/chat")
    refused("out of range", str(served), f"12-16 {HUGE_LAYERS}", "0,2", 2, 4, "calibrated", api_name="/sweep")
    extract = ("en", None, "gyaru-vs-standard", 2, HUGE_LAYERS, "mean_diff", "last", "x")
    refused("out of range", *extract, api_name="/extract")
    # a 3 MB message, absurd numbers
    refused("over the .*-character limit", *chat_args(message="ギャル" * 1_000_000), api_name="/chat")
    refused("greater than maximum", *chat_args(strength=1e39), api_name="/chat")
    refused("seed must be at most", *chat_args(seed=1e30), api_name="/chat")
    for change, match in ((dict(strength=math.nan), "strength must be a finite"), (dict(tokens=math.nan), "max_new")):
        event, payload = raw_call(url, "/chat", [*chat_args(**change), 1.0, "add", 0, "en", False])
        assert event == "error" and match in payload, (event, payload)
    # switching everyone's model to a server folder or a random hub id: one message, the model kept
    statuses = {hostile.predict(spec, api_name="/load_model")[0] for spec in ("/etc", "nobody-x/random-hub-9f2c")}
    assert len(statuses) == 1 and next(iter(statuses)).startswith("⚠") and "listed models" in next(iter(statuses))
    assert app.HOLDER.loaded is model_before
    # a random-bytes .pt upload is refused (a warning), the list keeps what it had
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    dropdown, _note = hostile.predict([gradio_client.handle_file(str(junk))], None, api_name="/upload_vector")
    assert not any(value.endswith("junk.pt") for _, value in (dropdown or {}).get("choices", []))
    # vector paths with ../ and a save name with ../
    for path in (served.parent / ".." / served.name, "/etc/passwd", served.parent / ".." / ".." / "etc" / "passwd"):
        refused("unknown vector", *chat_args(vector=path), api_name="/chat")
        refused("unknown vector", str(path), [], api_name="/layers")
    refused("this server does not save", str(served), api_name="/save_to_shared")
    summary, _files, _table, dropdown, _note, _help = hostile.predict(
        "en", None, "gyaru-vs-standard", 2, "8-9", "mean_diff", "last", "../../evil", api_name="/extract"
    )
    saved = Path(dropdown["value"])
    assert saved.name == "evil.pt" and saved.parent.parent == app.CATALOG.scratch and "evil.pt" in summary
    assert sorted(p.name for p in served.parent.iterdir()) == sorted([served.name, served.with_suffix(".json").name])
    refused("unknown vector", *chat_args(vector=saved), api_name="/chat", client=new())  # another session's
    assert hooks_left(app.HOLDER.loaded.model) == 0
    # the server still answers, with the same greedy replies as before
    assert replies(new(), served) == before
    assert app.HOLDER.loaded is model_before
