"""GNOLR training speed: dense vs sparse id-embedding gradients, one process vs DDP×2 (CPU gloo).

Run from the repository root (``make bench-scale`` runs it after ``scale_data.py``)::

    .venv/bin/python benchmarks/scale_train.py                       # 100 k and 1 M ids
    .venv/bin/python benchmarks/scale_train.py --ids 100000 --rows 200000

Every row of the table is one fresh child process training the default GNOLR architecture
(params.yaml ``gnolr``: mlp towers, 64-wide id embeddings, heads 128-64-32, its batch, 3 levels)
for one epoch, without validation, through :func:`models.fitting.train` — the stages' own loop —
on synthetic rows over ``ids`` users and ``ids`` items (uniform ids, random levels: speed only):

* ``single dense``: the id tables with dense gradients and AdamW over every parameter (the
  trainer before sparse gradients);
* ``single sparse``: sparse id-table gradients, RowAdam + AdamW (:mod:`models.optim`);
* ``ddp×2 sparse``: the same under ``strategy: ddp, devices: 2`` (two spawned ranks, gloo; each
  takes half of every global batch).

``--accelerator gpu`` runs the same rows on CUDA (DDP: spawned ranks, gloo, ``--ddp-devices``
GPUs) and adds the child's peak CUDA allocation; ``--modes`` picks rows.

samples/s = training rows / wall seconds of ``trainer.fit`` (DDP: including spawning the ranks and
joining the process group). Peak RSS is the largest resident set of one process of the child's
tree (``wait4``'s ``ru_maxrss``: the child and the ranks it waited for), not their sum. The dense
rows train on fewer rows (``--dense-rows``): a dense step touches the whole table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.data import TensorBatches  # noqa: E402
from models.fitting import seed_everything, train  # noqa: E402
from models.gnolr.config import GNOLRConfig  # noqa: E402
from models.gnolr.module import GNOLRModule  # noqa: E402
from models.gnolr.network import GNOLR  # noqa: E402

MODES = ("single dense", "single sparse", "ddp sparse")


def child(mode: str, ids: int, rows: int, accelerator: str = "cpu", ddp_devices: int = 2) -> None:
    """Train one epoch in ``mode`` on ``accelerator`` and print ``{"seconds": …}`` as JSON."""
    # params.yaml's gnolr section, validated by its own model (pipelines.params would import
    # the serving stack, which a bare GPU box may lack)
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["gnolr"]
    cfg = GNOLRConfig.model_validate({**section, "max_epochs": 1})
    seed_everything(0)
    net = GNOLR(ids, ids, np.array([1.0, 2.5, 4.0]), np.array([0.5, 0.5, 0.5]), cfg)
    if mode == "single dense":
        for tower in (net.user_tower, net.item_tower):
            tower.embedding.sparse = False  # dense gradients: AdamW gets the tables too
    rng = np.random.default_rng(0)
    tensors = (
        torch.as_tensor(rng.integers(0, ids, rows)),
        torch.as_tensor(rng.integers(0, ids, rows)),
        torch.as_tensor(rng.choice(4, rows, p=[0.7, 0.2, 0.07, 0.03])),
    )
    batches = TensorBatches(tensors, cfg.batch_size, shuffle=True, seed=0, shard=True)
    ddp = mode.startswith("ddp")
    trained = train(
        GNOLRModule(net, cfg),
        batches,
        max_epochs=1,
        accelerator=accelerator,
        strategy="ddp" if ddp else "single",
        devices=ddp_devices if ddp else 1,
    )
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    print(json.dumps({"seconds": trained.seconds, "gpu_peak_mib": gpu_peak}))


def measure(mode: str, ids: int, rows: int, accelerator: str = "cpu", ddp_devices: int = 2) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, __file__, "--child", mode, "--ids", str(ids), "--rows", str(rows)]
    cmd += ["--accelerator", accelerator, "--ddp-devices", str(ddp_devices)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} at {ids:,} ids failed (exit {proc.returncode})")
    reply = json.loads(out.strip().splitlines()[-1])
    seconds = reply["seconds"]
    return {
        "mode": f"ddp×{ddp_devices} sparse" if mode == "ddp sparse" else mode,
        "accelerator": accelerator,
        "ids": ids,
        "rows": rows,
        "seconds": seconds,
        "samples_per_s": rows / seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "gpu_peak_mib": reply["gpu_peak_mib"],  # this process's CUDA allocations (0 on cpu)
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ids", type=int, nargs="+", default=[100_000, 1_000_000], help="users = items")
    p.add_argument("--rows", type=int, default=300_000, help="training rows (sparse rows)")
    p.add_argument("--dense-rows", type=int, default=40_000, help="training rows of dense rows")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--ddp-devices", type=int, default=2, help="ranks of the ddp row (GPUs on gpu)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.ids[0], args.rows, args.accelerator, args.ddp_devices)
        return
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else "no GPU"
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, load average before {load[0]:.2f}"
    )
    results = []
    for ids in args.ids:
        base = None
        for mode in args.modes:
            rows = args.dense_rows if mode == "single dense" else args.rows
            start = time.perf_counter()
            r = measure(mode, ids, rows, args.accelerator, args.ddp_devices)
            base = base or r["samples_per_s"]
            r["vs_dense"] = r["samples_per_s"] / base
            r["load_after"] = os.getloadavg()[0]
            results.append(r)
            print(f"  {mode} {ids:,} ids: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(
        "| mode | device | ids | rows | s | samples/s | × first row | peak RSS MiB | GPU MiB | load |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['mode']} | {r['accelerator']} | {r['ids']:,} | {r['rows']:,} | "
            f"{r['seconds']:.1f} | {r['samples_per_s']:,.0f} | {r['vs_dense']:.1f} | "
            f"{r['peak_rss_mib']:,.0f} | {r['gpu_peak_mib']:,.0f} | {r['load_after']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
