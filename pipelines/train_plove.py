"""Stage `train_plove`: love labels → P[Love] (Lightning) → calibration → metrics, logged to MLflow.

Reads data/ingest/events.parquet and the id vocabularies of data/features. Writes, atomically,
data/models/plove/: scorer.npz and calibrator.json (:class:`models.plove.PLoveScorer`), model.pt
(state dict), info.json (run id, config, bucket edges, calibration choice, metrics); and
data/metrics/plove.json (AUC, log loss, NE, ECE on valid and test, raw and calibrated, overall and
per user-activity bucket) plus data/metrics/plove_reliability.csv (the test reliability curve, a
DVC plot) and plove_reliability_by_bucket.csv. MLflow run (stage=train_plove, model=plove): params,
the events as data input, Lightning's per-epoch metrics,
:func:`pipelines.tracking.plove_run_metrics`, the files under
``plove/``, both reliability CSVs as ``plots/<file name>`` and the pyfunc model ``plove``.

    python -m pipelines.train_plove [--out DIR --metrics FILE ...]   # defaults: the DVC paths
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import torch

from evaluation.calibration import (
    low_propensity_calibration,
    metrics_by_group,
    reliability_curve,
)
from evaluation.validation import LoveAUC
from features.contract import IMPRESSION, Col
from features.love_labels import downsample_negatives, love_labels, split_by_time
from models.fitting import global_rank
from models.plove.calibration import choose_calibrator
from models.plove.config import PLoveConfig
from models.plove.fit import LoveRows, bucket_codes, exposure_weights, fit_plove
from models.pyfunc import PLovePairs, log_pair_model
from pipelines.outputs import atomic_dir, write_csv, write_json
from pipelines.params import Params, load_params
from pipelines.stage_logger import stage_logger
from pipelines.tracking import log_dataset, log_plot, plove_run_metrics, start_run

EVENTS = Path("data/ingest/events.parquet")
FEATURES = Path("data/features")
OUT = Path("data/models/plove")
METRICS = Path("data/metrics/plove.json")
PLOT = Path("data/metrics/plove_reliability.csv")
RELIABILITY_COLUMNS = ["bin", "count", "predicted", "observed", "lower", "upper"]


def load_config(path: str | Path = "params.yaml") -> tuple[Params, PLoveConfig]:
    """params.yaml, validated, and its ``plove`` section."""
    params = load_params(path)
    return params, params.plove


def indexed_labels(
    events: pl.LazyFrame, users: pl.DataFrame, items: pl.DataFrame, cfg: PLoveConfig
) -> tuple[dict[str, pl.DataFrame], int]:
    """Love labels split by time, with ``user_idx, item_idx`` from the vocabularies.

    Returns the splits and the number of labelled impressions whose ids are not in the vocabularies
    (dropped).
    """
    labels = love_labels(
        events, cfg.labels.window_seconds, cfg.labels.reaction, cfg.labels.click_event
    ).collect(engine="streaming")
    if labels.height == 0:
        raise ValueError(
            "no labelled impressions: the log has no impression whose love window "
            f"({cfg.labels.window_seconds} s) ends before the end of the log"
        )
    joined = labels.join(users, on=Col.USER).join(items, on=Col.ITEM)
    return split_by_time(joined, cfg.labels.split), labels.height - joined.height


def to_rows(frame: pl.DataFrame, ips_floor: float | None = None) -> LoveRows:
    """A label frame as :class:`LoveRows`; a missing position counts as the top (0). With
    ``ips_floor`` rows carry the clipped inverse-propensity weights of :func:`exposure_weights`."""
    weights = None
    if ips_floor is not None:
        if frame[Col.PROPENSITY].null_count():
            raise ValueError(
                "plove.exposure_weighting: ips needs the logged propensity of every impression; "
                f"{frame[Col.PROPENSITY].null_count()} training impressions lack one"
            )
        weights = exposure_weights(frame[Col.PROPENSITY].to_numpy(), ips_floor)
    return LoveRows(
        frame[Col.USER_IDX].to_numpy(),
        frame[Col.ITEM_IDX].to_numpy(),
        frame[Col.POSITION].fill_null(0).to_numpy(),
        frame["click"].to_numpy(),
        frame["love"].to_numpy(),
        weights,
    )


def bucket_names(edges: np.ndarray) -> list[str]:
    """``cold`` for code 0, then the training-impression range of each quantile bucket."""
    bounds = [0, *np.ceil(np.expm1(edges)).astype(int).tolist(), None]
    names = ["cold"]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        names.append(f"{max(lo, 1)}+" if hi is None else f"{max(lo, 1)}-{hi - 1}")
    return names


def evaluate_split(
    scorer, rows: LoveRows, user_codes: np.ndarray, names: list[str], bins: int
) -> tuple[dict, np.ndarray]:
    """Raw and calibrated metrics of one split, overall and per user-activity bucket."""
    raw_logit = scorer.raw_logit(rows.users, rows.items, rows.positions)
    calibrated = scorer.calibrator.predict(raw_logit)
    raw = 1.0 / (1.0 + np.exp(-raw_logit))
    groups = user_codes[rows.users]
    return {
        "raw": metrics_by_group(raw, rows.loves, groups, names, bins),
        "calibrated": metrics_by_group(calibrated, rows.loves, groups, names, bins),
    }, calibrated


def reliability_rows(
    p: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], bins: int
) -> tuple[list[dict], list[dict]]:
    overall = reliability_curve(p, y, bins)
    by_bucket = [
        {"bucket": names[int(g)], **row}
        for g in np.unique(groups)
        for row in reliability_curve(p[groups == g], y[groups == g], bins)
    ]
    return overall, by_bucket


def calibrate_and_score(
    scorer,
    rows: dict[str, LoveRows],
    user_codes: np.ndarray,
    names: list[str],
    cfg: PLoveConfig,
    propensity: dict[str, np.ndarray] | None = None,
) -> tuple[dict, list[dict], list[dict]]:
    """Fit the calibrator on valid (chosen by cross-fitted log loss), then score valid and test.

    Sets ``scorer.calibrator``; returns the metrics and the test reliability curve (overall and per
    user-activity bucket). With the logged ``propensity`` of each split's rows (nan where none was
    logged), the calibrated metrics also hold ``low_propensity``: calibration on the split's lowest
    propensity decile (:func:`evaluation.calibration.low_propensity_calibration`), where the
    logger rarely shows the pair.
    """
    valid = rows["valid"]
    scorer.calibrator, cv_scores = choose_calibrator(
        scorer.raw_logit(valid.users, valid.items, valid.positions),
        valid.loves,
        cfg.calibration,
        cfg.calibration_folds,
        cfg.seed,
    )
    metrics: dict = {"calibration": {"method": scorer.calibrator.name, "cv_log_loss": cv_scores}}
    for split in ("valid", "test"):
        metrics[split], p = evaluate_split(scorer, rows[split], user_codes, names, cfg.ece_bins)
        prop = None if propensity is None else propensity[split]
        if prop is not None and np.isfinite(prop).any():
            metrics[split]["calibrated"]["low_propensity"] = low_propensity_calibration(
                p, rows[split].loves, prop, n_bins=cfg.ece_bins
            )
    test = rows["test"]
    curve, by_bucket = reliability_rows(p, test.loves, user_codes[test.users], names, cfg.ece_bins)
    return metrics, curve, by_bucket


def skip_reason(params: Params, events: pl.LazyFrame) -> str | None:
    """Why P[Love] cannot be trained on this log, or None when it can.

    Most logs carry no reaction events (MovieLens, OBD, a shop's click/purchase log): the stage then
    writes a *skipped* record instead of failing, and everything downstream runs without P[Love].
    """
    reaction = params.plove.labels.reaction
    if reaction not in params.contract.reactions:
        return (
            f"plove.labels.reaction {reaction!r} is not one of contract.reactions "
            f"{params.contract.reactions}"
        )
    counts = (
        events.select(pl.col(Col.EVENT).cast(pl.String))
        .filter(pl.col(Col.EVENT).is_in([IMPRESSION, reaction]))
        .group_by(Col.EVENT)
        .len()
        .collect()
    )
    found = dict(zip(counts[Col.EVENT].to_list(), counts["len"].to_list(), strict=True))
    if not found.get(reaction):
        return f"the log holds no {reaction!r} events"
    if not found.get(IMPRESSION):
        return f"the log holds no impressions to label with {reaction!r}"
    return None


def write_skipped(args: argparse.Namespace, reason: str) -> None:
    """The stage's outputs when it cannot train: the reason, and an empty reliability plot."""
    with atomic_dir(args.out) as tmp:
        write_json(tmp / "info.json", {"skipped": reason})
    write_json(args.metrics, {"skipped": reason})
    write_csv(args.plot, [], RELIABILITY_COLUMNS)
    by_bucket = args.plot.with_name(f"{args.plot.stem}_by_bucket.csv")
    write_csv(by_bucket, [], ["bucket", *RELIABILITY_COLUMNS])
    print(
        f"train_plove: skipped — {reason}; no P[Love] model is trained, the serving bundle and "
        f"/recommend work without p_love (a love weight is refused with a 400)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train and calibrate P[Love].")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--events", type=Path, default=EVENTS)
    parser.add_argument("--features", type=Path, default=FEATURES)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--metrics", type=Path, default=METRICS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)

    params, cfg = load_config(args.params)
    if reason := skip_reason(params, pl.scan_parquet(args.events)):
        write_skipped(args, reason)
        return
    users = pl.read_parquet(args.features / "users.parquet", columns=[Col.USER, Col.USER_IDX])
    items = pl.read_parquet(args.features / "items.parquet", columns=[Col.ITEM, Col.ITEM_IDX])
    splits, unknown = indexed_labels(pl.scan_parquet(args.events), users, items, cfg)
    n_users, n_items = users.height, items.height
    train = splits["train"]
    user_codes, user_edges = bucket_codes(
        np.bincount(train[Col.USER_IDX].to_numpy(), minlength=n_users), cfg.user_buckets
    )
    item_codes, item_edges = bucket_codes(
        np.bincount(train[Col.ITEM_IDX].to_numpy(), minlength=n_items), cfg.item_buckets
    )
    names = bucket_names(user_edges)
    empty = [s for s, f in splits.items() if f["love"].sum() == 0]
    if empty:
        counts = ", ".join(f"{s} {int(f['love'].sum())}" for s, f in splits.items())
        write_skipped(
            args,
            f"too few labelled loves to train, calibrate and test P[Love] (loves per split: "
            f"{counts}; none in {', '.join(empty)})",
        )
        return
    sampled = downsample_negatives(train, cfg.labels.negative_rate, cfg.labels.seed)
    rows = {s: to_rows(f) for s, f in splits.items()}

    def train_plove(logger):
        return fit_plove(
            to_rows(sampled, cfg.ips_floor if cfg.exposure_weighting == "ips" else None),
            rows["valid"],
            n_users,
            n_items,
            user_codes,
            item_codes,
            cfg,
            LoveAUC(),
            logger,
            progress=logger is not None,
            **params.scale.train.trainer_kwargs(),
        )

    if global_rank() != 0:  # one rank of a torchrun / SLURM job: train only
        train_plove(None)
        return
    with start_run(params, "train_plove", "plove") as run:
        log_dataset(args.events.parent, f"{params.source.kind}-events", [args.events.name])
        fit = train_plove(stage_logger(params, run))
        scorer = fit.scorer
        propensity = {s: f[Col.PROPENSITY].cast(pl.Float64).to_numpy() for s, f in splits.items()}
        metrics, curve, curve_by_bucket = calibrate_and_score(
            scorer, rows, user_codes, names, cfg, propensity
        )
        calibrator = scorer.calibrator
        metrics["labels"] = {
            s: {"rows": f.height, "loves": int(f["love"].sum()), "clicks": int(f["click"].sum())}
            for s, f in splits.items()
        }
        metrics["labels"]["train_sampled_rows"] = sampled.height
        metrics["labels"]["dropped_unknown_ids"] = unknown
        info = {
            **fit.info,
            "run_id": run.info.run_id,
            "config": cfg.model_dump(mode="json"),
            "user_bucket_edges_log1p": user_edges.tolist(),
            "item_bucket_edges_log1p": item_edges.tolist(),
            "user_bucket_names": names,
            "calibration": metrics["calibration"],
            "test": metrics["test"]["calibrated"]["all"],
        }
        mlflow.log_metrics(plove_run_metrics(metrics))
        with atomic_dir(args.out) as tmp:
            scorer.save(tmp)
            model = log_pair_model(
                "plove",
                PLovePairs(),
                {"scorer": str(tmp)},  # holds only scorer.npz and calibrator.json so far
                ["p_love"],
                n_users,
                n_items,
                position=True,
            )
            info["model_uri"] = model.model_uri
            torch.save(fit.model.state_dict(), tmp / "model.pt")
            write_json(tmp / "info.json", info)
            pl.DataFrame(curve).write_csv(tmp / "reliability.csv")
            pl.DataFrame(curve_by_bucket).write_csv(tmp / "reliability_by_bucket.csv")
            mlflow.log_artifacts(str(tmp), artifact_path="plove")
        write_json(args.metrics, metrics)
        by_bucket = args.plot.with_name(f"{args.plot.stem}_by_bucket.csv")
        write_csv(args.plot, curve)
        write_csv(by_bucket, curve_by_bucket)
        log_plot(args.plot)
        log_plot(by_bucket)
    t = metrics["test"]["calibrated"]["all"]
    if low := metrics["test"]["calibrated"].get("low_propensity"):
        print(
            f"train_plove: lowest-propensity decile of test (π ≤ {low['propensity_threshold']:.2g}): "
            f"predicted {low['mean_predicted']:.5f}, observed {low['observed_rate']:.5f} "
            f"[{low['observed_lo']:.5f}, {low['observed_hi']:.5f}] ({low['positives']} loves in "
            f"{low['n']}), ECE {low['ece']:.5f} = {low['ece_to_overall']:.2f}× the overall"
        )
    print(
        f"train_plove: best epoch {fit.info['best_epoch']} of {fit.info['epochs_run']}, calibration "
        f"{calibrator.name}; test AUC {t['auc']:.4f}, log loss {t['log_loss']:.5f}, NE "
        f"{t['normalized_entropy']:.4f}, ECE {t['ece']:.5f} (rate {t['observed_rate']:.5f}) → "
        f"{args.out}/, {args.metrics}, {args.plot} (MLflow run {run.info.run_id}, model "
        f"{info['model_uri']})"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"train_plove failed: {exc}")
