"""The LightningModule that owns Rel-MF's loss over user blocks, its optimiser and validation."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch

from models.optim import rows_l2, sparse_dense
from models.relmf.config import RelMFConfig
from models.relmf.loss import relmf_loss
from models.relmf.network import MatrixFactorization

# (validation users (U,), their top-k items (U, k), training positives excluded) -> metrics named
# without "valid/"; ``k`` is the attribute of the same name.
RankingValidation = Callable[[np.ndarray, np.ndarray], dict[str, float]]


class RelMFModule(L.LightningModule):
    """Owns the Rel-MF loss, the optimiser and the validation IPS-DCG@k.

    Training batches are user blocks ``(users,)``; each is scored against every item and the loss
    is the mean of the per-pair Rel-MF loss over the block, an unbiased estimate of the loss over D.
    Validation ranks the catalogue for each validation user (training positives excluded) and logs
    the metrics of ``validation`` on those top-k lists (e.g. :class:`evaluation.validation.IPSDCG`,
    the IPS-DCG@k of the validation positives).
    """

    def __init__(
        self,
        model: MatrixFactorization,
        cfg: RelMFConfig,
        indptr: np.ndarray,
        indices: np.ndarray,
        propensity: np.ndarray,
        validation: RankingValidation | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.loss = cfg.loss
        self.register_buffer("indptr", torch.as_tensor(indptr, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "indices", torch.as_tensor(indices, dtype=torch.int64), persistent=False
        )
        self.register_buffer("theta", torch.as_tensor(propensity), persistent=False)
        self.validation = validation
        self._tops: list[tuple[np.ndarray, np.ndarray]] = []

    def targets(self, users: torch.Tensor) -> torch.Tensor:
        """Dense Y rows of ``users`` against every item, shape (B, n_items), from the CSR."""
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        offsets = torch.arange(rows.numel(), device=users.device) - first
        y = torch.zeros(len(users), self.model.n_items, device=users.device)
        y[rows, self.indices[starts[rows] + offsets]] = 1.0
        return y

    def propensity_rows(self, users: torch.Tensor) -> torch.Tensor:
        return self.theta[users] if self.theta.dim() == 2 else self.theta.unsqueeze(0)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (users,) = batch
        logits = self.model.score_users(users)
        loss = relmf_loss(self.loss, logits, self.targets(users), self.propensity_rows(users))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        if self.cfg.weight_decay > 0:  # Adam's coupled L2 on the block's (sparse) user rows
            m = self.model
            loss = loss + self.cfg.weight_decay * rows_l2(m.user(users), m.user_bias(users))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.validation is None:
            return
        (users,) = batch
        scores = self.model.score_users(users).masked_fill(self.targets(users) > 0, -torch.inf)
        top = torch.topk(scores, min(self.validation.k, scores.shape[1]), dim=1).indices
        self._tops.append((users.cpu().numpy(), top.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        if not self._tops or self.validation is None:
            return
        users = np.concatenate([u for u, _ in self._tops])
        top = np.concatenate([t for _, t in self._tops])
        self._tops.clear()
        k = self.validation.k
        if top.shape[1] < k:  # a catalogue smaller than k
            top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
        for name, value in self.validation(users, top).items():
            self.log(f"valid/{name}", float(np.nan_to_num(value, nan=0.0)), prog_bar=True)

    def configure_optimizers(self):
        """RowAdam (models.optim) on the user tables (their L2 ``weight_decay`` is a loss term on
        the block's rows, see ``training_step``), Adam with ``weight_decay`` on the item tables and
        bias."""
        cfg = self.cfg
        return sparse_dense(
            self.model,
            cfg.lr,
            lambda named: torch.optim.Adam(
                [p for _, p in named], lr=cfg.lr, weight_decay=cfg.weight_decay
            ),
        )
