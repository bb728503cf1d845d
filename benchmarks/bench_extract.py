"""Extraction speed on the bundled model: ours vs a plain batched forward (the floor) vs the reference loop.

    python -m benchmarks.bench_extract [--pairs 50] [--repeats 3]

All three run in this one process on the same 50 pairs (both sides = 100 texts), all 30 layers; the best of
`repeats` is kept for each so a noisy neighbour does not decide the ratio.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import best_of
from steering.capture import block_output
from steering.data import contrast_pairs, load_dataset
from steering.extract import extract
from steering.models import base_model, load_model
from steering.templates import render_reply


def floor_pass(loaded, rendered, batch_size: int) -> None:
    """Length-sorted batched forward of the same token ids through the base model, no hooks, nothing kept."""
    order = sorted(range(len(rendered)), key=lambda i: len(rendered[i].input_ids))
    body, pad = base_model(loaded.model), loaded.tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            items = [rendered[i].input_ids for i in order[start : start + batch_size]]
            width = max(map(len, items))
            ids = torch.tensor([x + [pad] * (width - len(x)) for x in items])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in items])
            body(input_ids=ids, attention_mask=mask, use_cache=False)


def reference_loop(loaded, pairs, lang: str) -> None:
    """The reference run: per pair, two batch-1 full-model passes with hooks on every layer, last token."""
    tok = loaded.tokenizer
    for pair in pairs:
        for text in (pair.negative, pair.positive):
            stored = []
            hooks = [
                layer.register_forward_hook(
                    lambda _m, _i, out, stored=stored: stored.append(block_output(out)[:, -1, :].cpu())
                )
                for layer in loaded.layers
            ]
            prompt = tok.apply_chat_template(
                [
                    {"role": "user", "content": f"Topic: {pair.topic}\nTalk about it."},
                    {"role": "assistant", "content": text},
                ],
                tokenize=False,
            )
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                loaded.model(**ids)
            for h in hooks:
                h.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    loaded = load_model("bundled")
    dataset = load_dataset("en")
    pairs = contrast_pairs(dataset)[: args.pairs]
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    topics = [p.topic for p in pairs] * 2
    layers = list(range(loaded.num_layers))
    rendered = [render_reply(loaded.tokenizer, t, tp, "en") for t, tp in zip(texts, topics)]

    ours = best_of(
        lambda: extract(
            loaded,
            texts[: args.pairs],
            texts[args.pairs :],
            layers,
            topics=topics[: args.pairs],
            batch_size=args.batch_size,
        ),
        args.repeats,
    )
    floor = best_of(lambda: floor_pass(loaded, rendered, args.batch_size), args.repeats)
    ref = best_of(lambda: reference_loop(loaded, pairs, "en"), max(1, args.repeats - 1))
    mid = best_of(
        lambda: extract(
            loaded,
            texts[: args.pairs],
            texts[args.pairs :],
            "8-15",
            topics=topics[: args.pairs],
            batch_size=args.batch_size,
        ),
        args.repeats,
    )
    print(f"bundled model, {args.pairs} pairs ({len(texts)} texts), torch threads {torch.get_num_threads()}")
    print(f"  floor (batched forward, no hooks)      {floor:7.2f} s")
    print(
        f"  ours, all {len(layers)} layers                  {ours:7.2f} s   {ours / floor:5.2f}x floor (target <= 1.15)"
    )
    print(f"  reference loop (2 batch-1 passes/pair) {ref:7.2f} s   ours is {ref / ours:5.2f}x faster (target >= 3)")
    print(f"  ours, layers 8-15 (stops after 15)     {mid:7.2f} s   {mid / floor:5.2f}x floor")


if __name__ == "__main__":
    main()
