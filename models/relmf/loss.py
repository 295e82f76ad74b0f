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

import torch
import torch.nn.functional as F

from models.relmf.config import LocalLoss, RelMFLoss


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


def weights(loss: RelMFLoss, y: torch.Tensor, propensity: torch.Tensor | None) -> torch.Tensor:
    """w, the weight on δ1: Y, Y/θ or Y/max(θ, M), shaped like ``y``.

    ``propensity`` (θ, broadcastable to ``y``) must lie in (0, 1]; the naive estimator ignores it.
    """
    y = y.to(torch.get_default_dtype() if not y.is_floating_point() else y.dtype)
    if loss.estimator == "naive":
        return y
    if propensity is None:
        raise ValueError(f"the {loss.estimator} estimator needs propensities")
    theta = propensity.to(y.dtype)
    if not bool(torch.all((theta > 0) & (theta <= 1))):
        bad = theta[~((theta > 0) & (theta <= 1))].flatten()[:3].tolist()
        raise ValueError(f"propensities must lie in (0, 1], found {bad}")
    if loss.estimator == "clipped":
        theta = theta.clamp(min=loss.clip)
    return y / theta


def pointwise(
    loss: RelMFLoss,
    pred: torch.Tensor,
    y: torch.Tensor,
    propensity: torch.Tensor | None = None,
    from_logits: bool = True,
) -> torch.Tensor:
    """ℓ (or ℓ⁺ when ``non_negative``) of every pair, shaped like ``pred``."""
    w = weights(loss, y, propensity).to(pred.dtype)
    d1, d0 = local_losses(pred, loss.local_loss, from_logits)
    per_pair = w * d1 + (1 - w) * d0
    return per_pair.clamp(min=0.0) if loss.non_negative else per_pair


def relmf_loss(
    loss: RelMFLoss,
    pred: torch.Tensor,
    y: torch.Tensor,
    propensity: torch.Tensor | None = None,
    from_logits: bool = True,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean per-pair loss; with ``sample_weight`` c, ``Σ c ℓ / Σ c`` (e.g. sampled negatives)."""
    if pred.shape != y.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and y {tuple(y.shape)} must match")
    per_pair = pointwise(loss, pred, y, propensity, from_logits)
    if sample_weight is None:
        return per_pair.mean()
    c = sample_weight.to(per_pair.dtype)
    return (c * per_pair).sum() / c.sum()
