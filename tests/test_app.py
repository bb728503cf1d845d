"""app.py through its HTTP API: the app runs in-process and gradio_client calls each named endpoint.

Generation is kept tiny (greedy, 12 new tokens) and extraction uses 6 pairs: the CPUs are shared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
app = pytest.importorskip("app")

from steering import settings as S  # noqa: E402
from steering.plots import SERIES, metric_title  # noqa: E402
from steering.tables import sweep_header  # noqa: E402
from steering.vector_files import load_vector  # noqa: E402
from tests.helpers import hooks_left  # noqa: E402

pytestmark = pytest.mark.slow  # every test here talks to the launched app on the bundled model


@pytest.fixture(scope="module")
def vector_dir(tmp_path_factory):
    """The app's catalog over a fresh folder for this module: these tests never write into the repository's
    vectors/. The sessions' own folders (uploads, extractions) are made under a temporary folder of their own and
    removed afterwards. The server runs as a public one would (only the listed models) but lets sessions save into
    the shared folder (vector_path does)."""
    from steering.catalog import VectorCatalog
    from steering.serve import ServerRules
    from steering.session import ModelPolicy

    catalog = VectorCatalog(tmp_path_factory.mktemp("vectors"), scratch=tmp_path_factory.mktemp("own"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "CATALOG", catalog)
        patch.setattr(app, "RULES", ServerRules(ModelPolicy(allow_any=False), shared_saves=True))
        yield catalog.folder
    catalog.close()


@pytest.fixture(scope="module")
def url(vector_dir, app_url):
    return app_url  # conftest.app_url: the app launched in-process for this module, after vector_dir


@pytest.fixture(scope="module")
def client(url):
    return gradio_client.Client(url, verbose=False)


@pytest.fixture(scope="module")
def vector_path(client):
    """One small extraction on the bundled English data (into the extracting session's own folder), then saved
    into the module's temporary shared vectors folder, where every session (each test's fresh client) finds it."""
    summary, files, table, dropdown, note, table_help = client.predict(
        "en", None, "gyaru-vs-standard", 6, "8-12", "mean_diff", "last", "test-app-vector", api_name="/extract"
    )
    # the download, the table and its help come back as updates that show them
    assert files["visible"] and table["visible"] and table_help["visible"]
    own = dropdown["value"]  # the dropdown comes back as an update: new choices, new value
    shared, _note = client.predict(own, api_name="/save_to_shared")
    return Path(shared["value"]), summary, files["value"], table["value"], own


def text_of(message: dict) -> str:
    """A Chatbot message's text, whether content comes back as a string or as a list of parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def chat(url, vector: Path, strength: float, message: str = "How are you today?", **setting):
    """One /chat call in a fresh session (each client has its own history); `setting` passes mode, half_life, ..."""
    fresh = gradio_client.Client(url, verbose=False)
    fresh.predict(api_name="/startup")  # the session's vector list, as a page load would fill it
    args = (message, str(vector), "8-12", strength, "calibrated", "all", 12, 0.0, 0)
    return fresh.predict(*args, **setting, api_name="/chat")


def test_the_launched_queue_looks_for_events_every_10_ms(client):
    """Gradio's own queue looks every 1 ms, even idle (7 % of a core); the app's every 10 ms, and its events run
    (every test here goes through it)."""
    queue = app.demo._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (0.01, 0.05)
    assert client.predict(api_name="/startup") is not None


def test_gradios_matplotlib_import_around_every_event_fails_at_once_when_it_is_absent(client):
    """Gradio imports matplotlib before and after every event and streamed update; the app says once that it is
    absent (when it is), instead of every try searching sys.path, and events still run."""
    import importlib.util
    import sys

    if sys.modules.get("matplotlib", "not marked") is not None:  # the app marks it only where it is not installed
        pytest.skip("matplotlib is installed here")
    assert importlib.util.find_spec("matplotlib") is None
    with pytest.raises(ImportError):
        import matplotlib  # noqa: F401
    assert client.predict(api_name="/startup") is not None


def test_endpoints_are_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/load_model", "/extract", "/layers", "/chat", "/sweep", "/apply_best", "/apply_cell"} <= names


def test_load_model_bundled(client):
    status, dropdown, note, dataset, start, width = client.predict("bundled", api_name="/load_model")
    assert "SmolLM2-135M-Instruct" in status and "30" in status
    assert dataset["value"] == "en"  # the Extract tab's data in the model's language
    assert (start["minimum"], start["maximum"], width["minimum"], width["maximum"]) == (0, 29, 1, 30)


def test_load_4bit_without_cuda_is_a_message_not_a_crash(client):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the 4-bit model would really load")
    client.predict("bundled", api_name="/load_model")
    kept = app.HOLDER.loaded
    status, *_ = client.predict("unsloth/Qwen2.5-32B-Instruct-bnb-4bit", api_name="/load_model")
    assert "CUDA" in status
    assert app.HOLDER.loaded is kept, "a request that fails before loading must keep everyone's model"
    assert "SmolLM2-135M-Instruct" in status  # the status line still shows the kept model
    status, *_ = client.predict("bundled", api_name="/load_model")  # back to the small model for the rest
    assert "SmolLM2-135M-Instruct" in status


def test_extract_writes_a_loadable_vector(vector_path, vector_dir, repo_root, url, client):
    path, summary, files, table, own = vector_path
    assert path.parent == vector_dir != repo_root / "vectors"  # never the repository's own folder
    assert Path(own).parent.parent == app.CATALOG.scratch  # extracted into this session's own folder
    assert load_vector(own).meta.pairs == 6 and load_vector(path).meta.pairs == 6  # and its shared copy
    listed = lambda dropdown: [value for _, value in dropdown["choices"]]  # noqa: E731
    assert own in listed(client.predict(None, api_name="/list_vectors")[0])  # the extracting session lists it
    _status, _model, others, _note, *_ = gradio_client.Client(url, verbose=False).predict(api_name="/startup")
    assert own not in listed(others) and str(path) in listed(others)  # another session: only the shared copy
    assert path.suffix == ".pt" and path.stem.startswith("test-app-vector")
    vector = load_vector(path)
    assert vector.layers == [8, 9, 10, 11, 12]
    assert vector.meta.pairs == 6 and vector.meta.lang == "en"
    assert summary.startswith("Saved") and path.name in summary
    assert {Path(f).suffix for f in files} == {".pt", ".json"}
    assert [row[0].split()[0] for row in table["data"]] == ["8", "9", "10", "11", "12"]


def test_layers_returns_a_figure(client, vector_path):
    path, *_ = vector_path
    figure, note = client.predict(str(path), list(SERIES)[:3], api_name="/layers")
    assert figure["type"] == "plotly" and "Share explained by the main direction" in figure["plot"]
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
    assert figure["type"] == "plotly" and "Similarity to the previous layer" in figure["plot"]
    assert "no statistics saved" in note


def test_upload_rejects_a_vector_for_another_model(client, tmp_path):
    import torch

    other = tmp_path / "other-model.pt"
    torch.save({3: torch.ones(64)}, other)
    dropdown, note = client.predict([gradio_client.handle_file(str(other))], None, api_name="/upload_vector")
    assert not any(value.endswith("other-model.pt") for _, value in dropdown["choices"])


def test_a_sessions_uploads_go_when_its_state_is_deleted(vector_path):
    """Gradio deletes a closed session's state after a while; the uploads state then removes its temp folders."""
    import gradio as gr

    path, *_ = vector_path
    added, refused = app.CATALOG.add_uploads([str(path), str(path.with_suffix(".json"))], app.HOLDER.get())
    assert len(added) == 1 and not refused and Path(added[0]).exists()
    states = [block for block in app.demo.blocks.values() if isinstance(block, gr.State)]
    (uploads_state,) = [state for state in states if state.value == []]
    uploads_state.delete_callback(added)
    assert not Path(added[0]).parent.exists()
    assert path.exists()  # the vectors folder is never touched


def test_chat_steered_differs_and_hooks_are_removed(url, vector_path):
    path, *_ = vector_path
    plain, steered, plain_score, steered_score, meter = chat(url, path, 4.0)
    assert [m["role"] for m in plain] == ["user", "assistant"] == [m["role"] for m in steered]
    assert text_of(plain[1]) and text_of(steered[1])
    assert text_of(plain[1]) != text_of(steered[1])
    assert "style" in plain_score and "markers" in steered_score
    assert meter == ""  # the meter is off unless asked for
    assert hooks_left(app.HOLDER.loaded.model) == 0


def test_a_chat_turn_is_announced_to_the_scheduler_until_its_rows_are_submitted(url, vector_path, monkeypatch):
    """Turns sent together share one prefill however long each takes to check: the check runs announced."""
    announced = []
    check = app.chat_request

    def watched(*fields):
        announced.append(app.SCHEDULER.load()["incoming"])
        return check(*fields)

    monkeypatch.setattr(app, "chat_request", watched)
    plain, steered, *_ = chat(url, vector_path[0], 4.0)
    assert announced == [1] and text_of(steered[1])
    assert app.SCHEDULER.load()["incoming"] == 0


def test_chat_modes_and_half_life_reach_the_steering(url, vector_path):
    """Each mode steers (the extracted vector records the projections clamp needs), and a half-life decays the push
    so the reply differs from the constant one."""
    path, *_ = vector_path
    plain, constant, *_ = chat(url, path, 4.0)
    for mode in S.MODES:
        plain_m, steered_m, *_ = chat(url, path, 4.0, mode=mode)
        assert text_of(plain_m[1]) == text_of(plain[1])  # the plain column never changes
        assert text_of(steered_m[1]) != text_of(plain[1]), mode
    _, decayed, *_ = chat(url, path, 4.0, half_life=2)
    assert text_of(decayed[1]) != text_of(constant[1])
    assert hooks_left(app.HOLDER.loaded.model) == 0


@pytest.fixture
def no_projection_vector(vector_path):
    """A copy of the extracted vector as extracted before the projections clamp needs were recorded."""
    path, *_ = vector_path
    old = path.with_name(f"{path.stem}-noproj.pt")
    shutil.copy(path, old)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    for stats in meta["layers"].values():
        del stats["baseline_projection"], stats["gyaru_projection"]
    old.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    yield old
    for leftover in (old, old.with_suffix(".json")):
        leftover.unlink(missing_ok=True)


def test_chat_refuses_clamp_without_projections_and_a_negative_half_life(url, vector_path, no_projection_vector):
    """Clamp on a vector without recorded projections is a toast that says why; nothing runs."""
    with pytest.raises(gradio_client.exceptions.AppError, match="clamp.*re-extract"):
        chat(url, no_projection_vector, 2.0, mode="clamp")
    plain, steered, *_ = chat(url, no_projection_vector, 2.0, mode="norm_preserving")  # other modes still work
    assert text_of(steered[1])
    path, *_ = vector_path
    with pytest.raises(gradio_client.exceptions.AppError, match="less than minimum value 0"):  # the field's own bound
        chat(url, path, 2.0, half_life=-3)
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


def test_missing_local_model_keeps_the_current_one(client, tmp_path, monkeypatch):
    from steering.session import ModelPolicy

    monkeypatch.setattr(app.RULES, "policy", ModelPolicy(allow_any=True))  # a server that lets any path through
    kept = app.HOLDER.get()
    status, *_ = client.predict(str(tmp_path / "no-such-model.gguf"), api_name="/load_model")
    assert "not found" in status and "SmolLM2-135M-Instruct" in status
    assert app.HOLDER.loaded is kept


@pytest.fixture
def recommended_vector(vector_path):
    """A copy of the extracted vector whose sidecar carries a "recommended" setting."""
    path, *_ = vector_path
    copy = path.with_name(f"{path.stem}-rec.pt")
    shutil.copy(path, copy)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    meta["recommended"] = {
        "layers": [9, 10, 11],
        "strength": 3.5,
        "scale": "calibrated",
        "repetition_penalty": 1.3,
        "mode": "norm_preserving",
        "apply_to": "generated",
        "half_life": 24,
    }
    copy.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    yield copy
    for leftover in (copy, copy.with_suffix(".json")):
        leftover.unlink(missing_ok=True)


def test_vector_defaults_use_the_recommended_setting(url, vector_path, recommended_vector):
    client = sweep_session(url)  # a page load after the file appeared: it is in this session's list
    chat_setting, examples, sweep_defaults = split_defaults(
        client.predict(str(recommended_vector), api_name="/vector_defaults")
    )
    layers, strength, scale, mode, apply_to, half_life, penalty = chat_setting
    assert (layers, strength["value"], scale, penalty) == ("9-11", 3.5, "calibrated", 1.3)
    assert (mode, apply_to, half_life) == ("norm_preserving", "generated", 24)
    assert examples["choices"] and examples["value"] is None  # the vector's language's prompts
    assert sweep_defaults == ("8-10 10-12", "0,1,2,3,4", "calibrated", "norm_preserving")
    path, *_ = vector_path  # a fresh extraction: suggested layer ±2 (those the vector has) at the study's setting
    (layers, strength, scale, mode, apply_to, half_life, penalty), *_ = split_defaults(
        client.predict(str(path), api_name="/vector_defaults")
    )
    fresh = S.FRESH_SETTING
    assert (layers, strength["value"], scale, mode) == ("10-12", fresh["strength"], fresh["scale"], fresh["mode"])
    assert (apply_to, half_life, penalty) == (fresh["apply_to"], fresh["half_life"], fresh["repetition_penalty"])


def split_defaults(values):
    """/vector_defaults: the Chat tab's setting (7 controls), its example prompts, the Sweep tab's 4 defaults (the
    2 layer sliders between the setting and the prompts are left out: test_vector_defaults_set_the_layer_sliders)."""
    assert len(values) == 14
    return tuple(values[:7]), values[9], tuple(values[10:])


def sweep_session(url):
    session = gradio_client.Client(url, verbose=False)
    session.predict(api_name="/startup")
    return session


def test_sweep_shows_heatmaps_and_table_and_applies_cells_to_chat(url, vector_path, monkeypatch):
    """2 layer options × strengths 0, 2 on 2 prompts, 8 tokens, in the norm-preserving mode on generated tokens.
    Which cell is best depends on the model's replies (8 greedy tokens rarely hold a marker), so recommend() is
    pinned here; test_sweep tests recommend()."""
    path, *_ = vector_path
    monkeypatch.setattr(app, "recommend", lambda cells: cells[-1])
    session = sweep_session(url)
    grid = (str(path), "8-10 10-12", "0,2", 2, 8, "calibrated", 1.0, "norm_preserving", "generated")
    markers, broken, table, best, pick = session.predict(*grid, api_name="/sweep")
    for figure, metric in ((markers, "marker_share"), (broken, "broken_share")):
        title = metric_title(metric)
        assert figure["type"] == "plotly" and title in figure["plot"] and '"heatmap"' in figure["plot"]
    assert len(table["data"]) == 4
    assert [row[0] for row in table["data"]] == ["8-10 @ 0", "8-10 @ 2", "10-12 @ 0", "10-12 @ 2"]
    metrics = ("marker_share", "broken_share", "perplexity_ratio", "gal_readable_share")
    assert {sweep_header(key) for key in metrics} <= set(table["headers"])  # in plain words
    modes = {row[table["headers"].index(sweep_header("mode"))] for row in table["data"]}
    assert modes == {"norm_preserving"}
    assert "10-12" in best and "2" in best
    assert "gal words" in best and "broken" in best and "perplexity" in best
    assert pick["value"] == "10-12 @ 2" and len(pick["choices"]) == 4
    assert hooks_left(app.HOLDER.loaded.model) == 0

    applied = session.predict(str(path), api_name="/apply_best")
    layers, strength, scale, mode, apply_to, half_life, penalty, start, width = applied  # the setting, the sliders
    assert (layers, strength["value"], scale) == ("10-12", 2.0, "calibrated")
    assert (mode, apply_to, half_life, penalty) == ("norm_preserving", "generated", 0, 1.0)
    assert (start["value"], width["value"]) == (10, 3)  # the layer sliders show the band 10-12
    layers, strength, scale, mode, apply_to, *_ = session.predict("8-10 @ 2", str(path), api_name="/apply_cell")
    assert (layers, strength["value"], scale, mode, apply_to) == (
        "8-10",
        2.0,
        "calibrated",
        "norm_preserving",
        "generated",
    )
    # another session has no sweep of its own
    with pytest.raises(gradio_client.exceptions.AppError, match="sweep first"):
        sweep_session(url).predict(str(path), api_name="/apply_best")


def test_sweep_without_a_recommendation(url, vector_path, monkeypatch):
    path, *_ = vector_path
    monkeypatch.setattr(app, "recommend", lambda cells: None)
    session = sweep_session(url)
    *_, table, best, pick = session.predict(str(path), "10-12", "0 2", 2, 4, "calibrated", api_name="/sweep")
    assert len(table["data"]) == 2 and best.startswith("No recommendation") and pick["value"] == "10-12 @ 2"
    with pytest.raises(gradio_client.exceptions.AppError, match="no recommended cell"):
        session.predict(str(path), api_name="/apply_best")
    layers, strength, scale, mode, *_ = session.predict("10-12 @ 2", str(path), api_name="/apply_cell")
    assert (layers, strength["value"], mode) == ("10-12", 2.0, "add")


def test_sweep_refuses_what_the_vector_cannot_do_before_generating(url, vector_path, no_projection_vector, tmp_path):
    """Clamp without recorded projections, and the calibrated scale on a bare .pt (no sidecar)."""
    session = sweep_session(url)
    with pytest.raises(gradio_client.exceptions.AppError, match="clamp"):
        session.predict(str(no_projection_vector), "10-12", "0,2", 2, 4, "calibrated", 1.0, "clamp", api_name="/sweep")
    path, *_ = vector_path
    bare = tmp_path / "bare-sweep.pt"
    bare.write_bytes(path.read_bytes())
    dropdown, _note = session.predict([gradio_client.handle_file(str(bare))], None, api_name="/upload_vector")
    with pytest.raises(gradio_client.exceptions.AppError, match="calibrated scale"):
        session.predict(dropdown["value"], "10-12", "0,2", 2, 4, "calibrated", api_name="/sweep")


@pytest.mark.parametrize(
    "layers, strengths, message",
    [
        ("8-10 40-44", "0,2", "out of range"),
        ("3-5", "0,2", "no direction"),
        ("8-10", "0,x", "not a number"),
        ("", "0,2", "layer option"),
        ("8-10", "", "strength"),
    ],
)
def test_sweep_refuses_bad_grids_before_generating(client, vector_path, layers, strengths, message):
    path, *_ = vector_path
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(str(path), layers, strengths, 2, 8, "calibrated", api_name="/sweep")


# --------------------------------------------------------------------------- the page's language, sliders, meter


def test_chat_errors_come_in_the_pages_language(url, vector_path):
    """/chat refuses an empty message in the language it is asked in (the trailing `lang` parameter)."""
    from steering.chat import WRITE_FIRST

    path, *_ = vector_path
    with pytest.raises(gradio_client.exceptions.AppError) as japanese:
        chat(url, path, 2.0, message="   ", lang="ja")
    assert str(japanese.value).strip() == WRITE_FIRST.say("ja") != WRITE_FIRST.say("en")
    assert any("\u3040" <= ch <= "\u30ff" for ch in str(japanese.value))  # kana: Japanese, not the English text
    with pytest.raises(gradio_client.exceptions.AppError, match=WRITE_FIRST.say("en")):
        chat(url, path, 2.0, message="")  # English when no language is given
    assert hooks_left(app.HOLDER.loaded.model) == 0


def sliders_of(values) -> tuple:
    """/vector_defaults: the layer sliders' (start, width) values, None where an update leaves a slider as it is."""
    start, width = values[7:9]
    return start.get("value"), width.get("value")


def test_vector_defaults_set_the_layer_sliders(url, vector_path, recommended_vector):
    """Selecting a vector moves the layer sliders onto its recommended band (first layer, band width); a setting
    that is not one band of consecutive layers leaves them alone (the layers text rules)."""
    session = sweep_session(url)
    values = session.predict(str(recommended_vector), api_name="/vector_defaults")
    assert values[0] == "9-11" and sliders_of(values) == (9, 3)
    path, *_ = vector_path  # a fresh extraction: suggested layer ±2 → 10-12
    values = session.predict(str(path), api_name="/vector_defaults")
    assert values[0] == "10-12" and sliders_of(values) == (10, 3)
    meta = json.loads(recommended_vector.with_suffix(".json").read_text(encoding="utf-8"))
    meta["recommended"]["layers"] = "9,11"
    recommended_vector.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    values = session.predict(str(recommended_vector), api_name="/vector_defaults")
    assert values[0] == "9,11" and sliders_of(values) == (None, None)


def test_vector_defaults_sliders_in_process(vector_path, recommended_vector):
    """on_vector_selected itself: 14 outputs, the sliders holding the recommended band."""
    outputs = app.on_vector_selected(str(recommended_vector), [])
    assert len(outputs) == 14
    assert outputs[0] == "9-11" and (outputs[7].value, outputs[8].value) == (9, 3)  # start 9, 3 layers wide


def test_chat_with_the_meter_returns_its_html(url, vector_path):
    path, *_ = vector_path
    *_, meter = chat(url, path, 4.0, meter=True)
    assert meter.strip() and "<span" in meter
    *_, off = chat(url, path, 4.0)
    assert off == ""
    assert hooks_left(app.HOLDER.loaded.model) == 0


def test_clearing_one_column_empties_only_its_history():
    import app_widgets

    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]
    history = {"plain": list(turn), "steered": list(turn)}
    score, kept = app_widgets.on_clear_column("plain")(history)
    assert score == "" and kept == {"plain": [], "steered": turn}
    assert history == {"plain": turn, "steered": turn}  # the state passed in is not changed in place
    score, kept, meter = app_widgets.on_clear_column("steered")(history)
    assert (score, meter) == ("", "") and kept == {"plain": turn, "steered": []}
    # each returns one value per output of its event (the plain column has no meter)
    outputs = {fn.name: len(fn.outputs) for fn in app.demo.fns.values()}
    assert outputs["on_clear_plain"] == 2 and outputs["on_clear_steered"] == 3
    assert app_widgets.on_clear_column("plain")(None)[1] == {"plain": [], "steered": []}
