"""Chat generation, plain and steered side by side: one batched generate call, one strength per row.

Rows of one conversation differ only in strength, so each row is what a solo run with that strength gives
(greedy: token for token); rows may also carry their own conversations (left-padded). Streaming yields each
row's text so far and never splits a UTF-8 character.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .checks import check_float, check_int, check_seed
from .models import LoadedModel
from .settings import CHARS_PER_TOKEN, MAX_TEXT_TOKENS
from .steer import Steering, steer
from .templates import apply_template

_SEED_LOCK = threading.Lock()  # torch's global RNG: sampled calls with a seed run one at a time


@dataclass
class GenerationSettings:
    """Decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = 0
    system_prompt: str | None = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse a value generate would choke on (NaN tokens, a seed past 64 bits, top_p 2...), naming the field;
        whole floats (128.0, from a UI slider) become ints."""
        self.max_new_tokens = check_int(self.max_new_tokens, "max_new_tokens", minimum=1)
        self.temperature = check_float(self.temperature, "temperature", minimum=0.0)
        self.top_p = check_float(self.top_p, "top_p", above=0.0, maximum=1.0)
        self.top_k = check_int(self.top_k, "top_k", minimum=0)
        self.repetition_penalty = check_float(self.repetition_penalty, "repetition_penalty", above=0.0)
        if self.seed is not None:
            self.seed = check_seed(self.seed, "seed")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(f"system_prompt must be text, got {type(self.system_prompt).__name__}")

    def generate_kwargs(self) -> dict:
        self.check()  # the fields may have been changed since __init__
        kwargs = {"max_new_tokens": int(self.max_new_tokens), "repetition_penalty": float(self.repetition_penalty)}
        if self.temperature and self.temperature > 0:
            kwargs.update(
                do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p), top_k=int(self.top_k)
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass
class PreparedPrompt:
    """Token ids of a templated conversation, and a notice when it had to be cut to fit the context."""

    input_ids: list[int]
    notice: str | None = None


def max_message_chars(loaded: LoadedModel) -> int:
    """The longest single message (in characters) a prompt may hold: CHARS_PER_TOKEN per token of the model's
    context (at least of MAX_TEXT_TOKENS). A message past it could never fit, and tokenizing it would cost far more
    than refusing it; a long conversation of shorter messages is cut from the left instead."""
    return CHARS_PER_TOKEN * max(loaded.context_length, MAX_TEXT_TOKENS)


def prepare_prompt(loaded: LoadedModel, messages: Sequence[dict], settings: GenerationSettings) -> PreparedPrompt:
    """Template a conversation (with the optional system prompt) and cut it from the left to fit the context."""
    if not messages or not any(m.get("content", "").strip() for m in messages if m.get("role") == "user"):
        raise ValueError("empty prompt: write a message first")
    limit = max_message_chars(loaded)
    if len(settings.system_prompt or "") > limit:
        raise ValueError(
            f"the system prompt is {len(settings.system_prompt):,} characters, over the {limit:,}-character limit "
            "for one message; shorten it"
        )
    for number, message in enumerate(messages, start=1):  # before tokenizing: a 50 MB message never reaches it
        if len(message.get("content") or "") > limit:
            raise ValueError(
                f"message {number} ({message.get('role', '?')}) is {len(message['content']):,} characters, over the "
                f"{limit:,}-character limit for one message; shorten it"
            )
    text = apply_template(loaded.tokenizer, list(messages), settings.system_prompt, add_generation_prompt=True)
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    budget = loaded.context_length - settings.max_new_tokens
    if budget < 16:
        raise ValueError(
            f"max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in the "
            f"model's {loaded.context_length}-token context"
        )
    if len(ids) <= budget:
        return PreparedPrompt(ids)
    notice = f"the conversation ({len(ids)} tokens) was longer than the context allows; kept the last {budget} tokens"
    return PreparedPrompt(ids[-budget:], notice)


def _steerings(steering: Steering | None, strengths: Sequence[float]) -> list[Steering]:
    if steering is None:
        if any(s != 0 for s in strengths):
            raise ValueError("non-zero strengths need a vector to steer with")
        return []
    return [steering.with_strengths(list(strengths))]


def batch_inputs(loaded: LoadedModel, prompts: Sequence[PreparedPrompt]) -> dict:
    """Left-padded ids and mask (rows of one prompt need no padding, so they match a solo run exactly)."""
    width = max(len(p.input_ids) for p in prompts)
    pad = loaded.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p.input_ids)) + p.input_ids for p in prompts], device=loaded.device)
    mask = torch.tensor(
        [[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in prompts], device=loaded.device
    )
    return {"input_ids": ids, "attention_mask": mask}


def _prepare_rows(
    loaded: LoadedModel, conversations: Sequence[Sequence[dict]], strengths: Sequence[float], settings
) -> tuple[list[PreparedPrompt], dict]:
    """Template every row's conversation and batch them (one strength per row)."""
    if len(conversations) != len(strengths):
        raise ValueError(f"{len(conversations)} conversations for {len(strengths)} strengths")
    prompts = [prepare_prompt(loaded, c, settings) for c in conversations]
    return prompts, batch_inputs(loaded, prompts)


def _run_generate(
    loaded: LoadedModel, inputs: dict, settings: GenerationSettings, steerings: list[Steering], **extra
) -> torch.Tensor:
    kwargs = settings.generate_kwargs()
    tok = loaded.tokenizer
    kwargs.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **extra)
    sampled = kwargs["do_sample"] and settings.seed is not None
    with steer(loaded, steerings), torch.inference_mode():
        if not sampled:
            return loaded.model.generate(**inputs, **kwargs)
        with _SEED_LOCK:
            torch.manual_seed(settings.seed)
            return loaded.model.generate(**inputs, **kwargs)


def _stop_ids(loaded: LoadedModel) -> set[int]:
    """Tokens that end a row: end of sequence, and padding after a row finished."""
    return {loaded.tokenizer.eos_token_id, loaded.tokenizer.pad_token_id}


def row_ids(loaded: LoadedModel, row: torch.Tensor) -> list[int]:
    """Generated ids of one row up to (not including) the first end-of-sequence or pad token."""
    stop = _stop_ids(loaded)
    out = []
    for token in row.tolist():
        if token in stop:
            break
        out.append(token)
    return out


@dataclass
class BatchResult:
    texts: list[str]
    strengths: list[float]
    token_counts: list[int]
    seconds: float
    notice: str | None = None
    token_ids: list[list[int]] | None = None  # each row's generated ids (a judge can cut replies by tokens)


def generate_rows(
    loaded: LoadedModel,
    conversations: Sequence[Sequence[dict]],
    strengths: Sequence[float],
    steering: Steering | None = None,
    settings: GenerationSettings | None = None,
) -> BatchResult:
    """One reply per (conversation, strength) row, all rows in one batched generate call (sweeps use this)."""
    settings = settings or GenerationSettings()
    prompts, inputs = _prepare_rows(loaded, conversations, strengths, settings)
    t0 = time.perf_counter()
    out = _run_generate(loaded, inputs, settings, _steerings(steering, strengths))
    seconds = time.perf_counter() - t0
    rows = [row_ids(loaded, r) for r in out[:, inputs["input_ids"].shape[1] :]]
    texts = [loaded.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    notice = next((p.notice for p in prompts if p.notice), None)
    return BatchResult(texts, list(strengths), [len(r) for r in rows], seconds, notice, rows)


def generate_batch(
    loaded: LoadedModel,
    messages: Sequence[dict],
    strengths: Sequence[float] = (0.0, 1.0),
    steering: Steering | None = None,
    settings: GenerationSettings | None = None,
) -> BatchResult:
    """One reply per strength to the same conversation, all rows in one batched generate call."""
    return generate_rows(loaded, [messages] * len(strengths), strengths, steering, settings)


class Utf8SafeDecoder:
    """Incremental decoding that holds back an incomplete UTF-8 character (byte-level BPE splits them)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        """Add a token; return the new text, or '' while a character is still incomplete."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """The rest of the text once generation ended (incomplete bytes included, as the final decode has them)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        # A changed prefix cannot happen with byte-level BPE; holding back keeps the stream append-only anyway.
        if (not final and text.endswith("\ufffd")) or not text.startswith(self.emitted):
            return ""
        delta, self.emitted = text[len(self.emitted) :], text
        return delta


class _RowStreamer:
    """A transformers streamer that queues each step's new token per row."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # generate first sends the prompt itself
            self.seen_prompt = True
            return
        self.queue.put(value.view(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class _Cancel:
    """Stopping criterion that ends generation when the consumer went away."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_batch(
    loaded: LoadedModel,
    messages: Sequence[dict],
    strengths: Sequence[float] = (0.0, 1.0),
    steering: Steering | None = None,
    settings: GenerationSettings | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Iterator[list[str]]:
    """Yield the full text of every row after each step; closing the generator stops generation."""
    return stream_rows(loaded, [messages] * len(strengths), strengths, steering, settings, on_notice)


def stream_rows(
    loaded: LoadedModel,
    conversations: Sequence[Sequence[dict]],
    strengths: Sequence[float],
    steering: Steering | None = None,
    settings: GenerationSettings | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Iterator[list[str]]:
    """Like stream_batch, one conversation per row (e.g. each chat column continuing its own history).

    `on_notice` hears about a conversation cut to fit the context."""
    from transformers import StoppingCriteriaList

    settings = settings or GenerationSettings()
    prompts, inputs = _prepare_rows(loaded, conversations, strengths, settings)
    steerings = _steerings(steering, strengths)
    streamer, cancel = _RowStreamer(), _Cancel()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _run_generate(
                loaded, inputs, settings, steerings, streamer=streamer, stopping_criteria=StoppingCriteriaList([cancel])
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            errors.append(exc)
        finally:
            streamer.end()

    decoders = [Utf8SafeDecoder(loaded.tokenizer) for _ in strengths]
    finished = [False] * len(strengths)
    stop = _stop_ids(loaded)
    worker = threading.Thread(target=work, name="steering-generate", daemon=True)
    worker.start()
    try:
        notice = next((p.notice for p in prompts if p.notice), None)
        if notice and on_notice:
            on_notice(notice)
        while (step := streamer.queue.get()) is not None:
            for row, token in enumerate(step):
                if finished[row] or token in stop:
                    finished[row] = True
                    continue
                decoders[row].push(token)
            yield [d.emitted for d in decoders]
        for d in decoders:
            d.flush()
        if errors:
            raise errors[0]
        yield [d.emitted for d in decoders]
    finally:
        cancel.event.set()
        worker.join()
