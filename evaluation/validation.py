"""Validation metrics that choose a model's training epoch (early stopping), one per family.

Each is a callable the family's LightningModule calls after every validation pass (models/*/module.py
says with what), plus the ``monitor`` name and ``mode`` early stopping watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evaluation.ips import IPSRankingMetrics
from evaluation.metrics import auc
from models.data import Pairs


@dataclass(frozen=True)
class LevelAUC:
    """GNOLR's criterion (methods.md §1): the AUC of P(level ≥ c) against ``level ≥ c`` for each
    level, and their product — the monitor. A level without both classes counts as 0.5."""

    names: Sequence[str]
    monitor: str = "valid/auc_product"
    mode: Literal["max", "min"] = "max"

    def __call__(self, logits: np.ndarray, levels: np.ndarray) -> dict[str, float]:
        aucs = [
            float(np.nan_to_num(auc(logits[:, c], levels >= c + 1), nan=0.5))
            for c in range(logits.shape[1])
        ]
        out = {f"auc/{name}": value for name, value in zip(self.names, aucs, strict=True)}
        out["auc_product"] = float(np.prod(aucs))
        return out


@dataclass(frozen=True)
class IPSDCG:
    """Rel-MF's criterion: the IPS-DCG@k (:class:`evaluation.ips.IPSRankingMetrics`) of the
    validation positives ``valid``, whose users are ranked each epoch; ``propensity`` θ is
    (n_items,) or (n_users, n_items)."""

    valid: Pairs
    propensity: np.ndarray
    k: int = 5
    floor: float = 0.01
    mode: Literal["max", "min"] = "max"
    users: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.unique(self.valid.users))

    @property
    def monitor(self) -> str:
        return f"valid/ips_dcg_at_{self.k}"

    def __call__(self, users: np.ndarray, top: np.ndarray) -> dict[str, float]:
        theta = self.propensity
        pos = (
            theta[self.valid.users, self.valid.items]
            if theta.ndim == 2
            else theta[self.valid.items]
        )
        metric = IPSRankingMetrics(self.k, self.floor)
        value = metric.evaluate(top, users, self.valid.users, self.valid.items, pos)
        return {f"ips_dcg_at_{self.k}": value[f"ips_dcg_at_{self.k}"]}


@dataclass(frozen=True)
class LoveAUC:
    """P[Love]'s extra validation metric: the AUC of the corrected logits against the loves (the
    monitor is the module's own validation log loss)."""

    monitor: str = "valid/love_log_loss"
    mode: Literal["max", "min"] = "min"

    def __call__(self, logits: np.ndarray, loves: np.ndarray) -> dict[str, float]:
        return {"love_auc": float(np.nan_to_num(auc(logits, loves), nan=0.5))}
