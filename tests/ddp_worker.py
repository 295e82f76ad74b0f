"""A small GNOLR fit for the DDP tests: ``python -m tests.ddp_worker OUT STRATEGY DEVICES NODES``.

Under torchrun every process runs this; each writes ``OUT/rank<r>.json`` (its global rank, the
SHA-256 of its final state dict, the best validation score), rank 0 also ``OUT/result.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from models.data import Interactions
from models.fitting import weights_digest


def toy_rows(n_users: int = 300, n_items: int = 200, n: int = 12_000, seed: int = 0):
    """Train/valid rows with 3 levels: level = #{c : u·v + noise > t_c}, latent dim 4."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4))

    def rows(m: int) -> Interactions:
        users, items = rng.integers(0, n_users, m), rng.integers(0, n_items, m)
        s = (u[users] * v[items]).sum(1) + rng.normal(scale=1.0, size=m)
        levels = (s[:, None] > np.array([0.5, 1.5, 2.5])[None]).sum(1)
        return Interactions(users, items, levels.astype(np.int64), None, n_users, n_items)

    return rows(n), rows(n // 4)


def fit(strategy: str, devices: int, nodes: int, max_epochs: int = 3, accelerator: str = "cpu"):
    """GNOLR (mlp towers, 3 levels) on :func:`toy_rows`, early-stopped on the AUC product."""
    from evaluation.validation import LevelAUC
    from models.gnolr.config import GNOLRConfig
    from models.gnolr.fit import fit_gnolr

    train, valid = toy_rows()
    cfg = GNOLRConfig(
        embedding_dim=16, hidden=[16], dim=8, batch_size=512, max_epochs=max_epochs, lr=0.01
    )
    names = ["click", "cart", "buy"]
    return fit_gnolr(
        train,
        valid,
        train.n_users,
        train.n_items,
        names,
        cfg,
        LevelAUC(names),
        progress=False,
        accelerator=accelerator,
        strategy=strategy,
        devices=devices,
        num_nodes=nodes,
    )


def main(out: str, strategy: str, devices: int, nodes: int) -> None:
    torch.set_num_threads(1)
    result = fit(strategy, devices, nodes)
    rank = int(os.environ.get("RANK", 0))
    record = {
        "rank": rank,
        "hash": weights_digest(result.model),
        "best_valid": result.info["best_valid"],
        "world_size": result.info["world_size"],
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
