"""Open Bandit Dataset: the value of the uniform-random policy estimated from the Thompson-sampling
log by every estimator of the selection study, against the random log's click rate.

    python -m experiments.obd                 # all / men / women, 2000 resamples (≈ 2–5 min)

Per campaign the bts log (10 000 rounds, obp==0.4.1's sample, fetched into ``--cache-dir``) is the
log; the target is π_e(a | k) = 1 / n_items at every slot (items indexed over both logs); the truth
is the random log's click rate, shown with its exact Clopper–Pearson 95 % interval (about 40
clicks: the truth itself is uncertain by ±30 %). Every estimator of :mod:`evaluation.ope_suite`
gives its estimate, percentile and Korn–Graubard intervals (the whole procedure re-run per
resample) and its chosen λ and s; every setting is chosen from the bts log alone. The recommended
estimator (:data:`evaluation.ope_suite.RECOMMENDED`) was fixed by the simulation study
(``python -m experiments.ope_selection``) before this command ever ran. Writes
``<out>/obd_ope.{md,json}`` with the estimates beside the relative errors of the Open Bandit
Pipeline's estimators on the same data (issue 13).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from evaluation.binomial import clopper_pearson, kish_effective_size
from evaluation.ope_suite import RECOMMENDED, run_suite
from experiments.ope_selection import markdown, setting_label
from features.sources.obd import OBDConfig, logged_rounds

OUT = Path("results")
# Relative errors of OBP's estimators on the same data, as measured in issue 13 (all / men / women).
OBP_REL_ERROR = {
    "IPW": {"all": 0.38, "men": 0.35, "women": 0.62},
    "SNIPW": {"all": 0.39, "men": 0.31, "women": 0.48},
    "best DR": {"all": 0.12, "men": 0.26, "women": 1.73},
}


def load_campaign(campaign: str, cache: Path) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """(bts arrays ``reward, pscore, item, position``, the random log's clicks, n_items) of one
    campaign; items are indexed over both logs."""
    bts = logged_rounds(OBDConfig(policy="bts", campaign=campaign), cache)
    rnd = logged_rounds(OBDConfig(policy="random", campaign=campaign), cache)
    items = sorted(set(bts["item_id"]) | set(rnd["item_id"]), key=int)
    index = {item: j for j, item in enumerate(items)}
    arrays = {
        "reward": bts["click"].to_numpy(),
        "pscore": bts["pscore"].to_numpy(),
        "item": np.array([index[i] for i in bts["item_id"]], dtype=np.int64),
        "position": bts["position"].to_numpy().astype(np.int64),
    }
    return arrays, rnd["click"].to_numpy(), len(items)


def campaign_rows(campaign: str, cache: Path, n_bootstrap: int) -> tuple[dict, list, dict]:
    """(the campaign's sizes, one row per estimator, the recommended estimator's check)."""
    t0 = time.perf_counter()
    arr, random_clicks, n_items = load_campaign(campaign, cache)
    policy = np.full((n_items, 3), 1.0 / n_items)
    truth = float(random_clicks.mean())
    t_lo, t_hi = clopper_pearson(float(random_clicks.sum()), random_clicks.size)
    w = (1.0 / n_items) / arr["pscore"]
    records = run_suite(**arr, evaluation_policy=policy, n_bootstrap=n_bootstrap, seed=0)
    sizes = {
        "campaign": campaign, "items": n_items, "bts clicks": int(arr["reward"].sum()),
        "bts CTR": float(arr["reward"].mean()), "random clicks": int(random_clicks.sum()),
        "truth (random CTR)": truth, "truth 95% CP low": t_lo, "truth 95% CP high": t_hi,
        "max w": float(w.max()), "mean w": float(w.mean()), "Kish ESS": kish_effective_size(w),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    rows, check = [], {}
    for name, rec in records.items():
        row = {
            "campaign": campaign,
            "estimator": f"**{name}**" if name == RECOMMENDED else name,
            "estimate": rec.estimate,
            "raw": rec.raw,
            "pct low": rec.pct_low,
            "pct high": rec.pct_high,
            "KG low": rec.kg_low,
            "KG high": rec.kg_high,
            "rel. error": abs(rec.estimate - truth) / truth,
            "truth in pct": "yes" if rec.pct_low <= truth <= rec.pct_high else "no",
            "truth in KG": "yes" if rec.kg_low <= truth <= rec.kg_high else "no",
            "λ": setting_label(rec.lambda_),
            "s": setting_label(rec.prior_strength),
        }
        rows.append(row)
        if name == RECOMMENDED:
            obp = OBP_REL_ERROR["best DR"][campaign]
            check = {
                "campaign": campaign, "estimator": name, "estimate": rec.estimate,
                "interval": f"[{rec.pct_low:.5f}, {rec.pct_high:.5f}]", "truth": truth,
                "rel. error": row["rel. error"], "OBP best DR": obp,
                "≤ OBP best DR": "yes" if row["rel. error"] <= obp else "no",
                "in [0,1]": "yes" if 0 <= rec.estimate <= 1 else "no",
                "truth in interval": row["truth in pct"], "λ": row["λ"], "s": row["s"],
            }  # fmt: skip
    return sizes, rows, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("data/external"))
    parser.add_argument("--campaigns", nargs="+", default=["all", "men", "women"])
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sizes, rows, checks = [], [], []
    start = time.perf_counter()
    for campaign in args.campaigns:
        size, campaign_table, check = campaign_rows(campaign, args.cache_dir, args.n_bootstrap)
        sizes.append(size)
        rows += campaign_table
        checks.append(check)
        print(f"obd {campaign}: {size['seconds']:.0f}s", flush=True)
    cols = ["campaign", "estimator", "estimate", "pct low", "pct high", "KG low", "KG high",
            "rel. error", "truth in pct", "truth in KG", "λ", "s"]  # fmt: skip
    obp = [{"estimator": f"OBP {k} (issue 13)", **v} for k, v in OBP_REL_ERROR.items()]
    text = (
        "Value of the uniform-random policy from the bts log (OBD sample, obp==0.4.1); truth = the "
        f"random log's CTR. Bootstrap: {args.n_bootstrap} resamples of the whole procedure. "
        f"Recommended estimator (fixed by the simulation study before this run): "
        f"**{RECOMMENDED}**.\n\n"
        + markdown(sizes, list(sizes[0]), 4)
        + "\n\nThe recommended estimator beside OBP's best DR (relative error |V̂ − V| / V):\n\n"
        + markdown(checks, list(checks[0]), 3)
        + "\n\nOBP's relative errors on the same data (issue 13):\n\n"
        + markdown(obp, ["estimator", *args.campaigns], 2)
        + "\n\nEvery estimator:\n\n"
        + markdown(rows, cols, 4)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "obd_ope.md").write_text(text + "\n")
    summary = {
        "n_bootstrap": args.n_bootstrap,
        "campaigns": args.campaigns,
        "recommended": RECOMMENDED,
        "sizes": sizes,
        "checks": checks,
        "rows": rows,
    }
    (args.out / "obd_ope.json").write_text(json.dumps(summary, indent=1, default=float))
    print(text)
    print(f"\nobd: {time.perf_counter() - start:.0f}s → {args.out}/obd_ope.{{md,json}}")


if __name__ == "__main__":
    main()
