"""The LightningModule that owns P[Love]'s loss, optimiser and validation log loss."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from models.optim import sparse_dense
from models.plove.calibration import log_loss
from models.plove.config import PLoveConfig
from models.plove.network import PLoveNet, log1mexp, love_log_prob

MONITOR = "valid/love_log_loss"

# (corrected validation logits (n,), love labels (n,)) -> metrics named without "valid/".
LoveValidation = Callable[[np.ndarray, np.ndarray], dict[str, float]]


class PLoveModule(L.LightningModule):
    """BCE of P[Love] (+ ``click_weight``·BCE of the click head); the validation log loss.

    The validation log loss (the monitor of early stopping) is of the corrected probability
    (raw logit + log w) on unsampled rows; ``validation`` adds metrics of those logits and labels
    (e.g. :class:`evaluation.validation.LoveAUC`).
    """

    def __init__(
        self, model: PLoveNet, cfg: PLoveConfig, validation: LoveValidation | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.validation = validation
        self.log_rate = float(np.log(cfg.labels.negative_rate))
        self._valid: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _loss(self, batch) -> torch.Tensor:
        users, items, positions, clicks, loves, weights = batch
        heads = self.model(users, items, positions)
        log_p = love_log_prob(heads)
        loss = -(weights * (loves * log_p + (1 - loves) * log1mexp(log_p))).mean()
        if self.model.n_heads == 2 and self.cfg.click_weight > 0:
            click_loss = F.binary_cross_entropy_with_logits(heads[:, 0], clicks, weight=weights)
            loss = loss + self.cfg.click_weight * click_loss
        if self.cfg.l2 > 0:
            x, y = self.model.sides(users, items)
            loss = loss + self.cfg.l2 * ((x**2).sum((1, 2)) + (y**2).sum((1, 2))).mean()
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        users, items, positions, _, loves, _ = batch
        log_p = love_log_prob(self.model(users, items, positions))
        self._valid.append((log_p.detach().cpu(), loves.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._valid:
            return
        log_p = torch.cat([a for a, _ in self._valid]).double()
        y = torch.cat([b for _, b in self._valid]).numpy()
        self._valid.clear()
        z = (log_p - log1mexp(log_p)).numpy() + self.log_rate
        p = 1.0 / (1.0 + np.exp(-z))
        self.log(MONITOR, log_loss(p, y), prog_bar=True)
        if self.validation is not None:
            for name, value in self.validation(z, y).items():
                self.log(f"valid/{name}", value, prog_bar=True)

    def configure_optimizers(self):
        """RowAdam (models.optim) on the user and item tables (their L2 is the loss's ``l2``
        term on the batch's rows), Adam on the rest."""
        return sparse_dense(
            self.model,
            self.cfg.lr,
            lambda named: torch.optim.Adam([p for _, p in named], self.cfg.lr),
        )
