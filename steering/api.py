"""An OpenAI-compatible HTTP API over the scheduler: a FastAPI router (no gradio) that app.py serves on the same
server and port as the page, and that any FastAPI app (or a test's TestClient) can include.

    GET  /v1/models             the loaded model, then every vector in the vectors folder that fits it
    POST /v1/chat/completions   OpenAI's chat completion, streamed (server-sent chat.completion.chunk events
                                ending with `data: [DONE]`) or not

Steering is an extra body field (the openai client sends it with `extra_body`):

    "steering": {"vector": "smollm2-135m-instruct_gal_en.pt", "strength": 3}

`vector` is the file name of a vector in the server's vectors folder (a name, never a path). Keys left out
(layers, strength, scale, mode, apply_to, half_life, repetition_penalty) come from the vector's recommended
setting (settings.resolve_setting). No `steering` field: the plain model. `model` is the loaded model's id from
/v1/models, or a vector's file name, which means that vector at its recommended setting (for clients that only let
you pick a model). `temperature: 0` is greedy; extra fields `top_k`, `repetition_penalty` and `min_tokens` are
read as vLLM reads them.

Errors have OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with the HTTP status: 400 a bad
request, 401 a missing or wrong key, 404 an unknown model or vector, 429 the scheduler is busy (Retry-After), 500
a failed generation. With an API key set, every /v1 request needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .chat import parse_half_life
from .checks import check_float, check_int, check_seed
from .generate import GenerationSettings
from .models import LoadedModel
from .row_steer import plan_row
from .scheduler import CANCELLED, Row, Scheduler, SchedulerBusy, TicketResult
from .settings import format_layers, resolve_setting
from .steer import Steering
from .vector_files import SUFFIXES, load_vector
from .vectors import SteeringVector, VectorFileError, check_fits

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


def _number(body: dict, key: str, default, param: str | None = None, **bounds):
    value = body.get(key)
    if value is None:
        return default
    try:
        return check_float(value, key, **bounds)
    except ValueError as exc:
        raise bad_request(str(exc), param or key) from None


def _integer(body: dict, key: str, default, param: str | None = None, **bounds):
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
        role = ROLES.get(message.get("role"))
        if role is None:
            raise bad_request(
                f"messages[{i}].role {message.get('role')!r} is not supported: use system, user or assistant",
                "messages",
            )
        messages.append({"role": role, "content": _text(message.get("content"), i)})
    return messages


class _VectorCache:
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


class OpenAIApi:
    """The /v1 routes over a model provider, a vectors folder and a Scheduler.

    `model`: a callable returning the LoadedModel to serve (e.g. the app's shared ModelSession.get; called in a
    worker thread, so it may load). `api_key`: None serves without a key; it may be changed later (the app sets it
    after parsing its command line).
    """

    def __init__(
        self,
        model: Callable[[], LoadedModel],
        vectors: Path | str | Callable[[], Path | str],
        scheduler: Scheduler,
        api_key: str | None = None,
        prefix: str = "/v1",
    ):
        self.model, self.scheduler, self.api_key = model, scheduler, api_key
        self.vectors = _VectorCache(vectors)
        self.created = int(time.time())
        self.router = APIRouter(prefix=prefix)
        self.router.add_api_route("/models", self._models, methods=["GET"], include_in_schema=False)
        self.router.add_api_route(
            "/chat/completions", self._chat_completions, methods=["POST"], include_in_schema=False
        )

    @property
    def routes(self) -> list:
        """The routes, e.g. for FastAPI(routes=...) or gradio's launch(app_kwargs={"routes": ...})."""
        return list(self.router.routes)

    # ---------------------------------------------------------------- plumbing

    def _authorize(self, request: Request) -> None:
        if not self.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer KEY'",
                           "invalid_request_error", None, "invalid_api_key")  # fmt: skip
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "incorrect API key", "invalid_request_error", None, "invalid_api_key")

    async def _loaded(self) -> LoadedModel:
        try:
            return await run_in_threadpool(self.model)
        except Exception as exc:  # noqa: BLE001 - a model that cannot load: the server's problem
            raise ApiError(503, f"no model is available: {exc}", "server_error", None, "model_unavailable") from None

    def _model_id(self, loaded: LoadedModel) -> str:
        return loaded.spec

    # ---------------------------------------------------------------- GET /v1/models

    async def _models(self, request: Request):
        try:
            self._authorize(request)
            loaded = await self._loaded()
            entries = await run_in_threadpool(self._model_entries, loaded)
        except ApiError as exc:
            return exc.response()
        return {"object": "list", "data": entries}

    def _model_entries(self, loaded: LoadedModel) -> list[dict]:
        d = loaded.describe()
        entries = [
            {
                "id": self._model_id(loaded),
                "object": "model",
                "created": self.created,
                "owned_by": "gyaru-steering",
                "name": loaded.name,
                "num_layers": d["num_layers"],
                "hidden_size": d["hidden_size"],
            }
        ]
        folder = self.vectors.folder
        for name in self.vectors.names():
            try:
                vector = self.vectors.get(name)
                check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)
            except (ApiError, VectorFileError):
                continue  # unreadable or made for another model: not offered
            setting = resolve_setting(vector)
            entries.append(
                {
                    "id": name,
                    "object": "model",
                    "created": int((folder / name).stat().st_mtime),
                    "owned_by": "gyaru-steering",
                    "kind": "steering_vector",
                    "base_model": self._model_id(loaded),
                    "lang": vector.meta.lang,
                    "layers": vector.layers,
                    "recommended": {
                        "layers": setting.layers,
                        "strength": setting.strength,
                        "scale": setting.scale,
                        "mode": setting.mode,
                        "apply_to": setting.apply_to,
                        "half_life": setting.half_life,
                        "repetition_penalty": setting.repetition_penalty,
                    },
                }
            )
        return entries

    # ---------------------------------------------------------------- POST /v1/chat/completions

    async def _chat_completions(self, request: Request):
        try:
            self._authorize(request)
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                raise bad_request("the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise bad_request("the request body must be a JSON object")
            loaded = await self._loaded()
            job = await run_in_threadpool(self._submit, loaded, body)
        except ApiError as exc:
            return exc.response()
        if job["stream"]:
            return StreamingResponse(
                self._events(job), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        try:
            result = await self._finish(job)
        except ApiError as exc:
            return exc.response()
        return self._completion(job, result)

    def _submit(self, loaded: LoadedModel, body: dict) -> dict:
        """Parse the request, resolve its steering and queue it (in a worker thread: templating, vector files)."""
        for key, allowed in UNSUPPORTED.items():
            if key in body and body[key] not in allowed:
                raise bad_request(f"{key} is not supported by this server", key, "unsupported_parameter")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("model is required: see GET /v1/models", "model")
        vector_by_model = None
        if model not in (self._model_id(loaded), loaded.name):
            names = self.vectors.names()
            if model not in names:
                raise ApiError(404, f"the model {model!r} does not exist: this server serves "
                               f"{self._model_id(loaded)!r} (see GET /v1/models)",
                               "invalid_request_error", "model", "model_not_found")  # fmt: skip
            vector_by_model = model
        messages = parse_messages(body.get("messages"))
        fmt = body.get("response_format")
        if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            raise bad_request("response_format: only {'type': 'text'} is supported", "response_format")
        n = _integer(body, "n", 1, minimum=1, maximum=MAX_N)
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise bad_request("stream must be true or false", "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object", "stream_options")
        tokens_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _integer(body, tokens_key, DEFAULT_MAX_TOKENS, minimum=1, maximum=loaded.context_length)
        seed = body.get("seed")
        if seed is not None:
            try:
                seed = check_seed(seed)
            except ValueError as exc:
                raise bad_request(str(exc), "seed") from None
        steering, penalty, applied = self._steering(loaded, body, vector_by_model)
        try:
            settings = [
                GenerationSettings(
                    max_new_tokens=max_tokens,
                    temperature=_number(body, "temperature", 1.0, minimum=0.0, maximum=2.0),
                    top_p=_number(body, "top_p", 1.0, above=0.0, maximum=1.0),
                    top_k=_integer(body, "top_k", 0, minimum=0),
                    repetition_penalty=penalty,
                    seed=None if seed is None else (seed + i) % 2**63,
                    system_prompt=None,
                )
                for i in range(n)
            ]
            min_tokens = _integer(body, "min_tokens", 0, minimum=0, maximum=max_tokens)
            rows = [Row(messages, steering, s, body.get("stop"), min_tokens) for s in settings]
            ticket = self.scheduler.submit(loaded, rows)
        except SchedulerBusy as exc:
            raise ApiError(429, str(exc), "server_error", None, "busy") from None
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "created": int(time.time()),
            "model": model,
            "ticket": ticket,
            "stream": bool(stream),
            "usage_in_stream": bool(options.get("include_usage")),
            "steering": applied,
        }

    def _steering(self, loaded: LoadedModel, body: dict, vector_by_model: str | None):
        """(Steering or None, repetition penalty, the applied setting to report) from the body's `steering` field
        (and a vector named as the model); what it leaves out comes from the vector's recommended setting."""
        spec = body.get("steering")
        top_penalty = _number(body, "repetition_penalty", None, above=0.0)
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
            raise bad_request(
                "steering.vector is required: a vector's file name from GET /v1/models", "steering.vector"
            )
        vector = self.vectors.get(name)
        try:
            check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)
        except VectorFileError as exc:
            raise bad_request(str(exc), "steering.vector", "vector_does_not_fit") from None
        given = {key: spec.get(key) for key in STEERING_KEYS[1:]}
        for key in ("strength", "repetition_penalty", "half_life"):
            bounds = {"strength": {}, "repetition_penalty": {"above": 0.0}, "half_life": {"minimum": 0.0}}[key]
            given[key] = _number(spec, key, None, f"steering.{key}", **bounds)
        for key in ("scale", "mode", "apply_to"):
            if given[key] is not None and not isinstance(given[key], str):
                raise bad_request(f"steering.{key} must be text", f"steering.{key}")
        layers = given["layers"]
        if isinstance(layers, bool) or not (layers is None or isinstance(layers, (str, int, list))):
            raise bad_request(
                "steering.layers must be a spec like '12-16', a layer number or a list", "steering.layers"
            )
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
            steering = Steering(
                vector, chosen, setting.strength, setting.scale, setting.apply_to, setting.mode, half_life
            )
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

    # ---------------------------------------------------------------- responses

    async def _finish(self, job: dict) -> TicketResult:
        ticket = job["ticket"]
        try:
            async for _ in ticket.aupdates():
                pass
            return ticket.result(timeout=0)
        except Exception as exc:  # noqa: BLE001 - a failed generation is the server's error, reported as such
            raise ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error") from None

    @staticmethod
    def _reason(finished: str | None) -> str:
        return "length" if finished == "length" else "stop"

    def _completion(self, job: dict, result: TicketResult) -> dict:
        completion = sum(result.token_counts)
        prompt = result.prompt_tokens[0]
        out = {
            "id": job["id"],
            "object": "chat.completion",
            "created": job["created"],
            "model": job["model"],
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": self._reason(reason),
                    "logprobs": None,
                }
                for i, (text, reason) in enumerate(zip(result.texts, result.finished))
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "system_fingerprint": None,
        }
        if job["steering"] is not None:
            out["steering"] = job["steering"]
        if result.notice:
            out["notice"] = result.notice
        return out

    def _chunk(self, job: dict, choices: list[dict], usage: dict | None = None, with_usage_key: bool = False) -> str:
        data = {
            "id": job["id"],
            "object": "chat.completion.chunk",
            "created": job["created"],
            "model": job["model"],
            "system_fingerprint": None,
            "choices": choices,
        }
        if with_usage_key:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def _events(self, job: dict):
        """The SSE body: a role chunk per choice, content deltas, a finish chunk per choice, usage if asked, [DONE].
        A client that disconnects cancels the request's rows (the generator is closed or cancelled)."""
        ticket = job["ticket"]
        usage_key = job["usage_in_stream"]
        n = len(ticket)
        sent = [0] * n
        ended = [False] * n
        try:
            first = [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(n)
            ]
            yield self._chunk(job, first, with_usage_key=usage_key)
            async for update in ticket.aupdates():
                deltas, finishes = [], []
                for i, (text, finished) in enumerate(zip(update.texts, update.finished)):
                    if len(text) > sent[i]:
                        deltas.append({"index": i, "delta": {"content": text[sent[i] :]}, "finish_reason": None})
                        sent[i] = len(text)
                    if finished is not None and not ended[i] and finished != CANCELLED:
                        finishes.append({"index": i, "delta": {}, "finish_reason": self._reason(finished)})
                        ended[i] = True
                for choices in (deltas, finishes):  # a choice's last text, then (in a chunk of its own) its end
                    if choices:
                        yield self._chunk(job, choices, with_usage_key=usage_key)
            result = ticket.result(timeout=0)
            if usage_key:
                prompt, completion = result.prompt_tokens[0], sum(result.token_counts)
                usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
                yield self._chunk(job, [], usage, with_usage_key=True)
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in the stream, as OpenAI does
            error = ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")
            yield f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n"
        finally:
            if not ticket.done:
                ticket.cancel()
        yield "data: [DONE]\n\n"


# --------------------------------------------------------------------------------------------- who may call it


class ApiKeyRequired(ValueError):
    """The API would be reachable by others without a key."""


def api_key_policy(
    host: str | None, share: bool, api_key: str | None, serve_api: bool = True, on_space: bool = False
) -> tuple[bool, str | None]:
    """(serve /v1 at all, the key it requires) for a server bound to `host`.

    A key given (--api-key / STEERING_API_KEY) is always required. Without one: a server only this machine can
    reach (localhost, no --share link) serves /v1 openly; a Hugging Face Space serves the page without /v1 (set the
    STEERING_API_KEY secret to turn it on); anywhere else starting is refused (ApiKeyRequired says what to do), since
    /v1 would hand the model to anyone who can reach the port. `serve_api=False` (--no-api) serves no /v1."""
    from .serve import trusted_host

    if not serve_api:
        return False, None
    if api_key is not None:
        key = api_key.strip()
        if not key or any(ch.isspace() for ch in key):
            raise ApiKeyRequired("the API key must be non-empty text without spaces")
        return True, key
    if trusted_host(host, share):
        return True, None
    if on_space:
        return False, None
    where = f"{host} with a public --share link" if share else host
    raise ApiKeyRequired(
        f"refusing to start: the server binds to {where}, which other machines can reach, and the OpenAI-compatible "
        "API at /v1 would let anyone there use the model. Give it a key: --api-key KEY (or the environment variable "
        "STEERING_API_KEY=KEY; clients then send 'Authorization: Bearer KEY'), or start with --no-api to serve only "
        "the page."
    )
