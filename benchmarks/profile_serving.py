"""Where a serving worker's time goes: py-spy on one `bentoml serve` worker under c = 32 load.

    .venv/bin/python benchmarks/profile_serving.py recommend            # 10 s of samples
    .venv/bin/python benchmarks/profile_serving.py noop --seconds 8 LADDER_TRACING=1

Starts ``bentoml serve serving.service:Recommender`` (1 worker, core 0; the load generator on
core 1, as benchmarks/serving_cost.py) on ``data/serving`` with ``LADDER_BENCH_NOOP=1`` and the
given ``KEY=VALUE`` environment, drives ``/<endpoint>`` at c = 32 and records the worker with
``py-spy record --nonblocking --threads`` (the ``profile`` extra). Each sample is put in the
category of the frame nearest the leaf that matches :data:`CATEGORIES` (so a sample in JSON
encoding under the access-log middleware counts as serialisation, not as access log); samples
whose leaf is a wait (idle worker threads, the selector) are left out. Prints the share of the
remaining samples per category; the raw stacks go to ``--out``. The shares are of wall-clock
samples of busy threads, including time waiting for the GIL: a guide to where to cut, not CPU ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from serving_cost import _drive, user_bodies  # noqa: E402
from serving_load import ROOT, bentoml_server, service_overrides  # noqa: E402

IDLE_LEAVES = ("Condition.wait", "EpollSelector.select", "Event.wait")
# (a substring of a py-spy frame, its category); the first category found from the leaf up wins
CATEGORIES = [
    ("free_bytes", "ours: free-space gauge (statvfs)"),
    ("FeedbackLog._background_loop", "ours: feedback-log group-commit thread"),
    ("FeedbackLog", "ours: feedback-log append"),
    ("impression_records", "ours: impression records"),
    ("serving/recommend.py", "model: serving.recommend.recommend"),
    ("default_rng", "ours: per-request RNG"),
    ("Recommender.", "ours: API method (response models)"),
    ("model_dump_json", "bentoml: output serialisation"),
    ("to_http_response", "bentoml: output serialisation"),
    ("from_http_request", "bentoml: input parsing"),
    ("model_validate_json", "bentoml: input parsing"),
    ("access.py", "bentoml: access log"),
    ("logging/__init__", "bentoml: access log"),
    ("opentelemetry", "bentoml: OpenTelemetry"),
    ("asgi/__init__", "bentoml: OpenTelemetry"),
    ("trace/__init__", "bentoml: OpenTelemetry"),
    ("instruments.py", "bentoml: Prometheus"),
    ("prometheus", "bentoml: Prometheus"),
    ("traffic.py", "bentoml: timeout middleware"),
    ("serving/guard.py", "ours: guard middleware"),
    ("_bentoml_impl/server/app.py", "bentoml: endpoint wrapper"),
    ("_bentoml_sdk", "bentoml: endpoint wrapper"),
    ("anyio", "anyio: hop to the thread pool"),
    ("starlette", "starlette: routing, middleware"),
    ("h11", "uvicorn + h11: HTTP"),
    ("uvicorn", "uvicorn + h11: HTTP"),
    ("asyncio", "asyncio: event loop, sockets"),
]


def categorise(raw: Path) -> tuple[collections.Counter, int, int]:
    """(samples per category, busy samples, idle samples) of a py-spy ``--format raw`` file."""
    counts: collections.Counter = collections.Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES) or (
            "Queue.get" in stack and "WorkerThread.run" in stack
        ):
            idle += int(n)
            continue
        category = next(
            (c for f in reversed(frames) for pat, c in CATEGORIES if pat in f),
            "other: " + frames[-1][:60],
        )
        counts[category] += int(n)
        busy += int(n)
    return counts, busy, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", choices=["recommend", "noop"])
    parser.add_argument("env", nargs="*", metavar="KEY=VALUE", help="server environment")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, help="raw stacks (default: a temporary file)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install -c constraints.txt -e '.[profile]'")
    import psutil

    bodies = user_bodies(ROOT / "data" / "serving")
    env = {"LADDER_BENCH_NOOP": "1", **dict(kv.split("=", 1) for kv in args.env)}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "stacks.raw"
        with bentoml_server(
            ROOT / "data" / "serving",
            Path(tmp) / "feedback",
            Path(tmp) / "server.log",
            service_overrides(1, None, True),
            env,
            300.0,
            cpus={0},
        ) as (url, proc):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
            workers = psutil.Process(proc.pid).children(recursive=True)
            worker = max(workers, key=lambda p: p.memory_info().rss)  # the one holding the bundle
            target = f"{url}/{args.endpoint}"
            asyncio.run(_drive(target, bodies, 32, 2.0))  # warm-up
            spy = subprocess.Popen(
                [py_spy, "record", "-p", str(worker.pid), "-d", str(args.seconds), "-r", "250"]
                + ["-f", "raw", "-o", str(out), "--threads", "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            latencies, _, errors, wall = asyncio.run(_drive(target, bodies, 32, args.seconds))
            spy.wait()
        counts, busy, idle = categorise(out)
    print(f"/{args.endpoint} {env}: {len(latencies) / wall:.0f} req/s while sampled, {errors=}")
    print(f"{busy} busy samples ({idle} idle left out)")
    for category, n in counts.most_common(20):
        print(f"{100 * n / busy:5.1f} %  {category}")


if __name__ == "__main__":
    main()
