"""Per-row steering: rows of ONE forward pass may each use their own vector, layers, strength, scale, mode, apply_to
and half-life, or none at all.

steer.py attaches one hook per (steering, layer) and every row of the batch shares that steering (only the strength
varies per row). Here each decoder layer gets ONE hook holding a [rows, hidden] push: row r's direction at that
layer (zeros where row r does not steer it), its strength-1 step (the same `layer_pushes` computes: calibrated or
raw, shared over the row's own layers), its strength, mode, where it applies and its half-life. Rows without
steering, and rows that do not steer a given layer, pass through untouched.

The arithmetic is steer.py's, element for element (`steered_hidden` and the same order of operations), so a row of
a mixed batch gets exactly the push it would get in a solo `steer` run; tests/test_row_steer.py checks that greedy
replies match token for token. Hooks are bound to the thread that entered the context and removed on any exit, as
in steer.py.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .capture import block_output
from .models import LoadedModel
from .steer import LayerPush, Steering, check_steering, steered_hidden, strength_values

_APPLY_CODES = {"all": 0, "generated": 1, "last": 2}


@dataclass(frozen=True)
class RowPlan:
    """One row's steering, checked and resolved: its per-layer pushes and how they apply."""

    pushes: dict[int, LayerPush]
    strength: float
    mode: str
    apply_to: str
    half_life: float | None

    @property
    def layers(self) -> list[int]:
        return sorted(self.pushes)

    @functools.cached_property
    def prompt_key(self):
        """Equal for plans that push a prompt identically (prefill.py shares and reuses starts by it), computed
        once per plan: None when the prompt is not pushed but (`last`) at its last position, like a plain row;
        for `all`, the strength, mode and each layer's push, its direction by a hash of its values."""
        if self.apply_to != "all":
            return None
        pushes = tuple(
            (layer, p.step, p.base, p.span, hash(p.unit.detach().cpu().numpy().tobytes()))
            for layer, p in sorted(self.pushes.items())
        )
        return self.strength, self.mode, pushes


def plan_row(loaded: LoadedModel, steering: Steering | None) -> RowPlan | None:
    """Every check steer.py makes (the vector fits, the layers exist, scale/mode/apply_to/half-life are valid, the
    strength is finite and bounded; a far-out strength warns), for one row; None (plain) stays None. A row takes one
    strength: a Steering carrying several is refused."""
    if steering is None:
        return None
    strengths = strength_values(steering.strength)
    if len(strengths) != 1:
        raise ValueError(f"a row takes one strength, got {len(strengths)}")
    pushes = check_steering(loaded, steering)
    return RowPlan(pushes, strengths[0], steering.mode, steering.apply_to, steering.half_life)


def _as_plan(loaded: LoadedModel, row) -> RowPlan | None:
    return row if isinstance(row, RowPlan) or row is None else plan_row(loaded, row)


class RowLayerHook:
    """Steers one block's output, row by row, only in the owning thread.

    Like steer.py's hook it counts forward passes, per row (rows of a live batch join at different times): a row's
    first is its prompt (skipped by rows that steer only `generated` tokens), its k-th is generated token k-2 for
    the half-life decay. `passes` says how many each row had before this hook (live_batch.py rebuilds the hooks
    whenever rows join or leave).
    """

    def __init__(
        self,
        layer: int,
        plans: Sequence[RowPlan | None],
        hidden_size: int,
        owner: int,
        passes: Sequence[int] | None = None,
    ):
        self.layer, self.owner = layer, owner
        rows = len(plans)
        self.calls = list(passes) if passes is not None else [0] * rows
        self.pushes: list[LayerPush | None] = [p.pushes.get(layer) if p is not None else None for p in plans]
        self.steered = torch.tensor([push is not None for push in self.pushes])
        self.units = torch.zeros(rows, hidden_size)
        for r, push in enumerate(self.pushes):
            if push is not None:
                self.units[r] = push.unit
        self.steps = [push.step if push is not None else 0.0 for push in self.pushes]
        self.strengths = torch.tensor([p.strength if p is not None else 0.0 for p in plans], dtype=torch.float32)
        modes = [p.mode if p is not None else "add" for p in plans]
        self.clamp_rows = [r for r in range(rows) if self.pushes[r] is not None and modes[r] == "clamp"]
        self.norm_rows = torch.tensor([m == "norm_preserving" for m in modes])
        self.add_rows = self.steered & torch.tensor([m != "clamp" for m in modes])
        self.apply = torch.tensor([_APPLY_CODES[p.apply_to] if p is not None else 0 for p in plans])
        self.half_lives = [p.half_life if p is not None else None for p in plans]
        self._cache: dict = {}

    def _on(self, hidden: torch.Tensor):
        """The row tensors on hidden's device and dtype: steer.py's `push.step * unit` per row, the strengths."""
        key = (hidden.device, hidden.dtype)
        if key not in self._cache:
            units = self.units.to(hidden.device, hidden.dtype)
            # row by row, as steer.py computes it: a python float times the unit in hidden's dtype
            pushvec = torch.stack([step * units[r] for r, step in enumerate(self.steps)])
            self._cache[key] = (
                units,
                pushvec,
                self.strengths.to(hidden.device, hidden.dtype),
                self.add_rows.to(hidden.device),
                self.norm_rows.to(hidden.device),
                self.apply.to(hidden.device),
            )
        return self._cache[key]

    def _coeffs(self, strengths: torch.Tensor) -> torch.Tensor:
        """Each row's strength on this pass, its half-life decay applied as steer.py does (tensor × python float,
        computed in float32 like the scalar path)."""
        decaying = [hl if hl and calls > 1 else None for hl, calls in zip(self.half_lives, self.calls)]
        if not any(decaying):
            return strengths
        factors = [0.5 ** ((calls - 2) / hl) if hl else 1.0 for hl, calls in zip(decaying, self.calls)]
        factor = torch.tensor(factors, dtype=torch.float32, device=strengths.device)
        return (strengths.float() * factor).to(strengths.dtype)

    def __call__(self, _module, _inputs, output):
        if threading.get_ident() != self.owner:
            return None
        hidden = block_output(output)
        if hidden.shape[0] != len(self.pushes):
            raise ValueError(f"row steering for {len(self.pushes)} rows met a batch of {hidden.shape[0]} rows")
        self.calls = [calls + 1 for calls in self.calls]
        units, pushvec, strengths, add_rows, norm_rows, apply = self._on(hidden)
        prompt = torch.tensor([calls == 1 for calls in self.calls], device=apply.device)
        live = (apply != 1) | ~prompt  # generated: not the prompt
        if not bool((live & self.steered.to(live.device)).any()):
            return None
        coeffs = self._coeffs(strengths)
        rows, positions = hidden.shape[:2]
        # where each row's push applies: every position, or (apply_to last) only the last one
        at = torch.ones(rows, positions, dtype=torch.bool, device=hidden.device)
        if positions > 1:
            at[:, :-1] = (apply != 2).unsqueeze(1)
        out = hidden
        adding = add_rows & live
        if bool(adding.any()):
            steered = hidden + coeffs.view(-1, 1, 1) * pushvec.unsqueeze(1)
            if bool((norm_rows & adding).any()):
                norms = steered.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
                ratio = hidden.float().norm(dim=-1, keepdim=True) / norms
                steered = torch.where(norm_rows.view(-1, 1, 1), steered * ratio.to(steered.dtype), steered)
            out = torch.where((at & adding.unsqueeze(1)).unsqueeze(-1), steered, hidden)
        live_rows = live.tolist()
        clamps = [r for r in self.clamp_rows if live_rows[r]]
        if clamps:
            out = out.clone() if out is hidden else out
            for r in clamps:  # steer.py's own function on the row (its projection is a matmul per row)
                part = slice(-1, None) if int(apply[r]) == 2 else slice(None)
                out[r : r + 1, part] = steered_hidden(
                    hidden[r : r + 1, part], self.pushes[r], coeffs[r : r + 1], "clamp", units[r]
                )
        return (out, *output[1:]) if isinstance(output, tuple) else out


@contextmanager
def row_steer(loaded: LoadedModel, rows: Sequence[Steering | RowPlan | None], passes: Sequence[int] | None = None):
    """Steer each batch row with its own Steering (or RowPlan from plan_row; None = plain) inside the block: one
    hook per steered layer, removed on any exit. `passes`: forward passes each row already had (default none: the
    first pass is every row's prompt). Yields the hooks by layer."""
    plans = [_as_plan(loaded, row) for row in rows]
    owner = threading.get_ident()
    layers = sorted({layer for plan in plans if plan is not None for layer in plan.pushes})
    handles, hooks = [], {}
    try:
        for layer in layers:
            hooks[layer] = RowLayerHook(layer, plans, loaded.hidden_size, owner, passes)
            handles.append(loaded.layers[layer].register_forward_hook(hooks[layer]))
        yield hooks
    finally:
        for handle in handles:
            handle.remove()


def generate_mixed(
    loaded: LoadedModel,
    conversations: Sequence[Sequence[dict]],
    steerings: Sequence[Steering | RowPlan | None],
    settings=None,
):
    """One reply per row, each row with its own conversation and steering (None = plain), in one batched generate
    call with shared decoding settings (steering/scheduler.py does per-row decoding). Returns generate.BatchResult
    (its `strengths` are each row's strength, 0 for plain rows)."""
    from .generate import BatchResult, GenerationSettings, batch_inputs, prepare_prompt, row_ids

    if len(conversations) != len(steerings):
        raise ValueError(f"{len(conversations)} conversations for {len(steerings)} steerings")
    settings = settings or GenerationSettings()
    plans = [_as_plan(loaded, s) for s in steerings]
    prompts = [prepare_prompt(loaded, c, settings) for c in conversations]
    inputs = batch_inputs(loaded, prompts)
    kwargs = settings.generate_kwargs()
    tok = loaded.tokenizer
    t0 = time.perf_counter()
    with row_steer(loaded, plans), torch.inference_mode():
        if kwargs["do_sample"] and settings.seed is not None:
            torch.manual_seed(settings.seed)
        out = loaded.model.generate(**inputs, **kwargs, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    seconds = time.perf_counter() - t0
    rows = [row_ids(loaded, r) for r in out[:, inputs["input_ids"].shape[1] :]]
    texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
    notice = next((p.notice for p in prompts if p.notice), None)
    strengths = [p.strength if p is not None else 0.0 for p in plans]
    return BatchResult(texts, strengths, [len(r) for r in rows], seconds, notice, rows)
