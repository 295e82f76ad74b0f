"""Stage `plove_evaluator`: P[Love] as an offline evaluator of 13 ranking policies (simulator only).

For each policy: the predicted love rate (mean P[Love] of its slates), the realised one (the
simulator's truth) and off-policy estimates from the logged slates alone (SNIPS, SN-DR and the
self-tuned Switch-SN-DR, its switch threshold chosen by SLOPE++ and reported), with bootstrap
intervals; their correlations across policies (evaluation/policies.py); the share of
each policy's slots on items the logger rarely showed, and the predicted rate's interval widened
by P[Love]'s validation calibration there. Settings:
``params.yaml: plove_evaluator``. Writes, atomically, data/metrics/plove/evaluator.json (the
summary), evaluator.csv (one row per policy) and evaluator_ope.csv (DVC scatter plots), and logs an
MLflow run (stage=plove_evaluator, model=plove). On a log without the truth or without a trained
P[Love] it writes the reason and empty plots instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow

from evaluation.policies import (
    OPE_ESTIMATORS,
    Setting,
    evaluate_policies,
    load_logged,
    load_setting,
    load_support_calibration,
    skip_reason,
)
from models.gnolr.network import GNOLREmbeddings
from models.plove.network import PLoveScorer
from pipelines.outputs import markdown_table, write_csv, write_json
from pipelines.params import load_params
from pipelines.tracking import log_plot, split_metrics, start_run
from serving.retrieval import Retriever

FEATURES = Path("data/features")
WORLD = Path("data/ingest/world.npz")
GNOLR = Path("data/models/gnolr/embeddings.npz")
PLOVE = Path("data/models/plove")
OUT = Path("data/metrics/plove")
OPE_COLUMNS = ["policy", "realised", "predicted"]
OPE_COLUMNS += [f"{e}{x}" for e in OPE_ESTIMATORS for x in ("", "_lo", "_hi", "_covers")]


def pipeline_setting(users: int, k: int, seed: int) -> Setting:
    """The setting both P[Love] stages evaluate in: the pipeline's features, simulated world, GNOLR
    embeddings and P[Love] model, ``users`` test users, slates of ``k``."""
    return load_setting(
        FEATURES,
        WORLD,
        GNOLREmbeddings.load(GNOLR),
        PLoveScorer.load(PLOVE),
        Retriever,
        users,
        k,
        seed,
    )


def main() -> None:
    params = load_params()
    cfg = params.plove_evaluator
    if reason := skip_reason(WORLD, PLOVE):
        write_json(OUT / "evaluator.json", {"skipped": reason})
        write_csv(OUT / "evaluator.csv", [], ["policy", "predicted", "realised"])
        write_csv(OUT / "evaluator_ope.csv", [], OPE_COLUMNS)
        print(f"plove evaluator: skipped — {reason}")
        return
    setting = pipeline_setting(cfg.users, cfg.k, cfg.seed)
    log = load_logged(FEATURES, setting.users, cfg.ope_splits)
    support = load_support_calibration(FEATURES, setting.plove, cfg.rare_quantile)
    rows, summary = evaluate_policies(setting, cfg, log, support)
    write_csv(OUT / "evaluator.csv", rows)
    write_csv(OUT / "evaluator_ope.csv", [{c: r[c] for c in OPE_COLUMNS} for r in rows])
    write_json(OUT / "evaluator.json", summary)
    with start_run(params, "plove_evaluator", "plove-evaluator", model="plove"):
        mlflow.log_metrics(
            split_metrics("test", {f"evaluator_{k}": v for k, v in summary["all"].items()})
        )
        for name in ("evaluator.csv", "evaluator_ope.csv"):
            log_plot(OUT / name)
        mlflow.log_dict(summary, "plove/evaluator.json")

    cols = ["policy", "optimises", "predicted", "widened_lo", "widened_hi", "realised", "ratio"]
    fmt = {c: ".5f" for c in cols[2:]} | {"ratio": ".2f", "rare_share": ".2f"}
    print(markdown_table(rows, [*cols, "rare_share"], fmt))
    low = summary["support"]["validation_low_propensity"]
    print(
        f"\nRarely shown: items below π = {support.threshold:.3g} (the {cfg.rare_quantile:g} "
        f"quantile of validation propensities), {summary['support']['rarely_shown_items']} of "
        f"{setting.n_items}; P[Love] there on validation: predicted {low['mean_predicted']:.5f}, "
        f"observed {low['observed_rate']:.5f} [{low['observed_lo']:.5f}, {low['observed_hi']:.5f}] "
        f"→ rarely shown slots widened by × [{support.ratio_bounds[0]:.2f}, "
        f"{support.ratio_bounds[1]:.2f}]"
    )
    print(f"\n{len(setting.users)} users, K={setting.k}, 95 % bootstrap over users:")
    for key in ("all", "without_truth", "independent"):
        c = summary[key]
        print(
            f"  {key} ({len(c['policies'])}): Pearson {c['pearson']:.3f} "
            f"[{c['pearson_lo']:.3f}, {c['pearson_hi']:.3f}], Spearman {c['spearman']:.3f} "
            f"[{c['spearman_lo']:.3f}, {c['spearman_hi']:.3f}]"
        )
    ope = summary["ope"]
    print(
        f"Off-policy estimates from {ope['n_rounds']} logged impressions ({ope['n_loves']} loves) "
        f"of these users in {'+'.join(ope['splits'])}:"
    )
    for est in OPE_ESTIMATORS:
        c = ope[est]["all"]
        print(
            f"  {est}: Spearman {c['spearman']:.3f} [{c['spearman_lo']:.3f}, "
            f"{c['spearman_hi']:.3f}], interval covers the realised rate for "
            f"{c['n_covered']}/{c['n_policies']}"
        )
    ope_cols = ["policy", "realised", "switch_dr", "switch_dr_lo", "switch_dr_hi"]
    print(
        "\nSelf-tuned Switch-SN-DR (λ chosen by SLOPE++ per policy, 95 % whole-procedure bootstrap):"
    )
    print(
        markdown_table(
            rows,
            [*ope_cols, "switch_dr_lambda", "switch_dr_covers"],
            {c: ".5f" for c in ope_cols[1:]} | {"switch_dr_lambda": "g"},
        )
    )
    print(f"  → {OUT}/evaluator.csv, evaluator_ope.csv, evaluator.json")


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"plove_evaluator failed: {exc}")
