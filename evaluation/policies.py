"""P[Love] as an offline evaluator of ranking policies, and the love-weight trade-off (methods.md §3).

Both need the simulator's truth (data/ingest/world.npz) and a trained P[Love]; the stages
``plove_evaluator`` and ``plove_sweep`` (pipelines/) run them on the last pipeline run. Users: a
seeded sample of the test split's users; every policy ranks the whole catalogue minus each user's
training positives (as the evaluation stage and the service do) and shows a slate of ``k`` items.

Definitions, per user u and slate (i_0..i_{K−1}), with e(p) = 1/log2(p + 2) the simulator's
examination and P*(·|u, i) its true probabilities at the top position:

* realised love rate = (1/K) Σ_p e(p)·P*(love | u, i_p) — the expected loves per impression when
  the slate is shown (P*(love) = P*(click)·P*(love | click), as the simulator draws them);
* predicted love rate = (1/K) Σ_p P̂[Love](u, i_p, position p) — the calibrated model;
* purchase rate likewise with P*(purchase); coverage = share of the catalogue in any slate;
  novelty = mean over slots of −log2((c_i + 1)/(U_train + 1)), c_i = training users with a positive.

The evaluator compares predicted with realised rates across 13 policies: Pearson and Spearman
correlation with 95 % bootstrap intervals (users resampled, policies paired). It also estimates each
policy's love rate from the logged impressions of the same users alone (no simulator truth):
self-normalised IPS, SN-DR (P[Love] as the direct term) and the self-tuned Switch-SN-DR (switch
threshold chosen per policy by SLOPE++ from the log alone, estimate kept in [0, 1]) over the logged
slates with their logged propensities (:func:`evaluation.slate.topk_slate_terms`), each with a 95 %
interval (for Switch-SN-DR a bootstrap of the whole procedure), whether it covers the realised
rate, and Spearman(OPE, realised). The sweep re-ranks GNOLR's top ``candidates``
by w_rel·l_T + w_love·logit(P[Love]) for each w_love.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from evaluation.bootstrap import bootstrap_counts, mean_interval
from evaluation.calibration import low_propensity_calibration
from evaluation.metrics import pearson, spearman
from evaluation.slate import SLATE_ESTIMATORS, TopKSlateTerms, topk_slate_terms
from features.contract import Col
from features.seen import SeenItems
from features.sources.synthetic import World, examination, parse_index
from models.blend import BlendWeights, Search, blended_recommend
from models.ranking import top_k

if TYPE_CHECKING:  # annotations only: params.yaml validation must not load torch
    from models.gnolr.network import GNOLREmbeddings
    from models.plove.network import PLoveScorer

Split = Literal["train", "valid", "test"]


class PLoveEvaluatorConfig(BaseModel):
    """params.yaml → ``plove_evaluator``: P[Love] as an offline evaluator of 13 policies."""

    model_config = ConfigDict(extra="forbid")

    users: int = Field(1000, ge=2, description="users sampled (seeded) from the test split")
    k: int = Field(10, ge=1, description="slate size")
    bootstrap: int = Field(1000, ge=2, description="bootstrap replicates of the intervals")
    ope_splits: list[Split] = Field(
        default_factory=lambda: ["test"],
        description="logged splits the off-policy estimates use (no simulator truth)",
    )
    rare_quantile: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="the logger rarely shows an item whose share of training impressions is below "
        "this quantile of the validation impressions' logged propensities; P[Love]'s calibration "
        "on that lowest-propensity share of validation widens the intervals of rarely shown slots",
    )
    seed: int = 0


class PLoveSweepConfig(BaseModel):
    """params.yaml → ``plove_sweep``: the love-weight trade-off of the blended ranking."""

    model_config = ConfigDict(extra="forbid")

    users: int = Field(1000, ge=2, description="users sampled (seeded) from the test split")
    k: int = Field(10, ge=1, description="slate size")
    candidates: list[int] = Field(
        default_factory=lambda: [100, 2000],
        description="GNOLR's top candidates re-ranked per user; one curve each, capped at the "
        "catalogue",
    )
    weights: list[float] = Field(
        default_factory=lambda: [0, 0.25, 0.5, 1, 2, 4, 8, 16], description="w_love values"
    )
    max_purchase_drop: float = Field(
        0.05, ge=0, le=1, description="guardrail: the largest purchase-rate drop accepted"
    )
    seed: int = 0


@dataclass
class Setting:
    """Everything a policy and the metrics need, for the sampled users."""

    users: np.ndarray  # (U,) user_idx
    true: dict[str, np.ndarray]  # name → (U, n_items) true probability at the top position
    gnolr: GNOLREmbeddings
    plove: PLoveScorer
    retriever: Search  # over GNOLR's serving item vectors
    make_retriever: Callable[[np.ndarray], Search]  # an exact retriever over other item vectors
    seen: SeenItems
    train_counts: np.ndarray  # (n_items,) training impressions
    user_positives: np.ndarray  # (n_items,) training users with a positive
    n_train_users: int
    k: int
    rng: np.random.Generator

    @property
    def n_items(self) -> int:
        return self.plove.n_items

    def exposure_share(self) -> np.ndarray:
        """The logger's share of training impressions per item, shape (n_items,): its per-slot
        exposure averaged over users (0 for an item never shown)."""
        return self.train_counts / max(self.train_counts.sum(), 1.0)

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


def skip_reason(world_file: Path, plove_dir: Path) -> str | None:
    """Why the evaluator and the sweep cannot run: they need the simulator's truth and a P[Love]."""
    if not world_file.exists():
        return f"{world_file} not found: these experiments need the simulator's ground truth"
    if not (plove_dir / "scorer.npz").exists():
        info = plove_dir / "info.json"
        why = json.loads(info.read_text()).get("skipped") if info.exists() else None
        return f"no trained P[Love] in {plove_dir}" + (f" ({why})" if why else "")
    return None


def load_setting(
    features: Path,
    world_file: Path,
    gnolr: GNOLREmbeddings,
    plove: PLoveScorer,
    make_retriever: Callable[[np.ndarray], Search],
    n_users: int,
    k: int,
    seed: int,
) -> Setting:
    """The setting of a run: ``n_users`` test users drawn with ``seed``, their true probabilities
    (``world_file``), training positives and counts (``features``: the features stage's output)."""
    world = World.load(world_file)
    users_vocab = pl.read_parquet(features / "users.parquet").sort(Col.USER_IDX)
    items_vocab = pl.read_parquet(features / "items.parquet").sort(Col.ITEM_IDX)
    train = pl.read_parquet(
        features / "train.parquet", columns=[Col.USER_IDX, Col.ITEM_IDX, Col.LEVEL]
    )
    test_users = np.unique(pl.read_parquet(features / "test.parquet")[Col.USER_IDX].to_numpy())
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(test_users, min(n_users, test_users.size), replace=False))
    sim_user = parse_index(users_vocab[Col.USER].to_list())
    sim_item = parse_index(items_vocab[Col.ITEM].to_list())
    true = world.true_probabilities(world.affinity_matrix(sim_user[users])[:, :, sim_item])
    pos = train.filter(pl.col(Col.LEVEL) >= 1)
    n_items = items_vocab.height
    user_pos = pos.unique([Col.USER_IDX, Col.ITEM_IDX])[Col.ITEM_IDX].to_numpy()
    return Setting(
        users=users,
        true=true,
        gnolr=gnolr,
        plove=plove,
        retriever=make_retriever(gnolr.item_vectors()),
        make_retriever=make_retriever,
        seen=SeenItems.from_training(train, users_vocab.height),
        train_counts=np.bincount(train[Col.ITEM_IDX].to_numpy(), minlength=n_items).astype(float),
        user_positives=np.bincount(user_pos, minlength=n_items).astype(float),
        n_train_users=int(train[Col.USER_IDX].n_unique()),
        k=k,
        rng=rng,
    )


# ---- policies: each returns the slates (U, K) of item indices, best first ---------------------


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
        return s.make_retriever(items).search(q[s.users], s.k, exclude=s.exclude())[0]

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


def per_user(
    s: Setting, slates: np.ndarray, rare: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Predicted and realised rates per user (U,), for slates (U, K). With ``rare`` (n_items,), the
    items the logger rarely shows, also ``rare_share`` (share of the slate's slots holding one) and
    ``predicted_rare`` (their part of ``predicted_love``)."""
    if np.any(slates < 0):
        raise ValueError("a policy returned fewer than k items for some user")
    rows = np.arange(len(s.users))[:, None]
    exam = examination(np.arange(slates.shape[1]))
    positions = np.broadcast_to(np.arange(slates.shape[1]), slates.shape)
    users = np.broadcast_to(s.users[:, None], slates.shape)
    predicted = s.plove.predict(users.ravel(), slates.ravel(), positions.ravel())
    predicted = predicted.reshape(slates.shape)
    share = (s.user_positives[slates] + 1) / (s.n_train_users + 1)
    in_rare = np.zeros(slates.shape, bool) if rare is None else rare[slates]
    return {
        "predicted_love": predicted.mean(1),
        "predicted_rare": np.where(in_rare, predicted, 0.0).mean(1),
        "rare_share": in_rare.mean(1),
        "realised_love": (exam * s.true["love"][rows, slates]).mean(1),
        "purchase": (exam * s.true["purchase"][rows, slates]).mean(1),
        "click": (exam * s.true["click"][rows, slates]).mean(1),
        "novelty": (-np.log2(share)).mean(1),
    }


def bootstrap_correlations(
    pred: np.ndarray, real: np.ndarray, n_boot: int, rng: np.random.Generator
) -> dict[str, float]:
    """Correlations of policy means across policies and their 95 % percentile intervals.

    ``pred`` and ``real`` are (U, P); each replicate resamples users with replacement, recomputes
    the P policy means and both correlations.
    """
    weights = bootstrap_counts(pred.shape[0], n_boot, rng) / pred.shape[0]
    mp, mr = weights @ pred, weights @ real
    out = {
        "pearson": pearson(pred.mean(0), real.mean(0)),
        "spearman": spearman(pred.mean(0), real.mean(0)),
    }
    for name, fn in (("pearson", pearson), ("spearman", spearman)):
        reps = np.array([fn(a, b) for a, b in zip(mp, mr, strict=True)])
        out[f"{name}_lo"], out[f"{name}_hi"] = (float(q) for q in np.quantile(reps, [0.025, 0.975]))
    return out


# ---- off-policy estimates from the logged impressions --------------------------------------------

OPE_ESTIMATORS = SLATE_ESTIMATORS  # SNIPS, SN-DR, self-tuned Switch-SN-DR


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
    cols = [Col.USER_IDX, Col.ITEM_IDX, "position", "r_love", Col.PROPENSITY_LOGGED]
    frame = pl.concat(
        [pl.read_parquet(features / f"{split}.parquet", columns=cols) for split in splits]
    ).filter(pl.col(Col.USER_IDX).is_in(users))
    usable = frame.drop_nulls(["position", Col.PROPENSITY_LOGGED])
    row = np.searchsorted(users, usable[Col.USER_IDX].to_numpy())
    return LoggedRounds(
        row=row,
        item=usable[Col.ITEM_IDX].to_numpy().astype(np.int64),
        position=usable["position"].to_numpy().astype(np.int64),
        love=usable["r_love"].to_numpy().astype(np.float64),
        pscore=usable[Col.PROPENSITY_LOGGED].to_numpy(),
        dropped=frame.height - usable.height,
    )


def off_policy_terms(s: Setting, slates: np.ndarray, log: LoggedRounds) -> TopKSlateTerms:
    """SNIPS / SN-DR / Switch-SN-DR terms of one policy's slates; P[Love] at each slot is the DR
    model."""
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


# ---- where the logger rarely looked ------------------------------------------------------------


@dataclass(frozen=True)
class SupportCalibration:
    """P[Love]'s calibration on the validation impressions the logger rarely shows.

    ``metrics``: :func:`evaluation.calibration.low_propensity_calibration` of the validation rows
    whose logged propensity is at or below its ``rare_quantile`` quantile (``threshold``). An item
    whose share of training impressions is below ``threshold`` counts as *rarely shown*; the part
    of a policy's predicted love rate on such slots is only known up to the factor
    [``ratio_lo``, ``ratio_hi``] (observed / predicted there, exact 95 % bounds).
    """

    threshold: float
    metrics: dict[str, float]

    @property
    def ratio_bounds(self) -> tuple[float, float]:
        """(min(ratio_lo, 1), max(ratio_hi, 1)): the factor range that widens an interval (never
        narrows it)."""
        return min(self.metrics["ratio_lo"], 1.0), max(self.metrics["ratio_hi"], 1.0)


def load_support_calibration(
    features: Path, plove: PLoveScorer, quantile: float
) -> SupportCalibration:
    """:class:`SupportCalibration` from the features stage's validation split (its logged
    propensity, position and love label) and the calibrated ``plove``."""
    cols = [Col.USER_IDX, Col.ITEM_IDX, Col.POSITION, "r_love", Col.PROPENSITY_LOGGED]
    frame = pl.read_parquet(features / "valid.parquet", columns=cols).drop_nulls(
        [Col.POSITION, Col.PROPENSITY_LOGGED]
    )
    if frame.height == 0:
        raise ValueError("the validation split holds no impression with a logged propensity")
    p = plove.predict(
        frame[Col.USER_IDX].to_numpy(),
        frame[Col.ITEM_IDX].to_numpy(),
        frame[Col.POSITION].to_numpy().astype(np.int64),
    )
    metrics = low_propensity_calibration(
        p, frame["r_love"].to_numpy(), frame[Col.PROPENSITY_LOGGED].to_numpy(), share=quantile
    )
    return SupportCalibration(metrics["propensity_threshold"], metrics)


def widened_interval(
    predicted: np.ndarray,
    predicted_rare: np.ndarray,
    ratio_bounds: tuple[float, float],
    counts: np.ndarray,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """The (1 − α) interval of a policy's predicted love rate, widened where it rests on slots the
    logger rarely showed: per replicate b (users drawn ``counts[b]`` times, shape (B, U)) the mean
    rate is C_b + R_b with R_b the rarely-shown part; the interval runs from the α/2 quantile of
    C_b + r_lo·R_b to the 1 − α/2 quantile of C_b + r_hi·R_b, (r_lo, r_hi) = ``ratio_bounds``.
    ``predicted``, ``predicted_rare`` per user, shape (U,)."""
    n = counts.sum(axis=1)
    covered = counts @ (predicted - predicted_rare) / n
    rare = counts @ predicted_rare / n
    lo = np.quantile(covered + ratio_bounds[0] * rare, alpha / 2)
    hi = np.quantile(covered + ratio_bounds[1] * rare, 1 - alpha / 2)
    return float(lo), float(hi)


def evaluate_policies(
    s: Setting,
    cfg: PLoveEvaluatorConfig,
    log: LoggedRounds,
    support: SupportCalibration | None = None,
) -> tuple[list[dict], dict]:
    """Per-policy rows (predicted, realised and off-policy love rates with intervals) sorted by the
    realised rate, and the summary (correlations with intervals, per policy subset; OPE block).

    With ``support`` each row also holds ``rare_share`` (share of the policy's slots on items the
    logger rarely showed) and ``widened_lo``, ``widened_hi`` (:func:`widened_interval`)."""
    slates = {name: make() for name, make in policies(s).items()}
    rare = None if support is None else s.exposure_share() < support.threshold
    measured = {name: per_user(s, sl, rare) for name, sl in slates.items()}
    names = list(measured)
    pred = np.stack([measured[n]["predicted_love"] for n in names], axis=1)
    real = np.stack([measured[n]["realised_love"] for n in names], axis=1)
    rng = np.random.default_rng(cfg.seed + 1)
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
            **bootstrap_correlations(pred[:, cols], real[:, cols], cfg.bootstrap, rng),
        }
        for key, (_, cols) in subsets.items()
    }
    terms = {name: off_policy_terms(s, slates[name], log) for name in names}
    counts = bootstrap_counts(len(s.users), cfg.bootstrap, seed=cfg.seed + 2)
    ope, ope_rows = ope_summary(names, pred, real, terms, subsets, counts)
    rows = []
    for j, name in enumerate(names):
        p_int = mean_interval(pred[:, j], cfg.bootstrap, rng)
        r_int = mean_interval(real[:, j], cfg.bootstrap, rng)
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
        support_cols = {}
        if support is not None:
            m = measured[name]
            lo, hi = widened_interval(
                m["predicted_love"], m["predicted_rare"], support.ratio_bounds, counts
            )
            support_cols = {
                "rare_share": float(m["rare_share"].mean()),
                "widened_lo": lo,
                "widened_hi": hi,
            }
        rows.append(
            {
                "policy": name,
                "optimises": OPTIMISES.get(name, "none"),
                "predicted": float(pred[:, j].mean()),
                "predicted_lo": p_int.lower,
                "predicted_hi": p_int.upper,
                **support_cols,
                "realised": float(real[:, j].mean()),
                "realised_lo": r_int.lower,
                "realised_hi": r_int.upper,
                "ratio": float(pred[:, j].mean() / real[:, j].mean()),
                "purchase": float(measured[name]["purchase"].mean()),
                **ope_cols,
                "switch_dr_lambda": float(terms[name].switch_fit()[1]),
                "ope_matched": terms[name].n_matched,
                "ope_matched_loves": terms[name].matched_reward,
            }
        )
    rows.sort(key=lambda r: r["realised"])
    if support is not None:
        summary["support"] = {
            "rare_quantile": cfg.rare_quantile,
            "propensity_threshold": support.threshold,
            "rarely_shown_items": int(rare.sum()),
            "validation_low_propensity": support.metrics,
            "widening_factor": list(support.ratio_bounds),
        }
    summary.update(
        n_policies=len(names),
        n_users=len(s.users),
        k=s.k,
        n_boot=cfg.bootstrap,
        ope={
            **ope,
            "splits": list(cfg.ope_splits),
            "n_rounds": int(log.row.size),
            "n_loves": int(log.love.sum()),
            "dropped_rounds": log.dropped,
            "target": "uniform over the policy's K slots",
            "position_model": "PBM, e(p) = 1/log2(p + 2)",
            "interval": "95 % percentile bootstrap over users (Switch-SN-DR: λ re-chosen per "
            "replicate)",
            "switch_dr_rule": "SLOPE++ over λ ∈ {∞, 1024, …, 0.25, 0} on w = 1 / (K π_0)",
            # labels, so that λ = ∞ (SN-DR) is not written as JSON null
            "switch_dr_lambda": {name: f"{terms[name].switch_fit()[1]:g}" for name in names},
        },
    )
    return rows, summary


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


def sweep(s: Setting, cfg: PLoveSweepConfig) -> tuple[list[dict], dict]:
    """Rows of :func:`sweep_rows` per candidate count with the changes against w_love = 0 and the
    guardrail, and the summary (best w_love within the guardrail per candidate count)."""
    rows = []
    for candidates in cfg.candidates:
        block = sweep_rows(s, cfg.weights, candidates)
        base = block[0]
        for r in block:
            r["love_lift"] = r["love_rate"] / base["love_rate"] - 1
            r["purchase_change"] = r["purchase_rate"] / base["purchase_rate"] - 1
            r["coverage_change"] = r["coverage"] / base["coverage"] - 1
            r["overestimate"] = r["predicted_love"] / r["love_rate"]
            r["guardrail_ok"] = r["purchase_change"] >= -cfg.max_purchase_drop
        rows += block
    best = {}
    for candidates in cfg.candidates:
        ok = [r for r in rows if r["candidates"] == candidates and r["guardrail_ok"] and r["w_rel"]]
        best[str(candidates)] = max(ok, key=lambda r: r["love_rate"])["w_love"] if ok else None
    summary = {
        "best_w_love_within_guardrail": best,
        "max_purchase_drop": cfg.max_purchase_drop,
        "n_users": len(s.users),
        "k": s.k,
        "rows": rows,
    }
    return rows, summary
