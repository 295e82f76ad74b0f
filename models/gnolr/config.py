"""GNOLR's configuration and the validation of its link: thresholds from base rates, γ per level.

Pure configuration (pydantic) and NumPy: importing it costs no deep-learning framework, so
params.yaml validates in a second (pipelines/params.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.relmf.loss import RelMFLoss


class GNOLRConfig(BaseModel):
    """Architecture and training settings of GNOLR (params.yaml → ``gnolr``)."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(64, ge=1, description="id embedding size inside each tower")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="per-level MLP widths")
    dim: int = Field(32, ge=1, description="d, size of each level's sub-embedding")
    gamma: float | list[float] | Literal["auto"] = Field(
        "auto",
        description="γ, inverse temperature: one value, one per level, or 'auto' = 0.9 × the "
        "largest shared γ that keeps P(k>c) ≥ P(k>c+1)",
    )
    scoring: Literal["nested", "independent", "shared"] = Field(
        "nested",
        description="s_c = Σ_{j≤c} cos_j (nested); cos_c of level c's own heads (independent, "
        "GNOLR-V0); one cosine for every level (shared, naive neural OLR)",
    )
    loss: Literal["nested", "full", "bce", "ips"] = Field(
        "nested",
        description="Σ_t L_t (nested); only the full ordinal NLL L_T (full, GNOLR-V1); Σ_c BCE of "
        "P(k>c) against level ≥ c (bce, multi-task BCE); Σ_c of the Rel-MF loss ``ips_loss`` with "
        "each row's propensity (ips: an exposure-debiased two-tower)",
    )
    ips_loss: RelMFLoss = Field(
        default_factory=lambda: RelMFLoss(local_loss="log", non_negative=True),
        description="the naive / IPS / clipped-IPS loss used when loss = ips (methods.md §2)",
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
        True, description="add side-feature embeddings where the data has them"
    )
    id_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of id embeddings zeroed in training, to learn cold start",
    )
    eps: float = Field(1e-6, gt=0, lt=0.1, description="clamp of the probability differences")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(2048, ge=1)
    max_epochs: int = Field(8, ge=1)
    patience: int = Field(3, ge=1, description="early-stopping patience in epochs")
    seed: int = 0


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
