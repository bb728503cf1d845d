"""What the OpenAI-compatible API reads from a request (steering/api_request.py), called directly: OpenAI-shaped
errors, number and whole-number fields, chat messages, vectors by file name, the `steering` field resolved against
the vector's recommended setting, and when the API needs a key (tests/test_api.py covers the same through HTTP)."""

from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("fastapi")

from steering.api_request import (  # noqa: E402
    STEERING_KEYS,
    ApiError,
    VectorFiles,
    bad_request,
    integer_field,
    number_field,
    parse_messages,
    resolve_steering,
)
from steering.metadata import Recommended  # noqa: E402
from steering.steer import Steering  # noqa: E402
from steering.vector_files import save_vector  # noqa: E402
from tests.test_row_steer import clamp_vector  # noqa: E402

GAL = "gal.pt"
RECOMMENDED = Recommended(layers="1-2", strength=2.0, scale="calibrated", apply_to="generated", repetition_penalty=1.2)


def error_of(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


# --------------------------------------------------------------------------------------------- ApiError


def test_an_api_error_has_openais_shape():
    error = ApiError(404, "no such model", "invalid_request_error", "model", "model_not_found")
    assert str(error) == "no such model" and error.status == 404
    assert error.body() == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    response = error.response()
    assert response.status_code == 404 and json.loads(response.body) == error.body()
    assert "retry-after" not in response.headers and "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    ("status", "header", "value"),
    [(429, "retry-after", "1"), (503, "retry-after", "1"), (401, "www-authenticate", "Bearer")],
)
def test_busy_and_unauthorized_errors_carry_their_header(status, header, value):
    assert ApiError(status, "x", "some_error").response().headers[header] == value


def test_bad_request_is_a_400_invalid_request_error():
    error = bad_request("temperature must be a number", "temperature")
    assert (error.status, error.type, error.param, error.code) == (400, "invalid_request_error", "temperature", None)
    assert bad_request("x", code="unsupported_parameter").body()["error"] == {
        "message": "x",
        "type": "invalid_request_error",
        "param": None,
        "code": "unsupported_parameter",
    }


# --------------------------------------------------------------------------------------------- number fields


def test_number_field_reads_a_bounded_number_or_the_default():
    assert number_field({}, "temperature", 1.0) == 1.0
    assert number_field({"temperature": None}, "temperature", "kept") == "kept"  # null is absent
    assert number_field({"temperature": 0}, "temperature", 1.0, minimum=0.0, maximum=2.0) == 0.0
    value = number_field({"top_p": 1}, "top_p", None, above=0.0, maximum=1.0)
    assert value == 1.0 and isinstance(value, float)


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (2.5, {"minimum": 0.0, "maximum": 2.0}, "at most 2"),
        (-0.1, {"minimum": 0.0}, "at least 0"),
        (0, {"above": 0.0}, "greater than 0"),
        ("0.7", {}, "must be a number"),
        (True, {}, "must be a number"),
        ([1], {}, "must be a number"),
        (math.nan, {}, "finite"),
        (math.inf, {}, "finite"),
    ],
)
def test_number_field_refuses_with_400_naming_the_field(value, bounds, message):
    error = error_of(lambda: number_field({"temperature": value}, "temperature", 1.0, **bounds))
    assert (error.status, error.param, error.type) == (400, "temperature", "invalid_request_error")
    assert message in error.message and "temperature" in error.message


def test_a_field_can_report_another_param():
    error = error_of(lambda: number_field({"strength": "lots"}, "strength", None, "steering.strength"))
    assert error.param == "steering.strength"
    error = error_of(lambda: integer_field({"n": 0}, "n", 1, "choices", minimum=1))
    assert error.param == "choices"


def test_integer_field_reads_a_whole_number_or_the_default():
    assert integer_field({}, "max_tokens", 256) == 256
    assert integer_field({"max_tokens": None}, "max_tokens", 256) == 256
    assert integer_field({"max_tokens": 16}, "max_tokens", 256, minimum=1) == 16
    value = integer_field({"max_tokens": 16.0}, "max_tokens", 256, minimum=1)
    assert value == 16 and isinstance(value, int)
    assert integer_field({"seed": 0}, "seed", None, minimum=0) == 0


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (2.5, {}, "whole number"),
        (math.nan, {}, "whole number"),
        (math.inf, {}, "whole number"),
        ("8", {}, "whole number"),
        (True, {}, "whole number"),
        ([8], {}, "whole number"),
        (0, {"minimum": 1}, "at least 1"),
        (10**9, {"minimum": 1, "maximum": 4096}, "at most 4096"),
        (-1, {"minimum": 0}, "at least 0"),
    ],
)
def test_integer_field_refuses_with_400_naming_the_field(value, bounds, message):
    error = error_of(lambda: integer_field({"max_tokens": value}, "max_tokens", 256, **bounds))
    assert (error.status, error.param) == (400, "max_tokens")
    assert message in error.message and "max_tokens" in error.message


# --------------------------------------------------------------------------------------------- messages


def test_messages_of_every_accepted_shape():
    messages = parse_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Speak like a gyaru."},
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there!"}]},
            {"role": "assistant", "content": None, "name": "bot"},
            {"role": "user", "content": []},
            {"role": "user", "content": "What should I cook?", "name": "me"},
        ]
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Speak like a gyaru."},  # developer is OpenAI's newer name for system
        {"role": "user", "content": "Hi there!"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
        {"role": "user", "content": "What should I cook?"},
    ]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        ({"role": "user", "content": "hi"}, "non-empty list"),
        ("hi", "non-empty list"),
        (["hi"], "messages[0] must be an object"),
        ([{"content": "hi"}], "messages[0].role None is not supported"),
        ([{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}], "messages[1].role 'tool'"),
        ([{"role": "function", "content": "x"}], "use system, user or assistant"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]}],
            "only text content is supported, got 'image_url'",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_audio"}]}],
            "got 'input_audio'",
        ),
        ([{"role": "user", "content": ["plain string part"]}], "got 'str'"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "only text content"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "only text content"),
        ([{"role": "user", "content": 42}], "messages[0].content must be text or a list of text parts"),
        ([{"role": "user", "content": {"type": "text", "text": "hi"}}], "must be text or a list"),
    ],
)
def test_refused_messages_are_400_on_messages(messages, message):
    error = error_of(lambda: parse_messages(messages))
    assert (error.status, error.param, error.type) == (400, "messages", "invalid_request_error")
    assert message in error.message


@pytest.mark.parametrize("role", [["user"], {"name": "user"}])
def test_a_role_that_is_not_text_is_400_on_messages(role):
    error = error_of(lambda: parse_messages([{"role": role, "content": "hi"}]))
    assert (error.status, error.param) == (400, "messages") and "is not supported" in error.message


# --------------------------------------------------------------------------------------------- vector files


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Vectors for the tiny 4-layer, hidden-64 model: one with a recommended setting, one recommending a half-life,
    one with none; one for another model; a file that is no vector; other files and a folder."""
    folder = tmp_path_factory.mktemp("vectors")
    gal = clamp_vector(64, [0, 1, 2, 3], 1, -1.0, 2.0)
    gal.meta.recommended = RECOMMENDED
    save_vector(gal, folder / GAL)
    decay = clamp_vector(64, [0, 1, 2, 3], 2, 0.5, 3.0)
    decay.meta.recommended = Recommended(layers="2", strength=1.5, scale="raw", half_life=8.0)
    save_vector(decay, folder / "decay.pt")
    save_vector(clamp_vector(64, [0, 1, 2, 3], 3, 0.0, 1.0), folder / "bare.pt")
    save_vector(clamp_vector(32, [0, 1], 3, 0.0, 1.0), folder / "other_model.pt")
    (folder / "junk.pt").write_bytes(b"not a vector")
    (folder / "notes.txt").write_text("not a vector either")
    (folder / "CAPS.PT").write_bytes((folder / GAL).read_bytes())
    (folder / "folder.pt").mkdir()
    (folder / ".hidden.pt").write_bytes((folder / GAL).read_bytes())
    return folder


def test_names_lists_the_vector_files_directly_in_the_folder(folder, tmp_path):
    names = VectorFiles(folder).names()
    assert names == sorted(names)
    # every file with a vector suffix (fitting the model is the caller's check): no sidecars, text or folders
    assert set(names) == {GAL, "decay.pt", "bare.pt", "other_model.pt", "junk.pt", "CAPS.PT", ".hidden.pt"}
    assert VectorFiles(tmp_path / "missing").names() == []
    assert VectorFiles(tmp_path).names() == []


def test_the_folder_may_be_a_callable_read_each_time(folder, tmp_path):
    current = [tmp_path]
    files = VectorFiles(lambda: current[0])
    assert files.names() == [] and files.folder == tmp_path
    current[0] = str(folder)
    assert files.folder == folder and GAL in files.names()
    assert files.path(GAL, "steering.vector") == folder / GAL


@pytest.mark.parametrize(
    "name",
    ["../gal.pt", "sub/gal.pt", "/etc/passwd", "..\\gal.pt", "a\\gal.pt", ".hidden.pt", "..", ".", "gal.pt\x00.txt"],
)
def test_paths_are_refused_as_a_bad_request(folder, name):
    error = error_of(lambda: VectorFiles(folder).path(name, "steering.vector"))
    assert (error.status, error.param, error.code) == (400, "steering.vector", None)
    assert "not a path" in error.message


@pytest.mark.parametrize("name", ["", "   ", None, 3, ["gal.pt"]])
def test_a_missing_or_non_text_name_is_a_bad_request(folder, name):
    error = error_of(lambda: VectorFiles(folder).get(name, "model"))
    assert (error.status, error.param) == (400, "model")
    assert "file name of a vector" in error.message


@pytest.mark.parametrize("name", ["missing.pt", "notes.txt", "gal.json", "folder.pt", "gal"])
def test_unknown_names_are_404_vector_not_found(folder, name):
    error = error_of(lambda: VectorFiles(folder).get(name))
    assert (error.status, error.param, error.code) == (404, "steering.vector", "vector_not_found")
    assert error.type == "invalid_request_error" and "/v1/models" in error.message


def test_get_reads_a_vector_and_rereads_it_only_when_the_file_changes(tmp_path):
    files = VectorFiles(tmp_path)
    save_vector(clamp_vector(64, [0, 1], 1, -1.0, 2.0), tmp_path / "v.pt")
    first = files.get("v.pt")
    assert first.layers == [0, 1] and first.hidden_size == 64
    assert files.get("v.pt") is first  # cached
    save_vector(clamp_vector(64, [1, 2, 3], 2, -1.0, 2.0), tmp_path / "v.pt", overwrite=True)
    stat = (tmp_path / "v.pt").stat()
    os.utime(tmp_path / "v.pt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a clearly newer file
    second = files.get("v.pt")
    assert second is not first and second.layers == [1, 2, 3]


def test_an_unreadable_vector_is_400_vector_unreadable(folder):
    error = error_of(lambda: VectorFiles(folder).get("junk.pt", "model"))
    assert (error.status, error.param, error.code) == (400, "model", "vector_unreadable")
    assert "junk.pt" in error.message


# --------------------------------------------------------------------------------------------- resolve_steering


@pytest.fixture(scope="module")
def vectors(folder):
    return VectorFiles(folder)


def test_no_steering_is_plain_with_the_top_level_penalty(vectors, tiny_qwen2):
    assert resolve_steering(vectors, tiny_qwen2, {}, None) == (None, 1.0, None)
    assert resolve_steering(vectors, tiny_qwen2, {"repetition_penalty": 1.3}, None) == (None, 1.3, None)
    assert resolve_steering(vectors, tiny_qwen2, {"steering": None, "repetition_penalty": None}, None) == (
        None,
        1.0,
        None,
    )
    error = error_of(lambda: resolve_steering(vectors, tiny_qwen2, {"repetition_penalty": 0}, None))
    assert (error.status, error.param) == (400, "repetition_penalty")


def test_absent_keys_come_from_the_vectors_recommended_setting(vectors, tiny_qwen2, folder):
    steering, penalty, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": GAL}}, None)
    assert applied == {
        "vector": GAL,
        "layers": "1-2",
        "strength": 2.0,
        "scale": "calibrated",
        "mode": "add",
        "apply_to": "generated",
        "half_life": None,
        "repetition_penalty": 1.2,
    }
    assert penalty == 1.2
    assert isinstance(steering, Steering) and steering.vector.path == folder / GAL
    assert (steering.layers, steering.strength, steering.scale, steering.apply_to, steering.mode) == (
        "1-2",
        2.0,
        "calibrated",
        "generated",
        "add",
    )
    assert steering.half_life is None
    # one key given: only that one changes
    _, penalty, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": GAL, "strength": 3}}, None)
    assert applied["strength"] == 3.0 and applied["layers"] == "1-2" and penalty == 1.2


def test_body_keys_override_the_recommendation(vectors, tiny_qwen2):
    spec = {"vector": GAL, "strength": -4, "layers": [0, 3], "scale": "raw", "mode": "clamp", "apply_to": "all",
            "half_life": 5, "repetition_penalty": 1.0}  # fmt: skip
    steering, penalty, applied = resolve_steering(vectors, tiny_qwen2, {"steering": spec}, None)
    assert applied == {
        "vector": GAL,
        "layers": "0,3",
        "strength": -4.0,
        "scale": "raw",
        "mode": "clamp",
        "apply_to": "all",
        "half_life": 5.0,
        "repetition_penalty": 1.0,
    }
    assert penalty == 1.0
    assert (steering.layers, steering.strength, steering.mode, steering.half_life) == ([0, 3], -4.0, "clamp", 5.0)
    _, _, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": GAL, "layers": "0-3"}}, None)
    assert applied["layers"] == "0-3"
    _, _, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": GAL, "layers": 3}}, None)
    assert applied["layers"] == "3"


def test_the_top_level_penalty_beats_the_recommendation_and_steerings_own_beats_both(vectors, tiny_qwen2):
    body = {"steering": {"vector": GAL}, "repetition_penalty": 1.05}
    _, penalty, applied = resolve_steering(vectors, tiny_qwen2, body, None)
    assert penalty == 1.05 and applied["repetition_penalty"] == 1.05
    body["steering"]["repetition_penalty"] = 1.4
    _, penalty, applied = resolve_steering(vectors, tiny_qwen2, body, None)
    assert penalty == 1.4 and applied["repetition_penalty"] == 1.4


def test_a_recommended_half_life_applies_unless_the_body_gives_zero(vectors, tiny_qwen2):
    steering, _, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": "decay.pt"}}, None)
    assert applied["half_life"] == 8.0 and steering.half_life == 8.0
    assert (applied["layers"], applied["scale"], applied["strength"]) == ("2", "raw", 1.5)
    steering, _, applied = resolve_steering(
        vectors, tiny_qwen2, {"steering": {"vector": "decay.pt", "half_life": 0}}, None
    )
    assert applied["half_life"] is None and steering.half_life is None  # 0: a constant strength


def test_a_vector_without_a_recommendation_gets_the_defaults(vectors, tiny_qwen2):
    steering, penalty, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": "bare.pt"}}, None)
    assert isinstance(steering, Steering) and set(applied) == {"vector", *STEERING_KEYS[1:]}
    assert applied["vector"] == "bare.pt" and applied["half_life"] is None and penalty == applied["repetition_penalty"]


def test_a_vector_named_as_the_model(vectors, tiny_qwen2):
    steering, penalty, applied = resolve_steering(vectors, tiny_qwen2, {}, GAL)
    assert applied["vector"] == GAL and applied["strength"] == 2.0 and penalty == 1.2
    _, _, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"strength": 5}}, GAL)
    assert applied["vector"] == GAL and applied["strength"] == 5.0
    _, _, applied = resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": "decay.pt"}}, GAL)
    assert applied["vector"] == "decay.pt"  # the body's vector wins


@pytest.mark.parametrize(
    ("spec", "status", "param", "code"),
    [
        ("gal.pt", 400, "steering", None),
        ([GAL], 400, "steering", None),
        ({"vector": GAL, "colour": "pink"}, 400, "steering.colour", None),
        ({"strength": 2}, 400, "steering.vector", None),
        ({"vector": "missing.pt"}, 404, "steering.vector", "vector_not_found"),
        ({"vector": "../gal.pt"}, 400, "steering.vector", None),
        ({"vector": "junk.pt"}, 400, "steering.vector", "vector_unreadable"),
        ({"vector": "other_model.pt"}, 400, "steering.vector", "vector_does_not_fit"),
        ({"vector": GAL, "strength": "lots"}, 400, "steering.strength", None),
        ({"vector": GAL, "strength": math.inf}, 400, "steering.strength", None),
        ({"vector": GAL, "repetition_penalty": 0}, 400, "steering.repetition_penalty", None),
        ({"vector": GAL, "half_life": -1}, 400, "steering.half_life", None),
        ({"vector": GAL, "scale": 3}, 400, "steering.scale", None),
        ({"vector": GAL, "mode": ["add"]}, 400, "steering.mode", None),
        ({"vector": GAL, "apply_to": True}, 400, "steering.apply_to", None),
        ({"vector": GAL, "layers": True}, 400, "steering.layers", None),
        ({"vector": GAL, "layers": {"from": 1}}, 400, "steering.layers", None),
        ({"vector": GAL, "layers": 2.5}, 400, "steering.layers", None),
        ({"vector": GAL, "layers": "40"}, 400, "steering", None),
        ({"vector": GAL, "layers": [7]}, 400, "steering", None),
        ({"vector": GAL, "mode": "shout"}, 400, "steering", None),
        ({"vector": GAL, "scale": "huge"}, 400, "steering", None),
        ({"vector": GAL, "apply_to": "everywhere"}, 400, "steering", None),
    ],
)
def test_bad_steering_is_refused_naming_its_field(vectors, tiny_qwen2, spec, status, param, code):
    error = error_of(lambda: resolve_steering(vectors, tiny_qwen2, {"steering": spec}, None))
    assert (error.status, error.param, error.code) == (status, param, code)
    assert error.type == "invalid_request_error" and error.message


def test_the_unknown_key_error_lists_the_keys(vectors, tiny_qwen2):
    error = error_of(lambda: resolve_steering(vectors, tiny_qwen2, {"steering": {"vector": GAL, "z": 1, "b": 2}}, None))
    assert error.param == "steering.b"  # the first in sorted order
    assert all(key in error.message for key in STEERING_KEYS)
