"""Checks of the numbers people type (CLI flags, app fields, API bodies): whole numbers, floats in bounds,
seeds, each refused with a message that names the argument. The argparse forms (`int_arg`, …) let the CLI
refuse a bad flag before any model loads."""

from __future__ import annotations

import argparse
import math
import numbers

from .messages import Text, composed

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer

# `what` names the argument ('--batch-size', 'max_new_tokens'); bounds and values come formatted as text.
NOT_WHOLE = Text(en="{what} must be a whole number, got {value}", ja="{what} は整数にしてください（{value} でした）")
NOT_A_NUMBER = Text(en="{what} must be a number, got {value}", ja="{what} は数にしてください（{value} でした）")
NOT_FINITE = Text(
    en="{what} must be a finite number, got {value}", ja="{what} は有限の数にしてください（{value} でした）"
)
AT_LEAST = Text(
    en="{what} must be at least {bound}, got {value}", ja="{what} は {bound} 以上にしてください（{value} でした）"
)
AT_MOST = Text(
    en="{what} must be at most {bound}, got {value}", ja="{what} は {bound} 以下にしてください（{value} でした）"
)
ABOVE = Text(
    en="{what} must be greater than {bound}, got {value}",
    ja="{what} は {bound} より大きくしてください（{value} でした）",
)
BELOW = Text(
    en="{what} must be less than {bound}, got {value}", ja="{what} は {bound} 未満にしてください（{value} でした）"
)
VALUE = Text(en="value", ja="値")


class NumberError(argparse.ArgumentTypeError, ValueError):
    """A number out of its range: a ValueError for the library and the app, and argparse's own type error for the
    CLI (which then prints `error: --NAME MESSAGE` and exits with code 2)."""


def _named(what: str | None, text: Text, value, bound=None) -> NumberError:
    """The error `text` says about `value` (text already; `bound` the limit it broke) for the argument `what`."""
    return NumberError(composed(text, what=what or VALUE(), value=value, bound=bound))


def check_int(value, what: str | None = None, minimum: int | None = 1, maximum: int | None = None) -> int:
    """`value` as an int within [minimum, maximum]; a whole float (3.0, from a UI slider) is accepted, while 2.5,
    NaN, bools and text are not. The message names `what` (e.g. '--batch-size' or 'max_new_tokens'):
    `--batch-size must be at least 1, got 0`."""
    number = value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, numbers.Integral):
        raise _named(what, NOT_WHOLE, repr(value))
    number = int(number)
    if minimum is not None and number < minimum:
        raise _named(what, AT_LEAST, number, minimum)
    if maximum is not None and number > maximum:
        raise _named(what, AT_MOST, number, maximum)
    return number


def check_float(
    value,
    what: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """`value` as a finite float within the bounds (minimum/maximum inclusive, above/below exclusive)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _named(what, NOT_A_NUMBER, repr(value))
    number = float(value)
    if not math.isfinite(number):
        raise _named(what, NOT_FINITE, number)
    for bound, broken, text in (
        (minimum, lambda b: number < b, AT_LEAST),
        (maximum, lambda b: number > b, AT_MOST),
        (above, lambda b: number <= b, ABOVE),
        (below, lambda b: number >= b, BELOW),
    ):
        if bound is not None and broken(bound):
            raise _named(what, text, f"{number:g}", f"{bound:g}")
    return number


def check_seed(value, what: str | None = "seed") -> int:
    """A random seed: a whole number from 0 to 2**63 - 1 (a signed 64-bit integer, as torch and numpy take it)."""
    number = check_int(value, what, minimum=0)
    if number > MAX_SEED:
        raise _named(what, AT_MOST, number, f"2**63 - 1 ({MAX_SEED})")
    return number


def _parsed_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _named(what, NOT_WHOLE, repr(text)) from None


def _parsed_float(text: str, what: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise _named(what, NOT_A_NUMBER, repr(text)) from None


def int_arg(what: str, minimum: int | None = 1, maximum: int | None = None):
    """An argparse `type=` for a whole number in [minimum, maximum]: `--batch-size 0` is a usage error (exit 2)
    reading `--batch-size must be at least 1, got 0`."""

    def parse(text: str) -> int:
        return check_int(_parsed_int(text, what), what, minimum, maximum)

    parse.__name__ = "whole number"
    return parse


def float_arg(what: str, **bounds):
    """An argparse `type=` for a finite float within check_float's bounds (`--top-p 2` is a usage error, exit 2)."""

    def parse(text: str) -> float:
        return check_float(_parsed_float(text, what), what, **bounds)

    parse.__name__ = "number"
    return parse


def seed_arg(what: str = "--seed"):
    """An argparse `type=` for a seed (0 .. 2**63 - 1)."""

    def parse(text: str) -> int:
        return check_seed(_parsed_int(text, what), what)

    parse.__name__ = "seed"
    return parse
