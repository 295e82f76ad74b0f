"""Unbiased learning and evaluation under exposure bias, one command each.

    python -m experiments.unbiased synthetic   # (a) Rel-MF on a biased world
    python -m experiments.unbiased obd         # (b) Open Bandit Dataset
    python -m experiments.unbiased sanity      # (c) OPE estimators vs truth

Each prints Markdown tables and writes them, with JSON (and the M sweep as CSV for a DVC plot),
under ``--out`` (default data/experiments/unbiased/). Torch runs on one thread (``--threads``):
on shared CPUs more threads only oversubscribe.

(a) The world is the simulator's (:func:`features.sources.synthetic.make_world`: factor blocks,
power-law popularity, item quality) with relevance γ_ui = P(click | examined) =
``World.true_probabilities(...)["click"]``, its bias set for a mean relevance rate (0.1). Exposure
follows the simulator's popularity-biased logger π_0(i|u) ∝ exp(β·log pop_i) (β = 1 by default;
relevance-blind, and quality independent of popularity, so exposure carries no information about
relevance: pure bias). User u fills s_u slots (mean 300, ∝ lognormal activity), so the exposure
propensity — the θ of Rel-MF — is ``θ_ui = 1 − (1 − π_0(i|u))^{s_u}``, the probability that the item
is shown at least once in s_u draws. We draw O ∼ Bern(θ), R ∼ Bern(γ), Y = O·R exactly as Rel-MF
assumes, so the true θ is known. The per-slot probability π_0(i|u) (what a log records as
``propensity``) is *not* θ: it is about s_u times smaller for rare items. Rare items are the
bottom 80 % of items by training exposure (Σ_u O_ui, the distinct impressions a log would record).
Positives are split 90/10 into training and a held-out MNAR test. Models: naive, IPS and clipped
IPS over a grid of M (M = 1 is the naive loss exactly, so it reuses the naive run), with the true
θ and with the estimate (n_i / max n)^η; log loss with the non-negative bound unless marked
squared. Ground-truth metrics rank the whole catalogue (or only the rare items) for every user,
training positives excluded, through :class:`serving.retrieval.Retriever`: NDCG@10 with gain
γ_ui, Recall@10 of the relevant set {R_ui = 1} minus training positives. The MNAR test shows what
offline metrics would say: naive DCG/Recall@10 of the held-out positives and their IPS-weighted
versions (:class:`evaluation.ips.IPSRankingMetrics`, floor 0.01), with their rank correlation to the
ground truth across models.

(b) OBD sample (10 000 rounds per log, ~40 clicks each). V(uniform random) estimated from the bts
log by IPW / SNIPW / DR (with and without weight clipping λ) vs the random log's on-policy click
rate, with bootstrap CIs and the effective sample size of the weights. Then Rel-MF trained on the
bts log (user type × item) and scored on the uniform-random log (a MAR test): AUC with a CI.

(c) On the simulated world, known policy values: repeated logs from the popularity-biased logger,
the value of other policies estimated by naive / IPW / SNIPW / DR; mean error, RMSE, CI coverage.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from evaluation.bootstrap import Interval, bootstrap_counts
from evaluation.estimators import (
    DoublyRobust,
    InverseProbabilityWeighting,
    NaiveAverage,
    SelfNormalizedInverseProbabilityWeighting,
)
from evaluation.ips import IPSRankingMetrics
from evaluation.metrics import auc
from evaluation.protocol import ground_truth_ndcg, ranking_metrics
from evaluation.selection import over_seeds, verdict
from features.propensity import PropensityConfig, estimate_item_propensity, propensity_report
from features.seen import SeenItems
from features.sources.obd import OBDConfig, logged_rounds
from features.sources.synthetic import SyntheticConfig, make_world
from models.data import Pairs
from models.relmf.config import RelMFConfig, RelMFLoss
from models.relmf.fit import fit_relmf
from models.relmf.network import MFEmbeddings
from pipelines.outputs import atomic_file, write_json
from serving.recommend import ranker
from serving.retrieval import Retriever

OUT = Path("data/experiments/unbiased")
RARE_SHARE = 0.8  # rare = bottom 80 % of items by training exposure


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _solve_bias(affinity: np.ndarray, target: float) -> float:
    """b with mean σ(b + A) = target (bisection; the mean rises with b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(mid + affinity).mean() < target else (lo, mid)
    return 0.5 * (lo + hi)


def markdown(rows: list[dict], columns: list[str], digits: int = 4) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``."""

    def cell(v) -> str:
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- (a) synthetic world


@dataclass
class ExposureWorld:
    """Truth and draws of the Rel-MF world, every matrix (n_users, n_items)."""

    gamma: np.ndarray  # P(R = 1), true relevance
    theta: np.ndarray  # P(O = 1), true exposure propensity
    pi0: np.ndarray  # per-slot logging probability π_0(i | u)
    exposed: np.ndarray  # O
    relevant: np.ndarray  # R

    @property
    def clicked(self) -> np.ndarray:
        return self.exposed & self.relevant


def make_exposure_world(args: argparse.Namespace, seed: int) -> ExposureWorld:
    cfg = SyntheticConfig(
        n_users=args.n_users,
        n_items=args.n_items,
        quality_popularity_corr=0.0,
        policy_popularity=args.beta,
        policy_relevance=0.0,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    world = make_world(cfg, rng)
    users = np.arange(cfg.n_users)
    aff = world.affinity_matrix(users)
    world.biases[0] = _solve_bias(aff[0], args.relevance_rate)
    gamma = world.true_probabilities(aff)["click"]
    pi0 = _softmax_rows(np.broadcast_to(cfg.policy_popularity * world.log_popularity, gamma.shape))
    activity = rng.lognormal(0.0, 1.0, cfg.n_users)
    slots = args.slots * activity / activity.mean()
    theta = 1.0 - (1.0 - pi0) ** slots[:, None]
    theta = np.clip(theta, 1e-6, 1.0).astype(np.float32)
    exposed = rng.random(theta.shape) < theta
    relevant = rng.random(gamma.shape) < gamma
    return ExposureWorld(gamma, theta, pi0, exposed, relevant)


def _split_positives(world: ExposureWorld, seed: int, test_share: float = 0.1):
    users, items = np.nonzero(world.clicked)
    test = np.random.default_rng(seed + 1000).random(users.size) < test_share
    return Pairs(users[~test], items[~test]), Pairs(users[test], items[test])


def _seen_with(train: Pairs, n_users: int, blocked: np.ndarray) -> SeenItems:
    """Training positives of each user plus the items in ``blocked`` (for rare-only rankings)."""
    bu = np.repeat(np.arange(n_users), blocked.size)
    bi = np.tile(blocked, n_users)
    return SeenItems.from_pairs(np.r_[train.users, bu], np.r_[train.items, bi], n_users)


def synthetic_metrics(
    emb: MFEmbeddings, world: ExposureWorld, train: Pairs, test: Pairs, rare: np.ndarray, k: int
) -> dict[str, float]:
    """Ground-truth NDCG@k / Recall@k (all items and rare only) and MNAR offline Recall@k."""
    n_users, n_items = world.gamma.shape
    retriever, queries = Retriever(emb.item_vectors()), emb.user_vectors()
    users = np.arange(n_users)
    train_pos = np.zeros(world.gamma.shape, bool)
    train_pos[train.users, train.items] = True
    out: dict[str, float] = {}
    scopes = (("all", np.zeros(0, np.int64)), ("rare", np.setdiff1d(np.arange(n_items), rare)))
    for scope, blocked in scopes:
        seen = _seen_with(train, n_users, blocked)
        recommend = ranker(retriever, queries, seen)
        gt = ground_truth_ndcg(
            recommend,
            users,
            lambda u: {"rel": world.gamma[u]},
            [seen[u] for u in users],
            ["rel"],
            [k],
        )
        out[f"gt_ndcg@{k}/{scope}"] = gt[f"gt_ndcg_at_{k}/rel"]
        allowed = np.ones(n_items, bool)
        allowed[blocked] = False
        ru, ri = np.nonzero(world.relevant & ~train_pos & allowed[None, :])
        rec = ranking_metrics(recommend, ru, ri, np.ones(ru.size), 1, "rel", n_items, [k])
        out[f"gt_recall@{k}/{scope}"] = rec[f"recall_at_{k}/rel"]
        if scope == "all":  # what offline metrics on the held-out MNAR positives say
            theta = world.theta[test.users, test.items]
            for label, floor in (("naive", 1.0), ("ips", 0.01)):  # floor 1: every weight is 1
                m = IPSRankingMetrics(k, floor).evaluate_recommender(
                    recommend, test.users, test.items, theta
                )
                out[f"{label}_dcg@{k}"] = m[f"ips_dcg_at_{k}"]
                out[f"{label}_recall@{k}"] = m[f"ips_recall_at_{k}"]
    return out


def _method_grid(clips: list[float]) -> list[tuple[str, str, RelMFLoss, str]]:
    """(method, M label, loss, propensity source) of every model trained per world.

    Clipping at M = 1 is the naive loss exactly, so that point of the sweep reuses the naive run.
    """
    log = {"local_loss": "log", "non_negative": True}
    grid = [("naive", "-", RelMFLoss(estimator="naive", **log), "true")]
    grid.append(("ips", "0", RelMFLoss(estimator="ips", **log), "true"))
    grid += [
        ("clipped", f"{m:g}", RelMFLoss(estimator="clipped", clip=m, **log), "true")
        for m in clips
        if m < 1
    ]
    grid.append(("ips", "0", RelMFLoss(estimator="ips", **log), "estimated"))
    grid.append(("clipped", "0.3", RelMFLoss(estimator="clipped", clip=0.3, **log), "estimated"))
    grid.append(("naive", "-", RelMFLoss(estimator="naive"), "true-squared"))
    grid.append(("clipped", "0.3", RelMFLoss(estimator="clipped", clip=0.3), "true-squared"))
    return grid


def _plain(column: str) -> str:
    """A metric name as a plain identifier for CSV/DVC plots: gt_ndcg@10/all → gt_ndcg_at_10_all."""
    return column.replace("@", "_at_").replace("/", "_")


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(values.size)
    return ranks


def metric_agreement(summary: list[dict], offline: list[str]) -> dict[str, float]:
    """Spearman ρ between each offline metric and the truth over the log-loss models.

    Tells which offline metric would pick the models the ground truth prefers.
    """
    rows = [r for r in summary if r["loss"] == "log+nn" and r["M"] != "1"]
    truth = _ranks(np.array([r["gt_ndcg@10/all"] for r in rows]))
    return {
        name: float(np.corrcoef(_ranks(np.array([r[name] for r in rows])), truth)[0, 1])
        for name in offline
    }


def run_synthetic(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    k = 10
    records: list[dict] = []
    prop_reports = []
    start = time.perf_counter()
    for seed in args.seeds:
        world = make_exposure_world(args, seed)
        train, test = _split_positives(world, seed)
        exposure = world.exposed.sum(axis=0)
        rare = np.argsort(exposure, kind="stable")[: int(RARE_SHARE * world.gamma.shape[1])]
        estimated = estimate_item_propensity(
            np.bincount(train.items, minlength=world.gamma.shape[1]),
            PropensityConfig(eta=args.eta, floor=1e-3),
        )
        theta_pos = world.theta[train.users, train.items]
        rare_mask = np.isin(train.items, rare)
        prop_reports.append(
            {
                "seed": seed,
                "positives": int(train.users.size),
                "positives_per_user": train.users.size / world.gamma.shape[0],
                "rare_share_of_positives": float(rare_mask.mean()),
                "true_theta_of_positives": propensity_report(theta_pos, 0.1),
                "true_theta_all_pairs": propensity_report(world.theta, 0.1),
            }
        )
        for method, clip, loss, source in _method_grid(args.clips):
            theta = world.theta if source.startswith("true") else estimated
            cfg = RelMFConfig(
                loss=loss,
                dim=args.dim,
                lr=args.lr if loss.local_loss == "log" else args.lr * 3,
                weight_decay=args.weight_decay,
                batch_users=128,
                max_epochs=args.epochs,
                seed=seed,
            )
            t0 = time.perf_counter()
            result = fit_relmf(train, *world.gamma.shape, theta, cfg)
            metrics = synthetic_metrics(result.embeddings, world, train, test, rare, k)
            row = {
                "seed": seed,
                "method": method,
                "M": clip,
                "theta": source,
                "loss": loss.local_loss + ("+nn" if loss.non_negative else ""),
                **metrics,
                "seconds": time.perf_counter() - t0,
            }
            records.append(row)
            if method == "naive" and source == "true" and 1.0 in args.clips:
                records.append({**row, "method": "clipped", "M": "1"})
            print(
                f"seed {seed} {method:<8} M={clip:<6} θ={source:<13} "
                + " ".join(f"{key}={v:.4f}" for key, v in metrics.items()),
                flush=True,
            )
    frame = pl.DataFrame(records)
    metric_cols = [c for c in frame.columns if "@" in c]
    summary = (
        frame.group_by("method", "M", "theta", "loss", maintain_order=True)
        .agg(
            *[pl.col(c).mean().alias(c) for c in metric_cols],
            *[pl.col(c).std().alias(f"{c} sd") for c in metric_cols],
            pl.len().alias("seeds"),
        )
        .to_dicts()
    )
    cols = ["method", "M", "theta", "loss", *metric_cols, "seeds"]
    table = markdown(summary, cols)
    sd_cols = ["method", "M", "theta", *[f"{c} sd" for c in metric_cols]]
    sd_table = markdown(summary, sd_cols)
    sweep = [
        {"M": float(r["M"]), **{_plain(c): r[c] for c in metric_cols}}
        for r in summary
        if r["method"] in ("clipped", "ips") and r["theta"] == "true"
    ]
    naive = next(r for r in summary if r["method"] == "naive" and r["theta"] == "true")
    for r in sweep:
        r["naive_gt_ndcg_at_10_rare"] = naive["gt_ndcg@10/rare"]
        r["naive_gt_ndcg_at_10_all"] = naive["gt_ndcg@10/all"]
    pl.DataFrame(sweep).sort("M").write_csv(out / "synthetic_m_sweep.csv")
    agreement = metric_agreement(
        summary, [c for c in metric_cols if c.startswith(("naive_", "ips_"))]
    )
    table += (
        "\n\nSpearman correlation with gt_ndcg@10/all across the log-loss models: "
        + ", ".join(f"{name} {rho:+.2f}" for name, rho in agreement.items())
    )
    (out / "synthetic.md").write_text(table + "\n\nStandard deviations over seeds:\n\n" + sd_table)
    (out / "synthetic.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "rows": records,
                "summary": summary,
                "propensity": prop_reports,
                "agreement_with_gt_ndcg_all": agreement,
                "seconds": time.perf_counter() - start,
            },
            indent=2,
            default=float,
        )
    )
    print("\n" + table + "\n\nStandard deviations over seeds:\n\n" + sd_table)
    print(f"\nworld: {json.dumps(prop_reports[0], default=float)}")
    print(f"synthetic: {time.perf_counter() - start:.0f}s → {out}/synthetic.{{md,json}}, "
          f"{out}/synthetic_m_sweep.csv")  # fmt: skip


# --------------------------------------------------------------------------- (a') bias map

BIAS_MAP_METRICS = ("gt_ndcg@10/rare", "gt_recall@10/rare", "gt_ndcg@10/all")


def bias_map_cell(rows: list[dict], metric: str) -> dict:
    """One (β, metric) cell: naive and clipped means over seeds, and the paired difference
    clipped − naive per seed, mean ± 95 % Student-t interval (n − 1 df); ``tie`` when it holds 0."""
    by_seed = {
        (r["seed"], r["method"]): r[metric] for r in rows if r["method"] in ("naive", "clipped")
    }
    seeds = sorted({s for s, _ in by_seed})
    naive = [by_seed[s, "naive"] for s in seeds]
    clipped = [by_seed[s, "clipped"] for s in seeds]
    diff = over_seeds([c - n for c, n in zip(clipped, naive, strict=True)])
    return {
        "naive": over_seeds(naive),
        "clipped": over_seeds(clipped),
        "diff": diff,
        "verdict": verdict(Interval(diff["mean"], diff["lower"], diff["upper"], 0.05, diff["n"])),
    }


def bias_map_table(cells: dict[float, dict[str, dict]]) -> str:
    """Markdown: one row per β, per metric naive, clipped and the paired difference [95 % CI]."""
    head = ["β"]
    for m in BIAS_MAP_METRICS:
        head += [f"{m} naive", f"{m} clipped", f"{m} clipped − naive [95 % CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for beta, by_metric in cells.items():
        row = [f"{beta:g}"]
        for m in BIAS_MAP_METRICS:
            c = by_metric[m]
            d = c["diff"]
            row += [
                f"{c['naive']['mean']:.4f}",
                f"{c['clipped']['mean']:.4f}",
                f"{d['mean']:+.4f} [{d['lower']:+.4f}, {d['upper']:+.4f}] {c['verdict']}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_bias_map(args: argparse.Namespace) -> None:
    """Naive vs clipped IPS (M fixed in advance, params.yaml ``relmf.loss.clip``; true θ) on rare
    items over logger bias β × seeds: the world of (a) per (β, seed), the same model settings, and
    per β the mean over seeds with a Student-t interval of the paired difference."""
    start = time.perf_counter()
    k = 10
    log = {"local_loss": "log", "non_negative": True}
    methods = (
        ("naive", RelMFLoss(estimator="naive", **log)),
        ("clipped", RelMFLoss(estimator="clipped", clip=args.clip, **log)),
    )
    rows: list[dict] = []
    for beta in args.betas:
        for seed in args.seeds:
            world = make_exposure_world(argparse.Namespace(**{**vars(args), "beta": beta}), seed)
            train, test = _split_positives(world, seed)
            exposure = world.exposed.sum(axis=0)
            rare = np.argsort(exposure, kind="stable")[: int(RARE_SHARE * world.gamma.shape[1])]
            rare_share = float(np.isin(train.items, rare).mean())
            for method, loss in methods:
                cfg = RelMFConfig(
                    loss=loss,
                    dim=args.dim,
                    lr=args.lr,
                    weight_decay=args.weight_decay,
                    batch_users=128,
                    max_epochs=args.epochs,
                    seed=seed,
                )
                t0 = time.perf_counter()
                result = fit_relmf(train, *world.gamma.shape, world.theta, cfg)
                metrics = synthetic_metrics(result.embeddings, world, train, test, rare, k)
                row = {
                    "beta": beta,
                    "seed": seed,
                    "method": method,
                    "positives": int(train.users.size),
                    "rare_share_of_positives": rare_share,
                    **metrics,
                    "seconds": time.perf_counter() - t0,
                }
                rows.append(row)
                print(
                    f"bias-map β={beta:g} seed {seed} {method:<7} "
                    + " ".join(f"{m}={row[m]:.4f}" for m in BIAS_MAP_METRICS)
                    + f" ({row['seconds']:.0f} s)",
                    flush=True,
                )
    cells = {
        beta: {
            m: bias_map_cell([r for r in rows if r["beta"] == beta], m) for m in BIAS_MAP_METRICS
        }
        for beta in args.betas
    }
    seconds = time.perf_counter() - start
    command = "python -m experiments.unbiased bias-map " + " ".join(
        [
            f"--betas {' '.join(f'{b:g}' for b in args.betas)}",
            f"--seeds {' '.join(map(str, args.seeds))}",
        ]
    )
    text = (
        f"Generated by `{command}` ({seconds / 60:.0f} min); naive vs clipped IPS (M = {args.clip:g}, "
        f"fixed in advance: params.yaml relmf.loss.clip; true θ), {len(args.seeds)} seeds per β; "
        "intervals: 95 % Student t over seeds of the paired difference (tie = holds 0).\n\n"
        + bias_map_table(cells)
        + "\n"
    )
    table = Path(args.table)
    with atomic_file(table.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    write_json(
        table.with_suffix(".json"),
        {
            "args": vars(args),
            "rows": rows,
            "cells": {f"{b:g}": c for b, c in cells.items()},
            "seconds": seconds,
        },
    )
    print("\n" + text)


# --------------------------------------------------------------------------- (b) Open Bandit Dataset


def obd_rounds(policy: str, campaign: str, cache: Path) -> pl.DataFrame:
    """One row per round: user_id (user type), item_id, position, pscore, click (0/1)."""
    return logged_rounds(OBDConfig(policy=policy, campaign=campaign), cache)


def reward_model(rounds: pl.DataFrame, items: list[str], prior_strength: float) -> np.ndarray:
    """q̂(i) = (clicks_i + s·p̄) / (impressions_i + s): item CTR shrunk towards the mean p̄."""
    mean = float(rounds["click"].mean())
    stats = rounds.group_by("item_id").agg(pl.col("click").sum().alias("c"), pl.len().alias("n"))
    lookup = dict(zip(stats["item_id"], zip(stats["c"], stats["n"], strict=True), strict=True))
    out = np.empty(len(items))
    for j, item in enumerate(items):
        c, n = lookup.get(item, (0.0, 0))
        out[j] = (c + prior_strength * mean) / (n + prior_strength)
    return out


def obd_ope(bts: pl.DataFrame, rnd: pl.DataFrame, args: argparse.Namespace) -> list[dict]:
    """V(uniform random) from the bts log by each estimator vs the random log's click rate."""
    items = sorted(set(bts["item_id"]) | set(rnd["item_id"]), key=int)
    n_items = len(items)
    truth = NaiveAverage().estimate_interval(rnd["click"].to_numpy(), args.n_bootstrap, 0.05, 0)
    reward, pscore = bts["click"].to_numpy(), bts["pscore"].to_numpy()
    evaluation = np.full(bts.height, 1.0 / n_items)  # uniform over the items, at every position
    q_item = reward_model(bts, items, args.prior_strength)
    index = {item: j for j, item in enumerate(items)}
    q_logged = q_item[[index[i] for i in bts["item_id"]]]
    q_policy = np.full(bts.height, q_item.mean())
    boot = {"n_bootstrap": args.n_bootstrap, "alpha": 0.05, "seed": 0}
    estimates = {
        "naive (bts click rate)": NaiveAverage().estimate_interval(reward, **boot),
        "IPW": InverseProbabilityWeighting().estimate_interval(reward, pscore, evaluation, **boot),
        **{
            f"IPW λ={lam:g}": InverseProbabilityWeighting(lambda_=lam).estimate_interval(
                reward, pscore, evaluation, **boot
            )
            for lam in args.lambdas
        },
        "SNIPW": SelfNormalizedInverseProbabilityWeighting().estimate_interval(
            reward, pscore, evaluation, **boot
        ),
        "DR": DoublyRobust().estimate_interval(
            reward, pscore, evaluation, q_logged, q_policy, **boot
        ),
        **{
            f"DR λ={lam:g}": DoublyRobust(lambda_=lam).estimate_interval(
                reward, pscore, evaluation, q_logged, q_policy, **boot
            )
            for lam in args.lambdas
        },
    }
    weights = evaluation / pscore
    rows = [
        {
            "estimator": "on-policy (random log)",
            "estimate": truth.estimate,
            "ci_low": truth.lower,
            "ci_high": truth.upper,
            "rel_error": 0.0,
            "truth_in_ci": "-",
        }
    ]
    for name, iv in estimates.items():
        rows.append(
            {
                "estimator": name,
                "estimate": iv.estimate,
                "ci_low": iv.lower,
                "ci_high": iv.upper,
                "rel_error": abs(iv.estimate - truth.estimate) / truth.estimate,
                "truth_in_ci": "yes" if iv.lower <= truth.estimate <= iv.upper else "no",
            }
        )
    for r in rows:
        r.update(
            {
                "campaign": args.campaign_now,
                "bts_rounds": bts.height,
                "bts_clicks": int(reward.sum()),
                "random_clicks": int(rnd["click"].sum()),
                "max_weight": float(weights.max()),
                "ess": float(weights.sum() ** 2 / (weights**2).sum()),
            }
        )
    return rows


def obd_training(bts: pl.DataFrame, rnd: pl.DataFrame, args: argparse.Namespace) -> list[dict]:
    """Rel-MF trained on bts (user type × item), AUC on the random log's rounds (MAR)."""
    users = sorted(set(bts["user_id"]) | set(rnd["user_id"]))
    items = sorted(set(bts["item_id"]) | set(rnd["item_id"]), key=int)
    uix = {u: j for j, u in enumerate(users)}
    iix = {i: j for j, i in enumerate(items)}
    clicked = bts.filter(pl.col("click") > 0)
    train = Pairs([uix[u] for u in clicked["user_id"]], [iix[i] for i in clicked["item_id"]])
    n_users, n_items = len(users), len(items)
    positives = np.bincount(train.items, minlength=n_items)
    theta_pos = estimate_item_propensity(positives, PropensityConfig(eta=args.eta, floor=0.01))
    shown = np.bincount([iix[i] for i in bts["item_id"]], minlength=n_items) / bts.height
    per_user = np.bincount([uix[u] for u in bts["user_id"]], minlength=n_users)
    theta_exp = np.clip(1 - (1 - shown[None, :]) ** per_user[:, None], 0.01, 1.0)
    test_u = np.array([uix[u] for u in rnd["user_id"]])
    test_i = np.array([iix[i] for i in rnd["item_id"]])
    y = rnd["click"].to_numpy()
    known = np.isin(test_u, np.unique([uix[u] for u in bts["user_id"]]))
    rows = []
    variants = [("naive", "-", RelMFLoss(estimator="naive", local_loss="log"), "-", None)]
    for label, theta in (("item positives η", theta_pos), ("bts exposure", theta_exp)):
        variants.append(
            (
                "ips",
                "0",
                RelMFLoss(estimator="ips", local_loss="log", non_negative=True),
                label,
                theta,
            )
        )
        for m in (0.05, 0.2):
            variants.append(
                (
                    "clipped",
                    f"{m:g}",
                    RelMFLoss(estimator="clipped", clip=m, local_loss="log", non_negative=True),
                    label,
                    theta,
                )
            )
    counts = bootstrap_counts(y.size, min(300, args.n_bootstrap), seed=0)
    for method, clip, loss, label, theta in variants:
        cfg = RelMFConfig(loss=loss, dim=8, lr=0.01, weight_decay=1e-4, max_epochs=50, seed=0)
        th = np.ones(n_items) if theta is None else theta
        emb = fit_relmf(train, n_users, n_items, th, cfg).embeddings
        scores = emb.scores(test_u, test_i)
        value = auc(scores, y)
        boots = [auc(scores, y, c) for c in counts]  # AUC of a resample = count-weighted AUC
        lo, hi = np.nanquantile(boots, [0.025, 0.975])
        rows.append(
            {
                "campaign": args.campaign_now,
                "method": method,
                "M": clip,
                "theta": label,
                "auc_random_log": value,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "auc_known_users": auc(scores[known], y[known]),
            }
        )
        print(f"obd {args.campaign_now} {method} M={clip} θ={label}: AUC {value:.4f}", flush=True)
    pop = np.bincount(train.items, minlength=n_items).astype(float)
    rows.append(
        {
            "campaign": args.campaign_now,
            "method": "popularity (bts clicks)",
            "M": "-",
            "theta": "-",
            "auc_random_log": auc(pop[test_i], y),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "auc_known_users": auc(pop[test_i][known], y[known]),
        }
    )
    return rows


def run_obd(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir)
    ope_rows, train_rows = [], []
    start = time.perf_counter()
    for campaign in args.campaigns:
        args.campaign_now = campaign
        bts = obd_rounds("bts", campaign, cache)
        rnd = obd_rounds("random", campaign, cache)
        ope_rows += obd_ope(bts, rnd, args)
        if campaign in args.train_campaigns:
            train_rows += obd_training(bts, rnd, args)
    del args.campaign_now
    ope_cols = [
        "campaign",
        "estimator",
        "estimate",
        "ci_low",
        "ci_high",
        "rel_error",
        "truth_in_ci",
    ]
    sizes = [
        {
            k: r[k]
            for k in ("campaign", "bts_rounds", "bts_clicks", "random_clicks", "max_weight", "ess")
        }
        for r in ope_rows
        if r["estimator"] == "IPW"
    ]
    train_cols = ["campaign", "method", "M", "theta", "auc_random_log", "ci_low", "ci_high"]
    text = (
        "Off-policy value of the uniform-random policy from the bts log:\n\n"
        + markdown(ope_rows, ope_cols, digits=5)
        + "\n\nSample sizes (ess = (Σw)²/Σw², the effective sample size of the IPW weights):\n\n"
        + markdown(sizes, list(sizes[0]), digits=1)
        + "\n\nRel-MF trained on bts, AUC on the random log (MAR):\n\n"
        + markdown(train_rows, train_cols)
    )
    (out / "obd.md").write_text(text)
    (out / "obd.json").write_text(
        json.dumps(
            {"args": vars(args), "ope": ope_rows, "training": train_rows}, indent=2, default=float
        )
    )
    print("\n" + text)
    print(f"\nobd: {time.perf_counter() - start:.0f}s → {out}/obd.{{md,json}}")


# --------------------------------------------------------------------------- (c) estimator sanity


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of a row-stochastic matrix."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((probs.shape[0], 1))
    return (cdf < u).sum(axis=1)


def _all_estimates(
    r: np.ndarray, p0: np.ndarray, pe: np.ndarray, q: np.ndarray, q_pi: np.ndarray, boot: dict
) -> dict[str, Interval]:
    """Every estimator's interval on one log (reward, π_0, π_e of the logged actions, q̂, q̂_π)."""
    return {
        "naive": NaiveAverage().estimate_interval(r, **boot),
        "IPW": InverseProbabilityWeighting().estimate_interval(r, p0, pe, **boot),
        "IPW λ=10": InverseProbabilityWeighting(10.0).estimate_interval(r, p0, pe, **boot),
        "SNIPW": SelfNormalizedInverseProbabilityWeighting().estimate_interval(r, p0, pe, **boot),
        "DR": DoublyRobust().estimate_interval(r, p0, pe, q, q_pi, **boot),
    }


def run_sanity(args: argparse.Namespace) -> None:
    """Repeated logs of n rounds from the popularity-biased logger on a simulated world.

    Round: a user (by activity), one item from π_0(·|u), a click ∼ Bern(γ_ui). The value of a
    policy π is V(π) = Σ_u p(u) Σ_i π(i|u) γ_ui, known exactly from the world.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    world_args = argparse.Namespace(
        n_users=args.n_users, n_items=args.n_items, beta=args.beta, relevance_rate=0.05, slots=100
    )
    world = make_exposure_world(world_args, args.seed)
    gamma, pi0 = world.gamma, world.pi0
    rng = np.random.default_rng(args.seed + 7)
    activity = rng.lognormal(0.0, 1.0, gamma.shape[0])
    p_user = activity / activity.sum()
    gamma_logits = np.log(gamma / (1 - gamma))
    policies: dict[str, np.ndarray] = {
        "uniform": np.full(gamma.shape, 1.0 / gamma.shape[1]),
        "relevance softmax(2·logit γ)": _softmax_rows(2.0 * gamma_logits),
        "mild popularity softmax(0.5·β·log pop)": _softmax_rows(0.5 * np.log(pi0)),
    }
    # A deliberately wrong reward model: per-item mean relevance, 30 % too high.
    q_hat = np.broadcast_to(1.3 * gamma.mean(axis=0), gamma.shape)
    logger_value = float(p_user @ (pi0 * gamma).sum(axis=1))
    rows = []
    for name, pie in policies.items():
        truth = float(p_user @ (pie * gamma).sum(axis=1))
        q_pi_user = (pie * q_hat).sum(axis=1)
        est: dict[str, list[float]] = {k: [] for k in ("naive", "IPW", "IPW λ=10", "SNIPW", "DR")}
        cover: dict[str, list[bool]] = {k: [] for k in est}
        for rep in range(args.reps):
            u = rng.choice(gamma.shape[0], size=args.rounds, p=p_user)
            a = _sample_rows(pi0[u], rng)
            r = (rng.random(args.rounds) < gamma[u, a]).astype(float)
            with_ci = rep < args.ci_reps
            boot = {"n_bootstrap": args.n_bootstrap if with_ci else 2, "alpha": 0.05, "seed": rep}
            intervals = _all_estimates(r, pi0[u, a], pie[u, a], q_hat[u, a], q_pi_user[u], boot)
            for key, iv in intervals.items():
                est[key].append(iv.estimate)
                if with_ci:
                    cover[key].append(iv.lower <= truth <= iv.upper)
        for key, values in est.items():
            v = np.asarray(values)
            rows.append(
                {
                    "policy": name,
                    "true value": truth,
                    "estimator": key,
                    "mean estimate": float(v.mean()),
                    "mean error": float(v.mean() - truth),
                    "± 2 s.e.": float(2 * v.std(ddof=1) / math.sqrt(v.size)),
                    "relative bias": float((v.mean() - truth) / truth),
                    "rmse": float(np.sqrt(np.mean((v - truth) ** 2))),
                    "ci coverage": float(np.mean(cover[key])),
                }
            )
        print(f"sanity: {name} done ({time.perf_counter() - start:.0f}s)", flush=True)
    cols = list(rows[0])
    text = (
        f"Logger value (naive's target) {logger_value:.5f}; {args.reps} logs of {args.rounds} rounds "
        f"each; CI coverage of the nominal 95 % bootstrap interval over the first {args.ci_reps} "
        f"logs ({args.n_bootstrap} resamples).\n\n" + markdown(rows, cols, digits=5)
    )
    (out / "sanity.md").write_text(text)
    (out / "sanity.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print("\n" + text)
    print(f"\nsanity: {time.perf_counter() - start:.0f}s → {out}/sanity.{{md,json}}")


def _world_and_training_args(parser: argparse.ArgumentParser) -> None:
    """The exposure world's size and the Rel-MF training settings, shared by ``synthetic`` and
    ``bias-map``."""
    parser.add_argument("--n-users", type=int, default=3000)
    parser.add_argument("--n-items", type=int, default=500)
    parser.add_argument("--slots", type=float, default=300, help="mean slots per user")
    parser.add_argument("--relevance-rate", type=float, default=0.1, help="mean γ")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--epochs", type=int, default=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared CPUs: 1)")
    sub = parser.add_subparsers(dest="command", required=True)

    syn = sub.add_parser("synthetic", help="(a) naive vs IPS vs clipped IPS on a biased world")
    syn.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    syn.add_argument("--clips", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 1.0])
    syn.add_argument("--beta", type=float, default=1.0, help="popularity bias β of the logger")
    syn.add_argument("--eta", type=float, default=0.5, help="η of the estimated propensity")
    _world_and_training_args(syn)
    syn.set_defaults(run=run_synthetic)

    bmap = sub.add_parser("bias-map", help="(a') naive vs clipped IPS on rare items over β × seeds")
    bmap.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    bmap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    bmap.add_argument("--clip", type=float, default=0.3, help="M, fixed in advance (params.yaml)")
    _world_and_training_args(bmap)
    bmap.add_argument(
        "--table", default="results/unbiased_bias_map", help="output stem (.md, .json)"
    )
    bmap.set_defaults(run=run_bias_map)

    obd = sub.add_parser("obd", help="(b) Open Bandit Dataset: OPE of random from bts, MAR test")
    obd.add_argument("--cache-dir", default="data/external")
    obd.add_argument("--campaigns", nargs="+", default=["all", "men", "women"])
    obd.add_argument("--train-campaigns", nargs="+", default=["all"])
    obd.add_argument("--lambdas", type=float, nargs="+", default=[50.0, 10.0])
    obd.add_argument("--prior-strength", type=float, default=500.0, help="shrinkage of q̂")
    obd.add_argument("--eta", type=float, default=0.5)
    obd.add_argument("--n-bootstrap", type=int, default=2000)
    obd.set_defaults(run=run_obd)

    san = sub.add_parser("sanity", help="(c) estimator bias on the simulator, known truth")
    san.add_argument("--n-users", type=int, default=2000)
    san.add_argument("--n-items", type=int, default=500)
    san.add_argument("--beta", type=float, default=1.0)
    san.add_argument("--rounds", type=int, default=10_000)
    san.add_argument("--reps", type=int, default=300)
    san.add_argument("--ci-reps", type=int, default=100)
    san.add_argument("--n-bootstrap", type=int, default=200)
    san.add_argument("--seed", type=int, default=0)
    san.set_defaults(run=run_sanity)

    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _quiet()
    run = args.run
    del args.run
    run(args)


if __name__ == "__main__":
    main()
