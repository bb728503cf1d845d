"""steering.serve: the app's command line with the environment's defaults, and its offline font stacks."""

from __future__ import annotations

import pytest

from steering.serve import (
    DEFAULT_PORT,
    MONO_FONTS,
    SYSTEM_FONTS,
    ApiKeyRequired,
    api_key_policy,
    env_flag,
    server_args,
    trusted_host,
)


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


@pytest.mark.parametrize(
    "argv, env, any_model, shared_saves",
    [
        ([], {}, True, True),  # 127.0.0.1: only this machine reaches it
        (["--host", "localhost"], {}, True, True),
        (["--host", "::1"], {}, True, True),
        (["--share"], {}, False, False),  # a public gradio.live link: not local any more
        (["--host", "0.0.0.0"], {}, False, False),
        ([], {"SPACE_ID": "someone/studio"}, False, False),  # Spaces binds 0.0.0.0
        (["--host", "0.0.0.0", "--allow-any-model"], {}, True, False),
        (["--host", "0.0.0.0", "--allow-shared-saves"], {}, False, True),
        (["--host", "0.0.0.0"], {"STEERING_ALLOW_ANY_MODEL": "1", "STEERING_ALLOW_SHARED_SAVES": "yes"}, True, True),
        (["--host", "0.0.0.0"], {"STEERING_ALLOW_ANY_MODEL": "0", "STEERING_ALLOW_SHARED_SAVES": ""}, False, False),
    ],
)
def test_what_visitors_may_do_follows_the_host_and_the_operator(argv, env, any_model, shared_saves):
    args = server_args(argv, env)
    assert (args.allow_any_model, args.allow_shared_saves) == (any_model, shared_saves)


def test_trusted_host_and_env_flag():
    assert trusted_host("127.0.0.1") and trusted_host("LOCALHOST") and trusted_host("[::1]")
    assert not trusted_host("127.0.0.1", share=True) and not trusted_host("0.0.0.0") and not trusted_host(None)
    assert env_flag({"X": " True "}, "X") and not env_flag({"X": "no"}, "X") and not env_flag({}, "X")


# --------------------------------------------------------------------------------------------- api_key_policy


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", " 127.0.0.1 ", "::1", "[::1]"])
def test_a_host_only_this_machine_reaches_may_run_open(host):
    assert api_key_policy(host, False, None) == (True, None)
    assert api_key_policy(host, False, None, on_space=True) == (True, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", "", None])
def test_a_reachable_host_without_a_key_is_refused(host):
    with pytest.raises(ApiKeyRequired, match="--api-key KEY") as caught:
        api_key_policy(host, False, None)
    assert isinstance(caught.value, ValueError) and "--no-api" in str(caught.value)


def test_a_share_link_makes_localhost_reachable():
    with pytest.raises(ApiKeyRequired, match="with a public --share link"):
        api_key_policy("127.0.0.1", True, None)
    assert api_key_policy("127.0.0.1", True, "k3y") == (True, "k3y")


def test_a_key_is_always_required_once_given():
    assert api_key_policy("127.0.0.1", False, "k3y") == (True, "k3y")
    assert api_key_policy("0.0.0.0", False, "\tk3y-with.punct\n") == (True, "k3y-with.punct")
    assert api_key_policy("0.0.0.0", False, "k3y", on_space=True) == (True, "k3y")


@pytest.mark.parametrize("key", ["", "   ", "two words", "tab\tinside", "line\nbreak"])
def test_a_blank_or_spaced_key_is_refused(key):
    with pytest.raises(ApiKeyRequired, match="non-empty text without spaces"):
        api_key_policy("0.0.0.0", False, key)
    with pytest.raises(ApiKeyRequired):
        api_key_policy("127.0.0.1", False, key)  # even where no key is needed: a bad one is a mistake


def test_a_space_without_a_key_serves_only_the_page():
    assert api_key_policy("0.0.0.0", False, None, on_space=True) == (False, None)
    assert api_key_policy("0.0.0.0", True, None, on_space=True) == (False, None)


@pytest.mark.parametrize(
    ("host", "share", "key", "space"),
    [("0.0.0.0", False, None, False), ("127.0.0.1", False, None, False), ("0.0.0.0", True, "k3y", True),
     ("0.0.0.0", False, "bad key", False)],
)  # fmt: skip
def test_no_api_serves_no_v1_whatever_else(host, share, key, space):
    assert api_key_policy(host, share, key, serve_api=False, on_space=space) == (False, None)


def test_the_prefix_cache_budget_comes_from_the_environment_or_stops_the_start():
    from steering.serve import PREFIX_CACHE_TOKENS, prefix_cache_tokens

    assert prefix_cache_tokens({}) == PREFIX_CACHE_TOKENS
    assert prefix_cache_tokens({"STEERING_PREFIX_CACHE_TOKENS": " 0 "}) == 0
    assert prefix_cache_tokens({"STEERING_PREFIX_CACHE_TOKENS": "20000"}) == 20000
    for bad in ("-5", "lots", "1e4", ""):
        with pytest.raises(SystemExit, match="STEERING_PREFIX_CACHE_TOKENS"):
            prefix_cache_tokens({"STEERING_PREFIX_CACHE_TOKENS": bad})


def test_the_apps_scheduler_gathers_bursts_and_keeps_the_prefix_budget_it_is_given():
    from steering.serve import chat_scheduler

    scheduler = chat_scheduler({"STEERING_PREFIX_CACHE_TOKENS": "1234"})
    try:
        assert (scheduler.max_batch_rows, scheduler.max_queue) == (32, 64)
        assert (scheduler.gather_seconds, scheduler.max_gather_seconds) == (0.05, 0.3)
        assert scheduler.prefix_cache.max_tokens == 1234
    finally:
        scheduler.close()
