"""The one model a long-running process (the app) shares among all its users: loaded on first use, replaced on
request, and brought back when a replacement fails — one load at a time, under the session's own lock.

Progress is reported as plain text through an optional callback; download and load bars come from tqdm (which
Gradio's `gr.Progress(track_tqdm=True)` picks up by itself).

Which models a visitor may switch the shared model to is a ModelPolicy: on a server others can reach, only the
presets (models.SUGGESTED_MODELS) and the model the server was started with; any hub id, folder or .gguf only when
the operator allows it (`python app.py --allow-any-model`, or a server bound to localhost).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .messages import Message, Text
from .models import BUNDLED, SUGGESTED_MODELS, LoadedModel, check_loadable, load_model, suggested_models

LOG = logging.getLogger(__name__)

NO_MODEL = Text(
    "No model loaded yet — the bundled model loads the first time it is needed",
    "モデルはまだ読み込まれていません — 最初に必要になったときに同梱モデルを読み込みます",
)
MODEL = Text(
    "**{name}** (`{spec}`) — {num_layers} layers, hidden size {hidden_size}, {dtype} on {device}",
    "**{name}** (`{spec}`) — {num_layers} レイヤー、隠れ次元 {hidden_size}、{dtype}、{device} で実行",
)
STARTED_WITH = Text("{spec} (started with)", "{spec}（起動時のモデル）")
REFUSAL = Text(
    "This server loads only its listed models: {allowed}. Any other Hugging Face model or a local path needs the "
    "server started on localhost or with `python app.py --allow-any-model`.",
    "このサーバーで読み込めるのは一覧のモデルだけです: {allowed}。ほかの Hugging Face のモデルや手元のパスを使うには、"
    "サーバーを localhost で起動するか `python app.py --allow-any-model` で起動してください。",
)
LOADING = Text("Loading {spec} …", "{spec} を読み込み中 …")
RESTORING = Text("Loading {spec} back …", "{spec} を読み込み直し中 …")


def model_status(loaded: LoadedModel | None, ui_lang: str = "en") -> str:
    """One markdown line naming the loaded model and its shape (or saying none is loaded yet), in `ui_lang`."""
    if loaded is None:
        return NO_MODEL.say(ui_lang)
    return MODEL.say(ui_lang, **loaded.describe())


class ModelNotAllowed(ValueError):
    """A model this server does not let visitors load. The message is the same for every refused spec: it never
    tells whether a path exists on the server."""


@dataclass(frozen=True)
class ModelPolicy:
    """Which models visitors may make the shared model.

    allow_any=False (a server others can reach): the presets and `started_with` (the model the operator started
    the server with), nothing else. allow_any=True: any hub id, local folder or .gguf path as well (the operator's
    own machine: `--allow-any-model`, or a server bound to localhost).
    """

    allow_any: bool = False
    started_with: str | None = None
    presets: tuple[tuple[str, str], ...] = tuple(SUGGESTED_MODELS)

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(label, spec) of the models offered by name: the presets, then the start-up model if it is not one."""
        return self.choices_in("en")

    def choices_in(self, ui_lang: str = "en") -> list[tuple[str, str]]:
        """`choices` with their labels in `ui_lang`: the suggested models' (models.suggested_models) and the start-up
        model's; a preset of its own keeps its label."""
        english, said = (
            {spec: label for label, spec in pairs} for pairs in (SUGGESTED_MODELS, suggested_models(ui_lang))
        )
        listed = [(said[spec] if english.get(spec) == label else label, spec) for label, spec in self.presets]
        if self.started_with and self.started_with not in {spec for _, spec in listed}:
            listed.append((STARTED_WITH.say(ui_lang, spec=self.started_with), self.started_with))
        return listed

    @property
    def allowed(self) -> list[str]:
        """The specs a visitor may load when allow_any is off."""
        return [spec for _, spec in self.choices]

    def refusal(self) -> Message:
        """The one message every refused spec gets (it names no path and says nothing about the request); a
        Message, so `.in_lang(ui_lang)` (or messages.localized) says it in the page's language."""
        return REFUSAL(allowed=", ".join(self.allowed))

    def check(self, spec: str | None) -> str:
        """The spec to load (stripped; empty means the bundled model), or ModelNotAllowed before anything on disk
        or on the hub is looked at."""
        spec = str(spec or "").strip() or BUNDLED
        if self.allow_any or spec in self.allowed:
            return spec
        raise ModelNotAllowed(self.refusal())


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelSession:
    """The shared model; `get` and `load` hold the lock, so a load never overlaps another load or a first use."""

    def __init__(self, loaded: LoadedModel | None = None, default: str = BUNDLED):
        self.lock = threading.Lock()
        self.loaded = loaded
        self.default = default  # loaded by get() when nothing is loaded yet
        self.on_release: list[Callable[[], None]] = []  # called as the old model goes (e.g. to drop its caches)

    def status(self, ui_lang: str = "en") -> str:
        return model_status(self.loaded, ui_lang)

    @property
    def spec(self) -> str:
        """The shared model's spec without loading one (a cosmetic event must not wait for a load): while a load
        runs, the spec of the model `get` would load."""
        loaded = self.loaded  # read once: a load in another thread sets it to None for a while
        return loaded.spec if loaded is not None else self.default

    def get(self) -> LoadedModel:
        """The current model; the default one is loaded on first use (never at construction: tests import app)."""
        with self.lock:
            if self.loaded is None:
                self.loaded = load_model(self.default)
            return self.loaded

    def load(self, spec: str, on_status: Callable[[str], None] | None = None) -> LoadedModel:
        """Make `spec` the shared model. Raises what loading raised; the previous model is then loaded back.

        `on_status` gets each step as a messages.Message (an English str; `.in_lang(ui_lang)` for the page)."""
        report = on_status or (lambda text: None)
        report(LOADING(spec=spec))
        with self.lock:
            if self.loaded is not None and self.loaded.spec == spec:
                return self.loaded
            # What fails without loading (4-bit without CUDA, a missing path) fails here, and everyone keeps the
            # current model.
            check_loadable(spec)
            # Release the old model first so two never sit in memory together; if loading still fails (e.g. the
            # hub is unreachable), the previous model is loaded back so nobody loses theirs.
            previous = self.loaded.spec if self.loaded is not None else None
            self.loaded = None
            for release in self.on_release:
                release()
            _release_memory()
            try:
                self.loaded = load_model(spec)
            except Exception:
                self._restore(previous, report)
                raise
            return self.loaded

    def _restore(self, spec: str | None, report: Callable[[str], None]) -> None:
        """Best effort: bring the previous model back after a failed load (else the default loads lazily)."""
        if spec is None:
            return
        report(RESTORING(spec=spec))
        try:
            self.loaded = load_model(spec)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            LOG.exception("could not restore the previous model %s", spec)
