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

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .api_request import (
    DEFAULT_MAX_TOKENS,
    MAX_BODY_BYTES,
    MAX_N,
    UNSUPPORTED,
    ApiError,
    VectorFiles,
    bad_request,
    integer_field,
    number_field,
    parse_messages,
    resolve_steering,
)
from .checks import check_seed
from .generate import GenerationSettings
from .models import LoadedModel
from .scheduler import CANCELLED, Row, Scheduler, SchedulerBusy, TicketResult
from .settings import resolve_setting
from .vectors import VectorFileError, check_fits


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
        self.vectors = VectorFiles(vectors)
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
            body = await self._body(request)
            if not isinstance(body, dict):
                raise bad_request("the request body must be a JSON object")
            loaded = await self._loaded()
            with self.scheduler.incoming():  # requests sent together share one prefill
                job = await run_in_threadpool(self._submit, loaded, body)
        except ApiError as exc:
            return exc.response()
        if job["stream"]:
            return StreamingResponse(
                self._events(job), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        try:
            result = await self._finish(job, request)
        except ApiError as exc:
            return exc.response()
        return self._completion(job, result)

    @staticmethod
    async def _body(request: Request):
        too_big = ApiError(413, f"the request body is over {MAX_BODY_BYTES >> 20} MB", "invalid_request_error")
        try:
            if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
                raise too_big
        except ValueError:
            raise bad_request("bad Content-Length header") from None
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise too_big
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("the request body is not valid JSON") from None

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
        n = integer_field(body, "n", 1, minimum=1, maximum=MAX_N)
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise bad_request("stream must be true or false", "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object", "stream_options")
        tokens_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = integer_field(body, tokens_key, DEFAULT_MAX_TOKENS, minimum=1, maximum=loaded.context_length)
        seed = body.get("seed")
        if seed is not None:
            try:
                seed = check_seed(seed)
            except ValueError as exc:
                raise bad_request(str(exc), "seed") from None
        steering, penalty, applied = resolve_steering(self.vectors, loaded, body, vector_by_model)
        try:
            settings = [
                GenerationSettings(
                    max_new_tokens=max_tokens,
                    temperature=number_field(body, "temperature", 1.0, minimum=0.0, maximum=2.0),
                    top_p=number_field(body, "top_p", 1.0, above=0.0, maximum=1.0),
                    top_k=integer_field(body, "top_k", 0, minimum=0),
                    repetition_penalty=penalty,
                    seed=None if seed is None else (seed + i) % 2**63,
                    system_prompt=None,
                )
                for i in range(n)
            ]
            min_tokens = integer_field(body, "min_tokens", 0, minimum=0, maximum=max_tokens)
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

    # ---------------------------------------------------------------- responses

    async def _finish(self, job: dict, request: Request) -> TicketResult:
        """Wait for a non-streamed request's rows; a client that disconnects meanwhile cancels them."""
        ticket = job["ticket"]

        async def watch() -> None:  # the body is read: the next message is the client going away
            while (await request.receive())["type"] != "http.disconnect":
                pass
            ticket.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            async for _ in ticket.aupdates():
                pass
            return ticket.result(timeout=0)
        except Exception as exc:  # noqa: BLE001 - a failed generation is the server's error, reported as such
            raise ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error") from None
        finally:
            watcher.cancel()

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
