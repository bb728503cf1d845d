"""Checks of typed numbers: whole numbers, bounded floats, seeds, and their argparse forms."""

from __future__ import annotations

import argparse
import math

import pytest

from steering.checks import MAX_SEED, check_float, check_int, check_seed, float_arg, int_arg, seed_arg


def test_whole_numbers():
    assert check_int(3, "--batch-size") == 3 and check_int(64.0, "max_new_tokens") == 64
    for bad, message in ((0, "at least 1, got 0"), (-1, "at least 1"), (2.5, "whole number"), (math.nan, "whole")):
        with pytest.raises(ValueError, match=message):
            check_int(bad, "--batch-size")
    assert check_int(0, "--top-k", minimum=0) == 0


def test_floats_in_bounds():
    assert check_float(0.5, "--top-p", above=0.0, maximum=1.0) == 0.5
    with pytest.raises(ValueError, match="--top-p"):
        check_float(2.0, "--top-p", above=0.0, maximum=1.0)
    with pytest.raises(ValueError, match="finite"):
        check_float(math.inf, "temperature", minimum=0.0)


def test_seeds_fit_a_signed_64_bit_integer():
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED
    with pytest.raises(ValueError, match="2\\*\\*63"):
        check_seed(10**30)
    with pytest.raises(ValueError, match="at least 0"):
        check_seed(-1)


def test_argparse_forms_name_the_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int_arg("--batch-size"))
    parser.add_argument("--heldout", type=float_arg("--heldout", minimum=0.0, below=1.0))
    parser.add_argument("--seed", type=seed_arg("--seed"))
    args = parser.parse_args(["--batch-size", "4", "--heldout", "0.2", "--seed", "7"])
    assert (args.batch_size, args.heldout, args.seed) == (4, 0.2, 7)
    with pytest.raises(argparse.ArgumentTypeError, match="--batch-size must be at least 1, got 0"):
        int_arg("--batch-size")("0")
    with pytest.raises(argparse.ArgumentTypeError, match="--heldout"):
        float_arg("--heldout", minimum=0.0, below=1.0)("1.5")
