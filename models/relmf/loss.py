"""The Rel-MF family of pointwise losses for implicit feedback under exposure bias (methods.md §2).

Notation: Y_ui ∈ {0, 1} observed positive, θ_ui = P(O_ui = 1) the exposure propensity, γ_ui = P(R_ui = 1)
the relevance, R̂_ui ∈ (0, 1) the prediction. Local losses, for "relevant" and "irrelevant":

    log:      δ1(R̂) = −log R̂,      δ0(R̂) = −log(1 − R̂)
    squared:  δ1(R̂) = (1 − R̂)²,     δ0(R̂) = R̂²

Every estimator is a weighted sum ``(1/|D|) Σ_{(u,i)∈D} [ w_ui δ1(R̂_ui) + (1 − w_ui) δ0(R̂_ui) ]``
over *all* pairs D (unobserved pairs have Y = 0), with the weight on δ1:

    ideal:    w = γ                    (needs the truth; for simulations and tests)
    naive:    w = Y                    (biased: an unexposed pair counts as irrelevant)
    ips:      w = Y / θ                (unbiased when θ > 0 is right; variance ∝ γ(1/θ − γ))
    clipped:  w = Y / max(θ, M)        (biased only on pairs with θ < M; M → 0 is IPS, M = 1 naive)

Reference: Saito et al., "Unbiased Recommender Learning from Missing-Not-At-Random Implicit
Feedback", WSDM 2020 (arXiv 1909.03601).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

Estimator = Literal["naive", "ips", "clipped"]
LocalLoss = Literal["squared", "log"]


def local_losses(
    pred: torch.Tensor, local_loss: LocalLoss, from_logits: bool = True, eps: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor]:
    """(δ1, δ0) of every prediction, each shaped like ``pred``.

    ``pred`` holds logits z (R̂ = σ(z)) when ``from_logits``, else probabilities R̂, clamped to
    [eps, 1 − eps] for the log loss. The log loss on logits uses the exact forms δ1 = softplus(−z),
    δ0 = softplus(z).
    """
    if local_loss == "log":
        if from_logits:
            return F.softplus(-pred), F.softplus(pred)
        p = pred.clamp(eps, 1 - eps)
        return -torch.log(p), -torch.log1p(-p)
    if local_loss == "squared":
        p = torch.sigmoid(pred) if from_logits else pred
        return (1 - p) ** 2, p**2
    raise ValueError(f"unknown local loss {local_loss!r}; expected 'squared' or 'log'")


def ideal_loss(
    pred: torch.Tensor,
    relevance: torch.Tensor,
    local_loss: LocalLoss = "squared",
    from_logits: bool = True,
) -> torch.Tensor:
    """The ideal loss ``(1/|D|) Σ [γ δ1(R̂) + (1 − γ) δ0(R̂)]`` with true relevance γ = ``relevance``."""
    d1, d0 = local_losses(pred, local_loss, from_logits)
    return torch.mean(relevance * d1 + (1 - relevance) * d0)


class RelMFLoss(BaseModel):
    """One configurable Rel-MF loss: naive, IPS or clipped IPS, squared or log local loss.

    Per pair: ``ℓ = w δ1(R̂) + (1 − w) δ0(R̂)`` with ``w = Y`` (naive), ``Y/θ`` (ips) or
    ``Y/max(θ, M)`` (clipped); the loss is the (optionally weighted) mean of ℓ over the pairs.

    For Y = 1 and an effective propensity below 1 the weight ``1 − w`` on δ0 is negative, so with the
    log loss ℓ → −∞ as R̂ → 1 and the empirical objective is unbounded below. ``non_negative``
    bounds every per-pair loss from below: ``ℓ⁺ = max(ℓ, 0)`` (the ideal per-pair loss is never
    negative). The squared loss is bounded anyway (ℓ ≥ 1 − w), hence the default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: Estimator = Field("clipped", description="naive | ips | clipped")
    clip: float = Field(
        0.1, description="M ∈ (0, 1]: propensities below M count as M (clipped only)"
    )
    local_loss: LocalLoss = Field("squared", description="squared | log (needs care: see above)")
    non_negative: bool = Field(False, description="bound each per-pair loss below by 0")

    @field_validator("clip")
    @classmethod
    def _clip_in_unit_interval(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 < value <= 1:
            raise ValueError(f"clip M must lie in (0, 1], got {value}")
        return value

    def weights(self, y: torch.Tensor, propensity: torch.Tensor | None) -> torch.Tensor:
        """w, the weight on δ1: Y, Y/θ or Y/max(θ, M), shaped like ``y``.

        ``propensity`` (θ, broadcastable to ``y``) must lie in (0, 1]; the naive estimator ignores it.
        """
        y = y.to(torch.get_default_dtype() if not y.is_floating_point() else y.dtype)
        if self.estimator == "naive":
            return y
        if propensity is None:
            raise ValueError(f"the {self.estimator} estimator needs propensities")
        theta = propensity.to(y.dtype)
        if not bool(torch.all((theta > 0) & (theta <= 1))):
            bad = theta[~((theta > 0) & (theta <= 1))].flatten()[:3].tolist()
            raise ValueError(f"propensities must lie in (0, 1], found {bad}")
        if self.estimator == "clipped":
            theta = theta.clamp(min=self.clip)
        return y / theta

    def pointwise(
        self,
        pred: torch.Tensor,
        y: torch.Tensor,
        propensity: torch.Tensor | None = None,
        from_logits: bool = True,
    ) -> torch.Tensor:
        """ℓ (or ℓ⁺ when ``non_negative``) of every pair, shaped like ``pred``."""
        w = self.weights(y, propensity).to(pred.dtype)
        d1, d0 = local_losses(pred, self.local_loss, from_logits)
        loss = w * d1 + (1 - w) * d0
        return loss.clamp(min=0.0) if self.non_negative else loss

    def __call__(
        self,
        pred: torch.Tensor,
        y: torch.Tensor,
        propensity: torch.Tensor | None = None,
        from_logits: bool = True,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean per-pair loss; with ``sample_weight`` c, ``Σ c ℓ / Σ c`` (e.g. sampled negatives)."""
        if pred.shape != y.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and y {tuple(y.shape)} must match")
        loss = self.pointwise(pred, y, propensity, from_logits)
        if sample_weight is None:
            return loss.mean()
        c = sample_weight.to(loss.dtype)
        return (c * loss).sum() / c.sum()
