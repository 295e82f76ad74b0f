"""Stage `plove_evaluator`: P[Love] as an offline evaluator of 13 ranking policies (simulator only).

For each policy: the predicted love rate (mean P[Love] of its slates), the realised one (the
simulator's truth) and off-policy estimates from the logged slates alone (SNIPS, SN-DR), with
bootstrap intervals; their correlations across policies (evaluation/policies.py). Settings:
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
    evaluate_policies,
    load_logged,
    load_setting,
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


def main() -> None:
    params = load_params()
    cfg = params.plove_evaluator
    if reason := skip_reason(WORLD, PLOVE):
        write_json(OUT / "evaluator.json", {"skipped": reason})
        write_csv(OUT / "evaluator.csv", [], ["policy", "predicted", "realised"])
        write_csv(OUT / "evaluator_ope.csv", [], OPE_COLUMNS)
        print(f"plove evaluator: skipped — {reason}")
        return
    setting = load_setting(
        FEATURES,
        WORLD,
        GNOLREmbeddings.load(GNOLR),
        PLoveScorer.load(PLOVE),
        Retriever,
        cfg.users,
        cfg.k,
        cfg.seed,
    )
    log = load_logged(FEATURES, setting.users, cfg.ope_splits)
    rows, summary = evaluate_policies(setting, cfg, log)
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

    cols = ["policy", "optimises", "predicted", "realised", "realised_lo", "realised_hi", "ratio"]
    fmt = {c: ".5f" for c in cols[2:]} | {"ratio": ".2f", "purchase": ".5f"}
    print(markdown_table(rows, [*cols, "purchase"], fmt))
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
    print(f"  → {OUT}/evaluator.csv, evaluator_ope.csv, evaluator.json")


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"plove_evaluator failed: {exc}")
