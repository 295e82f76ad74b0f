"""Fit GNOLR with Lightning: early stopping on the product of validation AUCs, best checkpoint kept."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from models.data import TensorBatches
from models.gnolr import (
    GNOLR,
    GNOLRConfig,
    GNOLREmbeddings,
    resolve_gamma,
    thresholds_from_base_rates,
)
from models.module import MONITOR, GNOLRModule


@dataclass
class Interactions:
    """Aligned index arrays of impression rows: user, item and deepest level reached (0..T)."""

    users: np.ndarray
    items: np.ndarray
    levels: np.ndarray
    propensity: np.ndarray | None = None  # θ per row, for loss = ips

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(users, items, levels) as int64 tensors, plus the float propensity when present."""
        ids = tuple(
            torch.from_numpy(np.array(a, dtype=np.int64))
            for a in (self.users, self.items, self.levels)
        )
        if self.propensity is None:
            return ids
        return (*ids, torch.from_numpy(np.array(self.propensity, dtype=np.float32)))


@dataclass
class FitResult:
    embeddings: GNOLREmbeddings
    model: GNOLR
    info: dict = field(default_factory=dict)


def fit_gnolr(
    train: Interactions,
    valid: Interactions,
    n_users: int,
    n_items: int,
    base_rates: Sequence[float],
    level_names: Sequence[str],
    cfg: GNOLRConfig,
    logger=None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    accelerator: str = "auto",
    user_features: dict[str, np.ndarray] | None = None,
    item_features: dict[str, np.ndarray] | None = None,
) -> FitResult:
    """Train GNOLR on ``train``, early-stop on ``valid``, and return the best epoch's model.

    Thresholds are fixed at a_c = −logit(base rate of level ≥ c); γ is validated against them
    before any training starts.
    """
    if cfg.loss == "ips" and (train.propensity is None or valid.propensity is None):
        raise ValueError("gnolr.loss = ips needs each row's propensity in the training data")
    thresholds = thresholds_from_base_rates(base_rates)
    gamma = resolve_gamma(
        cfg.gamma,
        thresholds,
        level_names,
        scoring=cfg.scoring,
        ordered=cfg.loss not in ("bce", "ips"),
    )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = GNOLR(n_users, n_items, thresholds, gamma, cfg, user_features, item_features)
    module = GNOLRModule(model, cfg, level_names)
    train_batches = TensorBatches(train.tensors(), cfg.batch_size, shuffle=True, seed=cfg.seed)
    valid_batches = TensorBatches(valid.tensors(), 65536, shuffle=False)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ModelCheckpoint(
            dirpath=checkpoint_dir or tmp,
            filename="best",
            monitor=MONITOR,
            mode="max",
            save_top_k=1,
            enable_version_counter=False,
        )
        stop = EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience)
        trainer = L.Trainer(
            max_epochs=cfg.max_epochs,
            accelerator=accelerator,
            devices=1,
            logger=logger or False,
            callbacks=[ckpt, stop],
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=False,
        )
        start = time.perf_counter()
        trainer.fit(module, train_batches, valid_batches)
        seconds = time.perf_counter() - start
        best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(best["state_dict"])
    model = module.model.cpu()
    info = {
        "gamma": gamma.tolist(),
        "thresholds": thresholds.tolist(),
        "epochs_run": trainer.current_epoch,
        "best_epoch": int(best["epoch"]),
        "best_valid_auc_product": float(ckpt.best_model_score),
        "train_seconds": seconds,
        "train_samples_per_second": len(train.users) * trainer.current_epoch / max(seconds, 1e-9),
        "device": str(trainer.strategy.root_device),
    }
    return FitResult(GNOLREmbeddings.from_model(model), model, info)


def fit_per_level(
    train: Interactions,
    valid: Interactions,
    n_users: int,
    n_items: int,
    base_rates: Sequence[float],
    level_names: Sequence[str],
    cfg: GNOLRConfig,
    **fit_kwargs,
) -> list[FitResult]:
    """The per-level baseline: one single-level BCE two-tower per level c, on 1{level ≥ c}."""
    cfg = cfg.model_copy(update={"loss": "bce"})
    fits = []
    for c, name in enumerate(level_names, start=1):
        tr, va = (
            Interactions(x.users, x.items, (x.levels >= c).astype(np.int64), x.propensity)
            for x in (train, valid)
        )
        fits.append(
            fit_gnolr(tr, va, n_users, n_items, [base_rates[c - 1]], [name], cfg, **fit_kwargs)
        )
    return fits
