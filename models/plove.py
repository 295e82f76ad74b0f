"""P[Love]: a reward model of the love reaction per impression (methods.md §3).

Inputs of an impression (u, i, p): user and item ids, the user's activity bucket and the item's
popularity bucket (quantiles of training impressions, 0 = unseen) and the slate position p as
context. Each head h is a factorisation machine restricted to those fields:

    l_h(u, i, p) = <x_u^h, y_i^h> + b_u^h + b_i^h + c_p^h + b^h,
    x_u = E_user[u] + E_activity[bucket(u)],   y_i = E_item[i] + E_popularity[bucket(i)].

``factorised`` (default) uses two heads, P[Love] = σ(l_click)·σ(l_love|click), mirroring the funnel
"a love needs a click", so the ten times more frequent clicks (auxiliary BCE, weight
``click_weight``) teach the first factor; otherwise one head, P[Love] = σ(l). The love term is the
BCE of P[Love] itself. With negatives down-sampled at rate w the raw logit is corrected by + log w
(features.love_labels), then a calibrator fitted on held-out, unsampled data maps it to P[Love].
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from features.love_labels import LoveLabelConfig
from models.calibration import (
    CalibrationMethod,
    Calibrator,
    Identity,
    calibrator_from_dict,
    log_loss,
)
from models.data import TensorBatches
from models.metrics import auc

MONITOR = "valid/love_log_loss"


class PLoveConfig(BaseModel):
    """Labels, model, training and calibration of P[Love] (params.yaml → ``plove``)."""

    model_config = ConfigDict(extra="forbid")

    labels: LoveLabelConfig = Field(default_factory=LoveLabelConfig)
    dim: int = Field(32, ge=1, description="size of each head's user and item vectors")
    factorised: bool = Field(
        True, description="P[Love] = P(click)·P(love|click) with an auxiliary click loss"
    )
    click_weight: float = Field(1.0, ge=0, description="weight of the auxiliary click BCE")
    user_buckets: int = Field(4, ge=1, description="quantile buckets of user activity")
    item_buckets: int = Field(10, ge=1, description="quantile buckets of item popularity")
    max_position: int = Field(
        20, ge=1, description="positions at or beyond this share the last bias"
    )
    exposure_weighting: Literal["none", "ips"] = Field(
        "none",
        description="ips: weight training rows by 1/max(logged propensity, ips_floor) (normalised "
        "to mean 1), to fit the model for uniform exposure rather than the logging policy's",
    )
    ips_floor: float = Field(1e-3, gt=0, le=1, description="M of the clipped weight 1/max(π, M)")
    l2: float = Field(3e-3, ge=0, description="L2 penalty on the embedding rows of each batch")
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(16384, ge=1)
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1, description="early stopping on the valid log loss")
    calibration: CalibrationMethod = Field(
        "auto",
        description="auto = lowest cross-fitted valid log loss of identity/temperature/isotonic",
    )
    calibration_folds: int = Field(5, ge=2)
    ece_bins: int = Field(10, ge=2, description="equal-mass bins of ECE and the reliability curve")
    seed: int = 0


def bucket_codes(counts: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile buckets 1..B of positive ``counts`` (0 for a zero count) and the bucket edges.

    Edges are quantiles of log(1 + count) among positive counts (duplicates removed), so a code
    c ≥ 1 means edges[c−2] ≤ log(1 + count) < edges[c−1].
    """
    counts = np.asarray(counts, dtype=np.float64)
    seen = counts > 0
    if not seen.any():
        return np.zeros(counts.size, np.int64), np.zeros(0)
    x = np.log1p(counts)
    edges = np.unique(np.quantile(x[seen], np.linspace(0, 1, n_buckets + 1)[1:-1]))
    codes = np.where(seen, np.searchsorted(edges, x, side="right") + 1, 0)
    return codes.astype(np.int64), edges


@dataclass
class LoveRows:
    """Aligned arrays of labelled impressions: indices, 0-based position, click and love (0/1),
    and optional per-row loss weights (default 1)."""

    users: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    clicks: np.ndarray
    loves: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        arrays = (self.items, self.positions, self.clicks, self.loves)
        if any(len(a) != n for a in arrays) or (
            self.weights is not None and len(self.weights) != n
        ):
            raise ValueError("LoveRows arrays must be aligned")

    def __len__(self) -> int:
        return len(self.users)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        ints = [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (self.users, self.items)]
        pos = torch.from_numpy(np.asarray(self.positions, dtype=np.int64))
        weights = np.ones(len(self)) if self.weights is None else self.weights
        floats = [
            torch.from_numpy(np.asarray(a, dtype=np.float32))
            for a in (self.clicks, self.loves, weights)
        ]
        return (*ints, pos, *floats)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 − eᵃ) for a < 0, accurate at both ends (Mächler, 2012)."""
    a = a.clamp(max=-1e-7)
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class PLoveNet(nn.Module):
    """Head logits l_h(u, i, p), shape (B, H); H = 2 (click, love|click) or 1."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        user_buckets: np.ndarray,
        item_buckets: np.ndarray,
        cfg: PLoveConfig,
        head_bias: np.ndarray,
    ) -> None:
        super().__init__()
        self.n_heads = 2 if cfg.factorised else 1
        if len(head_bias) != self.n_heads:
            raise ValueError(f"need {self.n_heads} head biases, got {len(head_bias)}")
        self.dim = cfg.dim
        self.max_position = cfg.max_position
        width = self.n_heads * cfg.dim
        self.register_buffer("user_bucket", torch.as_tensor(user_buckets, dtype=torch.long))
        self.register_buffer("item_bucket", torch.as_tensor(item_buckets, dtype=torch.long))
        n_ub, n_ib = int(user_buckets.max()) + 1, int(item_buckets.max()) + 1
        self.user = nn.Embedding(n_users, width)
        self.item = nn.Embedding(n_items, width)
        self.activity = nn.Embedding(n_ub, width)
        self.popularity = nn.Embedding(n_ib, width)
        for table in (self.user, self.item, self.activity, self.popularity):
            nn.init.normal_(table.weight, std=0.01)
        self.user_bias = nn.Embedding(n_users, self.n_heads)
        self.item_bias = nn.Embedding(n_items, self.n_heads)
        self.activity_bias = nn.Embedding(n_ub, self.n_heads)
        self.popularity_bias = nn.Embedding(n_ib, self.n_heads)
        self.position_bias = nn.Embedding(cfg.max_position, self.n_heads)
        for table in (
            self.user_bias,
            self.item_bias,
            self.activity_bias,
            self.popularity_bias,
            self.position_bias,
        ):
            nn.init.zeros_(table.weight)
        self.bias = nn.Parameter(torch.as_tensor(head_bias, dtype=torch.float32))

    def sides(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_u, y_i) reshaped to (B, H, d)."""
        x = self.user(users) + self.activity(self.user_bucket[users])
        y = self.item(items) + self.popularity(self.item_bucket[items])
        return x.view(-1, self.n_heads, self.dim), y.view(-1, self.n_heads, self.dim)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        x, y = self.sides(users, items)
        pos = positions.clamp(0, self.max_position - 1)
        return (
            (x * y).sum(-1)
            + self.user_bias(users)
            + self.activity_bias(self.user_bucket[users])
            + self.item_bias(items)
            + self.popularity_bias(self.item_bucket[items])
            + self.position_bias(pos)
            + self.bias
        )


def love_log_prob(head_logits: torch.Tensor) -> torch.Tensor:
    """log P[Love] = Σ_h log σ(l_h) (product of the heads), shape (B,)."""
    return F.logsigmoid(head_logits).sum(-1)


class PLoveModule(L.LightningModule):
    """BCE of P[Love] (+ ``click_weight``·BCE of the click head); validation log loss and AUC.

    The validation log loss is of the corrected probability (raw logit + log w) on unsampled rows.
    """

    def __init__(self, model: PLoveNet, cfg: PLoveConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
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
        self.log("valid/love_auc", float(np.nan_to_num(auc(z, y), nan=0.5)), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)


@dataclass
class PLoveScorer:
    """A trained P[Love] reduced to numpy arrays plus its calibrator: what evaluation and serving need.

    Shapes: ``user_vectors`` (H, n_users, d), ``item_vectors`` (H, n_items, d), ``user_bias``
    (H, n_users), ``item_bias`` (H, n_items), ``position_bias`` (H, max_position), ``bias`` (H,).
    """

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    position_bias: np.ndarray
    bias: np.ndarray
    negative_rate: float = 1.0
    calibrator: Calibrator = field(default_factory=Identity)
    user_buckets: np.ndarray | None = None
    item_buckets: np.ndarray | None = None

    @property
    def n_heads(self) -> int:
        return self.bias.shape[0]

    @property
    def n_users(self) -> int:
        return self.user_vectors.shape[1]

    @property
    def n_items(self) -> int:
        return self.item_vectors.shape[1]

    def _positions(self, positions: np.ndarray | int) -> np.ndarray:
        return np.clip(np.asarray(positions, dtype=np.int64), 0, self.position_bias.shape[1] - 1)

    @staticmethod
    def _to_logit(heads: np.ndarray) -> np.ndarray:
        """logit of Π_h σ(l_h) from head logits stacked on axis 0."""
        log_p = -np.logaddexp(0.0, -heads).sum(axis=0)
        log_p = np.minimum(log_p, -1e-12)
        return log_p - np.log(-np.expm1(log_p))

    def raw_logit(
        self, users: np.ndarray, items: np.ndarray, positions: np.ndarray | int = 0
    ) -> np.ndarray:
        """Uncalibrated logit of P[Love] of aligned (user, item, position), corrected by + log w."""
        users, items = np.asarray(users), np.asarray(items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must be aligned, got {users.shape}, {items.shape}")
        positions = np.broadcast_to(self._positions(positions), users.shape)
        heads = (
            np.einsum("hnd,hnd->hn", self.user_vectors[:, users], self.item_vectors[:, items])
            + self.user_bias[:, users]
            + self.item_bias[:, items]
            + self.position_bias[:, positions]
            + self.bias[:, None]
        )
        return self._to_logit(heads.astype(np.float64)) + np.log(self.negative_rate)

    def raw_logit_matrix(
        self, users: np.ndarray, items: np.ndarray | None = None, position: int = 0
    ) -> np.ndarray:
        """Uncalibrated logits of ``users`` × ``items`` (default: every item) at one position."""
        items = np.arange(self.n_items) if items is None else np.asarray(items)
        users = np.asarray(users)
        pos = self._positions(position)
        heads = (
            np.einsum("hud,hid->hui", self.user_vectors[:, users], self.item_vectors[:, items])
            + self.user_bias[:, users, None]
            + self.item_bias[:, None, items]
            + (self.position_bias[:, pos] + self.bias)[:, None, None]
        )
        return self._to_logit(heads.astype(np.float64)) + np.log(self.negative_rate)

    def predict(
        self, users: np.ndarray, items: np.ndarray, positions: np.ndarray | int = 0
    ) -> np.ndarray:
        """Calibrated P[Love] of aligned (user, item, position) triples."""
        return self.calibrator.predict(self.raw_logit(users, items, positions))

    def predict_matrix(
        self, users: np.ndarray, items: np.ndarray | None = None, position: int = 0
    ) -> np.ndarray:
        """Calibrated P[Love] of ``users`` × ``items`` at ``position``, shape (U, n_items)."""
        raw = self.raw_logit_matrix(users, items, position)
        return self.calibrator.predict(raw.ravel()).reshape(raw.shape)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            k: getattr(self, k)
            for k in (
                "user_vectors",
                "item_vectors",
                "user_bias",
                "item_bias",
                "position_bias",
                "bias",
            )
        }
        for k in ("user_buckets", "item_buckets"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        np.savez(directory / "scorer.npz", negative_rate=np.array(self.negative_rate), **arrays)
        (directory / "calibrator.json").write_text(json.dumps(self.calibrator.to_dict()))

    @classmethod
    def load(cls, directory: str | Path) -> PLoveScorer:
        directory = Path(directory)
        with np.load(directory / "scorer.npz") as z:
            arrays = {k: z[k] for k in z.files}
        rate = float(arrays.pop("negative_rate"))
        calibrator = calibrator_from_dict(json.loads((directory / "calibrator.json").read_text()))
        return cls(**arrays, negative_rate=rate, calibrator=calibrator)

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: PLoveNet, negative_rate: float) -> PLoveScorer:
        model = model.eval().cpu()
        h, d = model.n_heads, model.dim
        ub, ib = model.user_bucket, model.item_bucket
        users = model.user.weight + model.activity(ub)
        items = model.item.weight + model.popularity(ib)
        return cls(
            user_vectors=users.view(-1, h, d).permute(1, 0, 2).numpy().copy(),
            item_vectors=items.view(-1, h, d).permute(1, 0, 2).numpy().copy(),
            user_bias=(model.user_bias.weight + model.activity_bias(ub)).T.numpy().copy(),
            item_bias=(model.item_bias.weight + model.popularity_bias(ib)).T.numpy().copy(),
            position_bias=model.position_bias.weight.T.numpy().copy(),
            bias=model.bias.numpy().copy(),
            negative_rate=negative_rate,
            user_buckets=ub.numpy().copy(),
            item_buckets=ib.numpy().copy(),
        )


def exposure_weights(propensity: np.ndarray, floor: float) -> np.ndarray:
    """ω = 1 / max(π, M), normalised to mean 1 (clipped IPS, methods.md §2)."""
    pi = np.asarray(propensity, dtype=np.float64)
    if pi.size == 0 or np.any(~np.isfinite(pi)) or np.any(pi <= 0):
        raise ValueError("IPS weighting needs a positive logged propensity on every training row")
    w = 1.0 / np.maximum(pi, floor)
    return w / w.mean()


def initial_head_bias(train: LoveRows, factorised: bool) -> np.ndarray:
    """Head biases at the base rates of the (maybe down-sampled) training sample:
    logit P(click) and logit P(love | click), or logit P(love) with one head."""
    eps = 1e-6
    love = float(np.clip(np.mean(train.loves), eps, 1 - eps))
    if not factorised:
        return np.array([np.log(love / (1 - love))])
    click = float(np.clip(np.mean(np.maximum(train.clicks, train.loves)), eps, 1 - eps))
    cond = float(np.clip(love / click, eps, 1 - eps))
    return np.array([np.log(click / (1 - click)), np.log(cond / (1 - cond))])


@dataclass
class PLoveFit:
    scorer: PLoveScorer
    model: PLoveNet
    info: dict = field(default_factory=dict)


def fit_plove(
    train: LoveRows,
    valid: LoveRows,
    n_users: int,
    n_items: int,
    user_buckets: np.ndarray,
    item_buckets: np.ndarray,
    cfg: PLoveConfig,
    logger=None,
    progress: bool = False,
    accelerator: str = "auto",
) -> PLoveFit:
    """Train P[Love] on ``train`` (maybe down-sampled), early-stop on unsampled ``valid``.

    Returns the best epoch's model as an uncalibrated :class:`PLoveScorer` (identity calibrator);
    calibrate it with :func:`models.calibration.choose_calibrator` on held-out raw logits.
    """
    if len(train) == 0 or len(valid) == 0:
        raise ValueError("P[Love] needs non-empty training and validation rows")
    if not np.any(train.loves):
        raise ValueError("the training rows hold no love reaction: nothing to learn")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    bias = initial_head_bias(train, cfg.factorised)
    model = PLoveNet(n_users, n_items, user_buckets, item_buckets, cfg, bias)
    module = PLoveModule(model, cfg)
    train_batches = TensorBatches(train.tensors(), cfg.batch_size, shuffle=True, seed=cfg.seed)
    valid_batches = TensorBatches(valid.tensors(), 65536, shuffle=False)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ModelCheckpoint(
            dirpath=tmp,
            filename="best",
            monitor=MONITOR,
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
        )
        stop = EarlyStopping(monitor=MONITOR, mode="min", patience=cfg.patience)
        trainer = L.Trainer(
            max_epochs=cfg.max_epochs,
            accelerator=accelerator,
            devices=1,
            logger=logger or False,
            callbacks=[ckpt, stop],
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(module, train_batches, valid_batches)
        seconds = time.perf_counter() - start
        best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(best["state_dict"])
    model = module.model.cpu()
    info = {
        "epochs_run": trainer.current_epoch,
        "best_epoch": int(best["epoch"]),
        "best_valid_log_loss": float(ckpt.best_model_score),
        "train_seconds": seconds,
        "train_rows": len(train),
        "train_positives": int(np.sum(train.loves)),
        "device": str(trainer.strategy.root_device),
    }
    return PLoveFit(PLoveScorer.from_model(model, cfg.labels.negative_rate), model, info)
