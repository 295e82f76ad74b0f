"""Fit GNOLR: thresholds from base rates, γ validated, Lightning training, best epoch kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data import Interactions, TensorBatches
from models.fitting import Validation, seed_everything, train
from models.gnolr.config import GNOLRConfig, resolve_gamma, thresholds_from_base_rates
from models.gnolr.module import GNOLRModule
from models.gnolr.network import GNOLR, GNOLREmbeddings


@dataclass
class FitResult:
    embeddings: GNOLREmbeddings
    model: GNOLR
    info: dict = field(default_factory=dict)


def fit_gnolr(
    train_rows: Interactions,
    valid_rows: Interactions,
    n_users: int,
    n_items: int,
    base_rates: Sequence[float],
    level_names: Sequence[str],
    cfg: GNOLRConfig,
    validation: Validation | None = None,
    logger=None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    accelerator: str = "auto",
    user_features: dict[str, np.ndarray] | None = None,
    item_features: dict[str, np.ndarray] | None = None,
) -> FitResult:
    """Train GNOLR on ``train_rows``, early-stop on ``valid_rows``, return the best epoch's model.

    Thresholds are fixed at a_c = −logit(base rate of level ≥ c); γ is validated against them
    before any training starts. ``validation`` (called with the validation logits (n, T) and levels)
    chooses the epoch, e.g. :class:`evaluation.validation.LevelAUC` (the product of per-level AUCs,
    the paper's criterion); without one, the validation loss does.
    """
    if cfg.loss == "ips" and (train_rows.propensity is None or valid_rows.propensity is None):
        raise ValueError("gnolr.loss = ips needs each row's propensity in the training data")
    thresholds = thresholds_from_base_rates(base_rates)
    gamma = resolve_gamma(
        cfg.gamma,
        thresholds,
        level_names,
        scoring=cfg.scoring,
        ordered=cfg.loss not in ("bce", "ips"),
    )
    seed_everything(cfg.seed)
    model = GNOLR(n_users, n_items, thresholds, gamma, cfg, user_features, item_features)
    module = GNOLRModule(model, cfg, validation)
    monitor, mode = (
        (validation.monitor, validation.mode) if validation is not None else ("valid/loss", "min")
    )
    trained = train(
        module,
        TensorBatches(train_rows.tensors(), cfg.batch_size, shuffle=True, seed=cfg.seed),
        TensorBatches(valid_rows.tensors(), 65536, shuffle=False),
        max_epochs=cfg.max_epochs,
        monitor=monitor,
        mode=mode,
        patience=cfg.patience,
        logger=logger,
        progress=progress,
        accelerator=accelerator,
        checkpoint_dir=checkpoint_dir,
    )
    model = module.model.cpu()
    info = {
        "gamma": gamma.tolist(),
        "thresholds": thresholds.tolist(),
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "monitor": monitor,
        f"best_{monitor.replace('/', '_')}": trained.best_score,
        "train_seconds": trained.seconds,
        "train_samples_per_second": len(train_rows.users)
        * trained.epochs_run
        / max(trained.seconds, 1e-9),
        "device": trained.device,
    }
    return FitResult(GNOLREmbeddings.from_model(model), model, info)


def fit_per_level(
    train_rows: Interactions,
    valid_rows: Interactions,
    n_users: int,
    n_items: int,
    base_rates: Sequence[float],
    level_names: Sequence[str],
    cfg: GNOLRConfig,
    validation_for: type | None = None,
    **fit_kwargs,
) -> list[FitResult]:
    """The per-level baseline: one single-level BCE two-tower per level c, on 1{level ≥ c}.

    ``validation_for`` builds each level's validation from its one level name (e.g.
    :class:`evaluation.validation.LevelAUC`).
    """
    cfg = cfg.model_copy(update={"loss": "bce"})
    fits = []
    for c, name in enumerate(level_names, start=1):
        tr, va = (
            Interactions(x.users, x.items, (x.levels >= c).astype(np.int64), x.propensity)
            for x in (train_rows, valid_rows)
        )
        validation = None if validation_for is None else validation_for([name])
        fits.append(
            fit_gnolr(
                tr,
                va,
                n_users,
                n_items,
                [base_rates[c - 1]],
                [name],
                cfg,
                validation,
                **fit_kwargs,
            )
        )
    return fits
