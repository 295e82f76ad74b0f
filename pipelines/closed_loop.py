"""The closed-loop demo in one command (logic in :mod:`serving.closed_loop`).

    python -m pipelines.closed_loop --rounds 3 --users 300 --exploration 0.5

Runs the simulator's users against a real `bentoml serve` for rounds 0..N, retraining with
`dvc repro` on the logged traffic between rounds, in a scratch workspace (a temporary directory
unless ``--workdir`` is given); prints the round-by-round table and writes results/closed_loop.md
and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from serving.closed_loop import DEMO_PARAMS, LoopConfig, closed_loop, markdown_table, write_results


def main(argv: list[str] | None = None) -> None:
    world = DEMO_PARAMS["source"]["synthetic"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="retrains (rounds 0..N are served)")
    parser.add_argument(
        "--users", type=int, default=1000, help="slates per round (one per simulated user)"
    )
    parser.add_argument(
        "--exploration", type=float, default=0.1, help="softmax temperature (0 = top-k)"
    )
    parser.add_argument(
        "--exclude-seen",
        action="store_true",
        help="drop each user's training positives (the simulator's users never tire of items)",
    )
    parser.add_argument("--k", type=int, default=10, help="slate size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-users", type=int, default=world["n_users"])
    parser.add_argument("--n-items", type=int, default=world["n_items"])
    parser.add_argument("--n-impressions", type=int, default=world["n_impressions"])
    parser.add_argument("--epochs", type=int, default=DEMO_PARAMS["gnolr"]["max_epochs"])
    parser.add_argument("--full", action="store_true", help="`dvc repro` every stage, not `index`")
    parser.add_argument("--restart", action="store_true", help="restart the server, not /reload")
    parser.add_argument("--workdir", type=Path, help="keep the scratch workspace here")
    parser.add_argument("--out", type=Path, default=Path("results/closed_loop"))
    args = parser.parse_args(argv)
    if args.rounds < 0 or args.users < 1 or args.exploration < 0:
        parser.error("--rounds must be ≥ 0, --users ≥ 1 and --exploration ≥ 0")

    overrides = json.loads(json.dumps(DEMO_PARAMS))
    overrides["source"]["synthetic"].update(
        n_users=args.n_users, n_items=args.n_items, n_impressions=args.n_impressions
    )
    overrides["gnolr"]["max_epochs"] = args.epochs
    cfg = LoopConfig(
        rounds=args.rounds,
        users=args.users,
        exploration=args.exploration,
        k=args.k,
        exclude_seen=args.exclude_seen,
        seed=args.seed,
        target=None if args.full else "index",
        restart=args.restart,
        overrides=overrides,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ladder-loop-"))
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        parser.error(f"--workdir {workdir} must be empty or absent")
    try:
        rows, references = closed_loop(cfg, workdir / "repo" if args.workdir is None else workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_results(rows, cfg, args.out, references)
    print()
    print(markdown_table(rows))
    print(f"\n→ {args.out.with_suffix('.md')}, {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as exc:
        sys.exit(f"closed_loop failed: {exc}")
