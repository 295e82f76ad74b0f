"""GNOLR's configuration and the validation of its link: thresholds from base rates, γ per level.

Pure configuration (pydantic) and NumPy: importing it costs no deep-learning framework, so
params.yaml validates in a second (pipelines/params.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.relmf.config import RelMFLoss


class GNOLRConfig(BaseModel):
    """Architecture and training settings of GNOLR (params.yaml → ``gnolr``)."""

    model_config = ConfigDict(extra="forbid")

    tower: Literal["mlp", "id"] = Field(
        "mlp",
        description="mlp: id (+ side-feature) embedding → per-level MLP heads; id: one id "
        "embedding per head and nothing else (the plain retrieval tower; users without any "
        "training row get a zero vector and are ranked by the item bias)",
    )
    embedding_dim: int = Field(64, ge=1, description="id embedding size inside each tower")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="per-level MLP widths")
    dim: int = Field(32, ge=1, description="d, size of each level's sub-embedding")
    scale: Literal["shared", "per_head"] = Field(
        "shared",
        description="shared: l_c = γ_c·s_c − a_c, γ capped by the thresholds (the paper's form); "
        "per_head: l_c = Σ_{j≤c} γ_j·cos_j − a_c, γ_1 free, γ_{c+1} = (a_{c+1} − a_c)·σ(ρ) inside "
        "its bound (network.py)",
    )
    gamma: float | list[float] | Literal["auto"] = Field(
        "auto",
        description="shared: γ, one value, one per level, or 'auto' = 0.9 × the largest shared γ "
        "that keeps P(k>c) ≥ P(k>c+1); per_head: the initial (or, without learn_gamma, fixed) "
        "γ_1, 'auto' = 4",
    )
    learn_gamma: bool = Field(
        True, description="per_head: learn γ_1 and the deeper scales (else fixed at their start)"
    )
    item_bias: Literal["none", "shared", "per_level"] = Field(
        "none",
        description="b_i added to every level's logit (shared), or a bias per level kept inside "
        "the ordering bound (per_level: nested scoring, per-head scales)",
    )
    scoring: Literal["nested", "independent", "shared"] = Field(
        "nested",
        description="s_c = Σ_{j≤c} cos_j (nested); cos_c of level c's own heads (independent, "
        "GNOLR-V0); one cosine for every level (shared, naive neural OLR)",
    )
    loss: Literal["nested", "full", "bce", "ips", "softmax", "sampled_softmax"] = Field(
        "nested",
        description="pointwise: Σ_t L_t (nested); only the full ordinal NLL L_T (full, GNOLR-V1); "
        "Σ_c BCE of P(k>c) against level ≥ c (bce, multi-task BCE); Σ_c of the Rel-MF loss "
        "``ips_loss`` with each row's propensity (ips). Listwise: per level, a full softmax over "
        "the catalogue for each positive (softmax), or over the positive and ``negatives`` items "
        "drawn from ``negative_sampler`` with log-Q correction (sampled_softmax)",
    )
    ips_loss: RelMFLoss = Field(
        default_factory=lambda: RelMFLoss(local_loss="log", non_negative=True),
        description="the naive / IPS / clipped-IPS loss used when loss = ips (methods.md §2)",
    )
    ordinal_weight: float = Field(
        0.0,
        ge=0,
        description="softmax / sampled_softmax: weight of the nested ordinal loss added on the "
        "positives and their negatives (keeps P(k>c) calibrated; 0 = off)",
    )
    negatives: int = Field(
        0,
        ge=0,
        description="items drawn per positive row at every step from the items without a "
        "training positive of the user (pointwise losses: extra level-0 rows; sampled_softmax: "
        "the sampled items); 0 = none",
    )
    negative_sampler: Literal["uniform", "popularity"] = Field(
        "uniform",
        description="sampled_softmax proposal q: uniform over the user's non-positives (no "
        "correction needed) or ∝ (training count + 1)^popularity_power (log-Q corrected)",
    )
    popularity_power: float = Field(0.75, ge=0, description="β of the popularity proposal")
    logged_negatives: bool = Field(
        True,
        description="train on the level-0 rows of the table (logged exposures without feedback); "
        "false keeps only the positives (and the sampled negatives)",
    )
    learned_thresholds: bool = Field(
        False, description="learn a = a_1 + cumsum(exp(δ)) (ordered) instead of fixing it"
    )
    threshold_pull: float = Field(
        1.0, ge=0, description="weight of the MSE pull of learned thresholds towards −logit(p_c)"
    )
    listwise_weight: float = Field(
        0.0, ge=0, description="weight of the in-batch softmax term per level (0 = off)"
    )
    use_features: bool = Field(
        True, description="add side-feature embeddings where the data has them (mlp tower)"
    )
    id_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of id embeddings zeroed in training, to learn cold start",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the head outputs")
    eps: float = Field(1e-6, gt=0, lt=0.1, description="clamp of the probability differences")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay")
    batch_size: int = Field(2048, ge=1, description="rows per step (without batch_users)")
    batch_users: int | None = Field(
        None, ge=1, description="users per step, all their rows together (None: batch_size rows)"
    )
    max_epochs: int = Field(8, ge=1)
    eval_every: int = Field(1, ge=1, description="epochs between validations")
    patience: int = Field(3, ge=1, description="early-stopping patience in validations")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> GNOLRConfig:
        ordered = self.loss not in ("bce", "ips")
        if self.scale == "per_head":
            if self.scoring == "independent" and ordered:
                raise ValueError(
                    "gnolr.scale per_head with independent scoring has no ordering bound to keep: "
                    "use scale shared (its γ check) or an unordered loss (bce, ips)"
                )
            if isinstance(self.gamma, list):
                raise ValueError("gnolr.scale per_head takes one γ (the first head's) or 'auto'")
        if self.item_bias == "per_level" and (self.scoring != "nested" or self.scale != "per_head"):
            raise ValueError("gnolr.item_bias per_level needs scoring nested and scale per_head")
        if self.loss == "ips" and self.negatives > 0:
            raise ValueError("gnolr.loss ips needs logged propensities: set negatives to 0")
        if self.loss == "sampled_softmax" and self.negatives < 1:
            raise ValueError("gnolr.loss sampled_softmax needs negatives ≥ 1 (the sampled items)")
        pointwise = self.loss in ("nested", "full", "bce", "ips") or self.ordinal_weight > 0
        if pointwise and not self.logged_negatives and self.negatives == 0:
            raise ValueError(
                "a pointwise GNOLR loss needs negatives: keep logged_negatives or set negatives ≥ 1"
            )
        return self


def thresholds_from_base_rates(base_rates: Sequence[float]) -> np.ndarray:
    """a_c = −logit(p_c), so that a zero score returns the base rate p_c."""
    p = np.asarray(base_rates, dtype=np.float64)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError(f"base rates must lie in (0, 1) to set thresholds, got {p.tolist()}")
    if np.any(np.diff(p) > 0):
        raise ValueError(f"base rates must not rise with depth, got {p.tolist()}")
    return np.log((1 - p) / p)


def max_shared_gamma(thresholds: np.ndarray) -> float:
    """The supremum of shared γ keeping the ordering: min_c (a_{c+1} − a_c); ∞ for T = 1."""
    gaps = np.diff(thresholds)
    return float(gaps.min()) if gaps.size else math.inf


def _worst_case_gap(g: np.ndarray, c: int, scoring: str) -> float:
    """The largest l_{c+1} − l_c can get before thresholds, for 0-based level c."""
    if scoring == "nested":  # s_c ∈ [−(c+1), c+1], s_{c+1} = s_c + cos_{c+1}
        return abs(g[c] - g[c + 1]) * (c + 1) + g[c + 1]
    if scoring == "independent":  # two unrelated cosines in [−1, 1]
        return g[c] + g[c + 1]
    return abs(g[c] - g[c + 1])  # shared: one cosine for every level


def resolve_gamma(
    gamma: float | list[float] | str,
    thresholds: np.ndarray,
    names: Sequence[str],
    scoring: str = "nested",
    ordered: bool = True,
) -> np.ndarray:
    """γ per level, validated so that P(k > c) ≥ P(k > c+1) for every possible embedding.

    With ``ordered=False`` (independent BCE heads, whose probabilities may cross) nothing is
    checked and ``auto`` is 4.0.

    The ordering needs ``γ_{c+1} s_{c+1} − γ_c s_c < a_{c+1} − a_c`` in the worst case. Nested
    (s_c ∈ [−c, c], s_{c+1} = s_c + cos): ``|γ_c − γ_{c+1}|·c + γ_{c+1} < a_{c+1} − a_c``, i.e.
    ``γ < a_{c+1} − a_c`` for a shared γ. Independent cosines: ``γ_c + γ_{c+1} < a_{c+1} − a_c``.
    One shared cosine: ``|γ_c − γ_{c+1}| < a_{c+1} − a_c``. ``auto`` takes 0.9 × the largest valid
    shared γ (4.0 where any is valid).
    """
    n = len(thresholds)
    if gamma == "auto" and not ordered:
        return np.full(n, 4.0)
    if gamma == "auto":
        top = {"nested": 1.0, "independent": 0.5, "shared": math.inf}[scoring] * max_shared_gamma(
            thresholds
        )
        return np.full(n, 4.0 if math.isinf(top) else 0.9 * top)
    g = (
        np.full(n, float(gamma))
        if isinstance(gamma, int | float)
        else np.asarray(gamma, dtype=np.float64)
    )
    if g.shape != (n,):
        raise ValueError(f"gamma has {g.size} values for {n} levels {list(names)}")
    if np.any(g <= 0):
        raise ValueError(f"gamma must be positive, got {g.tolist()}")
    for c in range(n - 1 if ordered else 0):
        gap = thresholds[c + 1] - thresholds[c]
        need = _worst_case_gap(g, c, scoring)
        if not need < gap:
            raise ValueError(
                f"gamma {g.tolist()} breaks the ordering P(k>c) ≥ P(k>c+1) between levels "
                f"'{names[c]}' and '{names[c + 1]}' ({scoring} scoring): it needs a worst-case logit "
                f"gap {need:.3f} < a_{names[c + 1]} − a_{names[c]} = {gap:.3f} (thresholds from "
                f"training base rates). Lower gamma or use gamma: auto."
            )
    return g


def resolve_scales(cfg: GNOLRConfig, thresholds: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The scales a GNOLR starts from: γ per level (``scale: shared``, validated by
    :func:`resolve_gamma`) or the initial γ per head (``per_head``: γ_1 = ``gamma`` or 4 for
    'auto'; deeper heads of an ordered nested model at half their bound, (a_{c+1} − a_c)/2)."""
    ordered = cfg.loss not in ("bce", "ips")
    if cfg.scale == "shared":
        return resolve_gamma(cfg.gamma, thresholds, names, cfg.scoring, ordered)
    first = 4.0 if cfg.gamma == "auto" else float(cfg.gamma)
    if first <= 0:
        raise ValueError(f"gamma must be positive, got {first}")
    n_heads = 1 if cfg.scoring == "shared" else len(thresholds)
    if cfg.scoring == "nested" and ordered:
        return np.r_[first, np.diff(thresholds) / 2]
    return np.full(n_heads, first)


def training_base_rates(
    levels: np.ndarray, n_levels: int, negatives: int, n_cells: int
) -> list[float]:
    """p_c, the share of level ≥ c among the rows a model trains on: the table's rows plus
    ``negatives`` sampled level-0 rows per positive; with no level-0 row at all (a positive-only
    table trained by a softmax) the share among ``n_cells`` (users × items) pairs."""
    levels = np.asarray(levels)
    n_pos = int((levels >= 1).sum())
    n = levels.size + negatives * n_pos
    if n == n_pos:
        n = max(n_cells, n_pos + 1)
    return [float((levels >= c).sum() / n) for c in range(1, n_levels + 1)]
