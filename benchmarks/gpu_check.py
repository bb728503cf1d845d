"""GPU path check, for a machine with CUDA (not run by CI; not yet run on a GPU).

    python benchmarks/gpu_check.py

1. A tiny random Qwen2 model, saved locally and loaded back through load_model(..., quantize="4bit")
   (bitsandbytes NF4, device_map="auto"): extraction and steered generation; steering must change the text and
   leave no hook behind.
2. The scheduler's live batch on that 4-bit model: 8 requests (plain + steered), half joining mid-flight, each
   greedy reply equal to its solo generate_rows reply.
3. Extraction time of 50 pairs on a random-weight model of Qwen2.5-7B's shape in bf16 (all 28 layers),
   against the reference figure of 18 s for 50 pairs on the 32B model in 4-bit; then that model's decoding
   throughput in the live batch, 2 rows against 32 (what one chat costs against sixteen).
Prints one line per check; exits non-zero on failure.
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch


def hooks_left(model: torch.nn.Module) -> int:
    """How many forward (and forward-pre) hooks remain anywhere in the model: 0 after every steering call."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def tiny_qwen2_folder(tokenizer, folder: str) -> str:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=512,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from steering.bundled import bundled_model_dir
    from steering.data import contrast_pairs, load_dataset
    from steering.extract import extract
    from steering.generate import GenerationSettings, generate_batch
    from steering.models import LoadedModel, load_model
    from steering.steer import Steering
    from steering.vectors import SteeringVector

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    pairs = contrast_pairs(load_dataset("en"))[:50]
    pos, neg = [p.positive for p in pairs], [p.negative for p in pairs]
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)

    with tempfile.TemporaryDirectory() as folder:
        loaded = load_model(tiny_qwen2_folder(tokenizer, folder), quantize="4bit")
        kind = type(loaded.layers[0].mlp.gate_proj).__name__
        result = extract(loaded, pos, neg, layers="1-4")
        vector = SteeringVector(result.directions, {}, result.stats)
        out = generate_batch(
            loaded,
            [{"role": "user", "content": "Hi!"}],
            [0.0, 8.0],
            Steering(vector, "1-4", 0.0),
            GenerationSettings(max_new_tokens=12),
        )
        ok = out.texts[0] != out.texts[1] and hooks_left(loaded.model) == 0
        print(f"4-bit tiny Qwen2 ({kind}): extraction {result.timings['capture_s']:.2f} s, steered differs: {ok}")
        if not ok or not live_batch_matches_solo(loaded, vector):
            return 1

    config = Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        max_position_embeddings=32768,
    )
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval().requires_grad_(False)
    big = LoadedModel(model, tokenizer, "random-qwen2.5-7b-shape", "random-qwen2.5-7b-shape")
    extract(big, pos[:4], neg[:4], layers=range(28))  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = extract(big, pos, neg, layers=range(28), batch_size=32)
    torch.cuda.synchronize()
    print(
        f"Qwen2.5-7B shape, bf16, 50 pairs, 28 layers: {time.perf_counter() - t0:.2f} s "
        f"(capture {result.timings['capture_s']:.2f} s; reference: 18 s for 50 pairs on 32B 4-bit)"
    )
    seconds = {rows: decoding_seconds(big, rows) for rows in (2, 32)}
    print(
        f"Qwen2.5-7B shape, bf16, live batch, 32 tokens: 2 rows {seconds[2]:.2f} s, 32 rows {seconds[32]:.2f} s: "
        f"{16 * seconds[2] / seconds[32]:.1f}x the tokens/s"
    )
    return 0


def requests(vector):
    from steering.generate import GenerationSettings
    from steering.scheduler import Row
    from steering.steer import Steering

    settings = GenerationSettings(max_new_tokens=16)
    prompts = ["Hi!", "Tell me about the sea.", "What is love?", "A joke, please.", "Cook me dinner.", "Why?"]
    return [
        [
            Row([{"role": "user", "content": p}], None, settings),
            Row([{"role": "user", "content": p}], Steering(vector, "1-4", 4.0), settings),
        ]
        for p in prompts + prompts[:2]
    ]


def live_batch_matches_solo(loaded, vector) -> bool:
    """8 requests, the second half joining after 3 steps: every greedy reply equals its solo run."""
    from steering.generate import generate_rows
    from steering.live_batch import LiveBatch
    from steering.scheduler import Scheduler

    asked = requests(vector)
    tickets = [Scheduler().prepare(loaded, rows) for rows in asked]
    batch = LiveBatch(loaded)
    batch.admit(tickets[:4])
    for step in range(10_000):
        if step == 3:
            batch.admit(tickets[4:])
        if not batch.rows and step > 3:
            break
        batch.step()
    same = 0
    for ticket, rows in zip(tickets, asked):
        for text, row in zip(ticket.result(timeout=0).texts, rows):
            strength = row.steering.strength if row.steering is not None else 0.0
            same += text == generate_rows(loaded, [row.messages], [strength], row.steering, row.settings).texts[0]
    ok = same == 16 and hooks_left(loaded.model) == 0
    print(f"live batch on the 4-bit model: {same}/16 replies equal their solo run, joins mid-flight: {ok}")
    return ok


def decoding_seconds(loaded, rows: int) -> float:
    """Seconds for `rows` rows of 32 forced tokens in one live batch (after a warm-up run)."""
    from steering.generate import GenerationSettings
    from steering.row_decode import run_batch
    from steering.scheduler import Row, Scheduler

    settings = GenerationSettings(max_new_tokens=32)
    make = lambda: Scheduler(max_batch_rows=64).prepare(  # noqa: E731
        loaded,
        [
            Row([{"role": "user", "content": f"Tell me story {i}."}], None, settings, min_new_tokens=32)
            for i in range(rows)
        ],
    )
    run_batch(loaded, [make()])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    run_batch(loaded, [make()])
    torch.cuda.synchronize()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
