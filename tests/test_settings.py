"""steering.settings: layer specs, layer options, strength lists, the language rule, the recommended-setting
defaults and the shared choice lists; plus checks that the CLI and the app parse through it."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from steering import settings
from steering.settings import (
    DEFAULT_STRENGTH,
    check_layer_spec,
    default_band,
    default_lang,
    default_layer_options,
    format_layers,
    model_lang,
    parse_layer_options,
    parse_layers,
    parse_strengths,
    resolve_setting,
)
from steering.vectors import SteeringVector

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_EN = ROOT / "vectors" / "smollm2-135m-instruct_gal_en.pt"


# --------------------------------------------------------------------------- parse_layers


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("8-20", list(range(8, 21))),
        ("3,5", [3, 5]),
        ("3,5,7", [3, 5, 7]),
        ("5,3,3", [3, 5]),  # sorted, deduplicated
        (" 3 , 5 ", [3, 5]),
        ("8 - 10", [8, 9, 10]),  # spaces inside a spec are ignored
        ("-4--1", [26, 27, 28, 29]),
        ("-8--1", list(range(22, 30))),
        ("-1", [29]),
        ("-30", [0]),
        ("3--1", list(range(3, 30))),  # a positive start and a from-the-end stop
        ("-3-29", [27, 28, 29]),
        ("0-2,28-29", [0, 1, 2, 28, 29]),
        ("0-2,-2--1", [0, 1, 2, 28, 29]),
        ("7", [7]),
        ("7-7", [7]),
        ("3,", [3]),  # a trailing comma selects nothing more
        (12, [12]),
        (-2, [28]),
        ([1, 2, -1], [1, 2, 29]),
        ((4, 5), [4, 5]),
        (range(4, 7), [4, 5, 6]),
        (range(-3, 0), [27, 28, 29]),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 30) == expected


@pytest.mark.parametrize("num_layers", [4, 24, 30, 64])
def test_parse_layers_none_is_the_middle_band(num_layers):
    layers = parse_layers(None, num_layers)
    assert layers == list(range(layers[0], layers[-1] + 1))
    assert layers[0] == num_layers // 4
    assert layers[-1] == 3 * num_layers // 4
    assert 0 < layers[0] < layers[-1] < num_layers


@pytest.mark.parametrize("spec", ["", "   ", "\t"])
def test_empty_layer_spec_is_an_error_naming_the_argument(spec):
    with pytest.raises(ValueError, match=r"^--layers: empty layer spec"):
        parse_layers(spec, 30, what="--layers")
    with pytest.raises(ValueError, match=r"^layers: empty"):
        parse_layers(spec, 30)


@pytest.mark.parametrize("spec", ["30", "0-30", "-31", "29-30", "-31--1", [40], [0, -31], 30, -31, range(25, 31)])
def test_parse_layers_out_of_range(spec):
    with pytest.raises(ValueError, match=r"out of range.*30 layers"):
        parse_layers(spec, 30)


@pytest.mark.parametrize(
    "spec, bad",
    [
        ("0-100000000", "100000000"),
        ("0-1000000000000", "1000000000000"),
        ("-1000000000000--1", "-1000000000000"),
        ("0,5,0-99999999999999999999", "99999999999999999999"),
        (range(0, 10**12), "999999999999"),
        (10**12, "1000000000000"),
    ],
)
def test_huge_ranges_fail_fast_without_memory(spec, bad):
    """The server used to build list(range(0, 10**12)) before checking: bounds come first now."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ValueError) as info:
            parse_layers(spec, 30, what="--layers")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 0.5
    assert peak < 256 * 1024  # no list of layers was built
    message = str(info.value)
    assert "--layers" in message and repr(spec) in message  # names the argument and the spec
    assert f"layer {bad} is out of range" in message and "the model has 30 layers" in message


@pytest.mark.parametrize("spec", ["abc", "3-x", "1.5", "8:20", "--", ",", "1_0", "+3", "3-", "-", "8-12-14", "٣"])
def test_parse_layers_garbage(spec):
    with pytest.raises(ValueError, match=r"bad layer spec"):
        parse_layers(spec, 30)


@pytest.mark.parametrize("spec", [True, [1, "x"], [None], range(5, 5)])
def test_parse_layers_refuses_non_layer_values(spec):
    with pytest.raises(ValueError, match=r"bad layer spec"):
        parse_layers(spec, 30)


def test_backwards_range_is_refused():
    with pytest.raises(ValueError, match=r"12-8 runs backwards"):
        parse_layers("12-8", 30)
    with pytest.raises(ValueError, match=r"-1--4 runs backwards"):
        parse_layers("-1--4", 30)


def test_check_layer_spec_checks_syntax_only():
    check_layer_spec("0-1000", "x")  # well formed; the range is checked once the model is known
    with pytest.raises(ValueError, match=r"^--layers: bad layer spec"):
        check_layer_spec("8:12", "--layers")
    with pytest.raises(ValueError, match=r"^--layers: empty"):
        check_layer_spec(" ", "--layers")


@pytest.mark.parametrize(
    "layers, text",
    [([8, 9, 10, 11, 12], "8-12"), ([3, 5, 9], "3,5,9"), ([7], "7"), ([12, 10, 11], "10-12"), ([], "")],
)
def test_format_layers_is_read_back_by_parse_layers(layers, text):
    assert format_layers(layers) == text
    if layers:
        assert parse_layers(text, 30) == sorted(layers)


# --------------------------------------------------------------------------- layer options and strengths


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8-12 12-16", ["8-12", "12-16"]),
        ("3,5,7", ["3,5,7"]),  # commas stay inside one option (compare's split("-") broke on this)
        ("3,5,7 8-12", ["3,5,7", "8-12"]),
        ("8 4-8;8-12|-4--1", ["8", "4-8", "8-12", "-4--1"]),
        ("  6-10\n10-14  ", ["6-10", "10-14"]),
        ("8-12, 12-16,", ["8-12", "12-16"]),  # stray commas around an option
    ],
)
def test_parse_layer_options(text, expected):
    assert parse_layer_options(text) == expected


@pytest.mark.parametrize("text", ["", "   ", None, ",", " ; | "])
def test_empty_layer_options_name_the_argument(text):
    with pytest.raises(ValueError, match=r"^--layers: .*layer option"):
        parse_layer_options(text, "--layers")


def test_layer_options_are_checked():
    with pytest.raises(ValueError, match=r"--layers: bad layer spec '8:12'"):
        parse_layer_options("6-10 8:12", "--layers")
    with pytest.raises(ValueError, match=r"out of range.*30 layers"):
        parse_layer_options("6-10 0-1000000000000", num_layers=30)
    with pytest.raises(ValueError, match=r"3 layer options, at most 2"):
        parse_layer_options("1 2 3", max_count=2)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0,1,2,3,4", [0.0, 1.0, 2.0, 3.0, 4.0]),
        ("0 2", [0.0, 2.0]),
        ("2, 1;0", [2.0, 1.0, 0.0]),  # order kept
        ("1,1,2,1", [1.0, 2.0]),  # repeats dropped
        ("-2.5,1e1", [-2.5, 10.0]),
        (" 4 ", [4.0]),
    ],
)
def test_parse_strengths(text, expected):
    assert parse_strengths(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"^--strengths: empty"),
        ("  ", r"^--strengths: empty"),
        (None, r"^--strengths: empty"),
        (",,", r"^--strengths: no strength"),
        ("0,x", r"^--strengths: strength 'x' is not a number"),
        ("0,nan", r"not a finite number"),
        ("inf", r"not a finite number"),
    ],
)
def test_bad_strengths_name_the_argument(text, message):
    with pytest.raises(ValueError, match=message):
        parse_strengths(text, "--strengths")


def test_too_many_strengths_stop_early():
    huge = ",".join(str(i) for i in range(200_000))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"more than 12 strengths"):
        parse_strengths(huge, max_count=12)
    assert time.perf_counter() - t0 < 1.0
    assert len(parse_strengths(",".join(["1"] * 1000), max_count=12)) == 1  # repeats do not count


# --------------------------------------------------------------------------- language


def test_language_rule():
    assert model_lang("bundled") == "en" and model_lang(None) == "en"
    assert model_lang("Qwen/Qwen2.5-7B-Instruct") == "ja"
    assert default_lang("ja", "bundled") == "ja"  # the vector's (or dataset's) language wins
    assert default_lang("en", "Qwen/Qwen2.5-7B-Instruct") == "en"
    assert default_lang(None, "bundled") == "en"  # else the model's
    assert default_lang(None, "Qwen/Qwen2.5-7B-Instruct") == "ja"
    assert default_lang("fr", "bundled") == "en"  # a language without prompts or lexicon


# --------------------------------------------------------------------------- defaults from a vector


def _vector(meta: dict, layers=range(8, 15), calibrated: bool = True) -> SteeringVector:
    directions = {layer: torch.ones(4) / 2 for layer in layers}
    stats = {layer: {"mean_diff_norm": 1.0} for layer in layers} if calibrated else {}
    return SteeringVector(directions, meta, stats)


def test_recommended_setting_fills_in_what_is_not_given():
    rec = {"layers": [9, 10, 11], "strength": 3.5, "scale": "raw", "repetition_penalty": 1.3, "position": "last"}
    vector = _vector({"suggested_layer": 10, "recommended": rec})
    setting = resolve_setting(vector)
    assert (setting.layers, setting.strength, setting.scale) == ("9-11", 3.5, "raw")
    assert (setting.mode, setting.apply_to, setting.repetition_penalty) == ("add", "last", 1.3)
    given = resolve_setting(vector, "12", 1.0, "calibrated", "clamp", "generated", 1.1)
    assert given == settings.SteerSetting("12", 1.0, "calibrated", "clamp", "generated", 1.1)


def test_defaults_without_a_recommendation():
    vector = _vector({"suggested_layer": 9})
    setting = resolve_setting(vector)
    assert (setting.layers, setting.strength, setting.scale) == ("8-11", DEFAULT_STRENGTH["calibrated"], "calibrated")
    assert (setting.mode, setting.apply_to, setting.repetition_penalty) == ("add", "all", 1.0)
    bare = _vector({}, calibrated=False)  # no sidecar: only the raw scale works
    setting = resolve_setting(bare)
    assert (setting.layers, setting.strength, setting.scale) == ("9-13", DEFAULT_STRENGTH["raw"], "raw")


def test_unknown_recommended_scale_falls_back():
    vector = _vector({"recommended": {"scale": "loud", "strength": 1.5}})
    assert resolve_setting(vector).scale == "calibrated"


@pytest.mark.parametrize("name", ["layers", "scale", "mode", "apply_to"])
def test_blank_given_values_are_errors_naming_the_argument(name):
    vector = _vector({})
    with pytest.raises(ValueError, match=rf"^{name}: empty"):
        resolve_setting(vector, **{name: "  "})
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ValueError, match=rf"^{flag}: empty"):
        resolve_setting(vector, **{name: ""}, cli=True)


def test_default_bands():
    vector = _vector({"suggested_layer": 12}, layers=range(4, 21))
    assert default_band(vector) == "10-14"
    assert default_layer_options(vector) == "6-10 10-14 14-18"
    edge = _vector({"suggested_layer": 8})  # only the layers the vector has
    assert default_band(edge) == "8-10" and default_layer_options(edge) == "8-10 10-14"


# --------------------------------------------------------------------------- one source for choices and parsing


def test_choice_lists_agree_with_the_code_that_checks_them():
    from steering import capture, extract, interop, steer
    from steering.data import CONTRASTS

    assert settings.SCALES == steer.SCALES
    assert settings.APPLY_TO == steer.APPLY_TO
    assert settings.MODES == steer.MODES
    assert settings.METHODS == extract.METHODS
    assert settings.READ_POSITIONS == capture.POSITIONS
    assert settings.EXPORT_FORMATS == tuple(interop.FORMATS)
    assert settings.CONTRASTS == CONTRASTS
    assert set(settings.STRENGTH_RANGE) == set(settings.SCALES) == set(settings.SWEEP_STRENGTHS)
    assert set(settings.DEFAULT_STRENGTH) == set(settings.SCALES)
    for scale, (lo, hi, _step) in settings.STRENGTH_RANGE.items():
        assert lo < settings.DEFAULT_STRENGTH[scale] < hi
        assert max(parse_strengths(settings.SWEEP_STRENGTHS[scale])) <= hi


def test_settings_module_stays_light():
    """The CLI builds its parser from these lists at start: importing settings must not pull in torch."""
    import subprocess
    import sys

    code = "import sys, steering.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_other_parser_of_settings_strings():
    """Layer specs, layer options and strength lists are parsed only in steering/settings.py."""
    pattern = re.compile(
        r"def (parse_layers|parse_layer_options|parse_strengths|_split_range)\b"
        r"|\.split\(\s*[\"']-[\"']\s*\)"
        r"|strengths\.split\("
        r"|layers\.(replace|split)\("
    )
    offenders = []
    for path in [ROOT / "app.py", *sorted((ROOT / "steering").glob("*.py"))]:
        if path.name == "settings.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


# --------------------------------------------------------------------------- the CLI parses through settings


def _cli_error(capsys, argv) -> str:
    from steering.cli import main

    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_refuses_bad_settings_before_loading_a_model(capsys, monkeypatch):
    import steering.models

    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(steering.models, "load_model", no_model)
    vector = str(SHIPPED_EN)
    err = _cli_error(capsys, ["generate", "hi", "--vector", vector, "--layers", ""])
    assert "--layers: empty" in err
    err = _cli_error(capsys, ["generate", "hi", "--vector", vector, "--layers", "8:12"])
    assert "--layers: bad layer spec '8:12'" in err
    err = _cli_error(capsys, ["sweep", "--vector", vector, "--strengths", ""])
    assert "--strengths: empty" in err
    err = _cli_error(capsys, ["sweep", "--vector", vector, "--layers", "8-12 x"])
    assert "--layers: bad layer spec 'x'" in err
    err = _cli_error(capsys, ["compare", "--layers", "", "--report", "unused"])
    assert "--layers: empty" in err
    err = _cli_error(capsys, ["compare", "--repetition-penalties", "1,y", "--report", "unused"])
    assert "--repetition-penalties: repetition penalty 'y' is not a number" in err


def test_cli_choices_come_from_settings():
    from steering.cli import build_parser

    parser = build_parser()
    actions = {
        (name, a.dest): a
        for name, sub in parser._subparsers._group_actions[0].choices.items()
        for a in sub._actions
        if a.choices
    }
    assert tuple(actions[("generate", "scale")].choices) == settings.SCALES
    assert tuple(actions[("generate", "apply_to")].choices) == settings.APPLY_TO
    assert tuple(actions[("generate", "mode")].choices) == settings.MODES
    assert tuple(actions[("extract", "method")].choices) == settings.METHODS
    assert tuple(actions[("extract", "read_position")].choices) == settings.READ_POSITIONS
    assert tuple(actions[("extract", "contrast")].choices) == settings.CONTRASTS
    assert tuple(actions[("export", "format")].choices) == settings.EXPORT_FORMATS
    assert tuple(actions[("sweep", "apply_to")].choices) == settings.APPLY_TO
    args = parser.parse_args(["generate", "hi", "--vector", "v.pt", "--position", "last"])
    assert args.apply_to == "last"  # the old flag name still works


def test_repetition_penalties_are_numbers_of_at_least_one():
    from steering.settings import parse_penalties

    assert parse_penalties("1.1, 1.3 1.1") == [1.1, 1.3]
    with pytest.raises(ValueError, match="repetition penalty 0.9 is below 1"):
        parse_penalties("1.1,0.9")
    with pytest.raises(ValueError, match="--rp: empty"):
        parse_penalties(" ", "--rp")
