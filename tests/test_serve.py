"""steering.serve: the app's command line with the environment's defaults, and its offline font stacks."""

from __future__ import annotations

import pytest

from steering.serve import DEFAULT_PORT, MONO_FONTS, SYSTEM_FONTS, server_args


def test_defaults_without_flags_or_environment():
    args = server_args([], {})
    assert (args.host, args.port, args.model, args.share) == ("127.0.0.1", DEFAULT_PORT, None, False)


def test_the_environment_fills_what_the_flags_leave_out():
    env = {"GRADIO_SERVER_NAME": "10.0.0.5", "GRADIO_SERVER_PORT": "8080", "STEERING_MODEL": "Qwen/Qwen2.5-7B-Instruct"}
    args = server_args([], env)
    assert (args.host, args.port, args.model) == ("10.0.0.5", 8080, "Qwen/Qwen2.5-7B-Instruct")
    assert server_args([], {"SPACE_ID": "someone/studio"}).host == "0.0.0.0"  # on Hugging Face Spaces


def test_flags_win_over_the_environment():
    env = {"GRADIO_SERVER_NAME": "10.0.0.5", "GRADIO_SERVER_PORT": "8080", "STEERING_MODEL": "a", "SPACE_ID": "x"}
    args = server_args(["--host", "localhost", "--port", "9000", "--model", "bundled", "--share"], env)
    assert (args.host, args.port, args.model, args.share) == ("localhost", 9000, "bundled", True)


def test_a_bad_port_is_refused():
    with pytest.raises(ValueError, match="GRADIO_SERVER_PORT='http' is not a port number"):
        server_args([], {"GRADIO_SERVER_PORT": "http"})
    with pytest.raises(SystemExit):
        server_args(["--port", "eighty"], {})


def test_fonts_are_system_fonts_only():
    assert SYSTEM_FONTS[-1] == "sans-serif" and MONO_FONTS[-1] == "monospace"
    assert {"Hiragino Sans", "Noto Sans CJK JP", "Yu Gothic"} <= set(SYSTEM_FONTS)  # Japanese text everywhere
