"""steering.templates: what capture feeds the model and which token it reads (bundled SmolLM2 tokenizer)."""

from __future__ import annotations

import copy

import pytest

from steering.templates import USER_TURNS, Rendered, apply_template, render_reply, user_turn

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM"
END_OF_TURN = "<|im_end|>\n"

TEXTS = [
    "Hello there, bestie! It's sooo cute.",
    "OMG, I updated my laptop last night and now the Wi-Fi is sooo broken",
    "Hi.",
    "あーし新しいパソコン買ったんだけど、マジ最強じゃん！",
    "動きちょー速くてウケるｗ✨",
    "Line one.\nLine two, with  two spaces.",
]


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("topic, lang", [(None, "en"), ("Tech", "en"), ("テック", "ja"), (None, "ja")])
def test_last_token_is_end_of_reply(tokenizer, text, topic, lang):
    r = render_reply(tokenizer, text, topic, lang)
    assert isinstance(r, Rendered)
    assert decode(tokenizer, r.input_ids[: r.last + 1]).endswith(text)
    # what follows the read position is the template's end of turn, never part of the reply
    assert decode(tokenizer, r.input_ids[r.last + 1 :]) == END_OF_TURN
    assert r.last == r.content[-1]


@pytest.mark.parametrize("text", TEXTS)
def test_content_covers_exactly_the_reply(tokenizer, text):
    r = render_reply(tokenizer, text, "Tech", "en")
    first, last = r.content[0], r.content[-1]
    assert r.content == list(range(first, last + 1))  # contiguous, in order
    assert decode(tokenizer, r.input_ids[first : last + 1]) == text
    before = decode(tokenizer, r.input_ids[:first])
    assert before.endswith("<|im_start|>assistant\n")


def test_ids_match_the_templates_own_tokenization(tokenizer):
    text = TEXTS[0]
    r = render_reply(tokenizer, text, "Tech", "en")
    messages = [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Topic: Tech\nTalk about it."},
        {"role": "assistant", "content": text},
    ]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert list(ids) == r.input_ids


def test_no_default_system_prompt(tokenizer):
    rendered = decode(tokenizer, render_reply(tokenizer, "Hi.").input_ids)
    assert DEFAULT_SYSTEM not in rendered
    assert rendered.startswith("<|im_start|>system\n<|im_end|>\n")  # an explicit, empty system message


def test_system_prompt_none_keeps_template_default(tokenizer):
    rendered = decode(tokenizer, render_reply(tokenizer, "Hi.", system_prompt=None).input_ids)
    assert DEFAULT_SYSTEM in rendered


def test_custom_system_prompt(tokenizer):
    rendered = decode(tokenizer, render_reply(tokenizer, "Hi.", system_prompt="Be brief.").input_ids)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in rendered
    assert DEFAULT_SYSTEM not in rendered


@pytest.mark.parametrize(
    "topic, lang, expected",
    [
        ("Tech", "en", "Topic: Tech\nTalk about it."),
        (None, "en", "Say something."),
        ("テック", "ja", "トピック: テック\nこれについて話して。"),
        (None, "ja", "何か話して。"),
        ("Tech", "xx", "Topic: Tech\nTalk about it."),  # unknown language: English turn
    ],
)
def test_topic_aware_user_turn(tokenizer, topic, lang, expected):
    assert user_turn(topic, lang) == expected
    rendered = decode(tokenizer, render_reply(tokenizer, "Hi.", topic, lang).input_ids)
    assert f"<|im_start|>user\n{expected}<|im_end|>" in rendered
    other = USER_TURNS["ja" if lang == "en" else "en"]
    assert other[1] not in rendered


def test_reply_equal_to_topic_reads_the_reply(tokenizer):
    # rfind: the assistant's copy, not the one inside the user turn
    r = render_reply(tokenizer, "Tech", "Tech", "en")
    assert decode(tokenizer, r.input_ids[r.content[0] : r.last + 1]) == "Tech"
    assert decode(tokenizer, r.input_ids[r.last + 1 :]) == END_OF_TURN
    assert decode(tokenizer, r.input_ids[: r.content[0]]).endswith("<|im_start|>assistant\n")


def test_empty_reply_is_refused(tokenizer):
    with pytest.raises(ValueError):
        render_reply(tokenizer, "")


def test_template_that_rejects_system_role(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    r = render_reply(tok, "Hi there.", "Tech", "en")  # '' system prompt: silently dropped
    text = decode(tok, r.input_ids)
    assert text.startswith("<|im_start|>user\n")
    assert decode(tok, r.input_ids[r.content[0] : r.last + 1]) == "Hi there."
    with pytest.raises(Exception, match="System role"):  # an explicit system prompt is not silently dropped
        render_reply(tok, "Hi there.", system_prompt="Be brief.")
    messages = [{"role": "user", "content": "x"}]
    assert "system" not in apply_template(tok, messages, "")
