"""Benchmark of the ingest and features stages on millions of synthetic events.

Run from the repository root::

    .venv/bin/python benchmarks/ingest_features.py            # 10 million events, 3 repeats
    .venv/bin/python benchmarks/ingest_features.py --quick    # 1 million events, smoke run

Step 0 (untimed) simulates a synthetic event log once and writes it to ``raw.parquet`` in the work
directory (a given ``--workdir`` keeps it, and a later run with the same settings reuses it). Each
timed phase then runs ``--repeats`` times, every run in a fresh child process so that its peak
resident memory is its own:

* ``baseline``: read raw.parquet and write it back with pyarrow (pure I/O, the yardstick);
* ``polars_io``: the same with Polars, whose writer ingest uses (for reference: how much of the
  stages' time is Polars' own I/O);
* ``ingest``: read raw.parquet, validate it against the contract, write events.parquet
  (``write_events``) and quarantine.parquet, as ``pipelines/ingest.py`` does;
* ``features``: scan events.parquet, ``build_training_sets``, write users, items and every split,
  as ``pipelines/features.py`` does;
* ``ingest+features``: the two stages together (sum of their median times, max of their peaks,
  since the pipeline runs them as separate processes).

Times are wall seconds inside the child, from the first read to the last write (interpreter start
and imports excluded); peak RSS is the child's high-water mark (``VmHWM``, imports included).
Input files sit in the page cache after the first run, so the numbers measure compute and
encoding rather than the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import EventNames, validate, write_events
from features.sources.synthetic import SyntheticConfig, simulate
from features.training_sets import FeaturesConfig, build_training_sets

EVENTS_PER_IMPRESSION = 1.06  # impressions plus the clicks, carts, purchases and loves they lead to
PHASES = ("baseline", "polars_io", "ingest", "features")


@dataclass
class Result:
    """Measurements of one phase over all repeats."""

    phase: str
    events: int
    seconds: list[float]
    peak_rss_mib: float

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# --- the timed phases, each run inside a child process ---------------------------------------


def run_baseline(workdir: Path) -> int:
    table = pq.read_table(workdir / "raw.parquet")
    pq.write_table(table, workdir / "baseline" / "raw_copy.parquet")
    return table.num_rows


def run_polars_io(workdir: Path) -> int:
    frame = pl.read_parquet(workdir / "raw.parquet")
    frame.write_parquet(workdir / "polars_io" / "raw_copy.parquet")
    return frame.height


def run_ingest(workdir: Path) -> int:
    raw = pl.read_parquet(workdir / "raw.parquet")
    valid, quarantine, report = validate(raw, EventNames())
    write_events(valid, workdir / "ingest" / "events.parquet")
    quarantine.write_parquet(workdir / "ingest" / "quarantine.parquet")
    return report.n_rows


def run_features(workdir: Path) -> int:
    events = workdir / "ingest" / "events.parquet"
    sets = build_training_sets(pl.scan_parquet(events), EventNames(), FeaturesConfig())
    out = workdir / "features"
    sets.users.write_parquet(out / "users.parquet")
    sets.items.write_parquet(out / "items.parquet")
    for name, frame in sets.splits.items():
        frame.write_parquet(out / f"{name}.parquet")
    return pq.ParquetFile(events).metadata.num_rows


RUNNERS = {
    "baseline": run_baseline,
    "polars_io": run_polars_io,
    "ingest": run_ingest,
    "features": run_features,
}


def child(phase: str, workdir: Path) -> None:
    """Run one phase once and print its measurements as one JSON line."""
    (workdir / phase).mkdir(exist_ok=True)
    start = time.perf_counter()
    events = RUNNERS[phase](workdir)
    seconds = time.perf_counter() - start
    print(json.dumps({"events": events, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``ru_maxrss`` keeps the parent's peak across fork and exec, so a child of the (large)
    driver would report at least the driver's peak; ``VmHWM`` belongs to the process's own memory
    map and starts afresh at exec. Elsewhere fall back to ``ru_maxrss`` (KiB on Linux, bytes on
    macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- the driver -------------------------------------------------------------------------------


def generate(args: argparse.Namespace, workdir: Path) -> int:
    """Simulate the raw event log once into workdir/raw.parquet (untimed); its event count."""
    cfg = SyntheticConfig(
        n_users=args.users,
        n_items=args.items,
        n_impressions=max(10, round(args.events / EVENTS_PER_IMPRESSION)),
        bad_row_fraction=args.bad_fraction,
        seed=args.seed,
    )
    raw, stamp = workdir / "raw.parquet", workdir / "raw.json"
    settings = cfg.model_dump(mode="json")
    if raw.exists() and stamp.exists() and json.loads(stamp.read_text()) == settings:
        n = pq.ParquetFile(raw).metadata.num_rows
        print(f"step 0: reusing {raw} ({n:,} events)", flush=True)
        return n
    print(
        f"step 0 (untimed): simulating {cfg.n_impressions:,} impressions, {cfg.n_users:,} users, "
        f"{cfg.n_items:,} items ...",
        flush=True,
    )
    start = time.perf_counter()
    events, _ = simulate(cfg, progress=not args.no_progress)
    events.write_parquet(raw)
    stamp.write_text(json.dumps(settings))
    print(
        f"step 0: {events.height:,} events → {raw} "
        f"({raw.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - start:,.0f} s",
        flush=True,
    )
    return events.height


def measure(phase: str, workdir: Path, repeats: int) -> Result:
    """Run ``phase`` ``repeats`` times, each in a fresh child process."""
    seconds: list[float] = []
    peaks: list[float] = []
    events = 0
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--workdir",
        str(workdir),
    ]
    for i in range(repeats):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"phase {phase} failed (exit {proc.returncode}):\n{proc.stderr}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        seconds.append(out["seconds"])
        peaks.append(out["peak_rss_mib"])
        events = out["events"]
        print(
            f"  {phase} run {i + 1}/{repeats}: {out['seconds']:.2f} s, "
            f"peak RSS {out['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
    return Result(phase, events, seconds, max(peaks))


def machine_info() -> str:
    mem = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        mem = f", memory {kib / 2**20:.1f} GiB"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {platform.machine()} {platform.system()}, cpu_count {os.cpu_count()} "
        f"(usable {usable}){mem}\n"
        f"python {platform.python_version()}, polars {pl.__version__} "
        f"(threads {pl.thread_pool_size()}), pyarrow {pa.__version__}, numpy {np.__version__}"
    )


def table(results: list[Result]) -> str:
    base = results[0].median
    lines = [
        "| phase | events | median s | events/s | peak RSS MiB | ratio to baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.phase} | {r.events:,} | {r.median:.2f} | {r.events / r.median:,.0f} "
            f"| {r.peak_rss_mib:,.0f} | {r.median / base:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="target number of events")
    p.add_argument("--repeats", type=int, default=3, help="runs of each phase (median reported)")
    p.add_argument("--users", type=int, default=200_000, help="simulated users")
    p.add_argument("--items", type=int, default=10_000, help="simulated items (drives sim time)")
    p.add_argument(
        "--bad-fraction", type=float, default=0.0005, help="corrupted rows, as in params.yaml"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="kept if given; else a temp dir")
    p.add_argument("--quick", action="store_true", help="1 million events, a smoke run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while simulating")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # internal: child mode
    args = p.parse_args(argv)
    if args.quick:
        args.events = 1_000_000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        child(args.phase, args.workdir)
        return
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(machine_info(), flush=True)
        print(f"workdir: {workdir}", flush=True)
        n_events = generate(args, workdir)
        results = []
        for phase in PHASES:
            print(f"phase {phase}: {args.repeats} run(s) ...", flush=True)
            results.append(measure(phase, workdir, args.repeats))
        ingest, features = results[2], results[3]
        total = Result(
            "ingest+features",
            ingest.events,
            [ingest.median + features.median],
            max(ingest.peak_rss_mib, features.peak_rss_mib),
        )
        results.append(total)
        print(f"\n{n_events:,} raw events, {features.events:,} after validation\n")
        print(table(results))


if __name__ == "__main__":
    main()
