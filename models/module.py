"""The LightningModule that owns GNOLR's loss, optimiser and validation metric."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch

from models.gnolr import GNOLR, GNOLRConfig
from models.losses.gnolr import gnolr_loss, ips_level_loss, listwise_loss
from models.metrics import auc

MONITOR = "valid/auc_product"


class GNOLRModule(L.LightningModule):
    """Trains :class:`GNOLR` on (user_idx, item_idx, level) batches.

    Validation logs the AUC of P(k > c) against ``level ≥ c`` for each level and their product,
    the early-stopping criterion of the paper.
    """

    def __init__(self, model: GNOLR, cfg: GNOLRConfig, level_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.level_names = list(level_names)
        self._valid: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _loss(self, batch) -> torch.Tensor:
        """The configured ordinal loss, plus the listwise term and the threshold pull when on."""
        users, items, level = batch[:3]
        user_emb, item_emb = self.model.embed(users, items)
        logits = self.model.logits_from(user_emb, item_emb)
        if self.cfg.loss == "ips":
            loss = ips_level_loss(logits, level, batch[3], self.cfg.ips_loss)
        else:
            loss = gnolr_loss(logits, level, self.cfg.loss, self.cfg.eps)
        if self.cfg.listwise_weight > 0:
            pairs = [
                self.model.level_vectors(user_emb, item_emb, c) for c in range(self.model.n_levels)
            ]
            lw = listwise_loss([q for q, _ in pairs], [v for _, v in pairs], level)
            loss = loss + self.cfg.listwise_weight * lw
        if self.model.learned and self.cfg.threshold_pull > 0:
            pull = torch.mean((self.model.thresholds - self.model.base_thresholds) ** 2)
            loss = loss + self.cfg.threshold_pull * pull
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch[0]),
        )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        users, items, level = batch[:3]
        logits = self.model(users, items)
        if self.cfg.loss == "ips":
            loss = ips_level_loss(logits, level, batch[3], self.cfg.ips_loss)
        else:
            loss = gnolr_loss(logits, level, self.cfg.loss, self.cfg.eps)
        self.log("valid/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        self._valid.append((logits.detach().cpu(), level.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._valid:
            return
        logits = torch.cat([x for x, _ in self._valid]).numpy()
        level = torch.cat([y for _, y in self._valid]).numpy()
        self._valid.clear()
        aucs = [auc(logits[:, c], level >= c + 1) for c in range(logits.shape[1])]
        for name, value in zip(self.level_names, aucs, strict=True):
            self.log(f"valid/auc/{name}", float(np.nan_to_num(value, nan=0.5)))
        self.log(MONITOR, float(np.prod(np.nan_to_num(aucs, nan=0.5))), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
