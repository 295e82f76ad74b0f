"""Fit Rel-MF: the positives as a CSR, the loss over every (user, item) pair, best epoch kept."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from models.data import Pairs, TensorBatches
from models.fitting import Strategy, seed_everything, train
from models.relmf.config import RelMFConfig, RelMFLoss
from models.relmf.module import RankingValidation, RelMFModule
from models.relmf.network import MatrixFactorization, MFEmbeddings


def csr_from_pairs(pairs: Pairs, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr (n_users+1,), indices) of the distinct pairs, items sorted within each user."""
    if pairs.users.size and (
        pairs.users.min() < 0
        or pairs.users.max() >= n_users
        or pairs.items.min() < 0
        or pairs.items.max() >= n_items
    ):
        raise ValueError(f"pair indices out of range of {n_users} users × {n_items} items")
    keys = np.unique(pairs.users * n_items + pairs.items)
    counts = np.bincount(keys // n_items, minlength=n_users)
    return np.r_[0, np.cumsum(counts)].astype(np.int64), (keys % n_items).astype(np.int64)


def check_propensity(theta: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """θ as float32, shape (n_items,) or (n_users, n_items), every value in (0, 1]."""
    theta = np.asarray(theta, dtype=np.float32)
    if theta.shape not in ((n_items,), (n_users, n_items)):
        raise ValueError(
            f"propensity must be (n_items,) = ({n_items},) or (n_users, n_items) = "
            f"({n_users}, {n_items}), got {theta.shape}"
        )
    if not np.all((theta > 0) & (theta <= 1)):
        raise ValueError("propensities must lie in (0, 1]; floor them (e.g. features.propensity)")
    return theta


@dataclass
class RelMFResult:
    embeddings: MFEmbeddings
    model: MatrixFactorization
    info: dict = field(default_factory=dict)


def initial_bias(
    loss: RelMFLoss, n_positive: int, n_pairs: int, theta_positive: np.ndarray
) -> float:
    """logit of the mean weight w over D (the loss-minimising constant for the squared loss)."""
    if loss.estimator == "naive":
        mass = float(n_positive)
    else:
        floor = loss.clip if loss.estimator == "clipped" else 0.0
        mass = float(np.sum(1.0 / np.maximum(theta_positive, floor)))
    p = min(max(mass / n_pairs, 1e-4), 0.5)
    return math.log(p / (1 - p))


def fit_relmf(
    train_pairs: Pairs,
    n_users: int,
    n_items: int,
    propensity: np.ndarray,
    cfg: RelMFConfig,
    validation: RankingValidation | None = None,
    n_levels: int = 1,
    logger=None,
    progress: bool = False,
    accelerator: str = "cpu",
    strategy: Strategy = "single",
    devices: int = 1,
    num_nodes: int = 1,
) -> RelMFResult:
    """Train MF with ``cfg.loss`` on the positives ``train_pairs`` (every other pair is Y = 0).

    ``propensity`` θ: shape (n_items,) or (n_users, n_items), values in (0, 1]. With a
    ``validation`` (e.g. :class:`evaluation.validation.IPSDCG` over the validation positives: its
    ``users`` are ranked each epoch), training stops early on its ``monitor`` and the best epoch is
    returned; without, the last epoch after ``max_epochs``. ``strategy`` / ``devices`` /
    ``num_nodes``: :func:`models.fitting.train` (``scale.train``).
    """
    theta = check_propensity(propensity, n_users, n_items)
    indptr, indices = csr_from_pairs(train_pairs, n_users, n_items)
    if indices.size == 0:
        raise ValueError("no training positives: Rel-MF needs some Y = 1 pairs")
    seed_everything(cfg.seed)
    pos_users = np.repeat(np.arange(n_users), np.diff(indptr))
    pos_theta = theta[pos_users, indices] if theta.ndim == 2 else theta[indices]
    bias = initial_bias(cfg.loss, indices.size, n_users * n_items, pos_theta)
    model = MatrixFactorization(n_users, n_items, cfg.dim, cfg.init_std, bias)
    module = RelMFModule(model, cfg, indptr, indices, theta, validation)
    batches = TensorBatches(
        (torch.arange(n_users),), cfg.batch_users, shuffle=True, seed=cfg.seed, shard=True
    )
    valid_batches = None
    if validation is not None:
        if validation.users.size == 0:
            raise ValueError("the validation set holds no positives")
        valid_batches = TensorBatches((torch.as_tensor(validation.users),), 1024, shuffle=False)
    trained = train(
        module,
        batches,
        valid_batches,
        max_epochs=cfg.max_epochs,
        monitor=None if validation is None else validation.monitor,
        mode="max",
        patience=cfg.patience,
        logger=logger,
        progress=progress,
        accelerator=accelerator,
        strategy=strategy,
        devices=devices,
        num_nodes=num_nodes,
    )
    info: dict = {"epochs_run": trained.epochs_run, "train_seconds": trained.seconds}
    if validation is not None:
        info["best_epoch"] = trained.best_epoch
        info[f"best_{validation.monitor.replace('/', '_')}"] = trained.best_score
    info.update(
        {
            "n_positives": int(indices.size),
            "n_pairs": n_users * n_items,
            "initial_global_bias": bias,
            "device": trained.device,
            "world_size": trained.world_size,
        }
    )
    model = module.model.cpu()
    return RelMFResult(MFEmbeddings.from_model(model, n_levels), model, info)
