"""How the studio app (app.py) is served, without gradio: its command line with the environment's defaults, what
visitors may do on it (trusted_host), and the system font stacks its theme uses (so the page requests no web fonts
and works offline).

A server only its operator can reach (bound to 127.0.0.1, localhost or ::1, without a --share link) is trusted:
visitors there may load any model and save vectors into the shared vectors folder. Anywhere else both are off
unless the operator turns them on (--allow-any-model / STEERING_ALLOW_ANY_MODEL=1, --allow-shared-saves /
STEERING_ALLOW_SHARED_SAVES=1)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .messages import Text
from .session import ModelPolicy

if TYPE_CHECKING:
    from .scheduler import Scheduler

DEFAULT_PORT = 7860
# System fonts only, Japanese ones included: Gradio's default theme would otherwise request web fonts.
SYSTEM_FONTS = (
    "system-ui",
    "-apple-system",
    "Segoe UI",
    "Hiragino Sans",
    "Noto Sans CJK JP",
    "Yu Gothic",
    "Meiryo",
    "IPAPGothic",
    "sans-serif",
)
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # addresses only this machine can reach
_TRUE = ("1", "true", "yes", "on")


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """An on/off environment variable: 1, true, yes or on (any case) is on; anything else, or unset, is off."""
    return str(env.get(name, "")).strip().lower() in _TRUE


PREFIX_CACHE_TOKENS = 8192  # about 0.4 GB of keys and values on the bundled model, 2 GB on Qwen2.5-32B


def prefix_cache_tokens(env: Mapping[str, str] | None = None) -> int:
    """STEERING_PREFIX_CACHE_TOKENS: how many tokens of ended replies the scheduler keeps (0: none); a value that is
    not a whole number of 0 or more stops the start with a message naming it."""
    raw = (os.environ if env is None else env).get("STEERING_PREFIX_CACHE_TOKENS", str(PREFIX_CACHE_TOKENS)).strip()
    if not raw.isdigit():
        raise SystemExit(
            f"error: STEERING_PREFIX_CACHE_TOKENS must be a whole number of tokens (0 or more), got {raw!r}"
        )
    return int(raw)


def chat_scheduler(env: Mapping[str, str] | None = None) -> Scheduler:
    """The app's scheduler, for every chat from the page and from /v1: 32 rows a batch, 64 waiting requests, and an
    idle one gathers a 50 ms quiet gap (at most 0.3 s) so a burst is prefilled together; it keeps
    prefix_cache_tokens(env) tokens of ended replies for the chats' next turns."""
    from .scheduler import Scheduler

    return Scheduler(32, 64, gather_seconds=0.05, max_gather_seconds=0.3, prefix_cache_tokens=prefix_cache_tokens(env))


def trusted_host(host: str | None, share: bool = False) -> bool:
    """Whether only this machine can reach a server bound to `host` (and no public --share link exists)."""
    return (host or "").strip().lower().strip("[]") in LOCAL_HOSTS and not share


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="gyaru steering studio (Gradio)")
    parser.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME, 0.0.0.0 on Spaces, else 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help=f"default: GRADIO_SERVER_PORT or {DEFAULT_PORT}")
    parser.add_argument("--model", default=None, help="preload this model at start (default: STEERING_MODEL)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument(
        "--allow-any-model",
        action="store_true",
        help="let visitors load any hub id, local folder or .gguf (default: STEERING_ALLOW_ANY_MODEL; always on when "
        "bound to localhost without --share; otherwise visitors pick among the listed models)",
    )
    parser.add_argument(
        "--allow-shared-saves",
        action="store_true",
        help="let visitors save their vectors into the shared vectors folder (default: STEERING_ALLOW_SHARED_SAVES; "
        "always on when bound to localhost without --share)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on the OpenAI-compatible API at /v1 (default: STEERING_API_KEY); "
        "needed to serve /v1 on an address other machines can reach",
    )
    parser.add_argument("--no-api", action="store_true", help="serve only the page, no OpenAI-compatible API at /v1")
    return parser


def server_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The app's options with every default filled in: host (--host, else GRADIO_SERVER_NAME, else 0.0.0.0 on
    Hugging Face Spaces, where SPACE_ID is set, else 127.0.0.1), port (--port, else GRADIO_SERVER_PORT, else 7860),
    model to preload (--model, else STEERING_MODEL, else None), share, and what visitors may do: allow_any_model and
    allow_shared_saves (the flag, else its environment variable, else on for a trusted_host)."""
    env = os.environ if environ is None else environ
    args = server_parser().parse_args(argv)
    args.host = args.host or env.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1")
    if args.port is None:
        try:
            args.port = int(env.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
        except ValueError:
            raise ValueError(f"GRADIO_SERVER_PORT={env['GRADIO_SERVER_PORT']!r} is not a port number") from None
    args.model = args.model or env.get("STEERING_MODEL") or None
    trusted = trusted_host(args.host, args.share)
    args.allow_any_model = args.allow_any_model or env_flag(env, "STEERING_ALLOW_ANY_MODEL") or trusted
    args.allow_shared_saves = args.allow_shared_saves or env_flag(env, "STEERING_ALLOW_SHARED_SAVES") or trusted
    args.api_key = args.api_key if args.api_key is not None else env.get("STEERING_API_KEY") or None
    args.on_space = bool(env.get("SPACE_ID"))
    return args


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


SHARED_SAVES_OFF = Text(
    en="this server does not save into the shared vectors folder: your vectors stay in your session (download them "
    "instead). Its operator can allow it with `python app.py --allow-shared-saves` (always allowed on localhost).",
    ja="このサーバーでは共有フォルダに保存できません: ベクトルはあなたのセッションの中だけにあります（代わりにダウンロード"
    "してください）。運営者は `python app.py --allow-shared-saves` で許可できます（localhost では常に許可されます）。",
)
NO_SHARED_SAVES = SHARED_SAVES_OFF()  # a Message: the English str, `localized(NO_SHARED_SAVES, lang)` for the page


@dataclass
class ServerRules:
    """What visitors may do to the shared server: which models they may load (a ModelPolicy), whether they may save
    into the shared vectors folder, and the key /v1 asks for (None: open, where api_key_policy allows that)."""

    policy: ModelPolicy
    shared_saves: bool = False
    serve_api: bool = True
    api_key: str | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> ServerRules:
        """Before the command line is read (or when something else launches the app): only what the environment
        allows — the listed models, no shared saves."""
        env = os.environ if env is None else env
        policy = ModelPolicy(env_flag(env, "STEERING_ALLOW_ANY_MODEL"), env.get("STEERING_MODEL") or None)
        return cls(policy, env_flag(env, "STEERING_ALLOW_SHARED_SAVES"))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerRules:
        """From server_args; raises ApiKeyRequired when /v1 would be open on an address others can reach."""
        serve_api, key = api_key_policy(args.host, args.share, args.api_key, not args.no_api, args.on_space)
        return cls(ModelPolicy(args.allow_any_model, args.model), args.allow_shared_saves, serve_api, key)

    def describe(self) -> str:
        """One log line an operator reads at start-up."""
        models = "any model" if self.policy.allow_any else "only " + ", ".join(self.policy.allowed)
        api = ("key required" if self.api_key else "open") if self.serve_api else "off"
        saves = "on" if self.shared_saves else "off"
        return f"visitors may load {models}; shared saves {saves}; OpenAI-compatible API at /v1: {api}"
