"""Stage `plove_sweep`: the love-weight trade-off of the blended ranking (simulator only).

Re-ranks GNOLR's top ``candidates`` by w_rel·l_T + w_love·logit(P[Love]) for each w_love and
measures the realised love and purchase rates, coverage and novelty (evaluation/policies.py).
Settings: ``params.yaml: plove_sweep``. Writes, atomically, data/metrics/plove/love_weight_sweep.json
(summary), love_weight_sweep.csv and one love_weight_sweep_c<candidates>.csv per curve (DVC plots),
and logs an MLflow run (stage=plove_sweep, model=plove). On a log without the truth or without a
trained P[Love] it writes the reason and empty plots instead.
"""

from __future__ import annotations

import sys

import mlflow

from evaluation.policies import skip_reason, sweep
from pipelines.outputs import markdown_table, write_csv, write_json
from pipelines.params import load_params
from pipelines.plove_evaluator import OUT, PLOVE, WORLD, pipeline_setting
from pipelines.tracking import log_plot, start_run

COLUMNS = ["candidates", "w_rel", "w_love", "love_rate", "predicted_love", "overestimate"]
COLUMNS += ["purchase_rate", "coverage", "novelty", "love_lift", "purchase_change", "guardrail_ok"]


def main() -> None:
    params = load_params()
    cfg = params.plove_sweep
    curves = [OUT / f"love_weight_sweep_c{c}.csv" for c in cfg.candidates]
    if reason := skip_reason(WORLD, PLOVE):
        write_json(OUT / "love_weight_sweep.json", {"skipped": reason})
        for path in (OUT / "love_weight_sweep.csv", *curves):
            write_csv(path, [], COLUMNS)
        print(f"plove sweep: skipped — {reason}")
        return
    setting = pipeline_setting(cfg.users, cfg.k, cfg.seed)
    rows, summary = sweep(setting, cfg)
    write_csv(OUT / "love_weight_sweep.csv", rows)
    for candidates, path in zip(cfg.candidates, curves, strict=True):
        write_csv(path, [r for r in rows if r["candidates"] == candidates])
    write_json(OUT / "love_weight_sweep.json", summary)
    with start_run(params, "plove_sweep", "plove-sweep", model="plove"):
        for path in (OUT / "love_weight_sweep.csv", *curves):
            log_plot(path)
        mlflow.log_dict(summary, "plove/love_weight_sweep.json")

    fmt = {c: ".5f" for c in ("love_rate", "predicted_love", "purchase_rate")}
    fmt |= {"coverage": ".3f", "novelty": ".2f", "love_lift": "+.1%", "purchase_change": "+.1%"}
    fmt |= {"w_rel": "g", "w_love": "g", "overestimate": ".2f"}
    print(markdown_table(rows, COLUMNS, fmt))
    print(
        f"\n{len(setting.users)} users, K={setting.k}; each block re-ranks GNOLR's top `candidates` "
        f"items, its last row by P[Love] alone (w_rel = 0). Largest love rate with a purchase drop "
        f"≤ {cfg.max_purchase_drop:.0%}, per candidate count: "
        f"{summary['best_w_love_within_guardrail']} → {OUT}/love_weight_sweep.csv"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"plove_sweep failed: {exc}")
