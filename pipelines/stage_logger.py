"""Lightning's MLflow logger as the training stages use it (kept out of
:mod:`pipelines.tracking`, which every stage imports, so that only the training stages pay for
importing Lightning).

A module-level class, so that DDP can pickle it into the ranks it spawns."""

from __future__ import annotations

import mlflow
from lightning.pytorch.loggers import MLFlowLogger

from pipelines.tracking import tracking_uri


class StageLogger(MLFlowLogger):
    """Writes into the stage's MLflow run, with Lightning's own ``epoch`` counter renamed
    ``train/epoch`` so every metric follows ``<split>/<metric>[/<level>]``."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        renamed = {("train/epoch" if k == "epoch" else k): v for k, v in metrics.items()}
        super().log_metrics(renamed, step)


def stage_logger(params, run: mlflow.ActiveRun) -> StageLogger:
    """A :class:`StageLogger` writing into the stage's run ``run``."""
    return StageLogger(
        experiment_name=params.mlflow.experiment,
        tracking_uri=tracking_uri(),
        run_id=run.info.run_id,
    )
