"""Load on the app: latency, time to first token and throughput with 1, 4, 8 and 16 concurrent sessions, through the
page's chat endpoint and through the OpenAI-compatible API, in one run.

    python -m benchmarks.bench_load [--sessions 1,4,8,16] [--requests 3] [--rounds 1] [--tokens 32] [--threads N]
                                    [--queue-poll S] [--paths page,v1,direct]

The app runs as `python app.py` does, in a process of its own (benchmarks/load_server.py) on a free 127.0.0.1 port,
with the bundled model, the shipped English vector and /v1 beside the page; the clients are threads of this
process, as they would be elsewhere in real use. Each session sends `requests` requests one after another; all
sessions of a level start together, with the app's prefix cache emptied first (levels and rounds share prompts:
no level finds its first turns cached by an earlier one). With `--rounds R` every level runs R times, the levels
taking turns (1, 4, 8, 16, 1, 4, ...) in fresh sessions, and each line pools its level's rounds: this machine's
speed drifts over minutes, and taking turns measures every level across the same drift.

    page  the Chat tab's endpoint (gradio's /gradio_api/call/chat, what gradio_client uses): plain + steered
          columns, 2 rows per request; each client session keeps one gradio session, as an open page does, so
          its requests are the turns of one conversation (the second and third turns carry the earlier ones)
    v1    POST /v1/chat/completions, streamed, steered with the vector ("steering" field): 1 row per request,
          each a new conversation (prompts do not grow)
    direct  the page's rows and conversations sent straight to a Scheduler set up as the app's, in this process,
          read as paced as a page's: the model side alone, with no web server

Greedy; every reply is forced to exactly `tokens` new tokens (each row's min_new_tokens), so tokens/s counts rows ×
tokens per request. Latency is the client's round trip, queueing included; time to first token is until the first
streamed text. Every chat runs in the app's scheduler's live batch: rows/step is how many rows its decoding steps
held on average and ms/step what one cost, admits how many admissions brought requests in (ms/admit: their prefill,
while the running rows wait), joins how many of those joined a batch already running. After each path, every
session run with others is replayed alone, request by request in a fresh session, and the replies are compared
(greedy replies must be identical).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LAYERS, STRENGTH = "12-16", 2.0
COUNTERS = ("steps", "row_steps", "admits", "joins", "step_seconds", "admit_seconds")
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


def page_chat(
    http, url: str, vector_path: str, prompt: str, tokens: int, session: str
) -> tuple[float | None, list[str]]:
    """One Chat-tab request over gradio's call API in `session` (a page's session: gradio keeps its state between
    requests, as it does for an open page); returns the seconds to the first update with reply text, and the two
    replies (plain, steered)."""
    data = [prompt, vector_path, LAYERS, STRENGTH, "calibrated", "all", tokens, 0.0, 0, 1.0, "add", 0, "en", False]
    t0 = time.perf_counter()
    response = http.post(f"{url}/gradio_api/call/chat", json={"data": data, "session_hash": session})
    response.raise_for_status()
    event_id = response.json()["event_id"]
    first, event, replies = None, None, []
    with http.stream("GET", f"{url}/gradio_api/call/chat/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                if event == "error":
                    raise RuntimeError(f"/chat failed: {line}")
                # (the client's CPU is this machine's too: after the first text, only the end is read)
                if event == "complete" or (event == "generating" and first is None):
                    columns = json.loads(line[len("data: ") :])[:2]
                    replies = [text_of(m[-1]) if m else "" for m in columns]
                if event == "generating" and first is None and any(r not in ("", "…") for r in replies):
                    first = time.perf_counter() - t0
                if event == "complete":
                    break
    return first, replies


def api_chat(client, prompt: str, tokens: int, session: str) -> tuple[float | None, list[str]]:
    """One streamed, steered /v1 request; returns the seconds to the first content chunk, and the reply."""
    t0 = time.perf_counter()
    first, text = None, ""
    stream = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        extra_body={"steering": {"vector": VECTOR, "layers": LAYERS, "strength": STRENGTH}, "min_tokens": tokens},
    )
    for chunk in stream:
        content = "".join(c.delta.content or "" for c in chunk.choices)
        if first is None and content:
            first = time.perf_counter() - t0
        text += content
    return first, [text]


class DirectChat:
    """The page's two rows sent straight to a Scheduler set up as the app's, in this process, with no web server:
    what the model side alone does with the same load. Each session's columns carry their own conversations, and
    its updates come as paced as the page's do."""

    def __init__(self, tokens: int):
        from steering.models import load_model
        from steering.serve import chat_scheduler
        from steering.vector_files import load_vector

        self.tokens, self.loaded = tokens, load_model("bundled")
        self.vector = load_vector(ROOT / "vectors" / VECTOR)
        self.scheduler = chat_scheduler()  # set up as the app's
        self.histories: dict[str, tuple[list, list]] = {}

    def counters(self) -> dict:
        from benchmarks.load_server import scheduler_counters

        return scheduler_counters(self.scheduler.stats)

    def __call__(self, prompt: str, session: str) -> tuple[float | None, list[str]]:
        from steering.chat import page_updates
        from steering.generate import GenerationSettings
        from steering.scheduler import Row
        from steering.steer import Steering

        plain, steered = self.histories.get(session, ([], []))
        turn = {"role": "user", "content": prompt}
        settings = GenerationSettings(max_new_tokens=self.tokens)
        steering = Steering(self.vector, LAYERS, STRENGTH, "calibrated", "all")
        rows = [Row([*history, turn], plan, settings, min_new_tokens=self.tokens)
                for history, plan in ((plain, None), (steered, steering))]  # fmt: skip
        t0, first, texts = time.perf_counter(), None, ["", ""]
        for update in page_updates(self.scheduler.submit(self.loaded, rows), self.scheduler):  # paced as a page
            if first is None and any(update.texts):
                first = time.perf_counter() - t0
            texts = update.texts
        replies = [{"role": "assistant", "content": text} for text in texts]
        self.histories[session] = ([*plain, turn, replies[0]], [*steered, turn, replies[1]])
        return first, texts


def wait_for(http, url: str, server, seconds: float = 300) -> None:
    """Until the server answers `url` (it loads the model first); its exit is an error."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if http.get(url).status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer {url} in {seconds} s")


def run_level(sessions: int, requests: int, call, prompt_for, tag: str = "") -> dict:
    """`sessions` threads released together, each sending `requests` calls one after another in its own session
    (named after `tag`, the level and the thread); `turns` holds each session's (prompt, replies) in order (None for
    a failed request)."""
    latencies: list[float] = []
    firsts: list[float] = []
    turns: dict[str, list] = {f"bench-{tag}{sessions}-{w}": [] for w in range(sessions)}
    errors: list[BaseException] = []
    lock, start = threading.Lock(), threading.Barrier(sessions + 1)

    def worker(w: int) -> None:
        start.wait()
        for r in range(requests):
            t0 = time.perf_counter()
            prompt, session = prompt_for(w, r), f"bench-{tag}{sessions}-{w}"
            try:
                first, texts = call(prompt, session)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(exc)
                    turns[session].append((prompt, None))
                continue
            with lock:
                turns[session].append((prompt, texts))
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
    wall = time.perf_counter() - t0
    return {"latencies": latencies, "firsts": firsts, "errors": errors, "wall": wall, "turns": turns}


def pooled(rounds: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """One level's rounds as one: (run_level's result, scheduler counters) with every request, the walls and the
    counters added up."""
    level = {key: [x for result, _ in rounds for x in result[key]] for key in ("latencies", "firsts", "errors")}
    level["wall"] = sum(result["wall"] for result, _ in rounds)
    return level, {k: sum(counted[k] for _, counted in rounds) for k in COUNTERS}


def replayed_alone(call, turns: dict[str, list]) -> tuple[int, int]:
    """Each session's requests sent again in order, in a fresh session with nothing else running: how many
    replies are identical to those it got under load, of how many."""
    same = total = 0
    for session, sent in turns.items():
        for prompt, texts in sent:
            again = call(prompt, f"alone-{session}")[1]
            same, total = same + (texts == again), total + 1
    return same, total


def print_level(path: str, sessions: int, rows: int, tokens: int, level: dict, counted: dict) -> None:
    """One table line: latency and TTFT percentiles, throughput, and what the scheduler did meanwhile."""
    lat, firsts, errors, wall = level["latencies"], level["firsts"], level["errors"], level["wall"]
    steps, row_steps, admits, joins, step_seconds, admit_seconds = (counted[k] for k in COUNTERS)
    done = len(lat)
    print(
        f"{path:>4} {sessions:>8} {done:>8} {percentile(lat, 50):>7.2f} {percentile(lat, 95):>7.2f} "
        f"{percentile(firsts, 50):>7.2f} {percentile(firsts, 95):>7.2f} {done / wall:>6.2f} "
        f"{done * rows * tokens / wall:>7.1f} {row_steps / max(1, steps):>9.1f} {1000 * step_seconds / max(1, steps):>7.1f} "
        f"{admits:>6} {1000 * admit_seconds / max(1, admits):>8.0f} {joins:>6}"
        + (f"   {len(errors)} errors: {errors[0]!r}" if errors else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=3, help="requests per concurrent session")
    parser.add_argument("--rounds", type=int, default=1, help="times each level runs, the levels taking turns")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per row (forced length)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: torch's own, as `python app.py` runs)"
    )
    parser.add_argument(
        "--queue-poll", type=float, default=0, help="gradio's queue polling, s (default: the app's; 0.001: gradio's)"
    )
    parser.add_argument(
        "--paths", default="page,v1,direct", help="page, v1 and/or direct (the page's rows with no web server)"
    )
    args = parser.parse_args()
    levels = [int(n) for n in args.sessions.split(",")]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]

    import httpx
    import openai

    from steering.data import load_prompts

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "benchmarks.load_server", "--port", str(port), "--tokens", str(args.tokens)]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--queue-poll", str(args.queue_poll)] if args.queue_poll else []
    server = subprocess.Popen(command, cwd=ROOT)
    http = httpx.Client(timeout=600)
    wait_for(http, f"{url}/v1/models", server)
    info = http.get(f"{url}/v1/bench/stats").json()
    vector_path = str(Path(os.environ.get("STEERING_VECTOR_DIR") or ROOT / "vectors") / VECTOR)
    prompts = load_prompts("en")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600)
    calls = {
        "page": (2, lambda prompt, session: page_chat(http, url, vector_path, prompt, args.tokens, session)),
        "v1": (1, lambda prompt, session: api_chat(client, prompt, args.tokens, session)),
    }
    counters = {path: lambda: http.get(f"{url}/v1/bench/stats").json() for path in calls}
    forget = {path: lambda: http.post(f"{url}/v1/bench/forget").raise_for_status() for path in calls}
    if "direct" in paths:
        direct = DirectChat(args.tokens)
        calls["direct"], counters["direct"] = (2, direct), direct.counters
        forget["direct"] = direct.scheduler.prefix_cache.clear
    try:
        for path in paths:  # warm-up: first forward passes, the server's first events
            calls[path][1](prompts[0], "warm-up")
        print(
            f"bundled model ({info['model']}), greedy, {args.tokens} new tokens per row, server torch threads "
            f"{info['threads']}, {args.requests} requests per session, {args.rounds} round(s), {os.cpu_count()} CPUs, "
            "scheduler: "
            f"{info['max_batch_rows']} rows at most, gradio's queue polls every {1000 * info['queue_poll']:g} ms"
        )
        header = (
            f"{'path':>4} {'sessions':>8} {'requests':>8} {'p50 s':>7} {'p95 s':>7} {'ttft50':>7} {'ttft95':>7} "
            f"{'req/s':>6} {'tok/s':>7} {'rows/step':>9} {'ms/step':>7} {'admits':>6} {'ms/admit':>8} {'joins':>6}"
        )
        print(header)
        print("-" * len(header))
        for path in paths:
            rows, call = calls[path]
            together: dict[str, list] = {}  # each session's turns when sent with others
            rounds: dict[int, list] = {n: [] for n in levels}
            for r in range(args.rounds):
                for n in levels:
                    forget[path]()  # no level finds its first prompts cached by an earlier one (or the warm-up)
                    before = counters[path]()
                    level = run_level(n, args.requests, call, lambda w, t: prompts[(w * args.requests + t) % len(prompts)],
                                      tag=f"r{r}-" if args.rounds > 1 else "")  # fmt: skip
                    after = counters[path]()
                    rounds[n].append((level, {k: after[k] - before[k] for k in COUNTERS}))
                    if n > 1:
                        together.update(level["turns"])
            for n in levels:
                print_level(path, n, rows, args.tokens, *pooled(rounds[n]))
            same, total = replayed_alone(call, together)
            print(f"{path}: {same}/{total} replies identical to the same session's requests sent alone")
    finally:
        http.close()
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
