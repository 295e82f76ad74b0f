"""The LightningModule that owns GNOLR's losses, negatives, optimiser and validation.

A batch is a set of training rows ``(user, item, level[, propensity])`` — shuffled rows, or every
row of a few users (``batch_users``). At every step:

* pointwise losses (nested / full / bce / ips, or ``ordinal_weight`` > 0) score the batch's rows
  plus ``negatives`` items per positive row drawn afresh from the user's non-positives (level 0);
* ``softmax``: per level c, −l_c(u, i) + log Σ_j exp l_c(u, j) over the whole catalogue, for every
  row of level ≥ c (each distinct user is scored against the catalogue once);
* ``sampled_softmax``: the same over the positive and ``negatives`` sampled items, each logit
  corrected by −log q (log-Q: uniform q needs none; with the popularity proposal, draws that are
  one of the user's training positives are left out of the sum);
* ``listwise_weight`` adds the in-batch softmax per level; learned thresholds add their pull.

Validation: with a ``kind = "ranking"`` validation (:class:`evaluation.validation.RankingNDCG`) the
recommender that owns the network exports its vectors and is ranked with its own ``recommend``;
otherwise the validation rows' logits go to ``validation`` (e.g. :class:`LevelAUC`, the product of
per-level AUCs, the paper's criterion) and ``valid/loss`` is logged.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch

from models.fitting import is_ranking
from models.gnolr.config import GNOLRConfig
from models.gnolr.loss import gnolr_loss, ips_level_loss, listwise_loss
from models.gnolr.network import GNOLR
from models.negatives import NegativeSampler
from models.optim import sparse_dense

# (logits (n, T) of the validation rows, their levels (n,)) -> metrics named without "valid/".
LevelValidation = Callable[[np.ndarray, np.ndarray], dict[str, float]]
POINTWISE = ("nested", "full", "bce", "ips")


class GNOLRModule(L.LightningModule):
    """Trains :class:`GNOLR` on row batches (see the module docstring).

    ``sampler`` draws the negatives (needed when ``cfg.negatives`` > 0); ``owner`` is the
    recommender a ranking validation ranks with (it must have ``_export()``).
    """

    def __init__(
        self,
        model: GNOLR,
        cfg: GNOLRConfig,
        validation=None,
        sampler: NegativeSampler | None = None,
        owner=None,
    ) -> None:
        super().__init__()
        if cfg.negatives > 0 and sampler is None:
            raise ValueError("gnolr.negatives > 0 needs a negative sampler")
        self.model = model
        self.cfg = cfg
        self.validation = validation
        self.sampler = sampler
        self.owner = [owner]  # a list: the recommender is no submodule
        self._valid: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------ scoring helpers
    def _pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """l_c of aligned (user, item) pairs (n,) → (n, T), embedding each distinct id once."""
        m = self.model
        uu, ui = torch.unique(users, return_inverse=True)
        iu, ii = torch.unique(items, return_inverse=True)
        ue, ie = m.side(m.user_tower, uu), m.side(m.item_tower, iu)
        if uu.numel() * iu.numel() <= 2 * users.numel():  # dense block, then gather
            cos = torch.einsum("uhd,ihd->uih", ue, ie)[ui, ii]
        else:
            # index_select, not ue[ui]: its backward is an index_add, where indexing's sorts
            cos = (ue.index_select(0, ui) * ie.index_select(0, ii)).sum(-1)
        out = cos @ m.weights().T - m.thresholds
        bias = m.item_biases(items)
        return out if bias is None else out + bias

    def _level_loss(self, logits, levels, propensity) -> torch.Tensor:
        if self.cfg.loss == "ips":
            return ips_level_loss(logits, levels, propensity, self.cfg.ips_loss)
        kind = self.cfg.loss if self.cfg.loss in POINTWISE else "nested"
        return gnolr_loss(logits, levels, kind, self.cfg.eps)

    # ------------------------------------------------------------------ losses
    def _softmax(self, users, items, levels) -> torch.Tensor:
        m = self.model
        uu, ui = torch.unique(users, return_inverse=True)
        n_items = m.item_tower.n_ids
        ue = m.side(m.user_tower, uu)
        ie = m.side(m.item_tower, torch.arange(n_items, device=users.device))
        logits = m.catalogue_logits(ue, ie)  # (U, T, N)
        per = torch.logsumexp(logits, dim=2)[ui] - logits[ui, :, items]  # (B, T)
        return self._mean_per_level(per, levels)

    def _sampled_softmax(self, users, items, levels, negs, hit) -> torch.Tensor:
        cfg = self.cfg
        k = negs.shape[1]
        flat_u = torch.cat([users, users.repeat_interleave(k)])
        flat_i = torch.cat([items, negs.reshape(-1)])
        logits = self._pair_logits(flat_u, flat_i)
        pos, neg = logits[: users.numel()], logits[users.numel() :].view(users.numel(), k, -1)
        if cfg.negative_sampler == "popularity":
            log_q = self.sampler.log_q.to(logits.device)
            pos = pos - log_q[items][:, None]
            neg = neg - log_q[negs][:, :, None]
            neg = neg.masked_fill(hit[:, :, None], -torch.inf)
        per = torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1) - pos  # (B, T)
        return self._mean_per_level(per, levels)

    @staticmethod
    def _mean_per_level(per: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Σ_c mean of ``per[:, c]`` over the rows of level ≥ c + 1."""
        total = per.new_zeros(())
        for c in range(per.shape[1]):
            rows = levels > c
            if bool(rows.any()):
                total = total + per[rows, c].mean()
        return total

    def _loss(self, batch) -> torch.Tensor:
        cfg = self.cfg
        users, items, levels = batch[:3]
        propensity = batch[3] if len(batch) > 3 else None
        pos = levels > 0
        negs = hit = None
        if cfg.negatives > 0 and bool(pos.any()):
            if cfg.loss == "sampled_softmax" and cfg.negative_sampler == "popularity":
                negs, hit = self.sampler.popular(users[pos], cfg.negatives)
            else:
                negs = self.sampler.uniform(users[pos], cfg.negatives)
        loss = levels.new_zeros((), dtype=torch.float32)
        if cfg.loss == "softmax":
            loss = loss + self._softmax(users[pos], items[pos], levels[pos])
        elif cfg.loss == "sampled_softmax":
            loss = loss + self._sampled_softmax(users[pos], items[pos], levels[pos], negs, hit)
        pointwise_weight = 1.0 if cfg.loss in POINTWISE else cfg.ordinal_weight
        if pointwise_weight > 0:
            u, i, lev, prop = users, items, levels, propensity
            if negs is not None:
                owners = users[pos].repeat_interleave(negs.shape[1])
                keep = torch.ones(negs.numel(), dtype=torch.bool, device=negs.device)
                if hit is not None:
                    keep = ~hit.reshape(-1)
                u = torch.cat([u, owners[keep]])
                i = torch.cat([i, negs.reshape(-1)[keep]])
                lev = torch.cat([lev, lev.new_zeros(int(keep.sum()))])
            logits = self._pair_logits(u, i)
            loss = loss + pointwise_weight * self._level_loss(logits, lev, prop)
        if cfg.listwise_weight > 0:
            m = self.model
            ue, ie = m.embed(users, items)
            bias = m.item_biases(items)
            q, v = [], []
            for c in range(m.n_levels):
                qc, vc = m.level_vectors(ue, ie, c)
                if bias is not None:
                    qc = torch.cat([qc, torch.ones_like(qc[:, :1])], 1)
                    vc = torch.cat([vc, bias[:, c : c + 1]], 1)
                q.append(qc)
                v.append(vc)
            loss = loss + cfg.listwise_weight * listwise_loss(q, v, levels)
        if self.model.learned and cfg.threshold_pull > 0:
            pull = torch.mean((self.model.thresholds - self.model.base_thresholds) ** 2)
            loss = loss + cfg.threshold_pull * pull
        return loss

    # ------------------------------------------------------------------ Lightning hooks
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
        if is_ranking(self.validation):
            return
        users, items, level = batch[:3]
        logits = self.model(users, items)
        propensity = batch[3] if len(batch) > 3 else None
        if self.cfg.loss in POINTWISE:
            loss = self._level_loss(logits, level, propensity)
            self.log("valid/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        self._valid.append((logits.detach().cpu(), level.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if is_ranking(self.validation):
            self.owner[0]._export()
            for name, value in self.validation(self.owner[0]).items():
                self.log(f"valid/{name}", value, prog_bar=name.startswith("ndcg"))
            return
        if not self._valid:
            return
        logits = torch.cat([x for x, _ in self._valid]).numpy()
        level = torch.cat([y for _, y in self._valid]).numpy()
        self._valid.clear()
        if self.validation is not None:
            for name, value in self.validation(logits, level).items():
                self.log(f"valid/{name}", value, prog_bar=name.endswith("product"))

    def configure_optimizers(self):
        """RowAdam on the id tables (AdamW's decoupled decay applied to the looked-up rows),
        fused AdamW on the rest; the link's own parameters (scales, thresholds) are not decayed."""
        link = ("log_gamma", "rho", "a1", "log_gaps")
        cfg = self.cfg

        def dense(named):
            groups = [
                {"params": [p for n, p in named if n not in link]},
                {"params": [p for n, p in named if n in link], "weight_decay": 0.0},
            ]
            groups = [g for g in groups if g["params"]]
            # fused: one kernel for all tensors, on CPU too (benchmarks/results_train_speed_cpu.txt)
            return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

        return sparse_dense(self.model, cfg.lr, dense, sparse_weight_decay=cfg.weight_decay)
