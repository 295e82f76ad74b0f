"""One optimiser step on an id table: torch.optim.SparseAdam against models.optim.RowAdam.

    PYTHONPATH=. .venv/bin/python benchmarks/optimizer_step.py [--ids 20000 --dim 64 --batch 2048]

Each round builds the same table (``nn.Embedding(ids, dim, sparse=True)``) for both optimisers,
looks up ``--batch`` uniform ids, back-propagates a sum and times ``opt.step()`` alone (the
gradient is computed before the clock starts). The table gives the median milliseconds per step
over ``--steps`` steps and ``--rounds`` alternating rounds, and RowAdam's ratio to SparseAdam in the
same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.optim import RowAdam


def step_ms(cls, ids: int, dim: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    emb = torch.nn.Embedding(ids, dim, sparse=True)
    opt = cls(emb.parameters(), lr=1e-3)
    times = []
    for _ in range(steps):
        rows = torch.randint(0, ids, (batch,))
        opt.zero_grad()
        emb(rows).sum().backward()
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ids", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = {"SparseAdam": [], "RowAdam": []}
    for _ in range(args.rounds):
        for name, cls in (("SparseAdam", torch.optim.SparseAdam), ("RowAdam", RowAdam)):
            runs[name].append(step_ms(cls, args.ids, args.dim, args.batch, args.steps))
    base = statistics.median(runs["SparseAdam"])
    print(
        f"torch {torch.__version__}, threads {args.threads}, table {args.ids:,} × {args.dim}, "
        f"batch {args.batch:,}, median of {args.rounds} rounds × {args.steps} steps"
    )
    print("| optimiser | ms/step | × SparseAdam |")
    print("|---|---:|---:|")
    for name, values in runs.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
