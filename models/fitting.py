"""The one Lightning fit loop of every model family: seed, train, early-stop, keep the best epoch.

Each family builds its network and LightningModule (``models/<family>/``) and calls :func:`train`;
the module logs the monitored validation metric (e.g. ``valid/auc_product``), early stopping watches
it, and the weights of the best epoch are loaded back before returning.

``strategy="ddp"`` trains data-parallel (docs/scaling-out.md): launched from one process, Lightning
spawns ``devices`` ranks and returns rank 0's result to the caller; launched by
torchrun or SLURM (their environment variables set), every process is one rank and every rank
returns the same best weights. The training batches shard themselves by rank
(:class:`models.data.TensorBatches`); validation runs on every rank over all validation rows, so
every rank computes the same monitored value and takes the same early-stopping decision.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import IterableDataset

Strategy = Literal["single", "ddp"]


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
    validation), wall-clock seconds, the device it ran on and the number of ranks."""

    epochs_run: int
    seconds: float
    device: str
    best_epoch: int | None = None
    best_score: float | None = None
    world_size: int = 1
    ranks_agree: bool = True  # every rank ended training with the same weights


def launched_externally() -> bool:
    """Whether this process is already one rank of a job (torchrun, SLURM ``srun``): Lightning then
    reads the rank from the environment instead of launching processes itself."""
    return "LOCAL_RANK" in os.environ or (
        "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ
    )


def global_rank() -> int:
    """This process's rank in the job (0 outside distributed training)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def _strategy(strategy: Strategy, accelerator: str):
    if strategy == "single":
        return "auto"
    if strategy != "ddp":
        raise ValueError(f"unknown training strategy {strategy!r}: single | ddp")
    # gloo on GPUs too: the id tables' gradients are sparse, and NCCL has no sparse all-reduce
    # ("NCCL does not support all_reduce with sparse tensors", seen on an H200); gloo all-reduces
    # CUDA sparse tensors through host memory
    if launched_externally():
        return DDPStrategy(process_group_backend="gloo")
    # spawn, never fork: a forked rank inherits the parent's thread pools (Polars, OpenMP) in
    # whatever state they were in, and aborted with "malloc(): unaligned tcache chunk detected"
    # once in CI; CUDA cannot be forked at all once initialised
    return DDPStrategy(start_method="spawn", process_group_backend="gloo")


class _FitReport(Callback):
    """Puts the epochs run, and whether every rank ended with the same weights, into
    ``callback_metrics``: the trainer state Lightning sends back from rank 0 to the process that
    launched the ranks."""

    def on_train_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        metrics["fit/epochs_run"] = torch.tensor(float(trainer.current_epoch))
        if trainer.world_size > 1:
            digest = weights_digest(pl_module)
            digests = [None] * trainer.world_size
            dist.all_gather_object(digests, digest)
            metrics["fit/ranks_agree"] = torch.tensor(float(len(set(digests)) == 1))


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of ``module``'s state dict (names and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    strategy: Strategy = "single",
    devices: int = 1,
    num_nodes: int = 1,
) -> Trained:
    """Fit ``module`` for up to ``max_epochs``; returns what happened.

    With ``valid_batches`` and ``monitor``, every epoch is validated, training stops after
    ``patience`` epochs without improvement of ``monitor`` (``mode`` max or min), and the module ends
    with the weights of the best epoch (checkpointed under ``checkpoint_dir``, default a temporary
    directory). Without, the module keeps the last epoch's weights. ``eval_every`` validates every
    that many epochs (``patience`` then counts validations). ``best_epoch`` is 0-based: the best
    weights are those after ``best_epoch + 1`` epochs.

    ``strategy="ddp"`` runs ``devices`` ranks on each of ``num_nodes`` machines (see the module
    docstring); the batch size of ``train_batches`` stays the global one, each rank taking its share.
    """
    if strategy == "single" and (devices != 1 or num_nodes != 1):
        raise ValueError("devices and nodes > 1 need strategy ddp")
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
        callbacks.append(_FitReport())
        trainer = L.Trainer(
            max_epochs=max_epochs,
            limit_val_batches=None if validate else 0,
            log_every_n_steps=max(1, min(50, len(train_batches))),
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=_strategy(strategy, accelerator),
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
        epochs = int(trainer.callback_metrics["fit/epochs_run"])
        world = devices * num_nodes if strategy == "ddp" else 1
        agree = bool(trainer.callback_metrics.get("fit/ranks_agree", torch.tensor(1.0)) == 1)
        trained = Trained(
            epochs, seconds, str(trainer.strategy.root_device), world_size=world, ranks_agree=agree
        )
        if not agree:
            raise RuntimeError("the ranks ended data-parallel training with different weights")
        if validate:
            best = None
            if global_rank() == 0:  # the checkpoint lies on rank 0's disk
                best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
                best = {
                    "state_dict": best["state_dict"],
                    "epoch": int(best["epoch"]),
                    "score": _best_score(best),
                }
            if dist.is_available() and dist.is_initialized():  # torchrun: every rank continues
                box = [best]
                dist.broadcast_object_list(box, src=0)
                best = box[0]
            module.load_state_dict(best["state_dict"])
            trained.best_epoch = best["epoch"]
            trained.best_score = best["score"]
    return trained


def _best_score(checkpoint: dict) -> float:
    """The monitored best score stored in a checkpoint by :class:`ModelCheckpoint`."""
    for state in checkpoint.get("callbacks", {}).values():
        if "best_model_score" in state and state["best_model_score"] is not None:
            return float(state["best_model_score"])
    raise ValueError("the checkpoint holds no best score")
