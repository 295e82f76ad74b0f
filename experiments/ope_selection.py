"""Estimator selection: every off-policy estimator on simulated OBD-like logs with known truth.

    python -m experiments.ope_selection                                  # 10 000 and 100 000 rounds
    python -m experiments.ope_selection --sizes 10000 --seeds 250 --first-seed 250   # a chunk
    python -m experiments.ope_selection --summary-only                   # re-summarise the records

Logs come from :mod:`experiments.bandit_simulator` (80 items, 3 slots, batch Thompson sampling,
Monte Carlo propensities, uniform-random target; the truth is known exactly). Per log size and
seed, every estimator of :mod:`evaluation.ope_suite` gives its projected estimate, its unprojected
value, the chosen λ and s and two 95 % intervals (percentile bootstrap of the whole procedure and
Korn–Graubard) from ``--n-bootstrap`` paired resamples. Records are appended to
``<records>/selection_<n><tag>.jsonl`` as they are made (a rerun skips the seeds already there, so a
long study runs in chunks). The summary per estimator: bias, RMSE (absolute and relative to the mean
truth, with a 95 % interval from a bootstrap over seeds, and the share of seed resamples in which it
is at most the best estimator's), the median absolute relative error, coverage and mean width of
each interval, the share of logs whose unprojected estimate left [0, 1], and the most frequent
chosen λ and s. The recommended estimator is the one with the lowest RMSE at the smallest size.
Writes ``<out>/ope_selection<tag>.{md,json}``. The truth is used for reporting only: no estimator
sees it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from evaluation.ope_suite import RECOMMENDED, run_suite
from experiments.bandit_simulator import SimConfig, simulate_log, weight_summary

RECORDS = Path("data/experiments/ope_selection")
OUT = Path("results")
COLUMNS = [
    "estimator", "rel. bias", "rel. RMSE", "rel. RMSE 95% CI", "P(RMSE ≤ best's)",
    "median |rel. err|", "coverage pct", "width pct", "coverage KG", "width KG",
    "outside [0,1] raw", "λ (mode)", "s (mode)",
]  # fmt: skip


def fmt_value(v) -> str:
    """A table cell: ∞, nan, 4 significant digits below 1e-3, else 4 decimals."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞" if v == math.inf else ("−∞" if v == -math.inf else "nan")
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"
    return str(v)


def markdown(rows: list[dict], columns: list[str], digits: int = 4) -> str:
    """A Markdown table of ``rows`` in ``columns`` (floats with ``digits`` decimals)."""

    def cell(v) -> str:
        if isinstance(v, float) and math.isfinite(v):
            return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
        return fmt_value(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def setting_label(v) -> str:
    """A chosen λ or s as text (∞ for infinity, - for none)."""
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:g}" if isinstance(v, float) else str(v)


def run_setting(cfg: SimConfig, seeds: range, n_bootstrap: int, path: Path) -> float:
    """Append one JSON line per seed of ``seeds`` not yet in ``path``; returns the seconds spent."""
    done = set()
    if path.exists():
        done = {json.loads(line)["seed"] for line in path.read_text().splitlines() if line}
    policy = np.full((cfg.n_items, cfg.n_positions), 1.0 / cfg.n_items)
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for seed in seeds:
            if seed in done:
                continue
            t0 = time.perf_counter()
            log = simulate_log(cfg, seed)
            records = run_suite(
                log.reward, log.pscore, log.item, log.position, policy, n_bootstrap, 0.05, seed
            )
            row = {
                "seed": seed,
                "n_rounds": cfg.n_rounds,
                "n_bootstrap": n_bootstrap,
                "truth": log.truth,
                "logger_value": log.logger_value,
                "weights": weight_summary(log.pscore, cfg.n_items, log.reward),
                "seconds": time.perf_counter() - t0,
                "estimators": {k: vars(v) for k, v in records.items()},
            }
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            if seed % 25 == 0:
                print(f"n={cfg.n_rounds} seed {seed}: {row['seconds']:.1f}s "
                      f"(elapsed {time.perf_counter() - start:.0f}s)", flush=True)  # fmt: skip
    return time.perf_counter() - start


def summarise(path: Path, n_resamples: int = 1000) -> tuple[list[dict], dict]:
    """Per-estimator summary of one log size (rows sorted by RMSE) and its metadata.

    RMSE intervals and ``P(RMSE ≤ best's)`` come from a paired bootstrap over seeds
    (``n_resamples``, seed 0): the share of resamples in which the estimator's RMSE is at most the
    RMSE of the estimator with the lowest RMSE on all seeds.
    """
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    truth = np.array([r["truth"] for r in rows])
    names = list(rows[0]["estimators"])
    sq_err = np.array(
        [[(r["estimators"][m]["estimate"] - r["truth"]) ** 2 for m in names] for r in rows]
    )  # (seeds, estimators)
    picks = np.random.default_rng(0).integers(0, len(rows), (n_resamples, len(rows)))
    boot_rmse = np.sqrt(np.stack([sq_err[p].mean(axis=0) for p in picks]))  # (B, estimators)
    best = int(np.argmin(sq_err.mean(axis=0)))
    gap = boot_rmse - boot_rmse[:, [best]]
    out = []
    for j, name in enumerate(names):
        rec = [r["estimators"][name] for r in rows]
        est = np.array([x["estimate"] for x in rec])
        raw = np.array([x["raw"] for x in rec])
        err = est - truth
        lo, hi = np.quantile(boot_rmse[:, j], [0.025, 0.975]) / truth.mean()
        row = {
            "estimator": name,
            "bias": float(err.mean()),
            "rel. bias": float(err.mean() / truth.mean()),
            "RMSE": float(np.sqrt((err**2).mean())),
            "rel. RMSE": float(np.sqrt((err**2).mean()) / truth.mean()),
            "rel. RMSE 95% CI": f"[{lo:.3f}, {hi:.3f}]",
            "P(RMSE ≤ best's)": float(np.mean(gap[:, j] <= 0)),
            "median |rel. err|": float(np.median(np.abs(err) / truth)),
            "outside [0,1] raw": float(np.mean((raw < 0) | (raw > 1))),
        }
        for tag, lo_key, hi_key in (("pct", "pct_low", "pct_high"), ("KG", "kg_low", "kg_high")):
            lows = np.array([x[lo_key] for x in rec])
            highs = np.array([x[hi_key] for x in rec])
            covered = (lows <= truth) & (truth <= highs)
            row[f"coverage {tag}"] = float(np.mean(covered))
            row[f"coverage {tag} 95% CI"] = _wilson(int(covered.sum()), covered.size)
            row[f"width {tag}"] = float(np.mean(highs - lows) / truth.mean())
        lams = [x["lambda_"] for x in rec]
        if not all(isinstance(v, float) and math.isnan(v) for v in lams):
            common = Counter(lams).most_common(2)
            row["λ (mode)"] = ", ".join(f"{setting_label(v)}×{c}" for v, c in common)
            s_mode = Counter(x["prior_strength"] for x in rec).most_common(1)[0][0]
            row["s (mode)"] = setting_label(s_mode)
        out.append(row)
    out.sort(key=lambda r: r["RMSE"])
    meta = {
        "n_rounds": rows[0]["n_rounds"],
        "seeds": len(rows),
        "n_bootstrap": rows[0].get("n_bootstrap"),
        "mean truth": float(truth.mean()),
        "mean logger value": float(np.mean([r["logger_value"] for r in rows])),
        "mean clicks": float(np.mean([r["weights"]["clicks"] for r in rows])),
        "median ESS share": float(np.median([r["weights"]["ess_share"] for r in rows])),
        "median max weight": float(np.median([r["weights"]["w_max"] for r in rows])),
        "mean seconds per log": float(np.mean([r["seconds"] for r in rows])),
    }
    return out, meta


def _wilson(k: int, n: int, z: float = 1.96) -> str:
    """95 % Wilson interval of a coverage k / n, as text."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"[{centre - half:.3f}, {centre + half:.3f}]"


def report(paths: dict[int, Path]) -> tuple[str, dict]:
    """The Markdown report and JSON summary of the records at ``paths`` (log size → file)."""
    text, summary = [], {}
    for n in sorted(paths):
        rows, meta = summarise(paths[n])
        summary[n] = {"meta": meta, "rows": rows}
        header = ", ".join(
            f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in meta.items()
        )
        text.append(f"### {n} rounds\n\n{header}\n\n" + markdown(rows, COLUMNS, 3))
    smallest = min(summary)
    best = summary[smallest]["rows"][0]
    rec = next(r for r in summary[smallest]["rows"] if r["estimator"] == RECOMMENDED)
    text.append(
        f"Lowest RMSE at {smallest} rounds: **{best['estimator']}** (rel. RMSE "
        f"{best['rel. RMSE']:.3f}). The project's recommended estimator "
        f"(evaluation.doubly_robust.recommended_estimator) is **{RECOMMENDED}**: rel. RMSE "
        f"{rec['rel. RMSE']:.3f} {rec['rel. RMSE 95% CI']}, coverage of the percentile interval "
        f"{rec['coverage pct']:.3f} {rec['coverage pct 95% CI']}, Korn–Graubard "
        f"{rec['coverage KG']:.3f}."
        + ("" if best["estimator"] == RECOMMENDED else " **These records do not confirm it.**")
    )
    summary["recommended"] = RECOMMENDED
    summary["lowest_rmse"] = best["estimator"]
    return "\n\n".join(text), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[500, 100], help="per size")
    parser.add_argument("--n-bootstrap", type=int, nargs="+", default=[200, 100], help="per size")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--corrupt-pscores", type=int, default=0,
                        help="rounds per log whose logged propensity is set to 1e-6")  # fmt: skip
    parser.add_argument("--tag", default="", help="suffix of the record and report files")
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    paths = {n: args.records / f"selection_{n}{args.tag}.jsonl" for n in args.sizes}
    if not args.summary_only:
        for i, n in enumerate(args.sizes):
            seeds = args.seeds[min(i, len(args.seeds) - 1)]
            boot = args.n_bootstrap[min(i, len(args.n_bootstrap) - 1)]
            cfg = SimConfig(n_rounds=n, corrupt_pscores=args.corrupt_pscores)
            span = range(args.first_seed, args.first_seed + seeds)
            seconds = run_setting(cfg, span, boot, paths[n])
            print(
                f"n={n}: seeds {span.start}–{span.stop - 1} in {seconds / 60:.1f} min", flush=True
            )
    text, summary = report({n: p for n, p in paths.items() if p.exists()})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"ope_selection{args.tag}.md").write_text(text + "\n")
    (args.out / f"ope_selection{args.tag}.json").write_text(
        json.dumps(summary, indent=1, default=float)
    )
    print(text)


if __name__ == "__main__":
    main()
