"""Command line for chatting: `generate` (one prompt or a file of prompts, plain and steered side by side)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from .checks import float_arg, int_arg, seed_arg
from .settings import APPLY_TO, DEFAULT_APPLY_TO, MODES, QUANTIZE, SCALES, check_layer_spec, resolve_setting

# Prompts of a --prompts file per batched generate call (two rows each): on a CPU a batch of 16-32 rows costs a
# fraction of 16-32 single calls (benchmarks/bench_prompts.py); on a GPU more rows are nearly free.
PROMPTS_PER_CALL = 16


def _generate_rows(loaded, steering, settings, prompts: list[str], strength: float) -> Iterator[dict]:
    """Plain and steered replies, PROMPTS_PER_CALL prompts (two rows each) per batched generate call."""
    from .generate import generate_rows

    for start in range(0, len(prompts), PROMPTS_PER_CALL):
        chunk = prompts[start : start + PROMPTS_PER_CALL]
        conversations = [[{"role": "user", "content": p}] for p in chunk for _ in (0, 1)]
        result = generate_rows(loaded, conversations, [0.0, strength] * len(chunk), steering, settings)
        tokens = sum(result.token_counts)
        timings = {
            "generate_s": result.seconds,
            "prompts_in_call": len(chunk),
            "tokens": tokens,
            "tokens_per_s": tokens / result.seconds if result.seconds else None,
        }
        for i, prompt in enumerate(chunk):
            plain, steered = result.texts[2 * i : 2 * i + 2]
            yield {"prompt": prompt, "plain": plain, "steered": steered, "notice": result.notice, "timings": timings}


def _side_by_side(plain: str, steered: str, width: int = 60) -> str:
    import textwrap

    left = textwrap.wrap(plain, width) or [""]
    right = textwrap.wrap(steered, width) or [""]
    rows = [f"{'PLAIN':<{width}} | STEERED"] + ["-" * width + "-+-" + "-" * width]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


def cmd_generate(args) -> int:
    from .data import check_prompt_lengths, load_prompts
    from .generate import GenerationSettings, max_message_chars
    from .models import load_model
    from .steer import Steering, strength_values
    from .vector_files import load_vector
    from .vectors import check_fits

    if not (args.prompt or "").strip() and not args.prompts:  # refused before any model is loaded
        raise ValueError("empty prompt: give a prompt, or --prompts FILE")
    prompts = load_prompts(args.prompts) if args.prompts else [args.prompt]  # a broken file fails before the model
    vector = load_vector(args.vector)
    setting = resolve_setting(
        vector,
        args.layers,
        args.strength,
        args.scale,
        args.mode,
        args.apply_to,
        args.repetition_penalty,
        cli=True,
        half_life=args.half_life,
    )
    check_layer_spec(setting.layers, "--layers")  # a typo fails before the model loads
    strength, penalty = setting.strength, setting.repetition_penalty
    strength_values(strength)  # 1e39 (inf in float32) fails before the model loads too
    settings = GenerationSettings(  # so does a bad decoding value (also one recommended by a sidecar)
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=penalty,
        seed=args.seed,
        system_prompt=args.system,
    )
    loaded = load_model(args.model, quantize=args.quantize, dtype=args.dtype)
    check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)  # "made for another model" comes first
    check_prompt_lengths(prompts, args.prompts, max_message_chars(loaded))  # before the first reply
    steering = Steering(
        vector, setting.layers, strength, setting.scale, setting.apply_to, setting.mode, setting.half_life
    )
    shown = {
        "model": args.model,
        "vector": str(args.vector),
        "layers": steering.layer_list(loaded.num_layers),
        "strength": strength,
        "scale": setting.scale,
        "apply_to": setting.apply_to,
        "mode": setting.mode,
        "half_life": setting.half_life,
        **settings.__dict__,
    }
    for row in _generate_rows(loaded, steering, settings, prompts, strength):
        if row["notice"]:
            print(f"notice: {row['notice']}", file=sys.stderr)
        if args.json:
            print(json.dumps({**row, "settings": shown}, ensure_ascii=False), flush=True)
        elif args.compare:
            print(_side_by_side(row["plain"], row["steered"]))
        else:
            print(row["steered"])
    return 0


def add_generate_command(sub) -> None:
    p = sub.add_parser("generate", help="chat once, steered (and plain with --compare)")
    p.add_argument("prompt", nargs="?", default=None)
    p.add_argument("--prompts", default=None, help="file with one prompt per line (or JSONL with a prompt field)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--vector", required=True, type=Path)
    p.add_argument(
        "--layers",
        default=None,
        help="e.g. 10-14 (default: the vector's recommended layers, else its suggested layer ±2)",
    )
    p.add_argument("--strength", type=float, default=None, help="negative steers away from gyaru")
    p.add_argument("--scale", default=None, choices=SCALES, help="default: the vector's recommended scale")
    p.add_argument("--mode", default=None, choices=MODES, help="default: the vector's recommended mode, else add")
    p.add_argument(
        "--apply-to",
        "--position",
        dest="apply_to",
        default=None,
        choices=APPLY_TO,
        help=f"where the push applies (--position: the old name); default: the vector's recommended, else "
        f"{DEFAULT_APPLY_TO}",
    )
    p.add_argument(
        "--half-life",
        type=float_arg("--half-life", above=0.0),
        default=None,
        help="tokens over which the strength halves during a reply (default: the vector's recommended, else constant)",
    )
    p.add_argument("--max-new-tokens", type=int_arg("--max-new-tokens"), default=128)
    p.add_argument("--temperature", type=float_arg("--temperature", minimum=0.0), default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float_arg("--top-p", above=0.0, maximum=1.0), default=1.0)
    p.add_argument("--top-k", type=int_arg("--top-k", minimum=0), default=0, help="0 = no top-k cut")
    p.add_argument(
        "--repetition-penalty",
        type=float_arg("--repetition-penalty", above=0.0),
        default=None,
        help="default: the vector's recommended value, else 1.0",
    )
    p.add_argument("--seed", type=seed_arg("--seed"), default=0)
    p.add_argument("--system", default=None, help="system prompt (default: the model template's own)")
    p.add_argument("--quantize", default=None, choices=QUANTIZE)
    p.add_argument("--dtype", default=None)
    p.add_argument("--compare", action="store_true", help="print plain and steered side by side")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    p.set_defaults(func=cmd_generate)
