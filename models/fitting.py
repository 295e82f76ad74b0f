"""The one Lightning fit loop of every model family: seed, train, early-stop, keep the best epoch.

Each family builds its network and LightningModule (``models/<family>/``) and calls :func:`train`;
the module logs the monitored validation metric (e.g. ``valid/auc_product``), early stopping watches
it, and the weights of the best epoch are loaded back before returning.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import IterableDataset


class Validation(Protocol):
    """A family's validation metric: what its module calls each epoch (the arguments are the
    family's, see its ``module.py``; a ``kind = "ranking"`` validation is called with the model
    itself, :class:`models.recommender.RankingValidation`), and the logged name and direction early
    stopping uses."""

    monitor: str  # e.g. "valid/auc_product"
    mode: Literal["max", "min"]

    def __call__(self, *args) -> dict[str, float]: ...


def is_ranking(validation) -> bool:
    """Whether ``validation`` ranks with the model itself (rather than reading validation logits)."""
    return getattr(validation, "kind", None) == "ranking"


def trigger_batches() -> IterableDataset:
    """One empty validation step: lets Lightning run its validation hooks (and so early stopping)
    for a validation that ranks with the model in ``on_validation_epoch_end``."""
    return _Trigger()


class _Trigger(IterableDataset):
    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield (torch.zeros(1),)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call before building the network: it draws the initial weights)."""
    L.seed_everything(seed, workers=True, verbose=False)


@dataclass
class Trained:
    """What a fit did: epochs run, the best epoch and its monitored score (None without
    validation), wall-clock seconds and the device it ran on."""

    epochs_run: int
    seconds: float
    device: str
    best_epoch: int | None = None
    best_score: float | None = None


def train(
    module: L.LightningModule,
    train_batches: IterableDataset,
    valid_batches: IterableDataset | None = None,
    *,
    max_epochs: int,
    monitor: str | None = None,
    mode: Literal["max", "min"] = "max",
    patience: int = 3,
    logger=None,
    progress: bool = False,
    accelerator: str = "auto",
    checkpoint_dir: str | Path | None = None,
    eval_every: int = 1,
) -> Trained:
    """Fit ``module`` for up to ``max_epochs``; returns what happened.

    With ``valid_batches`` and ``monitor``, every epoch is validated, training stops after
    ``patience`` epochs without improvement of ``monitor`` (``mode`` max or min), and the module ends
    with the weights of the best epoch (checkpointed under ``checkpoint_dir``, default a temporary
    directory). Without, the module keeps the last epoch's weights. ``eval_every`` validates every
    that many epochs (``patience`` then counts validations). ``best_epoch`` is 0-based: the best
    weights are those after ``best_epoch + 1`` epochs.
    """
    validate = valid_batches is not None and monitor is not None
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = []
        if validate:
            ckpt = ModelCheckpoint(
                dirpath=checkpoint_dir or tmp,
                filename="best",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                enable_version_counter=False,
            )
            callbacks = [ckpt, EarlyStopping(monitor=monitor, mode=mode, patience=patience)]
        trainer = L.Trainer(
            max_epochs=max_epochs,
            limit_val_batches=None if validate else 0,
            log_every_n_steps=max(1, min(50, len(train_batches))),
            accelerator=accelerator,
            devices=1,
            logger=logger or False,
            callbacks=callbacks,
            enable_checkpointing=validate,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=eval_every,
            deterministic=False,
        )
        start = time.perf_counter()
        trainer.fit(module, train_batches, valid_batches if validate else None)
        seconds = time.perf_counter() - start
        trained = Trained(trainer.current_epoch, seconds, str(trainer.strategy.root_device))
        if validate:
            best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
            module.load_state_dict(best["state_dict"])
            trained.best_epoch = int(best["epoch"])
            trained.best_score = float(ckpt.best_model_score)
    return trained
