"""`generate --prompts FILE` on the bundled model: one prompt per call (as before) against the batched path the CLI
uses now (cli_chat.PROMPTS_PER_CALL prompts, two rows each, per generate call), measured in one run.

    python -m benchmarks.bench_prompts [--prompts 64] [--tokens 128] [--per-call 16 32]

Greedy at the shipped vector's recommended setting, the CLI's default 128 new tokens; replies are checked to be the
same text both ways.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from steering import cli_chat
from steering.data import load_prompts
from steering.generate import GenerationSettings
from steering.models import load_model
from steering.settings import resolve_setting
from steering.steer import Steering
from steering.vector_files import load_vector

SHIPPED = Path(__file__).resolve().parent.parent / "vectors" / "smollm2-135m-instruct_gal_en.pt"


def run(loaded, steering, settings, prompts, strength, per_call: int) -> tuple[float, list[dict]]:
    cli_chat.PROMPTS_PER_CALL = per_call
    t0 = time.perf_counter()
    rows = list(cli_chat._generate_rows(loaded, steering, settings, prompts, strength))
    return time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--per-call", type=int, nargs="+", default=[cli_chat.PROMPTS_PER_CALL], help="prompts per batched call"
    )
    args = parser.parse_args()
    loaded = load_model("bundled")
    vector = load_vector(SHIPPED)
    s = resolve_setting(vector)
    steering = Steering(vector, s.layers, s.strength, s.scale, s.apply_to, s.mode, s.half_life)
    settings = GenerationSettings(max_new_tokens=args.tokens, repetition_penalty=s.repetition_penalty)
    prompts = (load_prompts("en") * 4)[: args.prompts]
    one_s, one = run(loaded, steering, settings, prompts, s.strength, 1)
    print(f"| {args.prompts} prompts, {args.tokens} new tokens | seconds | speed-up | identical replies |")
    print("|---|---|---|---|")
    print(f"| one prompt per call | {one_s:.1f} | 1.00x | |")
    for batched in args.per_call:
        many_s, many = run(loaded, steering, settings, prompts, s.strength, batched)
        same = sum(a["plain"] == b["plain"] and a["steered"] == b["steered"] for a, b in zip(one, many))
        print(f"| {batched} prompts per call | {many_s:.1f} | {one_s / many_s:.2f}x | {same}/{len(prompts)} |")


if __name__ == "__main__":
    main()
