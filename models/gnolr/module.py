"""The LightningModule that owns GNOLR's loss, optimiser and validation."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch

from models.gnolr.config import GNOLRConfig
from models.gnolr.loss import gnolr_loss, ips_level_loss, listwise_loss
from models.gnolr.network import GNOLR

# (logits (n, T) of the validation rows, their levels (n,)) -> metrics named without "valid/".
LevelValidation = Callable[[np.ndarray, np.ndarray], dict[str, float]]


class GNOLRModule(L.LightningModule):
    """Trains :class:`GNOLR` on (user_idx, item_idx, level[, propensity]) batches.

    Validation logs ``valid/loss`` and, with a ``validation`` function (e.g.
    :class:`evaluation.validation.LevelAUC`: the AUC per level and their product, the paper's
    early-stopping criterion), its metrics under ``valid/``.
    """

    def __init__(
        self, model: GNOLR, cfg: GNOLRConfig, validation: LevelValidation | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.validation = validation
        self._valid: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _level_loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        if self.cfg.loss == "ips":
            return ips_level_loss(logits, batch[2], batch[3], self.cfg.ips_loss)
        return gnolr_loss(logits, batch[2], self.cfg.loss, self.cfg.eps)

    def _loss(self, batch) -> torch.Tensor:
        """The configured ordinal loss, plus the listwise term and the threshold pull when on."""
        users, items, level = batch[:3]
        user_emb, item_emb = self.model.embed(users, items)
        loss = self._level_loss(self.model.logits_from(user_emb, item_emb), batch)
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
        loss = self._level_loss(logits, batch)
        self.log("valid/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        self._valid.append((logits.detach().cpu(), level.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._valid:
            return
        logits = torch.cat([x for x, _ in self._valid]).numpy()
        level = torch.cat([y for _, y in self._valid]).numpy()
        self._valid.clear()
        if self.validation is not None:
            for name, value in self.validation(logits, level).items():
                self.log(f"valid/{name}", value, prog_bar=name.endswith("product"))

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
