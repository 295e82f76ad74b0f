"""P[Love] on the simulator: offline-evaluator validation and the love-weight trade-off sweep.

    .venv/bin/python benchmarks/plove_experiments.py evaluator [--plove DIR --out-dir DIR ...]
    .venv/bin/python benchmarks/plove_experiments.py sweep     [--weights 0 0.5 1 2 ...]

Both read the last pipeline run (data/ingest/world.npz, data/features, data/models/gnolr) and a
trained P[Love] (``--plove``, default data/models/plove). Users: ``--users`` drawn (seeded) from
the users of the test split; every policy ranks the whole catalogue minus each user's training
positives (as the evaluation stage and the service do) and shows a slate of ``--k`` items.

Definitions, per user u and slate (i_0..i_{K−1}), with e(p) = 1/log2(p + 2) the simulator's
examination and P*(·|u, i) its true probabilities at the top position:

* realised love rate = (1/K) Σ_p e(p)·P*(love | u, i_p) — the expected loves per impression when
  the slate is shown (P*(love) = P*(click)·P*(love | click), as the simulator draws them);
* predicted love rate = (1/K) Σ_p P̂[Love](u, i_p, position p) — the calibrated model;
* purchase rate likewise with P*(purchase); coverage = share of the catalogue in any slate;
  novelty = mean over slots of −log2((c_i + 1)/(U_train + 1)), c_i = training users with a positive.

``evaluator`` compares predicted with realised rates across ≥ 8 policies: Pearson and Spearman
correlation with 95 % bootstrap intervals (users resampled, policies paired). It also estimates each
policy's love rate from the logged impressions of the same users alone (``--ope-splits``, default
the test split; no simulator truth): self-normalised IPS and SN-DR (P[Love] as the direct term)
over the logged slates with their logged propensities, a slate being "a uniform slot of the
policy's top-K" and logged rewards moved to the target slot by the position-based model with
examination e(p) (:func:`models.ope.topk_slate_terms`); each with a 95 % interval (users
resampled), whether it covers the realised rate, and Spearman(OPE, realised). ``sweep`` re-ranks
GNOLR's top ``--candidates`` by w_rel·l_T + w_love·logit(P[Love]) for each w_love. Each writes a
Markdown table to stdout, CSVs usable as DVC plots and a JSON summary under ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.sources.synthetic import World, examination, parse_index
from models.gnolr import GNOLREmbeddings
from models.ope import TopKSlateTerms, bootstrap_counts, topk_slate_terms
from models.plove import PLoveScorer
from models.ranking_blend import BlendWeights, blended_recommend
from serving.retrieval import Retriever, SeenItems

OUT_DIR = Path("data/metrics/plove")


@dataclass
class Setting:
    """Everything a policy and the metrics need, for the sampled users."""

    users: np.ndarray  # (U,) user_idx
    true: dict[str, np.ndarray]  # name → (U, n_items) true probability at the top position
    gnolr: GNOLREmbeddings
    plove: PLoveScorer
    retriever: Retriever
    seen: SeenItems
    train_counts: np.ndarray  # (n_items,) training impressions
    user_positives: np.ndarray  # (n_items,) training users with a positive
    n_train_users: int
    k: int
    rng: np.random.Generator

    @property
    def n_items(self) -> int:
        return self.plove.n_items

    def exclude(self) -> list[np.ndarray]:
        return [self.seen[u] for u in self.users]

    def masked(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` (U, n_items) with each user's training positives set to −inf."""
        out = np.array(scores, dtype=np.float64, copy=True)
        for row, u in enumerate(self.users):
            out[row, self.seen[u]] = -np.inf
        return out

    def relevance(self) -> np.ndarray:
        """GNOLR's deepest-level logit l_T of every (user, item), shape (U, n_items)."""
        q = self.gnolr.user_vectors(self.users).astype(np.float64)
        return q @ self.gnolr.item_vectors().T.astype(np.float64) - self.gnolr.thresholds[-1]


def load_gnolr(path: Path) -> GNOLREmbeddings:
    """GNOLR embeddings; files written before ``scoring`` was stored are nested."""
    with np.load(path) as z:
        scoring = str(z["scoring"]) if "scoring" in z.files else "nested"
        return GNOLREmbeddings(z["users"], z["items"], z["gamma"], z["thresholds"], scoring)


def load_setting(args: argparse.Namespace) -> Setting:
    features = args.features
    world = World.load(args.world)
    gnolr = load_gnolr(args.gnolr)
    plove = PLoveScorer.load(args.plove)
    users_vocab = pl.read_parquet(features / "users.parquet").sort("user_idx")
    items_vocab = pl.read_parquet(features / "items.parquet").sort("item_idx")
    train = pl.read_parquet(features / "train.parquet", columns=["user_idx", "item_idx", "level"])
    test_users = np.unique(pl.read_parquet(features / "test.parquet")["user_idx"].to_numpy())
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(test_users, min(args.users, test_users.size), replace=False))
    sim_user = parse_index(users_vocab["user_id"].to_list())
    sim_item = parse_index(items_vocab["item_id"].to_list())
    true = world.true_probabilities(world.affinity_matrix(sim_user[users])[:, :, sim_item])
    pos = train.filter(pl.col("level") >= 1)
    n_items = items_vocab.height
    seen = SeenItems.from_pairs(
        pos["user_idx"].to_numpy(), pos["item_idx"].to_numpy(), users_vocab.height
    )
    user_pos = pos.unique(["user_idx", "item_idx"])["item_idx"].to_numpy()
    return Setting(
        users=users,
        true=true,
        gnolr=gnolr,
        plove=plove,
        retriever=Retriever(gnolr.item_vectors()),
        seen=seen,
        train_counts=np.bincount(train["item_idx"].to_numpy(), minlength=n_items).astype(float),
        user_positives=np.bincount(user_pos, minlength=n_items).astype(float),
        n_train_users=int(train["user_idx"].n_unique()),
        k=args.k,
        rng=rng,
    )


# ---- policies: each returns the slates (U, K) of item indices, best first ---------------------


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest scores, best first (ties: lower index first)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def sample_slates(s: Setting, logits: np.ndarray, temperature: float) -> np.ndarray:
    """Plackett–Luce draws without replacement from softmax(logits / T) (Gumbel top-k)."""
    gumbel = -np.log(-np.log(s.rng.random(logits.shape)))
    return top_k(s.masked(logits / temperature + gumbel), s.k)


# What each policy ranks by, when that is the evaluator itself or the truth: such policies probe
# reward hacking (plove) and the evaluator's reach (truth) rather than its everyday use.
OPTIMISES = {"blend_w1": "plove", "blend_w4": "plove", "love_only": "plove", "oracle_love": "truth"}


def policies(s: Setting) -> dict[str, Callable[[], np.ndarray]]:
    rel = s.relevance()
    log_pop = np.log1p(s.train_counts)[None, :].repeat(len(s.users), 0)

    def greedy_gnolr(level: int) -> np.ndarray:
        q, items = s.gnolr.level_vectors(level)
        return Retriever(items).search(q[s.users], s.k, exclude=s.exclude())[0]

    def blend(w_love: float) -> Callable[[], np.ndarray]:
        return lambda: blended_recommend(
            s.retriever,
            s.gnolr.user_vectors(s.users),
            float(s.gnolr.thresholds[-1]),
            s.plove,
            s.users,
            s.k,
            BlendWeights(1.0, w_love),
            exclude=s.exclude(),
        )[0]

    return {
        "random": lambda: sample_slates(s, np.zeros_like(rel), 1.0),
        "popularity": lambda: top_k(s.masked(log_pop), s.k),
        "popularity_sampled": lambda: sample_slates(s, log_pop, 1.0),
        "gnolr_reversed": lambda: top_k(s.masked(-rel), s.k),
        "gnolr_T2": lambda: sample_slates(s, rel, 2.0),
        "gnolr_T1": lambda: sample_slates(s, rel, 1.0),
        "gnolr_T0.5": lambda: sample_slates(s, rel, 0.5),
        "gnolr_click": lambda: greedy_gnolr(0),
        "gnolr": lambda: greedy_gnolr(s.gnolr.n_levels - 1),
        "blend_w1": blend(1.0),
        "blend_w4": blend(4.0),
        "love_only": lambda: top_k(s.masked(s.plove.predict_matrix(s.users)), s.k),
        "oracle_love": lambda: top_k(s.masked(s.true["love"]), s.k),
    }


# ---- per-user measurements --------------------------------------------------------------------


def per_user(s: Setting, slates: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted and realised rates per user (U,), for slates (U, K)."""
    if np.any(slates < 0):
        raise ValueError("a policy returned fewer than k items for some user")
    rows = np.arange(len(s.users))[:, None]
    exam = examination(np.arange(slates.shape[1]))
    positions = np.broadcast_to(np.arange(slates.shape[1]), slates.shape)
    users = np.broadcast_to(s.users[:, None], slates.shape)
    predicted = s.plove.predict(users.ravel(), slates.ravel(), positions.ravel())
    share = (s.user_positives[slates] + 1) / (s.n_train_users + 1)
    return {
        "predicted_love": predicted.reshape(slates.shape).mean(1),
        "realised_love": (exam * s.true["love"][rows, slates]).mean(1),
        "purchase": (exam * s.true["purchase"][rows, slates]).mean(1),
        "click": (exam * s.true["click"][rows, slates]).mean(1),
        "novelty": (-np.log2(share)).mean(1),
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the ranks (average ranks for ties)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size)
        for value in np.unique(v):
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def bootstrap_correlations(
    pred: np.ndarray, real: np.ndarray, n_boot: int, rng: np.random.Generator
) -> dict[str, float]:
    """Correlations of policy means across policies and their 95 % percentile intervals.

    ``pred`` and ``real`` are (U, P); each replicate resamples users with replacement, recomputes
    the P policy means and both correlations.
    """
    n_users = pred.shape[0]
    weights = (
        np.stack(
            [
                np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)
                for _ in range(n_boot)
            ]
        ).astype(np.float64)
        / n_users
    )
    mp, mr = weights @ pred, weights @ real
    out = {
        "pearson": pearson(pred.mean(0), real.mean(0)),
        "spearman": spearman(pred.mean(0), real.mean(0)),
    }
    for name, fn in (("pearson", pearson), ("spearman", spearman)):
        reps = np.array([fn(a, b) for a, b in zip(mp, mr, strict=True)])
        out[f"{name}_lo"], out[f"{name}_hi"] = (float(q) for q in np.quantile(reps, [0.025, 0.975]))
    return out


def interval(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, values.size, (n_boot, values.size))
    lo, hi = np.quantile(values[idx].mean(1), [0.025, 0.975])
    return float(lo), float(hi)


def markdown(rows: list[dict], columns: list[str], fmt: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(format(r[c], fmt.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


# ---- off-policy estimates from the logged impressions --------------------------------------------

OPE_ESTIMATORS = ("snips", "dr")


@dataclass
class LoggedRounds:
    """Logged impressions of the sampled users: ``row`` indexes ``Setting.users``."""

    row: np.ndarray
    item: np.ndarray
    position: np.ndarray
    love: np.ndarray
    pscore: np.ndarray
    dropped: int  # impressions of these users without a logged propensity or position


def load_logged(features: Path, users: np.ndarray, splits: list[str]) -> LoggedRounds:
    """Impressions of ``users`` (sorted) in the ``splits`` of the feature table, with their logged
    propensity π_0(item | user, slot) and love label."""
    cols = ["user_idx", "item_idx", "position", "r_love", "propensity_logged"]
    frame = pl.concat(
        [pl.read_parquet(features / f"{split}.parquet", columns=cols) for split in splits]
    ).filter(pl.col("user_idx").is_in(users))
    usable = frame.drop_nulls(["position", "propensity_logged"])
    row = np.searchsorted(users, usable["user_idx"].to_numpy())
    return LoggedRounds(
        row=row,
        item=usable["item_idx"].to_numpy().astype(np.int64),
        position=usable["position"].to_numpy().astype(np.int64),
        love=usable["r_love"].to_numpy().astype(np.float64),
        pscore=usable["propensity_logged"].to_numpy(),
        dropped=frame.height - usable.height,
    )


def off_policy_terms(s: Setting, slates: np.ndarray, log: LoggedRounds) -> TopKSlateTerms:
    """SNIPS / SN-DR terms of one policy's slates; P[Love] at each slot is the DR model."""
    positions = np.broadcast_to(np.arange(slates.shape[1]), slates.shape)
    users = np.broadcast_to(s.users[:, None], slates.shape)
    q = s.plove.predict(users.ravel(), slates.ravel(), positions.ravel()).reshape(slates.shape)
    exam = examination(np.arange(max(slates.shape[1], int(log.position.max()) + 1)))
    return topk_slate_terms(slates, log.row, log.item, log.position, log.love, log.pscore, exam, q)


def nan_correlations(est: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) over the policies where ``est`` is finite (nan with fewer than 3)."""
    ok = np.isfinite(est)
    if ok.sum() < 3:
        return float("nan"), float("nan")
    return pearson(est[ok], real[ok]), spearman(est[ok], real[ok])


def ope_summary(
    names: list[str],
    pred: np.ndarray,
    real: np.ndarray,
    terms: dict[str, TopKSlateTerms],
    subsets: dict[str, tuple[str, list[int]]],
    counts: np.ndarray,
) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Per-estimator correlations with the realised rates (bootstrap over users, paired across
    policies and with the realised rates), coverage of the realised rate by each interval, and the
    paired bootstrap difference Spearman(OPE) − Spearman(predicted P[Love]).

    ``pred``, ``real`` (U, P) predicted and realised rates; ``counts`` (B, U) bootstrap draws of
    users. Returns the summary and, per estimator, the point estimates and 95 % bounds per policy.
    """
    real_point = real.mean(0)
    real_reps = counts @ real / counts.sum(1, keepdims=True)
    pred_reps = counts @ pred / counts.sum(1, keepdims=True)
    out: dict = {}
    per_policy: dict[str, dict[str, np.ndarray]] = {}
    for est in OPE_ESTIMATORS:
        intervals = [terms[n].interval(est, counts) for n in names]
        point = np.array([i.estimate for i in intervals])
        lo, hi = np.array([i.lower for i in intervals]), np.array([i.upper for i in intervals])
        reps = np.stack([getattr(terms[n], est)(counts) for n in names], axis=1)  # (B, P)
        covers = (lo <= real_point) & (real_point <= hi)
        per_policy[est] = {"estimate": point, "lo": lo, "hi": hi, "covers": covers}
        block: dict = {}
        for key, (_, cols) in subsets.items():
            pear, spear = nan_correlations(point[cols], real_point[cols])
            boot = np.array(
                [nan_correlations(reps[b, cols], real_reps[b, cols]) for b in range(len(counts))]
            )
            p_lo, p_hi = np.nanquantile(boot[:, 0], [0.025, 0.975])
            s_lo, s_hi = np.nanquantile(boot[:, 1], [0.025, 0.975])
            pred_spearman = np.array(
                [spearman(pred_reps[b, cols], real_reps[b, cols]) for b in range(len(counts))]
            )
            d_lo, d_hi = np.nanquantile(boot[:, 1] - pred_spearman, [0.025, 0.975])
            block[key] = {
                "pearson": pear,
                "pearson_lo": float(p_lo),
                "pearson_hi": float(p_hi),
                "spearman": spear,
                "spearman_lo": float(s_lo),
                "spearman_hi": float(s_hi),
                "spearman_minus_predicted": spear - spearman(pred.mean(0)[cols], real_point[cols]),
                "spearman_minus_predicted_lo": float(d_lo),
                "spearman_minus_predicted_hi": float(d_hi),
                "coverage": float(covers[cols].mean()),
                "n_covered": int(covers[cols].sum()),
                "n_policies": len(cols),
            }
        out[est] = block
    return out, per_policy


def run_evaluator(s: Setting, args: argparse.Namespace) -> None:
    slates = {name: make() for name, make in policies(s).items()}
    measured = {name: per_user(s, sl) for name, sl in slates.items()}
    names = list(measured)
    pred = np.stack([measured[n]["predicted_love"] for n in names], axis=1)
    real = np.stack([measured[n]["realised_love"] for n in names], axis=1)
    rng = np.random.default_rng(args.seed + 1)
    subsets = {
        "all": ("all policies", list(range(len(names)))),
        "without_truth": (
            "all but the oracle",
            [j for j, n in enumerate(names) if OPTIMISES.get(n) != "truth"],
        ),
        "independent": (
            "policies optimising neither P[Love] nor the truth",
            [j for j, n in enumerate(names) if n not in OPTIMISES],
        ),
    }
    summary: dict = {
        key: {
            "policies": [names[j] for j in cols],
            **bootstrap_correlations(pred[:, cols], real[:, cols], args.bootstrap, rng),
        }
        for key, (_, cols) in subsets.items()
    }
    log = load_logged(args.features, s.users, args.ope_splits)
    terms = {name: off_policy_terms(s, slates[name], log) for name in names}
    counts = bootstrap_counts(len(s.users), args.bootstrap, seed=args.seed + 2)
    ope, ope_rows = ope_summary(names, pred, real, terms, subsets, counts)
    rows = []
    for j, name in enumerate(names):
        p_lo, p_hi = interval(pred[:, j], args.bootstrap, rng)
        r_lo, r_hi = interval(real[:, j], args.bootstrap, rng)
        ope_cols = {
            f"{est}{suffix}": (
                bool(ope_rows[est][key][j]) if key == "covers" else float(ope_rows[est][key][j])
            )
            for est in OPE_ESTIMATORS
            for key, suffix in (
                ("estimate", ""),
                ("lo", "_lo"),
                ("hi", "_hi"),
                ("covers", "_covers"),
            )
        }
        rows.append(
            {
                "policy": name,
                "optimises": OPTIMISES.get(name, "none"),
                "predicted": float(pred[:, j].mean()),
                "predicted_lo": p_lo,
                "predicted_hi": p_hi,
                "realised": float(real[:, j].mean()),
                "realised_lo": r_lo,
                "realised_hi": r_hi,
                "ratio": float(pred[:, j].mean() / real[:, j].mean()),
                "purchase": float(measured[name]["purchase"].mean()),
                **ope_cols,
                "ope_matched": terms[name].n_matched,
                "ope_matched_loves": terms[name].matched_reward,
            }
        )
    rows.sort(key=lambda r: r["realised"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(args.out_dir / "evaluator.csv")
    ope_columns = ["policy", "realised", "predicted"]
    ope_columns += [f"{e}{x}" for e in OPE_ESTIMATORS for x in ("", "_lo", "_hi", "_covers")]
    pl.DataFrame(rows).select(ope_columns).write_csv(args.out_dir / "evaluator_ope.csv")
    summary.update(
        n_policies=len(names),
        n_users=len(s.users),
        k=s.k,
        n_boot=args.bootstrap,
        ope={
            **ope,
            "splits": args.ope_splits,
            "n_rounds": int(log.row.size),
            "n_loves": int(log.love.sum()),
            "dropped_rounds": log.dropped,
            "target": "uniform over the policy's K slots",
            "position_model": "PBM, e(p) = 1/log2(p + 2)",
            "interval": "95 % percentile bootstrap over users",
        },
    )
    (args.out_dir / "evaluator.json").write_text(json.dumps(summary, indent=2) + "\n")
    cols = ["policy", "optimises", "predicted", "realised", "realised_lo", "realised_hi", "ratio"]
    print(
        markdown(
            rows,
            cols + ["purchase"],
            {c: ".5f" for c in cols[2:]} | {"ratio": ".2f", "purchase": ".5f"},
        )
    )
    print(f"\n{len(s.users)} users, K={s.k}, 95 % bootstrap over users ({args.bootstrap} draws):")
    for key, (label, cols) in subsets.items():
        c = summary[key]
        print(
            f"  {label} ({len(cols)}): Pearson {c['pearson']:.3f} "
            f"[{c['pearson_lo']:.3f}, {c['pearson_hi']:.3f}], "
            f"Spearman {c['spearman']:.3f} [{c['spearman_lo']:.3f}, {c['spearman_hi']:.3f}]"
        )
    print(
        f"\nOff-policy estimates from {log.row.size} logged impressions ({int(log.love.sum())} "
        f"loves) of these users in {'+'.join(args.ope_splits)}:"
    )
    ope_print = ["policy", "realised", "predicted", "snips", "snips_lo", "snips_hi", "snips_covers"]
    ope_print += ["dr", "dr_lo", "dr_hi", "dr_covers", "ope_matched", "ope_matched_loves"]
    print(markdown(rows, ope_print, {c: ".5f" for c in ope_print[1:6] + ope_print[7:10]}))
    for est in OPE_ESTIMATORS:
        for key, (label, _) in subsets.items():
            c = ope[est][key]
            print(
                f"  {est}, {label}: Spearman {c['spearman']:.3f} "
                f"[{c['spearman_lo']:.3f}, {c['spearman_hi']:.3f}], Pearson {c['pearson']:.3f} "
                f"[{c['pearson_lo']:.3f}, {c['pearson_hi']:.3f}], Spearman − P[Love]'s "
                f"{c['spearman_minus_predicted']:+.3f} [{c['spearman_minus_predicted_lo']:+.3f}, "
                f"{c['spearman_minus_predicted_hi']:+.3f}], interval covers the realised rate for "
                f"{c['n_covered']}/{c['n_policies']}"
            )
    print(f"  → {args.out_dir}/evaluator.csv, evaluator_ope.csv, evaluator.json")


def sweep_rows(s: Setting, weights: list[float], candidates: int) -> list[dict]:
    """One row per (w_rel, w_love): 1 with each weight (0 first), then P[Love] alone (w_rel = 0)."""
    query = s.gnolr.user_vectors(s.users)
    a_t = float(s.gnolr.thresholds[-1])
    settings = [(1.0, 0.0)] + [(1.0, w) for w in weights if w != 0] + [(0.0, 1.0)]
    rows = []
    for w_rel, w_love in settings:
        slates, _ = blended_recommend(
            s.retriever,
            query,
            a_t,
            s.plove,
            s.users,
            s.k,
            BlendWeights(w_rel, w_love),
            n_candidates=min(candidates, s.n_items),
            exclude=s.exclude(),
        )
        m = per_user(s, slates)
        rows.append(
            {
                "candidates": candidates,
                "w_rel": w_rel,
                "w_love": w_love,
                "love_rate": float(m["realised_love"].mean()),
                "predicted_love": float(m["predicted_love"].mean()),
                "purchase_rate": float(m["purchase"].mean()),
                "click_rate": float(m["click"].mean()),
                "coverage": float(np.unique(slates).size / s.n_items),
                "novelty": float(m["novelty"].mean()),
            }
        )
    return rows


def run_sweep(s: Setting, args: argparse.Namespace) -> None:
    rows = []
    for candidates in args.candidates:
        block = sweep_rows(s, args.weights, candidates)
        base = block[0]
        for r in block:
            r["love_lift"] = r["love_rate"] / base["love_rate"] - 1
            r["purchase_change"] = r["purchase_rate"] / base["purchase_rate"] - 1
            r["coverage_change"] = r["coverage"] / base["coverage"] - 1
            r["overestimate"] = r["predicted_love"] / r["love_rate"]
            r["guardrail_ok"] = r["purchase_change"] >= -args.max_purchase_drop
        rows += block
    args.out_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(args.out_dir / "love_weight_sweep.csv")
    for candidates in args.candidates:  # one file per curve, for DVC plots
        block = [r for r in rows if r["candidates"] == candidates]
        pl.DataFrame(block).write_csv(args.out_dir / f"love_weight_sweep_c{candidates}.csv")
    best = {}
    for candidates in args.candidates:
        ok = [r for r in rows if r["candidates"] == candidates and r["guardrail_ok"] and r["w_rel"]]
        best[str(candidates)] = max(ok, key=lambda r: r["love_rate"])["w_love"] if ok else None
    summary = {
        "best_w_love_within_guardrail": best,
        "max_purchase_drop": args.max_purchase_drop,
        "n_users": len(s.users),
        "k": s.k,
        "rows": rows,
    }
    (args.out_dir / "love_weight_sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    cols = [
        "candidates",
        "w_rel",
        "w_love",
        "love_rate",
        "predicted_love",
        "overestimate",
        "purchase_rate",
        "coverage",
        "novelty",
        "love_lift",
        "purchase_change",
        "guardrail_ok",
    ]
    fmt = {c: ".5f" for c in ("love_rate", "predicted_love", "purchase_rate")}
    fmt |= {"coverage": ".3f", "novelty": ".2f", "love_lift": "+.1%", "purchase_change": "+.1%"}
    fmt |= {"w_rel": "g", "w_love": "g", "overestimate": ".2f"}
    print(markdown(rows, cols, fmt))
    print(
        f"\n{len(s.users)} users, K={s.k}; each block re-ranks GNOLR's top `candidates` items, its "
        f"last row by P[Love] alone (w_rel = 0). Largest love rate with a purchase drop ≤ "
        f"{args.max_purchase_drop:.0%}, per candidate count: {best} → "
        f"{args.out_dir}/love_weight_sweep.csv"
    )


# Headers of the CSVs each experiment writes (DVC plots must exist even when it is skipped).
SKIPPED_FILES = {
    "evaluator": {
        "evaluator.csv": "policy,optimises,predicted,realised",
        "evaluator_ope.csv": "policy,realised,predicted,snips",
        "evaluator.json": None,
    },
    "sweep": {
        "love_weight_sweep.csv": "candidates,w_rel,w_love,love_rate",
        "love_weight_sweep_c100.csv": "candidates,w_rel,w_love,love_rate",
        "love_weight_sweep_c2000.csv": "candidates,w_rel,w_love,love_rate",
        "love_weight_sweep.json": None,
    },
}


def skip_reason(args: argparse.Namespace) -> str | None:
    """Why the experiment cannot run here: it needs the simulator's truth and a trained P[Love]."""
    if not args.world.exists():
        return f"{args.world} not found: these experiments need the simulator's ground truth"
    if not (args.plove / "scorer.npz").exists():
        info = args.plove / "info.json"
        why = json.loads(info.read_text()).get("skipped") if info.exists() else None
        return f"no trained P[Love] in {args.plove}" + (f" ({why})" if why else "")
    return None


def write_skipped(experiment: str, out_dir: Path, reason: str) -> None:
    """The experiment's files with the reason (JSON) or only a header (CSV plots)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, header in SKIPPED_FILES[experiment].items():
        text = json.dumps({"skipped": reason}) if header is None else header
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(out_dir / name)
    print(f"plove {experiment}: skipped — {reason}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["evaluator", "sweep"])
    parser.add_argument("--plove", type=Path, default=Path("data/models/plove"))
    parser.add_argument("--gnolr", type=Path, default=Path("data/models/gnolr/embeddings.npz"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--world", type=Path, default=Path("data/ingest/world.npz"))
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--users", type=int, default=1000, help="users sampled from the test split")
    parser.add_argument("--k", type=int, default=10, help="slate size")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws")
    parser.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=[100, 2000],
        help="re-ranked candidates per user (sweep); one curve each, capped at the catalogue",
    )
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.25, 0.5, 1, 2, 4, 8, 16])
    parser.add_argument(
        "--max-purchase-drop", type=float, default=0.05, help="guardrail on the purchase rate"
    )
    parser.add_argument(
        "--ope-splits",
        nargs="+",
        default=["test"],
        choices=["train", "valid", "test"],
        help="logged splits the off-policy estimates use (evaluator)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if reason := skip_reason(args):
        write_skipped(args.experiment, args.out_dir, reason)
        return
    setting = load_setting(args)
    (run_evaluator if args.experiment == "evaluator" else run_sweep)(setting, args)


if __name__ == "__main__":
    main()
