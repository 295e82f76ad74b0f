"""The GNOLR nested ordinal loss (methods.md §1).

With cumulative logits ``l_c = γ_c·s_c − a_c`` (c = 1..T) the model says ``P(k > c) = σ(l_c)``,
``P(k > 0) = 1`` and ``P(k > T+1) = 0``. Sub-task t collapses the ordinal class k (k = level + 1)
to ``k̃_t = min(k, t+1)`` and scores it with thresholds 1..t only:

    L_t = −log P_t(k̃_t),  P_t(j) = P(k > j−1) − P(k > j) for j ≤ t,  P_t(t+1) = P(k > t).

The nested loss is ``mean over samples of Σ_t L_t``; the full-NLL ablation (GNOLR-V1) keeps only
``L_T``; the multi-task BCE baseline uses ``Σ_c BCE(σ(l_c), 1{level ≥ c})``. For T = 1 all three
reduce to binary cross-entropy on ``σ(l_1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.relmf.config import RelMFLoss
from models.relmf.loss import relmf_loss


def subtask_nll(logits: torch.Tensor, level: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample negative log-likelihoods of every sub-task, shape (B, T).

    ``logits`` (B, T) are the cumulative logits l_1..l_T; ``level`` (B,) holds the deepest level
    reached, 0..T (0 = impression without feedback). Middle classes use the probability difference
    clamped at ``eps`` (it can be ≤ 0 when the ordering constraint on γ is broken); the end classes
    use the exact ``softplus`` forms.
    """
    if logits.dim() != 2 or level.dim() != 1 or logits.shape[0] != level.shape[0]:
        raise ValueError(
            f"expected logits (B, T) and level (B,), got {tuple(logits.shape)}, {tuple(level.shape)}"
        )
    n_levels = logits.shape[1]
    t = torch.arange(1, n_levels + 1, device=logits.device)
    passed = torch.minimum(level.long().unsqueeze(1), t.unsqueeze(0))  # thresholds passed, (B, T)
    first = F.softplus(logits[:, :1]).expand(-1, n_levels)  # k̃ = 1: −log(1 − σ(l_1))
    last = F.softplus(-logits)  # k̃ = t + 1: −log σ(l_t)
    nll = torch.where(passed == 0, first, last)
    if n_levels > 1:
        cum = torch.sigmoid(logits)
        middle = -torch.log(torch.clamp(cum[:, :-1] - cum[:, 1:], min=eps))  # class m+1, m = 1..T−1
        idx = torch.clamp(passed - 1, 0, n_levels - 2)
        inside = (passed > 0) & (passed < t.unsqueeze(0))
        nll = torch.where(inside, torch.gather(middle, 1, idx), nll)
    return nll


def gnolr_loss(
    logits: torch.Tensor, level: torch.Tensor, kind: str = "nested", eps: float = 1e-6
) -> torch.Tensor:
    """Mean over samples of Σ_t L_t (``nested``), of L_T alone (``full``), or of Σ_c BCE (``bce``)."""
    if kind == "bce":
        reached = level.unsqueeze(1) >= torch.arange(1, logits.shape[1] + 1, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, reached.to(logits.dtype), reduction="none")
        return bce.sum(dim=1).mean()
    if kind not in ("nested", "full"):
        raise ValueError(f"unknown GNOLR loss {kind!r}; use nested, full or bce")
    nll = subtask_nll(logits, level, eps)
    return nll.sum(dim=1).mean() if kind == "nested" else nll[:, -1].mean()


def listwise_loss(
    user_vectors: list[torch.Tensor], item_vectors: list[torch.Tensor], level: torch.Tensor
) -> torch.Tensor:
    """In-batch softmax per level: Σ_c mean over rows with level ≥ c of −log softmax_j(q_u·v_j)[i].

    ``user_vectors[c]`` (B, D_c) and ``item_vectors[c]`` (B, D_c) are the level-c query and item
    vectors of the batch's aligned pairs (their inner product is γ_c·s_c); the other items of the
    batch serve as negatives.
    """
    total = level.new_zeros((), dtype=user_vectors[0].dtype)
    for c, (q, v) in enumerate(zip(user_vectors, item_vectors, strict=True), start=1):
        rows = torch.nonzero(level >= c).squeeze(1)
        if rows.numel() == 0:
            continue
        scores = q[rows] @ v.T  # (P, B)
        total = total + F.cross_entropy(scores, rows)
    return total


def ips_level_loss(
    logits: torch.Tensor, level: torch.Tensor, propensity: torch.Tensor, loss: RelMFLoss
) -> torch.Tensor:
    """Σ_c of a Rel-MF loss (``models.relmf.loss.relmf_loss``) on σ(l_c) against 1{level ≥ c}.

    Each level's head is trained as an exposure-debiased classifier with the row's propensity θ.
    """
    reached = level.unsqueeze(1) >= torch.arange(1, logits.shape[1] + 1, device=logits.device)
    theta = propensity.to(logits.dtype)
    return sum(
        relmf_loss(loss, logits[:, c], reached[:, c].to(logits.dtype), theta)
        for c in range(logits.shape[1])
    )
