"""messages.py: a Text in English and Japanese, its Message (an English str that can say itself in Japanese), and
`localized` on library errors; plus a walk over every Text the library defines, checking both languages take the
same parameters and are written in their own language."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pickle
import pkgutil
import re
import string
import warnings

import pytest
import torch

import steering
from steering.checks import NumberError, check_int
from steering.data import load_dataset
from steering.messages import LANGS, Message, Text, composed, localized, page_lang, rendered
from steering.metadata import MetadataError, VectorMeta
from steering.models import ModelLoadError, check_loadable
from steering.readers import DatasetError
from steering.serve import NO_SHARED_SAVES
from steering.settings import parse_layers, parse_strengths
from steering.steer import Steering, check_strengths, strength_warning
from steering.vector_files import load_vector
from steering.vectors import SteeringVector, VectorFileError

GREETING = Text(en="hello {name}, {count:,} new", ja="{name} さん、新着 {count:,} 件")
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")  # kana and kanji
NOT_ENGLISH = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")  # also Japanese punctuation, full-width forms


def test_page_lang_takes_any_japanese_tag_and_falls_back_to_english():
    assert LANGS == ("en", "ja")
    for tag in ("ja", "ja-JP", "JA", " ja_jp "):
        assert page_lang(tag) == "ja"
    for tag in ("en", "en-US", "fr", "", None):
        assert page_lang(tag) == "en"


def test_a_text_says_itself_in_either_language():
    assert GREETING.say("en", name="Ai", count=1200) == "hello Ai, 1,200 new"
    assert GREETING.say("ja-JP", name="Ai", count=1200) == "Ai さん、新着 1,200 件"
    assert GREETING.say("de", name="Ai", count=1) == "hello Ai, 1 new"


def test_a_message_is_its_english_str():
    message = GREETING(name="Ai", count=3)
    assert isinstance(message, str) and isinstance(message, Message)
    assert message == "hello Ai, 3 new" and str(message) == "hello Ai, 3 new"
    assert hash(message) == hash("hello Ai, 3 new") and {"hello Ai, 3 new": 1}[message] == 1
    assert f"{message}!" == "hello Ai, 3 new!" and "Ai" in message
    assert message.in_lang("ja") == "Ai さん、新着 3 件"
    assert message.in_lang(None) == message.in_lang("en") == "hello Ai, 3 new"
    assert message.text is GREETING and message.params == {"name": "Ai", "count": 3}


def test_a_message_pickles_as_a_plain_str():
    copy = pickle.loads(pickle.dumps(GREETING(name="Ai", count=3)))
    assert type(copy) is str and copy == "hello Ai, 3 new"


def test_localized_says_messages_and_errors_carrying_them():
    message = GREETING(name="Ai", count=3)
    assert localized(message, "ja") == "Ai さん、新着 3 件"
    assert localized(ValueError(message), "ja") == "Ai さん、新着 3 件"
    assert localized(ValueError(message), "en") == "hello Ai, 3 new"
    # anything else reads as its own str
    assert localized("plain", "ja") == "plain" and localized(None, "ja") == "None" and localized(3, "ja") == "3"
    assert localized(ValueError("plain"), "ja") == "plain"
    assert localized(ValueError(message, 2), "ja") == str(ValueError(message, 2))  # two args: not one message
    assert localized(KeyError("k"), "ja") == "'k'"


def test_composed_says_nested_messages_in_the_same_language():
    inner = GREETING(name="Ai", count=2)
    outer = Text(en="note: {inner} ({limit:g})", ja="メモ: {inner}（{limit:g}）")
    whole = composed(outer, inner=inner, limit=1.5)
    assert whole == "note: hello Ai, 2 new (1.5)"
    assert localized(whole, "ja") == "メモ: Ai さん、新着 2 件（1.5）"
    assert localized(composed(outer, inner=ValueError(inner), limit=2), "ja") == "メモ: Ai さん、新着 2 件（2）"
    braces = rendered(lambda lang: "{layer: tensor} " + lang)  # braces in a rendered text stay literal
    assert braces == "{layer: tensor} en" and braces.in_lang("ja") == "{layer: tensor} ja"


# ------------------------------------------------------------------ library errors in both languages


def _error(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_layer_spec_errors_say_themselves_in_japanese():
    exc = _error(lambda: parse_layers("3-40", 24, "--layers"))
    assert type(exc) is ValueError and isinstance(exc.args[0], Message)
    assert (
        str(exc)
        == "--layers '3-40': layer 40 is out of range: the model has 24 layers (0..23, or -24..-1 from the end)"
    )
    assert localized(exc, "ja").startswith("--layers '3-40': レイヤー 40 は範囲外です")
    exc = _error(lambda: parse_strengths("1,x", "strengths"))
    assert str(exc) == "strengths: strength 'x' is not a number"
    assert localized(exc, "ja") == "strengths: 強度 'x' は数ではありません"


def test_subclassed_errors_keep_their_message(tmp_path):
    exc = _error(lambda: load_vector(tmp_path / "missing.pt"))
    assert type(exc) is VectorFileError and str(exc).startswith("vector file not found: ")
    assert localized(exc, "ja").startswith("ベクトルファイルが見つかりません: ")

    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"standard": "a", "gyaru": ""}\n', encoding="utf-8")
    exc = _error(lambda: load_dataset(bad))
    assert type(exc) is DatasetError and str(exc).endswith(' line 1, field "gyaru": empty text')
    assert localized(exc, "ja").endswith(" 1 行目、フィールド「gyaru」: テキストが空です")

    exc = _error(lambda: VectorMeta.from_dict({"pairs": "many"}))
    assert type(exc) is MetadataError and str(exc) == "pairs is 'many' (a string); expected a whole number"
    assert localized(exc, "ja") == "pairs が 'many'（文字列）です。整数にしてください"

    exc = _error(lambda: check_int(0, "--batch-size"))
    assert isinstance(exc, NumberError) and isinstance(exc, argparse.ArgumentTypeError)
    assert str(exc) == "--batch-size must be at least 1, got 0"
    assert localized(exc, "ja") == "--batch-size は 1 以上にしてください（0 でした）"

    exc = _error(lambda: check_loadable(str(tmp_path / "nowhere" / "model.gguf")))
    assert type(exc) is ModelLoadError and localized(exc, "ja").startswith("GGUF ファイルが見つかりません: ")


def test_a_sidecar_metadata_error_names_the_file_in_either_language(tmp_path):
    path = tmp_path / "v.pt"
    torch.save({1: torch.ones(4)}, path)
    path.with_suffix(".json").write_text('{"recommended": {"strength": "x"}}', encoding="utf-8")
    exc = _error(lambda: load_vector(path))
    assert type(exc) is VectorFileError
    sidecar = path.with_suffix(".json")
    assert str(exc) == f"{sidecar}: recommended.strength is 'x' (a string); expected a finite number"
    assert localized(exc, "ja") == f"{sidecar}: recommended.strength が 'x'（文字列）です。有限の数にしてください"


def test_the_strength_warning_is_a_message():
    vector = SteeringVector({1: torch.ones(4)}, stats={1: {"mean_diff_norm": 1.0}})
    warning = strength_warning(Steering(vector, [1], 9.0))
    assert isinstance(warning, Message)
    assert warning == "strength 9 on the calibrated scale is beyond ±8; expect broken text"
    assert localized(warning, "ja") == "calibrated スケールで強度 9 は ±8 を超えています。文章が崩れるおそれがあります"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_strengths(Steering(vector, [1], 9.0))
    assert localized(caught[0].message, "ja").startswith("calibrated スケールで強度 9")


def test_the_shared_saves_refusal_is_a_message():
    assert isinstance(NO_SHARED_SAVES, Message) and "--allow-shared-saves" in NO_SHARED_SAVES
    assert localized(NO_SHARED_SAVES, "ja").startswith("このサーバーでは共有フォルダに保存できません")


# ------------------------------------------------------------------ every Text in the library


def _library_texts() -> dict[str, Text]:
    """Every Text a steering module defines at module level, by 'module.NAME' (a Text imported into other modules is
    named once, by the module that assigns it)."""
    found: dict[int, tuple[str, Text]] = {}
    for info in pkgutil.iter_modules(steering.__path__):
        if info.name == "__main__":
            continue
        name = f"steering.{info.name}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional dependency (fastapi, plotly...) this machine lacks
            if (exc.name or "").startswith("steering"):
                raise
            continue
        source = inspect.getsource(module)
        for attr, value in vars(module).items():
            if isinstance(value, Text) and (id(value) not in found or f"\n{attr} = Text(" in source):
                found[id(value)] = (f"{name}.{attr}", value)
    return dict(found.values())


def _fields(template: str) -> set[str]:
    """The parameter names a str.format template takes ('{spec!r}' -> 'spec', '{a.b[0]:>3}' -> 'a')."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            assert field, f"positional field in {template!r}: use named parameters"
            names.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return names


TEXTS = _library_texts()


def test_the_library_defines_texts():
    assert len(TEXTS) >= 100, sorted(TEXTS)
    for module in ("settings", "steer", "catalog", "vectors", "vector_files", "data", "readers", "models", "checks"):
        assert any(label.startswith(f"steering.{module}.") for label in TEXTS), module


@pytest.mark.parametrize("label", sorted(TEXTS))
def test_each_text_takes_the_same_parameters_in_both_languages(label):
    text = TEXTS[label]
    assert _fields(text.en) == _fields(text.ja), label
    params = dict.fromkeys(_fields(text.en), 1)  # 1 fits every format spec used (:g, :, .3g, !r)
    assert text.say("en", **params) and text.say("ja", **params)


@pytest.mark.parametrize("label", sorted(TEXTS))
def test_each_text_is_written_in_its_own_language(label):
    text = TEXTS[label]
    words = "".join(literal for literal, *_ in string.Formatter().parse(text.en))
    if re.search(r"[A-Za-z]", words):  # a template of parameters only ('{field} {value}') has nothing to translate
        assert JAPANESE.search(text.ja), f"{label}: the ja text holds no Japanese: {text.ja!r}"
    assert not NOT_ENGLISH.search(text.en), f"{label}: the en text holds Japanese: {text.en!r}"
