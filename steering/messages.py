"""Words a user reads, in English and Japanese, without a UI.

A module keeps its own user-facing texts next to the code that uses them, each a `Text(en, ja)`; calling one with
its parameters gives a `Message`: a plain English `str` (what the CLI prints, logs and tests see) that can also
say itself in Japanese. A library error carries one as its message, `raise ValueError(BAD_LAYERS(spec=spec))`, and
the app shows `localized(exc, lang)` in the page's language. Nothing here imports gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGS = ("en", "ja")  # the page's languages; English is the fallback for anything else


def page_lang(lang: str | None) -> str:
    """One of LANGS for a browser or UI language tag ("ja-JP" -> "ja"; anything not Japanese -> "en")."""
    return "ja" if str(lang or "").strip().lower().startswith("ja") else "en"


@dataclass(frozen=True)
class Text:
    """A user-facing text in both languages: `str.format` templates taking the same named parameters."""

    en: str
    ja: str

    def __call__(self, **params) -> Message:
        return Message(self, params)

    def say(self, lang: str | None, **params) -> str:
        """This text in `lang` (see page_lang) with its parameters filled in."""
        template = self.ja if page_lang(lang) == "ja" else self.en
        return template.format(**params)


class Message(str):
    """A Text with its parameters: equal to (and printed as) its English wording; `in_lang` gives either."""

    def __new__(cls, text: Text, params: dict) -> Message:
        message = super().__new__(cls, text.say("en", **params))
        message.text, message.params = text, params
        return message

    def in_lang(self, lang: str | None) -> str:
        return self.text.say(lang, **self.params)

    def __reduce__(self):  # a plain str once pickled (multiprocessing, gradio's state copies)
        return (str, (str(self),))


def localized(value, lang: str | None) -> str:
    """`value` in `lang`: a Message (or an exception carrying one as its first argument) in that language;
    anything else as its own str (not every message is translated; those read in English)."""
    if isinstance(value, BaseException):
        first = value.args[0] if len(value.args) == 1 else None
        return localized(first, lang) if isinstance(first, Message) else str(value)
    if isinstance(value, Message):
        return value.in_lang(lang)
    return str(value)


def rendered(say, /) -> Message:
    """A Message whose wording in each language is `say(lang)`: for a text built from other Messages (each said in
    the same language as the whole). Its English is `say("en")`."""
    en, ja = (say(lang).replace("{", "{{").replace("}", "}}") for lang in LANGS)
    return Text(en=en, ja=ja)()


def composed(text: Text, /, **params) -> Message:
    """`text(**params)` where a parameter may itself be a Message (or an exception carrying one): in each language
    it is said in that language too."""

    def say(lang: str) -> str:
        nested = (Message, BaseException)
        return text.say(lang, **{k: localized(v, lang) if isinstance(v, nested) else v for k, v in params.items()})

    return rendered(say)
