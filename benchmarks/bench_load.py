"""Load on the app: /chat latency and throughput with 1, 4 and 8 concurrent gradio_client sessions.

    python -m benchmarks.bench_load [--sessions 1,4,8] [--requests 3] [--tokens 32] [--threads 1]

The app is launched in-process on a free 127.0.0.1 port with the bundled model and the shipped English vector.
Each worker thread sends `requests` /chat calls one after another (greedy, plain + steered columns in one
batched generate); every call is the first turn of its own client session, so prompts do not grow. Replies are
forced to exactly `tokens` new tokens per column (min_new_tokens), so tokens/s counts 2 × tokens per request.
Latency is the client's round trip, queueing included: the app runs one generation at a time (concurrency_id
"model"), so more sessions mostly means more waiting.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LAYERS, STRENGTH = "12-16", 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run_level(clients: list[list], prompt_for, chat) -> tuple[list[float], list[BaseException], float]:
    """One thread per row of `clients`, all released together; each sends one /chat per client in its row.
    Returns the request latencies, the errors and the wall time from release to the last reply."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock, start = threading.Lock(), threading.Barrier(len(clients) + 1)

    def worker(w: int) -> None:
        start.wait()
        for r, client in enumerate(clients[w]):
            t0 = time.perf_counter()
            try:
                chat(client, prompt_for(w, r))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(exc)
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(len(clients))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=3, help="requests per concurrent session")
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens (forced length) per column")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the box has 2 shared cores)")
    args = parser.parse_args()
    levels = [int(n) for n in args.sessions.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    import gradio_client

    import app
    from steering.data import load_prompts

    vector = app.CATALOG.folder / "smollm2-135m-instruct_gal_en.pt"
    loaded = app.HOLDER.get()
    loaded.model.generation_config.min_new_tokens = args.tokens  # same length every request
    app.demo.queue(default_concurrency_limit=1).launch(
        prevent_thread_lock=True, server_port=free_port(), server_name="127.0.0.1", quiet=True, **app.launch_kwargs()
    )
    url = app.demo.local_url
    prompts = load_prompts("en")

    def new_session():
        client = gradio_client.Client(url, verbose=False)
        client.predict(api_name="/startup")
        return client

    def chat(client, prompt: str):
        args_ = (prompt, str(vector), LAYERS, STRENGTH, "calibrated", "all", args.tokens, 0.0, 0)
        return client.predict(*args_, api_name="/chat")

    try:
        chat(new_session(), prompts[0])  # warm-up: first forward passes, the server's first event
        print(
            f"bundled model ({loaded.name}), /chat plain + steered, greedy, {args.tokens} new tokens per column, "
            f"torch threads {torch.get_num_threads()}, {args.requests} requests per session, "
            f"{os.cpu_count()} CPUs"
        )
        header = f"{'sessions':>8} {'requests':>8} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'req/s':>6} {'tok/s':>7}"
        print(header)
        print("-" * len(header))
        for n in levels:
            # every request gets its own session, created before the clock starts
            clients = [[new_session() for _ in range(args.requests)] for _ in range(n)]
            latencies, errors, wall = run_level(
                clients, lambda w, r: prompts[(w * args.requests + r) % len(prompts)], chat
            )
            done = len(latencies)
            print(
                f"{n:>8} {done:>8} {percentile(latencies, 50):>7.2f} {percentile(latencies, 95):>7.2f} "
                f"{max(latencies):>7.2f} {done / wall:>6.2f} {done * 2 * args.tokens / wall:>7.1f}"
                + (f"   {len(errors)} errors: {errors[0]!r}" if errors else "")
            )
    finally:
        app.demo.close()


if __name__ == "__main__":
    main()
