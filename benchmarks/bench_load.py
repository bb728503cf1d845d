"""Load on the app: latency, time to first token and throughput with 1, 4, 8 and 16 concurrent sessions, through the
page's chat endpoint and through the OpenAI-compatible API, in one run.

    python -m benchmarks.bench_load [--sessions 1,4,8,16] [--requests 3] [--tokens 32] [--threads 1]

The app is launched in-process on a free 127.0.0.1 port with the bundled model and the shipped English vector
(/v1 is served beside the page, as `python app.py` does). Each session is a thread that sends `requests` requests
one after another; all sessions of a level start together.

    page  the Chat tab's endpoint (gradio's /gradio_api/call/chat, what the page and gradio_client use): plain +
          steered columns, 2 rows per request, each a fresh session (prompts do not grow)
    v1    POST /v1/chat/completions, streamed, steered with the vector ("steering" field): 1 row per request

Greedy; every reply is forced to exactly `tokens` new tokens (each row's min_new_tokens), so tokens/s counts rows ×
tokens per request. Latency is the client's round trip, queueing included; time to first token is until the first
streamed text. Every chat runs in the app's scheduler: requests waiting together share one batched generation.
"""

from __future__ import annotations

import argparse
import json
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
VECTOR = "smollm2-135m-instruct_gal_en.pt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def text_of(message: dict) -> str:
    """A chatbot message's text (gradio sends content as a string or as a list of typed parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def page_chat(http, url: str, vector_path: str, prompt: str, tokens: int) -> float | None:
    """One Chat-tab request over gradio's call API; returns the seconds to the first update with reply text."""
    data = [prompt, vector_path, LAYERS, STRENGTH, "calibrated", "all", tokens, 0.0, 0, 1.0, "add", 0, "en", False]
    t0 = time.perf_counter()
    response = http.post(f"{url}/gradio_api/call/chat", json={"data": data})
    response.raise_for_status()
    event_id = response.json()["event_id"]
    first, event = None, None
    with http.stream("GET", f"{url}/gradio_api/call/chat/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                if event == "error":
                    raise RuntimeError(f"/chat failed: {line}")
                if event == "generating" and first is None:
                    plain, steered = json.loads(line[len("data: ") :])[:2]
                    if any(m and text_of(m[-1]) not in ("", "…") for m in (plain, steered)):
                        first = time.perf_counter() - t0
                if event == "complete":
                    break
    return first


def api_chat(client, prompt: str, tokens: int) -> float | None:
    """One streamed, steered /v1 request; returns the seconds to the first content chunk."""
    t0 = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        extra_body={"steering": {"vector": VECTOR, "layers": LAYERS, "strength": STRENGTH}, "min_tokens": tokens},
    )
    for chunk in stream:
        if first is None and any(c.delta.content for c in chunk.choices):
            first = time.perf_counter() - t0
    return first


def force_length(scheduler, tokens: int) -> None:
    """Every row the app submits runs exactly `tokens` new tokens (its min_new_tokens; the page sends none)."""
    import dataclasses

    submit = scheduler.submit

    def forced(loaded, rows):
        return submit(loaded, [dataclasses.replace(row, min_new_tokens=tokens) for row in rows])

    scheduler.submit = forced


def run_level(sessions: int, requests: int, call, prompt_for) -> dict:
    """`sessions` threads released together, each sending `requests` calls one after another."""
    latencies: list[float] = []
    firsts: list[float] = []
    errors: list[BaseException] = []
    lock, start = threading.Lock(), threading.Barrier(sessions + 1)

    def worker(w: int) -> None:
        start.wait()
        for r in range(requests):
            t0 = time.perf_counter()
            try:
                first = call(prompt_for(w, r))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(exc)
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
                if first is not None:
                    firsts.append(first)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(sessions)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return {"latencies": latencies, "firsts": firsts, "errors": errors, "wall": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=3, help="requests per concurrent session")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per row (forced length)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the box has 2 shared cores)")
    parser.add_argument("--paths", default="page,v1", help="which endpoints: page, v1 or both")
    args = parser.parse_args()
    levels = [int(n) for n in args.sessions.split(",")]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]

    import torch

    torch.set_num_threads(args.threads)
    import httpx
    import openai

    import app
    from steering.data import load_prompts

    vector_path = str(app.CATALOG.folder / VECTOR)
    loaded = app.HOLDER.get()
    force_length(app.SCHEDULER, args.tokens)
    app.demo.queue(default_concurrency_limit=1).launch(
        prevent_thread_lock=True, server_port=free_port(), server_name="127.0.0.1", quiet=True, **app.launch_kwargs()
    )
    url = app.demo.local_url.rstrip("/")
    prompts = load_prompts("en")
    http = httpx.Client(timeout=600)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600)
    calls = {
        "page": (2, lambda prompt: page_chat(http, url, vector_path, prompt, args.tokens)),
        "v1": (1, lambda prompt: api_chat(client, prompt, args.tokens)),
    }
    try:
        for path in paths:  # warm-up: first forward passes, the server's first events
            calls[path][1](prompts[0])
        print(
            f"bundled model ({loaded.name}), greedy, {args.tokens} new tokens per row, torch threads "
            f"{torch.get_num_threads()}, {args.requests} requests per session, {os.cpu_count()} CPUs, scheduler: "
            f"{app.SCHEDULER.max_batch_rows} rows per batch"
        )
        header = (
            f"{'path':>4} {'sessions':>8} {'requests':>8} {'p50 s':>7} {'p95 s':>7} {'ttft50':>7} {'ttft95':>7} "
            f"{'req/s':>6} {'tok/s':>7} {'rows/step':>9}"
        )
        print(header)
        print("-" * len(header))
        for path in paths:
            rows, call = calls[path]
            for n in levels:
                stats = app.SCHEDULER.stats
                steps, row_steps = stats.steps, stats.row_steps
                level = run_level(n, args.requests, call, lambda w, r: prompts[(w * args.requests + r) % len(prompts)])
                lat, firsts, errors, wall = level["latencies"], level["firsts"], level["errors"], level["wall"]
                done = len(lat)
                rows_per_step = (stats.row_steps - row_steps) / max(1, stats.steps - steps)
                print(
                    f"{path:>4} {n:>8} {done:>8} {percentile(lat, 50):>7.2f} {percentile(lat, 95):>7.2f} "
                    f"{percentile(firsts, 50):>7.2f} {percentile(firsts, 95):>7.2f} {done / wall:>6.2f} "
                    f"{done * rows * args.tokens / wall:>7.1f} {rows_per_step:>9.1f}"
                    + (f"   {len(errors)} errors: {errors[0]!r}" if errors else ""),
                    flush=True,
                )
    finally:
        http.close()
        app.demo.close()


if __name__ == "__main__":
    main()
