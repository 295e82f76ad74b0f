"""Fit P[Love]: activity and popularity buckets, labelled rows, initial biases, best epoch kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models.data import TensorBatches
from models.fitting import Strategy, seed_everything, train
from models.plove.config import PLoveConfig
from models.plove.module import MONITOR, LoveValidation, PLoveModule
from models.plove.network import PLoveNet, PLoveScorer


def bucket_codes(counts: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile buckets 1..B of positive ``counts`` (0 for a zero count) and the bucket edges.

    Edges are quantiles of log(1 + count) among positive counts (duplicates removed), so a code
    c ≥ 1 means edges[c−2] ≤ log(1 + count) < edges[c−1].
    """
    counts = np.asarray(counts, dtype=np.float64)
    seen = counts > 0
    if not seen.any():
        return np.zeros(counts.size, np.int64), np.zeros(0)
    x = np.log1p(counts)
    edges = np.unique(np.quantile(x[seen], np.linspace(0, 1, n_buckets + 1)[1:-1]))
    codes = np.where(seen, np.searchsorted(edges, x, side="right") + 1, 0)
    return codes.astype(np.int64), edges


@dataclass
class LoveRows:
    """Aligned arrays of labelled impressions: indices, 0-based position, click and love (0/1),
    and optional per-row loss weights (default 1)."""

    users: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    clicks: np.ndarray
    loves: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        arrays = (self.items, self.positions, self.clicks, self.loves)
        if any(len(a) != n for a in arrays) or (
            self.weights is not None and len(self.weights) != n
        ):
            raise ValueError("LoveRows arrays must be aligned")

    def __len__(self) -> int:
        return len(self.users)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        ints = [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (self.users, self.items)]
        pos = torch.from_numpy(np.asarray(self.positions, dtype=np.int64))
        weights = np.ones(len(self)) if self.weights is None else self.weights
        floats = [
            torch.from_numpy(np.asarray(a, dtype=np.float32))
            for a in (self.clicks, self.loves, weights)
        ]
        return (*ints, pos, *floats)


def exposure_weights(propensity: np.ndarray, floor: float) -> np.ndarray:
    """ω = 1 / max(π, M), normalised to mean 1 (clipped IPS, methods.md §2)."""
    pi = np.asarray(propensity, dtype=np.float64)
    if pi.size == 0 or np.any(~np.isfinite(pi)) or np.any(pi <= 0):
        raise ValueError("IPS weighting needs a positive logged propensity on every training row")
    w = 1.0 / np.maximum(pi, floor)
    return w / w.mean()


def initial_head_bias(train: LoveRows, factorised: bool) -> np.ndarray:
    """Head biases at the base rates of the (maybe down-sampled) training sample:
    logit P(click) and logit P(love | click), or logit P(love) with one head."""
    eps = 1e-6
    love = float(np.clip(np.mean(train.loves), eps, 1 - eps))
    if not factorised:
        return np.array([np.log(love / (1 - love))])
    click = float(np.clip(np.mean(np.maximum(train.clicks, train.loves)), eps, 1 - eps))
    cond = float(np.clip(love / click, eps, 1 - eps))
    return np.array([np.log(click / (1 - click)), np.log(cond / (1 - cond))])


@dataclass
class PLoveFit:
    scorer: PLoveScorer
    model: PLoveNet
    info: dict = field(default_factory=dict)


def fit_plove(
    train_rows: LoveRows,
    valid_rows: LoveRows,
    n_users: int,
    n_items: int,
    user_buckets: np.ndarray,
    item_buckets: np.ndarray,
    cfg: PLoveConfig,
    validation: LoveValidation | None = None,
    logger=None,
    progress: bool = False,
    accelerator: str = "auto",
    strategy: Strategy = "single",
    devices: int = 1,
    num_nodes: int = 1,
) -> PLoveFit:
    """Train P[Love] on ``train_rows`` (maybe down-sampled), early-stop on unsampled ``valid_rows``
    by their log loss.

    Returns the best epoch's model as an uncalibrated :class:`PLoveScorer` (identity calibrator);
    calibrate it with :func:`models.plove.calibration.choose_calibrator` on held-out raw logits.
    ``strategy`` / ``devices`` / ``num_nodes``: :func:`models.fitting.train` (``scale.train``).
    """
    if len(train_rows) == 0 or len(valid_rows) == 0:
        raise ValueError("P[Love] needs non-empty training and validation rows")
    if not np.any(train_rows.loves):
        raise ValueError("the training rows hold no love reaction: nothing to learn")
    seed_everything(cfg.seed)
    bias = initial_head_bias(train_rows, cfg.factorised)
    model = PLoveNet(n_users, n_items, user_buckets, item_buckets, cfg, bias)
    module = PLoveModule(model, cfg, validation)
    trained = train(
        module,
        TensorBatches(
            train_rows.tensors(), cfg.batch_size, shuffle=True, seed=cfg.seed, shard=True
        ),
        TensorBatches(valid_rows.tensors(), 65536, shuffle=False),
        max_epochs=cfg.max_epochs,
        monitor=MONITOR,
        mode="min",
        patience=cfg.patience,
        logger=logger,
        progress=progress,
        accelerator=accelerator,
        strategy=strategy,
        devices=devices,
        num_nodes=num_nodes,
    )
    model = module.model.cpu()
    info = {
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "best_valid_log_loss": trained.best_score,
        "train_seconds": trained.seconds,
        "train_rows": len(train_rows),
        "train_positives": int(np.sum(train_rows.loves)),
        "device": trained.device,
        "world_size": trained.world_size,
    }
    return PLoveFit(PLoveScorer.from_model(model, cfg.labels.negative_rate), model, info)
