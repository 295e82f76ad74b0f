"""An OBD-like bandit log with known truth: batch Bernoulli Thompson sampling over 80 items, 3 slots.

Used by the estimator-selection study (``python -m experiments.ope_selection``) to measure each
off-policy estimator's bias, RMSE and interval coverage where the answer is known.

World: item a has click rate θ_a = σ(μ + σ_item z_a), z_a ∼ N(0, 1), with μ set so that the mean of
θ is ``ctr``; slot k multiplies it by e_k (mean 1), so P(click | a at slot k) = e_k θ_a. The target
is the uniform random policy, whose value ``V = mean_k mean_a e_k θ_a`` is known exactly.

Logger (like ZOZOTOWN's "bts"): Thompson sampling on Beta(1 + clicks, 1 + non-clicks) per item
(normal draws with the posterior's mean and variance), blind to slots: each slate draws θ̃ from
the posteriors and shows the top 3, best first. The posterior is warmed on
``history_impressions`` impressions (in ``history_batches`` batches of the same policy), then
updated after each of ``epochs`` equal parts of the logged period. As in OBD, the logged
propensity of (a, k) is a Monte Carlo estimate from ``pscore_draws`` posterior draws of the
current epoch, floored at one draw: it is noisy, and an item shown although the Monte Carlo run
never drew it gets a propensity far below its true one (OBD's 1e-6 propensities are of this kind).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimConfig:
    """Size of a simulated log and of its world; every field is validated."""

    n_rounds: int = 10_000  # logged rows (one per slot; the last slate may be cut short)
    n_items: int = 80
    n_positions: int = 3
    ctr: float = 0.003  # mean click rate of the items (the uniform policy's value); logger ≈ 0.0043
    item_logit_sd: float = 0.25  # spread of item click rates on the logit scale
    position_effect: tuple[float, ...] = (1.1, 1.0, 0.9)  # e_k, normalised to mean 1
    history_impressions: int = 400_000  # warm-up of the Thompson sampler
    history_batches: int = 20
    epochs: int = 10  # posterior updates during the logged period
    pscore_draws: int = 20_000  # Monte Carlo draws behind each logged propensity
    corrupt_pscores: int = 0  # rounds whose logged propensity is replaced by 1e-6 (OBD-women-like)

    def __post_init__(self) -> None:
        ints = ("n_rounds", "n_items", "n_positions", "history_impressions", "history_batches",
                "epochs", "pscore_draws")  # fmt: skip
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        c = self.corrupt_pscores
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= self.n_rounds:
            raise ValueError(f"corrupt_pscores must be an integer in [0, n_rounds], got {c!r}")
        if self.n_positions > self.n_items:
            raise ValueError("a slate needs n_positions distinct items")
        if not 0 < self.ctr < 0.5:
            raise ValueError(f"ctr must lie in (0, 0.5), got {self.ctr}")
        if not self.item_logit_sd >= 0:
            raise ValueError("item_logit_sd must be ≥ 0")
        e = np.asarray(self.position_effect, dtype=float)
        if e.shape != (self.n_positions,) or np.any(e <= 0):
            raise ValueError("position_effect needs one positive factor per position")


@dataclass(frozen=True)
class SimLog:
    """One simulated log, arrays of shape (n_rounds,), and its truth."""

    reward: np.ndarray  # 0/1 clicks
    pscore: np.ndarray  # logged (Monte Carlo) π_0(a_t | k_t)
    item: np.ndarray
    position: np.ndarray
    truth: float  # V(uniform)
    logger_value: float  # expected click rate of the logged rounds (naive's target, Monte Carlo)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_click_rates(cfg: SimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(θ_a of shape (n_items,), e_k of shape (n_positions,)) with mean θ = ctr, mean e = 1."""
    z = rng.standard_normal(cfg.n_items)
    lo, hi = -20.0, 5.0
    for _ in range(80):  # bisection on μ: mean σ(μ + s z) rises with μ
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(mid + cfg.item_logit_sd * z).mean() < cfg.ctr else (lo, mid)
    e = np.asarray(cfg.position_effect, dtype=float)
    return _sigmoid(0.5 * (lo + hi) + cfg.item_logit_sd * z), e / e.mean()


def _top_slots(
    alpha: np.ndarray, beta: np.ndarray, draws: int, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Items in slots 0..k−1 of ``draws`` Thompson slates, shape (draws, k).

    θ̃ is drawn from the normal with the Beta(α, β) posterior's mean and variance (Gaussian
    Thompson sampling; five times cheaper than Beta draws, the same ranking behaviour).
    """
    mean = alpha / (alpha + beta)
    sd = np.sqrt(mean * (1 - mean) / (alpha + beta + 1))
    sample = mean + sd * rng.standard_normal((draws, alpha.size))
    rows = np.arange(draws)
    top = np.empty((draws, k), np.int64)
    for j in range(k):  # k argmax passes beat a partial sort for k ≪ n_items
        top[:, j] = sample.argmax(axis=1)
        sample[rows, top[:, j]] = -np.inf
    return top


def _slot_frequencies(slates: np.ndarray, n_items: int) -> np.ndarray:
    """π(a | k) of a set of slates, shape (n_items, n_positions)."""
    d, k = slates.shape
    freq = np.zeros((n_items, k))
    for j in range(k):
        freq[:, j] = np.bincount(slates[:, j], minlength=n_items) / d
    return freq


def simulate_log(cfg: SimConfig, seed: int) -> SimLog:
    """A log of ``cfg.n_rounds`` rows from the Thompson-sampling logger (see the module docstring)."""
    rng = np.random.default_rng(seed)
    theta, e = make_click_rates(cfg, rng)
    n_items, k = cfg.n_items, cfg.n_positions
    shows, clicks = np.zeros(n_items), np.zeros(n_items)
    per_batch = cfg.history_impressions // cfg.history_batches
    for _ in range(cfg.history_batches):  # warm-up: expected exposure, sampled clicks
        freq = _slot_frequencies(_top_slots(1 + clicks, 1 + shows - clicks, 2000, k, rng), n_items)
        n_ak = np.stack([rng.multinomial(per_batch // k, freq[:, j]) for j in range(k)], axis=1)
        shows += n_ak.sum(axis=1)
        clicks += rng.binomial(n_ak, theta[:, None] * e[None, :]).sum(axis=1)
    slates_total = -(-cfg.n_rounds // k)
    bounds = np.linspace(0, slates_total, cfg.epochs + 1).astype(int)
    items, positions, rewards, pscores = [], [], [], []
    logger_value = 0.0
    for ep in range(cfg.epochs):
        a_post, b_post = 1 + clicks, 1 + shows - clicks
        mc = _slot_frequencies(_top_slots(a_post, b_post, cfg.pscore_draws, k, rng), n_items)
        logged = np.maximum(mc, 1.0 / cfg.pscore_draws)
        m = bounds[ep + 1] - bounds[ep]
        slates = _top_slots(a_post, b_post, m, k, rng)  # (m, k): the logger's actual choices
        a = slates.ravel()
        pos = np.tile(np.arange(k), m)
        r = (rng.random(a.size) < theta[a] * e[pos]).astype(np.float64)
        items.append(a)
        positions.append(pos)
        rewards.append(r)
        pscores.append(logged[a, pos])
        logger_value += m * k * float((mc * theta[:, None] * e[None, :]).sum() / k)
        np.add.at(shows, a, 1.0)
        np.add.at(clicks, a, r)
    truth = float((theta[:, None] * e[None, :]).mean())
    n = cfg.n_rounds
    pscore = np.concatenate(pscores)[:n]
    if cfg.corrupt_pscores:  # an OBD-women-like error: a shown item logged as nearly impossible
        pscore[rng.choice(n, cfg.corrupt_pscores, replace=False)] = 1e-6
    return SimLog(
        reward=np.concatenate(rewards)[:n],
        pscore=pscore,
        item=np.concatenate(items)[:n],
        position=np.concatenate(positions)[:n],
        truth=truth,
        logger_value=logger_value / (slates_total * k),
    )


def weight_summary(pscore: np.ndarray, n_items: int, reward: np.ndarray) -> dict[str, float]:
    """Quantiles of w = (1/n_items)/π_0 (uniform target), the Kish ESS share, mean w and clicks of
    one log, to compare a simulated log with OBD's; arrays of shape (n_rounds,)."""
    w = (1.0 / n_items) / pscore
    q = np.quantile(w, [0.1, 0.5, 0.9, 0.99])
    return {
        "w_q10": q[0], "w_q50": q[1], "w_q90": q[2], "w_q99": q[3], "w_max": float(w.max()),
        "ess_share": float(w.sum() ** 2 / (w**2).sum() / w.size), "mean_w": float(w.mean()),
        "clicks": float(reward.sum()), "ctr": float(reward.mean()),
    }  # fmt: skip
