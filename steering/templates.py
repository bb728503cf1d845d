"""Wrap texts in the tokenizer's chat template and locate the reply's content tokens.

What capture feeds the model, exactly:
    system:    "" (an empty system message, so templates that insert a default system prompt — Qwen2.5's
               "You are Qwen...", SmolLM2's "You are a helpful AI assistant named SmolLM..." — don't; a template
               that rejects the system role gets no system message). Pass `system_prompt` to use one on purpose.
    user:      USER_TURNS[lang] — with a topic: "トピック: {topic}\\nこれについて話して。" / "Topic: {topic}\\nTalk about it."
               (the reference run's user turn); without: "何か話して。" / "Say something."
    assistant: the text itself.
The template's end-of-turn tokens after the reply (e.g. "<|im_end|>\\n") are never read: positions are the
tokens whose characters fall inside the reply text.
"""

from __future__ import annotations

from dataclasses import dataclass

USER_TURNS = {
    "ja": ("トピック: {topic}\nこれについて話して。", "何か話して。"),
    "en": ("Topic: {topic}\nTalk about it.", "Say something."),
}


@dataclass
class Rendered:
    """Token ids of a templated conversation and the indices of the reply's content tokens."""

    input_ids: list[int]
    content: list[int]  # token indices covering the reply text, in order

    @property
    def last(self) -> int:
        return self.content[-1]


def user_turn(topic: str | None, lang: str) -> str:
    with_topic, without = USER_TURNS.get(lang, USER_TURNS["en"])
    return with_topic.format(topic=topic) if topic else without


def apply_template(tokenizer, messages: list[dict], system_prompt: str | None = "", **kwargs) -> str:
    """Render `messages` with an explicit system message ('' suppresses a template default; None adds none)."""
    if system_prompt is not None and (not messages or messages[0]["role"] != "system"):
        try:
            return tokenizer.apply_chat_template(
                [{"role": "system", "content": system_prompt}, *messages], tokenize=False, **kwargs
            )
        except Exception:  # noqa: BLE001 - templates that reject a system role (e.g. Gemma) raise various errors
            if system_prompt:
                raise
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def render_reply(
    tokenizer, text: str, topic: str | None = None, lang: str = "en", system_prompt: str | None = ""
) -> Rendered:
    """Template `text` as the assistant's reply and find which tokens hold it."""
    messages = [{"role": "user", "content": user_turn(topic, lang)}, {"role": "assistant", "content": text}]
    rendered = apply_template(tokenizer, messages, system_prompt)
    start = rendered.rfind(text)
    if start < 0:
        raise ValueError(f"the chat template altered the reply text; cannot locate it: {text[:60]!r}")
    end = start + len(text)
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    content = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < end and b > a]
    if not content:
        raise ValueError(f"no tokens cover the reply text {text[:60]!r}")
    return Rendered(input_ids=list(enc["input_ids"]), content=content)
