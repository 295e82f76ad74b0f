"""Serving cost: ``/recommend`` against a no-op endpoint of the same service, in one run.

    .venv/bin/python benchmarks/serving_cost.py                  # workers 1 and 2, c = 1 8 32
    .venv/bin/python benchmarks/serving_cost.py --seconds 2 --repeats 1 --workers 1   # smoke run
    .venv/bin/python benchmarks/serving_cost.py --variant access-log:LADDER_ACCESS_LOG=1  # + a variant

For each worker count, one ``bentoml serve serving.service:Recommender`` is started on the bundle
(default ``data/serving``, the pipeline's, from ``dvc repro index``) with ``LADDER_BENCH_NOOP=1``
(``/noop``: the request and response of ``/recommend`` through the same service class,
middleware, workers and threads, with no retrieval and no feedback-log write) and
``LADDER_SERVER_TIMING=1`` (serving/guard.py adds ``Server-Timing: app;dur=<ms>``: the time from
our middleware receiving the request to the response's start).

CPU placement (``os.sched_setaffinity``): the load generator (this process, one asyncio loop,
aiohttp) runs on the last core; with W workers on N cores the server gets cores 0 … W−1 while
W < N, and every core when W ≥ N, sharing the last one with the client. On 2 cores: 1 worker on
core 0 and the client on core 1; 2 workers on both cores, the client sharing core 1 (the header
says which). A closed loop keeps c
requests in flight (each of c connections sends its next request when its answer is read) for
``--warmup`` s (discarded) and ``--seconds`` s; the levels run ``--repeats`` times, alternating
``/noop`` and ``/recommend`` at each level, and the table shows the median over repeats of
requests/s, p50, p99 and of the server-side split: ``app`` (Server-Timing) and ``outside`` =
client latency − app (sockets, uvicorn, the event loop, BentoML's outer middleware, the client).
Each ``--variant NAME:K=V,K=V`` adds a server per worker count with that environment on top
(``shipped`` is always measured), so settings are compared within one run.
Results: ``benchmarks/results_serving_cost_<tag>.md`` / ``.json``; the load average is recorded
before and after each server's levels (other jobs may share the machine: compare ratios within
one run, not absolute numbers across runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
from serving_load import (  # noqa: E402
    BENCH_DIR,
    ROOT,
    bentoml_server,
    drive,
    machine,
    request_cap,
    service_overrides,
    tree_cpu_seconds,
)

from serving.bundle import load_bundle  # noqa: E402

ENDPOINTS = ("noop", "recommend")


def placement(workers: int, cores: int) -> tuple[set[int], set[int], str]:
    """(server cores, client cores, a note): the client on the last core, the server apart from it
    while that leaves it at least one core; with ``workers ≥ cores`` the server gets every core."""
    if cores < 2:
        return {0}, {0}, "1 core: server and client share it"
    client = {cores - 1}
    if workers >= cores:
        return (
            set(range(cores)),
            client,
            f"server on all {cores} cores, client shares core {cores - 1}",
        )
    server = set(range(min(workers, cores - 1)))
    return server, client, f"server on cores {sorted(server)}, client on core {cores - 1}"


async def _drive(
    url: str, bodies: list[bytes], concurrency: int, seconds: float
) -> tuple[list[float], list[tuple[float, int]], dict[str, int], float]:
    """Closed loop (serving_load.drive); (client latencies s, (app ms, worker pid) from
    Server-Timing, errors, wall s)."""
    headers: list[str] = []
    latencies, errors, wall = await drive(
        url, bodies, concurrency, seconds, request_cap(seconds), headers
    )
    return latencies, [_server_timing(h) for h in headers], errors, wall


def _server_timing(header: str) -> tuple[float, int]:
    """``app;dur=1.234, pid;desc=42`` → (1.234, 42); (NaN, 0) for what is absent."""
    app, pid = float("nan"), 0
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name == "app" and params.startswith("dur="):
            app = float(params[4:])
        elif name == "pid" and params.startswith("desc="):
            pid = int(params[5:])
    return app, pid


def measure(
    url: str, endpoint: str, bodies: list[bytes], c: int, warmup: float, seconds: float, pid: int
) -> dict:
    """One level against one endpoint: throughput, client percentiles and the app/outside split."""
    target = f"{url}/{endpoint}"
    if warmup > 0:
        asyncio.run(_drive(target, bodies, c, warmup))
    cpu0, client0 = tree_cpu_seconds(pid), time.process_time()
    lat, timing, errors, wall = asyncio.run(_drive(target, bodies, c, seconds))
    cpu1, client1 = tree_cpu_seconds(pid), time.process_time()
    done = len(lat) + sum(errors.values())
    out = {"endpoint": endpoint, "concurrency": c, "requests": len(lat), "errors": errors}
    out["rps"] = done / wall
    out["server_cpu_ms"] = 1e3 * (cpu1 - cpu0) / max(done, 1)
    out["client_cpu_ms"] = 1e3 * (client1 - client0) / max(done, 1)
    if lat:
        ms = 1e3 * np.asarray(lat)
        app_ms = np.asarray([t[0] for t in timing])
        pids = np.asarray([t[1] for t in timing])
        # requests and p50 per worker: keep-alive connections stay on the worker that accepted them
        out["workers_seen"] = {
            str(pid): {
                "share": float(np.mean(pids == pid)),
                "p50_ms": float(np.percentile(ms[pids == pid], 50)),
            }
            for pid in np.unique(pids)
        }
        out["busiest_worker_share"] = max(w["share"] for w in out["workers_seen"].values())
        outside = ms - app_ms
        out |= {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
            "app_p50_ms": float(np.nanpercentile(app_ms, 50)),
            "app_p99_ms": float(np.nanpercentile(app_ms, 99)),
            "outside_p50_ms": float(np.nanpercentile(outside, 50)),
            "outside_p99_ms": float(np.nanpercentile(outside, 99)),
            # of the slowest 1 % of requests (client latency ≥ p99): the share of their time in the app
            "tail_app_share": float(
                np.nansum(app_ms[ms >= np.percentile(ms, 99)])
                / ms[ms >= np.percentile(ms, 99)].sum()
            ),
        }
    return out


MEDIAN_KEYS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "app_p50_ms",
    "app_p99_ms",
    "outside_p50_ms",
    "outside_p99_ms",
    "tail_app_share",
    "busiest_worker_share",
    "server_cpu_ms",
    "client_cpu_ms",
)


def summarise(reps: list[dict]) -> dict:
    """The median over repeats of every figure; errors summed."""
    out = {"endpoint": reps[0]["endpoint"], "concurrency": reps[0]["concurrency"]}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in reps if key in r]
        out[key] = statistics.median(values) if values else float("nan")
    out["errors"] = sum(sum(r["errors"].values()) for r in reps)
    out["repeats"] = len(reps)
    return out


def table(rows: list[dict]) -> str:
    """Markdown: one line per (workers, c, endpoint); ratio = req/s ÷ the no-op's at that level."""
    head = (
        "| workers | variant | c | endpoint | req/s | vs no-op | p50 ms | p99 ms | p99/p50 | app p50 | "
        "app p99 | outside p50 | outside p99 | tail in app | busiest worker | server CPU ms/req "
        "| errors |\n"
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    noop = {_key(r): r for r in rows if r["endpoint"] == "noop"}
    lines = [head]
    for r in rows:
        base = noop.get(_key(r))
        ratio = r["rps"] / base["rps"] if base else float("nan")
        lines.append(
            f"| {r['workers']} | {r['variant']} | {r['concurrency']} | /{r['endpoint']} | {r['rps']:,.0f} "
            f"| {ratio:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['p99_ms'] / r['p50_ms']:.1f} | {r['app_p50_ms']:.2f} | {r['app_p99_ms']:.2f} "
            f"| {r['outside_p50_ms']:.2f} | {r['outside_p99_ms']:.2f} "
            f"| {100 * r['tail_app_share']:.0f} % | {100 * r['busiest_worker_share']:.0f} % "
            f"| {r['server_cpu_ms']:.2f} | {r['errors']} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """Issue 14's targets: ≥ 0.8 of the no-op's req/s at every level; p99 ≤ 3 × p50 at c = 32."""
    noop = {_key(r): r for r in rows if r["endpoint"] == "noop"}
    out = []
    for r in rows:
        if r["endpoint"] != "recommend":
            continue
        base = noop[_key(r)]
        ratio = r["rps"] / base["rps"]
        line = (
            f"workers {r['workers']}, {r['variant']}, c={r['concurrency']}: /recommend at "
            f"{ratio:.2f} of /noop's "
            f"req/s ({'MET' if ratio >= 0.8 else 'NOT MET'}, target ≥ 0.80)"
        )
        if r["concurrency"] == 32:
            tail = r["p99_ms"] / r["p50_ms"]
            noop_tail = base["p99_ms"] / base["p50_ms"]
            line += (
                f"; p99/p50 {tail:.1f} ({'MET' if tail <= 3 else 'NOT MET'}, target ≤ 3; "
                f"/noop's {noop_tail:.1f})"
            )
        out.append(line)
    return out


def _key(row: dict) -> tuple:
    return row["workers"], row["variant"], row["concurrency"]


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:K=V,K=V`` → (name, {K: V})."""
    name, _, assignments = text.partition(":")
    env = dict(kv.split("=", 1) for kv in assignments.split(",") if kv)
    return name, env


def user_bodies(bundle: Path, n: int = 5000, seed: int = 0) -> list[bytes]:
    """``{user_id, k: 10}`` request bodies for ``n`` known users of the bundle, fixed order."""
    users = sorted(load_bundle(bundle).user_index)
    rng = np.random.default_rng(seed)
    return [
        json.dumps({"user_id": users[i], "k": 10}).encode() for i in rng.integers(0, len(users), n)
    ]


def uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_server(
    args: argparse.Namespace,
    workers: int,
    variant: str,
    env: dict[str, str],
    bodies: list[bytes],
    raw: list[dict],
    runs: list[dict],
) -> list[dict]:
    """One server (``workers``, ``env``): every level and endpoint ``args.repeats`` times; the
    median rows. Appends each measurement to ``raw`` and the server's facts to ``runs``."""
    cores = len(os.sched_getaffinity(0))
    server_cpus, client_cpus, note = placement(workers, cores)
    overrides = service_overrides(workers, args.threads, not args.no_access_log)
    scratch = BENCH_DIR / f"cost-{os.getpid()}-w{workers}-{variant}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    all_cpus = os.sched_getaffinity(0)
    run = {"workers": workers, "variant": variant, "env": env, "placement": note}
    run |= {"overrides": overrides, "load_before": uptime()}
    print(f"workers {workers}, {variant}: {note}; load average {run['load_before']}", flush=True)
    rows = []
    try:
        with bentoml_server(
            args.bundle,
            scratch / "feedback",
            scratch / "server.log",
            overrides,
            env,
            300.0,
            cpus=server_cpus,
        ) as (url, proc):
            os.sched_setaffinity(0, client_cpus)
            reps: dict[tuple[int, str], list[dict]] = {}
            for rep in range(args.repeats):
                for c in args.concurrency:
                    for endpoint in ENDPOINTS:
                        m = measure(url, endpoint, bodies, c, args.warmup, args.seconds, proc.pid)
                        m |= {"workers": workers, "variant": variant, "repeat": rep}
                        raw.append(m)
                        reps.setdefault((c, endpoint), []).append(m)
                        print(
                            f"  rep {rep} c={c} /{endpoint}: {m['rps']:.0f} req/s, "
                            f"p50 {m.get('p50_ms', float('nan')):.2f} p99 "
                            f"{m.get('p99_ms', float('nan')):.2f} ms, app p99 "
                            f"{m.get('app_p99_ms', float('nan')):.2f} ms",
                            flush=True,
                        )
            for c in args.concurrency:
                for endpoint in ENDPOINTS:
                    rows.append(
                        {"workers": workers, "variant": variant, **summarise(reps[(c, endpoint)])}
                    )
    finally:
        os.sched_setaffinity(0, all_cpus)
        shutil.rmtree(scratch, ignore_errors=True)
    run["load_after"] = uptime()
    runs.append(run)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "data" / "serving")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded seconds per level")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, help="BentoML threads per worker (default: the service's)"
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="turn BentoML's access log off"
    )
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:K=V,K=V")
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()
    if not args.bundle.exists():
        sys.exit(f"no bundle at {args.bundle}: run `dvc repro index` first (or pass --bundle)")

    bodies = user_bodies(args.bundle)
    extra_env = {
        "LADDER_BENCH_NOOP": "1",
        "LADDER_SERVER_TIMING": "1",
        **dict(kv.split("=", 1) for kv in args.server_env),
    }
    cores = len(os.sched_getaffinity(0))
    info = {**machine(), "argv": sys.argv[1:], "server_env": extra_env, "cores_usable": cores}
    print(json.dumps(info), flush=True)
    rows, raw, runs = [], [], []
    variants = [("shipped", {}), *(parse_variant(v) for v in args.variant)]
    for workers in args.workers:
        for variant, variant_env in variants:
            rows += run_server(
                args, workers, variant, {**extra_env, **variant_env}, bodies, raw, runs
            )
    text = "\n".join(
        [
            f"# serving cost: /recommend vs /noop ({info['cpu']}, {cores} cores), bentoml "
            f"{info['bentoml']}, bundle {args.bundle}",
            f"# serving_cost.py {' '.join(sys.argv[1:])}; median of {args.repeats} repeats of "
            f"{args.seconds:g} s per level (after {args.warmup:g} s warm-up); server env "
            f"{json.dumps(extra_env)}",
            *(
                f"# workers {r['workers']}, {r['variant']} {json.dumps(r['env'])}: "
                f"{r['placement']}; load average (1/5/15 min) "
                f"{r['load_before']} before, {r['load_after']} after"
                for r in runs
            ),
            "",
            table(rows),
            "",
            *targets(rows),
        ]
    )
    print("\n" + text)
    out = ROOT / "benchmarks" / f"results_serving_cost_{args.tag}"
    out.with_suffix(".md").write_text(text + "\n")
    payload = {"machine": info, "runs": runs, "rows": rows, "raw": raw}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
