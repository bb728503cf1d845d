"""The app as bench_load measures it: `python app.py` on 127.0.0.1 in a process of its own (its clients are not in
it), with every row forced to the same length, the scheduler's counters at GET /v1/bench/stats, and
POST /v1/bench/forget to empty its prefix cache (between levels).

    python -m benchmarks.load_server --port 7861 --tokens 32
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def force_length(scheduler, tokens: int) -> None:
    """Every row the app submits runs exactly `tokens` new tokens (its min_new_tokens; the page sends none)."""
    submit = scheduler.submit

    def forced(loaded, rows):
        return submit(loaded, [dataclasses.replace(row, min_new_tokens=tokens) for row in rows])

    scheduler.submit = forced


def scheduler_counters(stats) -> dict:
    """What bench_load reads of a scheduler's stats (its table's rows/step, ms/step, admits, ms/admit, joins)."""
    return {
        "steps": stats.steps,
        "row_steps": stats.row_steps,
        "admits": stats.batches,
        "joins": stats.joined,
        "step_seconds": stats.step_seconds,
        "admit_seconds": stats.admit_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)")
    parser.add_argument(
        "--queue-poll", type=float, default=0, help="how often gradio's queue looks for events, s (default: the app's)"
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import app

    force_length(app.SCHEDULER, args.tokens)
    if args.queue_poll:  # e.g. 0.001: gradio's own, to compare
        app.demo._queue.sleep_when_free = args.queue_poll

    def stats() -> dict:
        return {
            **scheduler_counters(app.SCHEDULER.stats),
            "model": app.HOLDER.get().name,
            "threads": torch.get_num_threads(),
            "queue_poll": app.demo._queue.sleep_when_free,
            "max_batch_rows": app.SCHEDULER.max_batch_rows,
        }

    app.API.router.add_api_route("/bench/stats", stats, methods=["GET"])
    app.API.router.add_api_route("/bench/forget", app.SCHEDULER.prefix_cache.clear, methods=["POST"])
    app.main(["--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    main()
