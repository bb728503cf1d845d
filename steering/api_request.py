"""What the OpenAI-compatible API (api.py) reads from a request, and its errors: OpenAI-shaped errors, body fields
checked with the library's own checks, chat messages, vector files by name from the vectors folder, the `steering`
field resolved against the vector's recommended setting, and when the API needs a key. No web server here but
fastapi's JSONResponse for the error shape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from .chat import parse_half_life
from .checks import check_float, check_int
from .models import LoadedModel
from .row_steer import plan_row
from .settings import format_layers, resolve_setting
from .steer import Steering
from .vector_files import SUFFIXES, load_vector
from .vectors import SteeringVector, VectorFileError, check_fits

MAX_BODY_BYTES = 8 << 20  # a chat request's JSON; longer conversations are cut to the context anyway
DEFAULT_MAX_TOKENS = 256  # when a request names none (OpenAI's default is "until the context is full")
MAX_N = 8  # choices per request
STEERING_KEYS = ("vector", "strength", "layers", "scale", "mode", "apply_to", "half_life", "repetition_penalty")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# OpenAI fields this server cannot honour: refused unless they hold their "off" value
UNSUPPORTED = {
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "functions": (None, []),
    "audio": (None,),
    "prediction": (None,),
}


class ApiError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status in (429, 503) else None
        if self.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def number_field(body: dict, key: str, default, param: str | None = None, **bounds):
    value = body.get(key)
    if value is None:
        return default
    try:
        return check_float(value, key, **bounds)
    except ValueError as exc:
        raise bad_request(str(exc), param or key) from None


def integer_field(body: dict, key: str, default, param: str | None = None, **bounds):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and not value.is_integer():
        raise bad_request(f"{key} must be a whole number, got {value!r}", param or key)
    try:
        return check_int(value, key, **bounds)
    except ValueError as exc:
        raise bad_request(str(exc), param or key) from None


def _text(content: Any, index: int) -> str:
    """A message's content as text: a string, or a list of text parts (other parts are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"messages[{index}]: only text content is supported, got {kind!r}", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"messages[{index}].content must be text or a list of text parts", "messages")


def parse_messages(value: Any) -> list[dict]:
    """OpenAI chat messages as the library's {"role", "content"} dicts ('developer' is a system message)."""
    if not isinstance(value, list) or not value:
        raise bad_request("messages must be a non-empty list of {role, content} objects", "messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object with role and content", "messages")
        role = message.get("role")
        role = ROLES.get(role) if isinstance(role, str) else None  # a list or object is no role (and unhashable)
        if role is None:
            raise bad_request(
                f"messages[{i}].role {message.get('role')!r} is not supported: use system, user or assistant",
                "messages",
            )
        messages.append({"role": role, "content": _text(message.get("content"), i)})
    return messages


class VectorFiles:
    """Vectors by file name from one folder, re-read when a file changes. Only plain file names with a vector
    suffix, directly in the folder, are ever opened."""

    def __init__(self, folder: Path | str | Callable[[], Path | str]):
        self._folder = folder
        self._cache: dict[str, tuple[tuple, SteeringVector]] = {}
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        return Path(self._folder() if callable(self._folder) else self._folder)

    def names(self) -> list[str]:
        folder = self.folder
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())

    def path(self, name: Any, param: str) -> Path:
        if not isinstance(name, str) or not name.strip():
            raise bad_request(f"{param} must be the file name of a vector in the server's vectors folder", param)
        if name != Path(name).name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
            raise bad_request(f"{param} {name!r}: give a vector's file name, not a path", param)
        path = self.folder / name
        if path.suffix.lower() not in SUFFIXES or not path.is_file():
            raise ApiError(404, f"vector {name!r} does not exist: see GET /v1/models", "invalid_request_error",
                           param, "vector_not_found")  # fmt: skip
        return path

    def get(self, name: str, param: str = "steering.vector") -> SteeringVector:
        path = self.path(name, param)
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            vector = load_vector(path)
        except (VectorFileError, ImportError) as exc:
            raise bad_request(f"vector {name!r} cannot be read: {exc}", param, "vector_unreadable") from None
        with self._lock:
            self._cache[name] = (key, vector)
        return vector


def resolve_steering(vectors: VectorFiles, loaded: LoadedModel, body: dict, vector_by_model: str | None):
    """(Steering or None, repetition penalty, the applied setting to report) from the body's `steering` field
    (and a vector named as the model); what it leaves out comes from the vector's recommended setting."""
    spec = body.get("steering")
    top_penalty = number_field(body, "repetition_penalty", None, above=0.0)
    if spec is None and vector_by_model is None:
        return None, 1.0 if top_penalty is None else top_penalty, None
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise bad_request('steering must be an object such as {"vector": NAME, "strength": 3}', "steering")
    unknown = sorted(set(spec) - set(STEERING_KEYS))
    if unknown:
        raise bad_request(
            f"steering: unknown key {unknown[0]!r}; the keys are {', '.join(STEERING_KEYS)}",
            f"steering.{unknown[0]}",
        )
    name = spec.get("vector", vector_by_model)
    if name is None:
        raise bad_request("steering.vector is required: a vector's file name from GET /v1/models", "steering.vector")
    vector = vectors.get(name)
    try:
        check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)
    except VectorFileError as exc:
        raise bad_request(str(exc), "steering.vector", "vector_does_not_fit") from None
    given = {key: spec.get(key) for key in STEERING_KEYS[1:]}
    for key in ("strength", "repetition_penalty", "half_life"):
        bounds = {"strength": {}, "repetition_penalty": {"above": 0.0}, "half_life": {"minimum": 0.0}}[key]
        given[key] = number_field(spec, key, None, f"steering.{key}", **bounds)
    for key in ("scale", "mode", "apply_to"):
        if given[key] is not None and not isinstance(given[key], str):
            raise bad_request(f"steering.{key} must be text", f"steering.{key}")
    layers = given["layers"]
    if isinstance(layers, bool) or not (layers is None or isinstance(layers, (str, int, list))):
        raise bad_request("steering.layers must be a spec like '12-16', a layer number or a list", "steering.layers")
    penalty = given["repetition_penalty"] if given["repetition_penalty"] is not None else top_penalty
    try:
        setting = resolve_setting(
            vector,
            layers=layers if isinstance(layers, str) else None,
            strength=given["strength"],
            scale=given["scale"],
            mode=given["mode"],
            apply_to=given["apply_to"],
            repetition_penalty=penalty,
        )
        # a half-life given as 0 means constant strength, even where the vector recommends one
        half_life = setting.half_life if given["half_life"] is None else parse_half_life(given["half_life"])
        chosen = setting.layers if layers is None or isinstance(layers, str) else layers
        steering = Steering(vector, chosen, setting.strength, setting.scale, setting.apply_to, setting.mode, half_life)
        plan_row(loaded, steering)  # every check steering makes, now, so its errors name the steering field
        applied = {
            "vector": name,
            "layers": format_layers(steering.layer_list(loaded.num_layers)),
            "strength": setting.strength,
            "scale": setting.scale,
            "mode": setting.mode,
            "apply_to": setting.apply_to,
            "half_life": half_life,
            "repetition_penalty": setting.repetition_penalty,
        }
    except ValueError as exc:
        raise bad_request(f"steering: {exc}", "steering") from None
    return steering, setting.repetition_penalty, applied


# --------------------------------------------------------------------------------------------- who may call it
