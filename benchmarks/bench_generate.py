"""Generation speed on the bundled model: steered vs plain, and side-by-side (one batch) vs two sequential runs.

    python -m benchmarks.bench_generate [--tokens 64] [--repeats 3]

Greedy with a forced length (no early stop) so every run writes the same number of tokens; best of `repeats`.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import best_of
from steering.extract import extract
from steering.generate import GenerationSettings, generate_batch
from steering.models import load_model
from steering.steer import Steering
from steering.vectors import SteeringVector

CHAT = [{"role": "user", "content": "Tell me about your favourite place to travel and why you like it."}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model("bundled")
    loaded.model.generation_config.min_new_tokens = args.tokens  # same length every run
    result = extract(
        loaded,
        ["OMG, like, totally iconic, bestie!"] * 2 + ["Ugh, I literally can't even."] * 2,
        ["That is very well known."] * 2 + ["I find this difficult."] * 2,
        layers="8-12",
        heldout_fraction=0.0,
    )
    vector = SteeringVector(result.directions, {}, result.stats)
    steering = Steering(vector, "8-12", 0.0)
    settings = GenerationSettings(max_new_tokens=args.tokens)

    def run(strengths, steer=steering):
        return generate_batch(loaded, CHAT, strengths, steer, settings)

    run([0.0])  # warm-up
    plain = best_of(lambda: run([0.0], None), args.repeats)
    steered = best_of(lambda: run([2.0]), args.repeats)
    pair = best_of(lambda: run([0.0, 2.0]), args.repeats)
    sequential = best_of(lambda: (run([0.0], None), run([2.0])), args.repeats)
    print(f"bundled model, {args.tokens} new tokens, greedy, torch threads {torch.get_num_threads()}")
    print(f"  plain    {args.tokens / plain:6.1f} tok/s")
    print(
        f"  steered  {args.tokens / steered:6.1f} tok/s   steered/plain throughput {plain / steered:4.2f} (target >= 0.95)"
    )
    print(
        f"  plain+steered in one batch {pair:5.2f} s vs two sequential runs {sequential:5.2f} s: "
        f"{pair / sequential:4.2f} of the sequential time (target <= 0.65)"
    )


if __name__ == "__main__":
    main()
