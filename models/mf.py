"""Matrix factorisation trained with the Rel-MF loss (methods.md §2), with Lightning.

Model: ``R̂_ui = σ(z_ui)``, ``z_ui = <U_u, V_i> + b_u + b_i + b``. Training minimises the configured
:class:`models.losses.relmf.RelMFLoss` over *all* (user, item) pairs D = users × items, with
``Y_ui = 1`` for the training positives and ``Y_ui = 0`` for every other pair. A batch is a block of
users against the whole catalogue (dense rows built from the positives' CSR), so every epoch sees
D exactly once without sampling unlabeled pairs — cheap while n_users × n_items fits in memory a
block at a time (the catalogue sizes of this project); sampling unlabeled pairs would be the next
step for far larger catalogues.

Propensity θ: an array over the full item index, shape (n_items,), or per pair, shape
(n_users, n_items). It must be the *exposure* probability P(O_ui = 1) of the pair over the training
period — e.g. the item estimate ``(n_i / max_j n_j)^η`` of :mod:`features.propensity`, or an oracle
from a simulator. A logged per-slot serving probability π(i | request) is *not* that (it is about one
slot of one request, ~1/n_items), and using it as θ would divide positives by ~1e-3.

Export: :class:`MFEmbeddings` with query vectors ``[U_u, 1]`` and item vectors ``[V_i, b_i]``: their
inner product is z_ui up to the per-user constant b_u + b, so it ranks items exactly like R̂ through
:class:`serving.retrieval.Retriever`.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from models.data import TensorBatches
from models.losses.relmf import RelMFLoss
from models.ope import IPSRankingMetrics

MONITOR = "valid/ips_dcg"


class RelMFConfig(BaseModel):
    """Rel-MF settings (params.yaml → ``relmf``)."""

    model_config = ConfigDict(extra="forbid")

    loss: RelMFLoss = Field(default_factory=RelMFLoss, description="estimator, M, local loss")
    level: int = Field(1, ge=1, description="Y = 1{level ≥ c}; 1 = click, the shallowest level")
    dim: int = Field(32, ge=1, description="embedding size d")
    init_std: float = Field(0.1, gt=0, description="std of the initial embeddings")
    lr: float = Field(0.01, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-5, ge=0, description="L2 penalty λ (Adam weight decay)")
    batch_users: int = Field(128, ge=1, description="users per batch, each against every item")
    max_epochs: int = Field(60, ge=1)
    patience: int = Field(5, ge=1, description="early stopping on the validation IPS-DCG@k")
    valid_k: int = Field(5, ge=1, description="k of the validation IPS-DCG")
    valid_floor: float = Field(0.01, gt=0, le=1, description="propensity floor of the validation")
    seed: int = 0


@dataclass
class Pairs:
    """Aligned (user, item) index arrays of positive pairs."""

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        if self.users.shape != self.items.shape or self.users.ndim != 1:
            raise ValueError("users and items must be aligned 1-d arrays")


def csr_from_pairs(pairs: Pairs, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr (n_users+1,), indices) of the distinct pairs, items sorted within each user."""
    if pairs.users.size and (
        pairs.users.min() < 0
        or pairs.users.max() >= n_users
        or pairs.items.min() < 0
        or pairs.items.max() >= n_items
    ):
        raise ValueError(f"pair indices out of range of {n_users} users × {n_items} items")
    keys = np.unique(pairs.users * n_items + pairs.items)
    counts = np.bincount(keys // n_items, minlength=n_users)
    return np.r_[0, np.cumsum(counts)].astype(np.int64), (keys % n_items).astype(np.int64)


def check_propensity(theta: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """θ as float32, shape (n_items,) or (n_users, n_items), every value in (0, 1]."""
    theta = np.asarray(theta, dtype=np.float32)
    if theta.shape not in ((n_items,), (n_users, n_items)):
        raise ValueError(
            f"propensity must be (n_items,) = ({n_items},) or (n_users, n_items) = "
            f"({n_users}, {n_items}), got {theta.shape}"
        )
    if not np.all((theta > 0) & (theta <= 1)):
        raise ValueError("propensities must lie in (0, 1]; floor them (e.g. features.propensity)")
    return theta


class MatrixFactorization(nn.Module):
    """Logits ``z_ui = <U_u, V_i> + b_u + b_i + b`` (biases start at zero, b at ``global_bias``)."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, init_std: float = 0.1, global_bias: float = 0.0
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.global_bias = nn.Parameter(torch.tensor(float(global_bias)))
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=init_std)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)

    @property
    def n_items(self) -> int:
        return self.item.num_embeddings

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """z of aligned pairs, shape (B,)."""
        dot = (self.user(users) * self.item(items)).sum(-1)
        bias = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return dot + bias + self.global_bias

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """z of ``users`` against every item, shape (B, n_items)."""
        dot = self.user(users) @ self.item.weight.T
        return dot + self.user_bias(users) + self.item_bias.weight.T + self.global_bias


class MFEmbeddings:
    """A trained MF reduced to arrays: logits for any pair and vectors for the retrieval path.

    Follows the scorer protocol of :mod:`models.baselines` (``n_levels``, ``logits``,
    ``level_vectors``): one score serves every level, like any single-target model.
    """

    def __init__(
        self,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        user_bias: np.ndarray,
        item_bias: np.ndarray,
        global_bias: float,
        n_levels: int = 1,
    ) -> None:
        if user_factors.ndim != 2 or item_factors.ndim != 2:
            raise ValueError("factors must be (n, d) matrices")
        if user_factors.shape[1] != item_factors.shape[1]:
            raise ValueError(f"factor sizes differ: {user_factors.shape}, {item_factors.shape}")
        self.user_factors = np.asarray(user_factors, np.float32)
        self.item_factors = np.asarray(item_factors, np.float32)
        self.user_bias = np.asarray(user_bias, np.float32).reshape(-1)
        self.item_bias = np.asarray(item_bias, np.float32).reshape(-1)
        self.global_bias = float(global_bias)
        self.n_levels = int(n_levels)

    @classmethod
    def from_model(cls, model: MatrixFactorization, n_levels: int = 1) -> MFEmbeddings:
        with torch.no_grad():
            return cls(
                model.user.weight.detach().cpu().numpy(),
                model.item.weight.detach().cpu().numpy(),
                model.user_bias.weight.detach().cpu().numpy(),
                model.item_bias.weight.detach().cpu().numpy(),
                float(model.global_bias.detach().cpu()),
                n_levels,
            )

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """z of aligned pairs, shape (n,)."""
        dot = np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items])
        return (dot + self.user_bias[users] + self.item_bias[items] + self.global_bias).astype(
            np.float64
        )

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """z of aligned pairs repeated for every level, shape (n, n_levels)."""
        return np.repeat(self.scores(users, items)[:, None], self.n_levels, axis=1)

    def probabilities(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """R̂ = σ(z) of aligned pairs, shape (n,)."""
        return 1.0 / (1.0 + np.exp(-self.scores(users, items)))

    def user_vectors(self) -> np.ndarray:
        """Queries ``[U_u, 1]``, shape (n_users, d + 1)."""
        ones = np.ones((len(self.user_factors), 1), np.float32)
        return np.ascontiguousarray(np.hstack([self.user_factors, ones]))

    def item_vectors(self) -> np.ndarray:
        """Items ``[V_i, b_i]``, shape (n_items, d + 1); <query, item> = z − b_u − b."""
        return np.ascontiguousarray(np.hstack([self.item_factors, self.item_bias[:, None]]))

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        return self.user_vectors(), self.item_vectors()

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            user_bias=self.user_bias,
            item_bias=self.item_bias,
            global_bias=np.array(self.global_bias),
            n_levels=np.array(self.n_levels),
        )

    @classmethod
    def load(cls, path: str | Path) -> MFEmbeddings:
        with np.load(path) as z:
            return cls(
                z["user_factors"],
                z["item_factors"],
                z["user_bias"],
                z["item_bias"],
                float(z["global_bias"]),
                int(z["n_levels"]),
            )


class RelMFModule(L.LightningModule):
    """Owns the Rel-MF loss, the optimiser and the validation IPS-DCG@k.

    Training batches are user blocks ``(users,)``; each is scored against every item and the loss
    is the mean of the per-pair Rel-MF loss over the block, an unbiased estimate of the loss over D.
    Validation ranks the catalogue for each validation user (training positives excluded) and logs
    the IPS-DCG@k of the validation positives with propensities floored (:class:`IPSRankingMetrics`).
    """

    def __init__(
        self,
        model: MatrixFactorization,
        cfg: RelMFConfig,
        indptr: np.ndarray,
        indices: np.ndarray,
        propensity: np.ndarray,
        valid: Pairs | None = None,
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
        self.valid = valid
        self.metric = IPSRankingMetrics(cfg.valid_k, cfg.valid_floor)
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
        loss = self.loss(logits, self.targets(users), self.propensity_rows(users))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        (users,) = batch
        scores = self.model.score_users(users).masked_fill(self.targets(users) > 0, -torch.inf)
        top = torch.topk(scores, min(self.cfg.valid_k, scores.shape[1]), dim=1).indices
        self._tops.append((users.cpu().numpy(), top.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        if not self._tops or self.valid is None:
            return
        users = np.concatenate([u for u, _ in self._tops])
        top = np.concatenate([t for _, t in self._tops])
        self._tops.clear()
        theta = self.theta.cpu().numpy()
        pos_theta = (
            theta[self.valid.users, self.valid.items]
            if theta.ndim == 2
            else theta[self.valid.items]
        )
        if top.shape[1] < self.metric.k:  # a catalogue smaller than k
            top = np.pad(top, ((0, 0), (0, self.metric.k - top.shape[1])), constant_values=-1)
        value = self.metric.evaluate(top, users, self.valid.users, self.valid.items, pos_theta)
        dcg = value[f"ips_dcg_at_{self.metric.k}"]
        self.log(MONITOR, float(np.nan_to_num(dcg, nan=0.0)), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )


@dataclass
class RelMFResult:
    embeddings: MFEmbeddings
    model: MatrixFactorization
    info: dict = field(default_factory=dict)


def initial_bias(
    loss: RelMFLoss, n_positive: int, n_pairs: int, theta_positive: np.ndarray
) -> float:
    """logit of the mean weight w over D (the loss-minimising constant for the squared loss)."""
    if loss.estimator == "naive":
        mass = float(n_positive)
    else:
        floor = loss.clip if loss.estimator == "clipped" else 0.0
        mass = float(np.sum(1.0 / np.maximum(theta_positive, floor)))
    p = min(max(mass / n_pairs, 1e-4), 0.5)
    return math.log(p / (1 - p))


def fit_relmf(
    train: Pairs,
    n_users: int,
    n_items: int,
    propensity: np.ndarray,
    cfg: RelMFConfig,
    valid: Pairs | None = None,
    n_levels: int = 1,
    logger=None,
    progress: bool = False,
    accelerator: str = "cpu",
) -> RelMFResult:
    """Train MF with ``cfg.loss`` on the positives ``train`` (every other pair is Y = 0).

    ``propensity`` θ: shape (n_items,) or (n_users, n_items), values in (0, 1]. With ``valid``
    positives, training stops early on the validation IPS-DCG@k and the best epoch is returned;
    without, the last epoch after ``max_epochs``.
    """
    theta = check_propensity(propensity, n_users, n_items)
    indptr, indices = csr_from_pairs(train, n_users, n_items)
    if indices.size == 0:
        raise ValueError("no training positives: Rel-MF needs some Y = 1 pairs")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    pos_users = np.repeat(np.arange(n_users), np.diff(indptr))
    pos_theta = theta[pos_users, indices] if theta.ndim == 2 else theta[indices]
    bias = initial_bias(cfg.loss, indices.size, n_users * n_items, pos_theta)
    model = MatrixFactorization(n_users, n_items, cfg.dim, cfg.init_std, bias)
    module = RelMFModule(model, cfg, indptr, indices, theta, valid)
    users = torch.arange(n_users)
    batches = TensorBatches((users,), cfg.batch_users, shuffle=True, seed=cfg.seed)
    val_batches = None
    callbacks = []
    tmp = tempfile.TemporaryDirectory()
    if valid is not None:
        if valid.users.size == 0:
            raise ValueError("the validation set holds no positives")
        val_users = torch.as_tensor(np.unique(valid.users))
        val_batches = TensorBatches((val_users,), 1024, shuffle=False)
        ckpt = ModelCheckpoint(
            dirpath=tmp.name,
            filename="best",
            monitor=MONITOR,
            mode="max",
            save_top_k=1,
            enable_version_counter=False,
        )
        callbacks = [ckpt, EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience)]
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        limit_val_batches=None if valid is not None else 0,
        log_every_n_steps=max(1, min(50, len(batches))),
        accelerator=accelerator,
        devices=1,
        logger=logger or False,
        callbacks=callbacks,
        enable_checkpointing=valid is not None,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with tmp:
        start = time.perf_counter()
        trainer.fit(module, batches, val_batches)
        seconds = time.perf_counter() - start
        info: dict = {"epochs_run": trainer.current_epoch, "train_seconds": seconds}
        if valid is not None:
            best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
            module.load_state_dict(best["state_dict"])
            info["best_epoch"] = int(best["epoch"])
            info[f"best_valid_ips_dcg_at_{cfg.valid_k}"] = float(ckpt.best_model_score)
    model = module.model.cpu()
    info.update(
        {
            "n_positives": int(indices.size),
            "n_pairs": n_users * n_items,
            "initial_global_bias": bias,
            "device": str(trainer.strategy.root_device),
        }
    )
    return RelMFResult(MFEmbeddings.from_model(model, n_levels), model, info)


def propensity_report(theta: np.ndarray, clip: float) -> dict[str, float]:
    """Summary of propensities: count, min, quantiles (1, 10, 50, 90 %), max, and
    ``fraction_below_clip``, the share with θ < M (the pairs whose weight the clipped estimator caps).
    """
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    if theta.size == 0:
        raise ValueError("no propensities to report")
    q = np.quantile(theta, [0.01, 0.1, 0.5, 0.9])
    return {
        "count": int(theta.size),
        "min": float(theta.min()),
        "q01": float(q[0]),
        "q10": float(q[1]),
        "median": float(q[2]),
        "q90": float(q[3]),
        "max": float(theta.max()),
        "clip": float(clip),
        "fraction_below_clip": float(np.mean(theta < clip)),
    }


def propensity_histogram(series: dict[str, np.ndarray], n_bins: int = 24) -> list[dict[str, float]]:
    """Rows ``{log10_theta, <name>: fraction, ...}`` of log10-binned propensities, shared bins.

    One row per bin (its centre), one fraction column per named series: a table for a DVC plot
    with ``x: log10_theta`` and ``y: [<names>]``.
    """
    logs = {
        k: np.log10(np.clip(np.asarray(v, np.float64).reshape(-1), 1e-12, 1.0))
        for k, v in series.items()
    }
    if not logs or any(v.size == 0 for v in logs.values()):
        raise ValueError("every series needs at least one propensity")
    lo = min(-1.0, *(float(np.floor(v.min())) for v in logs.values()))
    edges = np.linspace(lo, 0.0, n_bins + 1)
    rows = [{"log10_theta": round(float(c), 4)} for c in 0.5 * (edges[:-1] + edges[1:])]
    for name, v in logs.items():
        counts, _ = np.histogram(v, bins=edges)
        for row, n in zip(rows, counts, strict=True):
            row[name] = float(n) / v.size
    return rows
