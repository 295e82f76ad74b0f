"""Fit GNOLR for the pipeline stages: :class:`GNOLRRecommender` on feature-split rows.

Kept as functions with the stages' arguments (vocabulary sizes, level names); the work is done by
:class:`models.gnolr.recommender.GNOLRRecommender`, the same class the comparison command, the
tuning command and a notebook use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data import Interactions
from models.fitting import Strategy, Validation
from models.gnolr.config import GNOLRConfig
from models.gnolr.network import GNOLR, GNOLREmbeddings
from models.gnolr.recommender import GNOLRRecommender


@dataclass
class FitResult:
    embeddings: GNOLREmbeddings
    model: GNOLR
    info: dict = field(default_factory=dict)
    recommender: GNOLRRecommender | None = None


def fit_gnolr(
    train_rows: Interactions,
    valid_rows: Interactions,
    n_users: int,
    n_items: int,
    level_names: Sequence[str],
    cfg: GNOLRConfig,
    validation: Validation | None = None,
    logger=None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    accelerator: str = "auto",
    user_features: dict[str, np.ndarray] | None = None,
    item_features: dict[str, np.ndarray] | None = None,
    strategy: Strategy = "single",
    devices: int = 1,
    num_nodes: int = 1,
) -> FitResult:
    """Train GNOLR on ``train_rows``, early-stop on ``valid_rows``, return the best epoch's model.

    Thresholds are a_c = −logit(base rate of level ≥ c among the training rows); γ is validated
    against them before any training starts (``scale: shared``) or kept inside its bounds by
    construction (``per_head``). ``validation`` chooses the epoch: called with the validation logits
    (n, T) and levels (e.g. :class:`evaluation.validation.LevelAUC`, the paper's criterion), or with
    the model (a ranking validation, e.g. ``RankingNDCG``); without one, the validation loss does.
    ``strategy`` / ``devices`` / ``num_nodes``: :func:`models.fitting.train` (``scale.train``).
    """
    sized = [
        Interactions(x.users, x.items, x.levels, x.propensity, n_users, n_items)
        for x in (train_rows, valid_rows)
    ]
    rec = GNOLRRecommender(
        cfg,
        level_names,
        user_features=user_features,
        item_features=item_features,
        logger=logger,
        progress=progress,
        accelerator=accelerator,
        checkpoint_dir=checkpoint_dir,
        strategy=strategy,
        devices=devices,
        num_nodes=num_nodes,
    ).fit(sized[0], sized[1], validation)
    return FitResult(rec.embeddings, rec.model, dict(rec.fit_info), rec)


def fit_per_level(
    train_rows: Interactions,
    valid_rows: Interactions,
    n_users: int,
    n_items: int,
    level_names: Sequence[str],
    cfg: GNOLRConfig,
    validation_for=None,
    **fit_kwargs,
) -> list[FitResult]:
    """The per-level baseline: one single-level BCE two-tower per level c, on 1{level ≥ c}.

    ``validation_for`` builds each level's validation from its one level name and 1-based level
    (e.g. ``lambda name, c: LevelAUC([name])``).
    """
    cfg = cfg.model_copy(update={"loss": "bce", "item_bias": _one_level_bias(cfg.item_bias)})
    fits = []
    for c, name in enumerate(level_names, start=1):
        tr, va = (
            Interactions(x.users, x.items, (x.levels >= c).astype(np.int64), x.propensity)
            for x in (train_rows, valid_rows)
        )
        validation = None if validation_for is None else validation_for(name, c)
        fits.append(fit_gnolr(tr, va, n_users, n_items, [name], cfg, validation, **fit_kwargs))
    return fits


def _one_level_bias(item_bias: str) -> str:
    return "shared" if item_bias == "per_level" else item_bias
