"""Ingest + features with ``scale.data.engine: polars`` vs ``ray`` on the same synthetic log.

Run from the repository root (``make bench-scale``)::

    .venv/bin/python benchmarks/scale_data.py                         # 10 million events
    .venv/bin/python benchmarks/scale_data.py --events 1000000        # a size for a busy laptop

Step 0 (untimed) simulates the raw log once into ``raw.parquet`` (as benchmarks/ingest_features.py
does, and reusing its file with the same settings). Then each (engine, stage) runs ``--repeats``
times, every run in a fresh child process, as the DVC pipeline runs each stage:

* ``polars``: ``validate`` of the whole log, then ``build_training_sets`` (pipelines/ingest.py and
  pipelines/features.py with the default engine);
* ``ray``: a local Ray cluster of ``--num-cpus`` CPUs is started in the child (``start s``, not in
  the stage's time), then :func:`features.ray_engine.ingest` reads the Parquet log in parallel
  chunks and validates it per user bucket, and :func:`features.ray_engine.build_training_sets`
  builds the splits per bucket (``--buckets``).

Times are wall seconds inside the child, from the first read to the last write. Peak memory is
the largest sum of proportional set sizes (PSS: shared pages split between the processes that map
them, so Ray's shared object store is counted once) over the child and all its descendants —
Ray's GCS, raylet and workers — sampled every 0.1 s by this driver; a spike shorter than that can
be missed. The ``ingest+features`` rows add the two stages' median times and take the larger peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_features import generate, machine_info  # noqa: E402
from benchmarks.ingest_features import run_features as polars_features  # noqa: E402
from benchmarks.ingest_features import run_ingest as polars_ingest  # noqa: E402
from features import ray_engine  # noqa: E402  (imports Ray only when a cluster is started)
from features.contract import EventNames  # noqa: E402
from features.engine import DataEngineConfig  # noqa: E402
from features.sources.tabular import TabularConfig  # noqa: E402
from features.training_sets import FeaturesConfig  # noqa: E402

ENGINES = ("polars", "ray")
STAGES = ("ingest", "features")


def ray_stage(stage: str, workdir: Path, num_cpus: int, buckets: int) -> dict:
    """One stage on a fresh local Ray cluster; its events, seconds and the cluster's start time."""
    cfg = DataEngineConfig(engine="ray", num_cpus=num_cpus, buckets=buckets)
    out = workdir / "ray" / stage
    start = time.perf_counter()
    with ray_engine.cluster(cfg):
        started = time.perf_counter()
        if stage == "ingest":
            tabular = TabularConfig(path=str(workdir / "raw.parquet"), format="parquet")
            raw = ray_engine.parquet_input(tabular, None, cfg)
            summary = ray_engine.ingest(raw, EventNames(), cfg, out)
            events = summary.report.n_rows
        else:
            events_dir = workdir / "ray" / "ingest" / "events.parquet"
            ray_engine.build_training_sets(events_dir, EventNames(), FeaturesConfig(), out)
            events = pl.scan_parquet(events_dir).select(pl.len()).collect().item()
        done = time.perf_counter()
    return {"events": events, "seconds": done - started, "start_seconds": started - start}


def child(args: argparse.Namespace) -> None:
    """Run one (engine, stage) once and print its measurements as one JSON line."""
    workdir = args.workdir
    if args.engine == "polars":
        (workdir / args.stage).mkdir(exist_ok=True)
        run = polars_ingest if args.stage == "ingest" else polars_features
        start = time.perf_counter()
        events = run(workdir)
        result = {"events": events, "seconds": time.perf_counter() - start, "start_seconds": 0.0}
    else:
        result = ray_stage(args.stage, workdir, args.num_cpus, args.buckets)
    print(json.dumps(result))


def tree_pss_mib(proc: psutil.Process) -> float:
    """Sum of PSS (RSS where PSS is unreadable) over ``proc`` and its descendants, in MiB."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total / 2**20


def run_child(cmd: list[str]) -> tuple[dict, float]:
    """Run ``cmd``; its JSON result and the peak summed PSS of its process tree."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    watched = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_pss_mib(watched))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{cmd[-6:]} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), peak


def measure(engine: str, stage: str, args: argparse.Namespace, workdir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--workdir", str(workdir)]
    cmd += ["--num-cpus", str(args.num_cpus), "--buckets", str(args.buckets)]
    cmd += ["--engine", engine, "--stage", stage]
    runs = []
    for i in range(args.repeats):
        out, peak = run_child(cmd)
        runs.append((out, peak))
        print(
            f"  {engine} {stage} run {i + 1}/{args.repeats}: {out['seconds']:.1f} s "
            f"(+ start {out['start_seconds']:.1f} s), peak PSS {peak:,.0f} MiB",
            flush=True,
        )
    return {
        "engine": engine,
        "stage": stage,
        "events": runs[-1][0]["events"],
        "seconds": statistics.median(r[0]["seconds"] for r in runs),
        "start_seconds": statistics.median(r[0]["start_seconds"] for r in runs),
        "peak_mib": max(r[1] for r in runs),
    }


def table(rows: list[dict]) -> str:
    totals = {}
    for engine in ENGINES:
        ingest, features = (r for r in rows if r["engine"] == engine)
        totals[engine] = {
            "engine": engine,
            "stage": "ingest+features",
            "events": ingest["events"],
            "seconds": ingest["seconds"] + features["seconds"],
            "start_seconds": ingest["start_seconds"] + features["start_seconds"],
            "peak_mib": max(ingest["peak_mib"], features["peak_mib"]),
        }
    base = totals["polars"]["seconds"]
    lines = [
        "| engine | stage | events | median s | events/s | start s | peak PSS MiB "
        "| time vs polars ingest+features |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*rows, *totals.values()]:
        lines.append(
            f"| {r['engine']} | {r['stage']} | {r['events']:,} | {r['seconds']:.1f} "
            f"| {r['events'] / r['seconds']:,.0f} | {r['start_seconds']:.1f} "
            f"| {r['peak_mib']:,.0f} | {r['seconds'] / base:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="target number of events")
    p.add_argument("--repeats", type=int, default=1, help="runs of each stage (median reported)")
    p.add_argument("--users", type=int, default=200_000, help="simulated users")
    p.add_argument("--items", type=int, default=10_000, help="simulated items")
    p.add_argument("--bad-fraction", type=float, default=0.0005, help="corrupted rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--buckets", type=int, default=16, help="user buckets of the Ray engine")
    p.add_argument("--workdir", type=Path, default=None, help="kept if given; else a temp dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while simulating")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # internal: child mode
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.engine:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(machine_info(), flush=True)
        print(f"load average at start: {psutil.getloadavg()}", flush=True)
        print(f"workdir: {workdir}; ray: {args.num_cpus} CPUs, {args.buckets} buckets", flush=True)
        n_events = generate(args, workdir)
        rows = []
        for engine in ENGINES:
            for stage in STAGES:
                print(f"{engine} {stage}: {args.repeats} run(s) ...", flush=True)
                rows.append(measure(engine, stage, args, workdir))
        print(f"load average at end: {psutil.getloadavg()}")
        print(f"\n{n_events:,} raw events\n")
        print(table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
