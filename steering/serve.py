"""How the studio app (app.py) is served, without gradio: its command line with the environment's defaults, and
the system font stacks its theme uses (so the page requests no web fonts and works offline)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

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


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="gyaru steering studio (Gradio)")
    parser.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME, 0.0.0.0 on Spaces, else 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help=f"default: GRADIO_SERVER_PORT or {DEFAULT_PORT}")
    parser.add_argument("--model", default=None, help="preload this model at start (default: STEERING_MODEL)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    return parser


def server_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The app's options with every default filled in: host (--host, else GRADIO_SERVER_NAME, else 0.0.0.0 on
    Hugging Face Spaces, where SPACE_ID is set, else 127.0.0.1), port (--port, else GRADIO_SERVER_PORT, else 7860),
    model to preload (--model, else STEERING_MODEL, else None) and share."""
    env = os.environ if environ is None else environ
    args = server_parser().parse_args(argv)
    args.host = args.host or env.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1")
    if args.port is None:
        try:
            args.port = int(env.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
        except ValueError:
            raise ValueError(f"GRADIO_SERVER_PORT={env['GRADIO_SERVER_PORT']!r} is not a port number") from None
    args.model = args.model or env.get("STEERING_MODEL") or None
    return args
