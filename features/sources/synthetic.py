"""A simulated shop with known ground truth, the embedded default source.

The world (all seeded):

* Users and items have latent factor blocks ``U_b, V_b`` (b = 0..3) with N(0, d^-1/2) entries, so each
  block's dot product is roughly N(0, 1). Items follow a power-law popularity ``pop_i ∝ rank^-α`` and
  have a quality ``q_i`` correlated with log-popularity.
* Affinities nest like the funnel: ``A_click = σ_a·<U0,V0> + w_q·q``, ``A_cart = A_click + σ_a·<U1,V1>``,
  ``A_purchase = A_cart + σ_a·<U2,V2>``, ``A_love = A_click + σ_a·<U3,V3>``.
* A popularity-biased stochastic logging policy ``π(i|u) ∝ exp(β·log pop_i + τ·A_click(u,i))`` fills
  slates of ``slate_size`` distinct items by sequential sampling without replacement; the logged
  propensity of the item at position p is ``π(i_p|u) / (1 − Σ_{j<p} π(i_j|u))``.
* Funnel: ``P(click) = e(p)·σ(b_1 + A_click)`` with examination ``e(p) = 1/log2(p + 2)``,
  ``P(cart|click) = σ(b_2 + A_cart)``, ``P(purchase|cart) = σ(b_3 + A_purchase)``,
  ``P(love|click) = σ(b_4 + A_love)``. The biases b are solved so that the logged rates match the
  configured click-through and conversion rates.

:class:`World` keeps everything needed to compute the true probabilities of any (user, item) pair,
so estimators and rankings can be judged against the truth rather than against biased logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from features.contract import IMPRESSION, Col

N_BLOCKS = 4  # click, cart, purchase, love


class SyntheticConfig(BaseModel):
    """Size and behaviour of the simulated world."""

    model_config = ConfigDict(extra="forbid")

    n_users: int = Field(3000, ge=2, description="number of users")
    n_items: int = Field(2000, ge=2, description="number of items in the catalogue")
    n_impressions: int = Field(
        600_000, ge=10, description="logged impressions (slates × slate size)"
    )
    slate_size: int = Field(10, ge=1, le=100)
    dim: int = Field(8, ge=1, description="dimension of each latent factor block")
    affinity_scale: float = Field(1.5, gt=0, description="σ_a, weight of each factor block")
    quality_weight: float = Field(0.5, ge=0, description="w_q, weight of item quality")
    quality_popularity_corr: float = Field(0.5, ge=-1, le=1, description="corr(q, log pop)")
    popularity_exponent: float = Field(1.0, ge=0, description="α of the power law")
    policy_popularity: float = Field(1.0, ge=0, description="β, popularity bias of the logger")
    policy_relevance: float = Field(0.5, ge=0, description="τ, relevance awareness of the logger")
    click_rate: float = Field(0.04, gt=0, lt=1, description="target P(click | impression)")
    cart_rate: float = Field(0.25, gt=0, lt=1, description="target P(cart | click)")
    purchase_rate: float = Field(0.35, gt=0, lt=1, description="target P(purchase | cart)")
    love_rate: float = Field(0.10, gt=0, lt=1, description="target P(love | click)")
    days: float = Field(28.0, gt=0, description="time span of the log")
    start: datetime = Field(datetime(2025, 1, 1, tzinfo=UTC), description="first event time")
    bad_row_fraction: float = Field(
        0.0, ge=0, lt=1, description="fraction of corrupted rows appended, to exercise quarantine"
    )
    seed: int = 0


@dataclass
class World:
    """Ground truth of a simulated world: factors, item quality and funnel biases."""

    user_factors: np.ndarray  # (N_BLOCKS, n_users, dim)
    item_factors: np.ndarray  # (N_BLOCKS, n_items, dim)
    item_quality: np.ndarray  # (n_items,)
    log_popularity: np.ndarray  # (n_items,)
    biases: np.ndarray  # (4,) b_click, b_cart, b_purchase, b_love
    affinity_scale: float
    quality_weight: float

    @property
    def n_users(self) -> int:
        return self.user_factors.shape[1]

    @property
    def n_items(self) -> int:
        return self.item_factors.shape[1]

    def affinities(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Affinities (A_click, A_cart, A_purchase, A_love) of aligned pairs, shape (4, n)."""
        dots = np.einsum("bnd,bnd->bn", self.user_factors[:, users], self.item_factors[:, items])
        return self._nest(
            dots * self.affinity_scale, self.quality_weight * self.item_quality[items]
        )

    def affinity_matrix(self, users: np.ndarray) -> np.ndarray:
        """Affinities of ``users`` against every item, shape (4, len(users), n_items)."""
        dots = np.einsum("bud,bid->bui", self.user_factors[:, users], self.item_factors)
        return self._nest(dots * self.affinity_scale, self.quality_weight * self.item_quality)

    def click_affinity_matrix(self, users: np.ndarray) -> np.ndarray:
        """A_click of ``users`` against every item, shape (len(users), n_items).

        einsum, not ``@``: a BLAS matrix product rounds differently with one thread than with
        several, which changed every logged propensity in the last bits with OMP_NUM_THREADS.
        """
        dots = np.einsum("ud,id->ui", self.user_factors[0, users], self.item_factors[0])
        return dots * self.affinity_scale + self.quality_weight * self.item_quality

    @staticmethod
    def _nest(dots: np.ndarray, quality: np.ndarray) -> np.ndarray:
        click = dots[0] + quality
        cart = click + dots[1]
        purchase = cart + dots[2]
        love = click + dots[3]
        return np.stack([click, cart, purchase, love])

    def true_probabilities(self, affinities: np.ndarray) -> dict[str, np.ndarray]:
        """True unconditional probabilities at the top position (examination 1).

        Returns ``click`` = P(click), ``cart`` = P(cart) = P(click)·P(cart|click), ``purchase``
        likewise, and ``love`` = P(click)·P(love|click); arrays shaped like ``affinities[0]``.
        """
        click = _sigmoid(self.biases[0] + affinities[0])
        cart = click * _sigmoid(self.biases[1] + affinities[1])
        purchase = cart * _sigmoid(self.biases[2] + affinities[2])
        love = click * _sigmoid(self.biases[3] + affinities[3])
        return {"click": click, "cart": cart, "purchase": purchase, "love": love}

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            item_quality=self.item_quality,
            log_popularity=self.log_popularity,
            biases=self.biases,
            scalars=np.array([self.affinity_scale, self.quality_weight]),
        )

    @classmethod
    def load(cls, path: str | Path) -> World:
        with np.load(path) as z:
            scale, weight = z["scalars"]
            return cls(
                z["user_factors"],
                z["item_factors"],
                z["item_quality"],
                z["log_popularity"],
                z["biases"],
                float(scale),
                float(weight),
            )


def user_id(idx: np.ndarray) -> np.ndarray:
    return np.char.add("u", idx.astype(str))


def item_id(idx: np.ndarray) -> np.ndarray:
    return np.char.add("i", idx.astype(str))


def parse_index(ids: list[str] | np.ndarray) -> np.ndarray:
    """Simulator index of external ids such as ``u12`` or ``i7``."""
    return np.array([int(s[1:]) for s in ids], dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_world(cfg: SyntheticConfig, rng: np.random.Generator) -> World:
    scale = cfg.dim**-0.25
    users = rng.normal(0.0, scale, (N_BLOCKS, cfg.n_users, cfg.dim)).astype(np.float32)
    items = rng.normal(0.0, scale, (N_BLOCKS, cfg.n_items, cfg.dim)).astype(np.float32)
    ranks = rng.permutation(cfg.n_items) + 1
    log_pop = -cfg.popularity_exponent * np.log(ranks)
    z = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12)
    rho = cfg.quality_popularity_corr
    quality = rho * z + np.sqrt(1 - rho**2) * rng.normal(size=cfg.n_items)
    return World(
        users, items, quality, log_pop, np.zeros(4), cfg.affinity_scale, cfg.quality_weight
    )


def _solve_bias(aff: np.ndarray, weight: np.ndarray, target: float) -> float:
    """The b with Σ w·σ(b + aff) / Σ w = target (bisection; the left side rises with b)."""
    lo, hi = -30.0, 30.0
    total = weight.sum()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (weight * _sigmoid(mid + aff)).sum() / total < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def examination(position: np.ndarray) -> np.ndarray:
    """Position bias e(p) = 1 / log2(p + 2) for 0-based positions."""
    return 1.0 / np.log2(position + 2.0)


def _sample_slates(
    logits: np.ndarray, slate_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential sampling without replacement from softmax(logits) rows.

    Draws i.i.d. candidates and keeps the first ``slate_size`` distinct ones of each row, which is
    exactly sequential sampling without replacement. Returns (row, item, propensity), propensity of
    the p-th kept item being π(i_p) / (1 − Σ_{j<p} π(i_j)).
    """
    n_rows, n_items = logits.shape
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    n_draws = min(4 * slate_size, 4 * n_items)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    offsets = np.arange(n_rows)[:, None]
    flat = (cdf + offsets).ravel()
    queries = offsets + rng.random((n_rows, n_draws)) * (1 - 1e-12)
    cand = np.searchsorted(flat, queries.ravel(), side="right").reshape(n_rows, n_draws)
    cand = np.minimum(cand - offsets * n_items, n_items - 1)
    earlier = np.tril(np.ones((n_draws, n_draws), dtype=bool), k=-1)
    dup = ((cand[:, :, None] == cand[:, None, :]) & earlier).any(axis=2)
    rank = np.cumsum(~dup, axis=1)
    keep = ~dup & (rank <= slate_size)
    rows, cols = np.nonzero(keep)
    items = cand[rows, cols]
    pi = probs[rows, items]
    # Mass of the items already placed in the same slate, before each kept item.
    pi_grid = np.zeros_like(cand, dtype=np.float64)
    pi_grid[rows, cols] = pi
    before = np.cumsum(pi_grid, axis=1) - pi_grid
    propensity = pi / np.clip(1.0 - before[rows, cols], 1e-12, None)
    return rows, items, np.clip(propensity, 1e-12, 1.0)


def draw_funnel(
    world: World,
    users: np.ndarray,
    items: np.ndarray,
    position: np.ndarray,
    rng: np.random.Generator,
    affinities: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Draw the funnel's responses to aligned impressions (user, item, 0-based position).

    click ~ Bernoulli(e(p)·σ(b_1 + A_click)), cart | click ~ Bernoulli(σ(b_2 + A_cart)),
    purchase | cart ~ Bernoulli(σ(b_3 + A_purchase)), love | click ~ Bernoulli(σ(b_4 + A_love)).
    Returns boolean masks ``click, cart, purchase, love``; ``affinities`` may pass precomputed
    :meth:`World.affinities` of the pairs.
    """
    aff = world.affinities(users, items) if affinities is None else affinities
    b, n = world.biases, len(items)
    clicked = rng.random(n) < examination(position) * _sigmoid(b[0] + aff[0])
    carted = clicked & (rng.random(n) < _sigmoid(b[1] + aff[1]))
    bought = carted & (rng.random(n) < _sigmoid(b[2] + aff[2]))
    loved = clicked & (rng.random(n) < _sigmoid(b[3] + aff[3]))
    return {"click": clicked, "cart": carted, "purchase": bought, "love": loved}


def simulate(
    cfg: SyntheticConfig, chunk_rows: int = 2048, progress: bool = True
) -> tuple[pl.DataFrame, World]:
    """Simulate a logged event table (contract columns, ts as datetime) and its ground truth."""
    rng = np.random.default_rng(cfg.seed)
    world = make_world(cfg, rng)
    n_requests = max(1, cfg.n_impressions // cfg.slate_size)
    activity = rng.lognormal(0.0, 1.0, cfg.n_users)
    req_user = rng.choice(cfg.n_users, size=n_requests, p=activity / activity.sum())
    req_time = np.sort(rng.random(n_requests)) * cfg.days * 86_400e6  # µs after start

    chunks: dict[str, list[np.ndarray]] = {k: [] for k in ("req", "item", "prop")}
    base_logit = cfg.policy_popularity * world.log_popularity
    steps = range(0, n_requests, chunk_rows)
    for start in tqdm(steps, desc="simulate slates", disable=not progress, unit="chunk"):
        users = req_user[start : start + chunk_rows]
        aff_click = world.click_affinity_matrix(users)
        rows, items, prop = _sample_slates(
            base_logit + cfg.policy_relevance * aff_click, cfg.slate_size, rng
        )
        chunks["req"].append(rows + start)
        chunks["item"].append(items)
        chunks["prop"].append(prop)
    req = np.concatenate(chunks["req"])
    items = np.concatenate(chunks["item"])
    prop = np.concatenate(chunks["prop"])
    first = np.r_[0, np.flatnonzero(np.diff(req)) + 1]
    position = np.arange(req.size) - np.repeat(first, np.diff(np.r_[first, req.size]))
    users = req_user[req]

    aff = world.affinities(users, items)
    exam = examination(position)
    calib = slice(0, min(aff.shape[1], 500_000))
    b = np.zeros(4)
    # Σ e·σ(b + A) / n = click rate, i.e. the e-weighted mean hits click_rate · n / Σ e.
    mean_exam = float(exam[calib].mean())
    if cfg.click_rate >= mean_exam:
        raise ValueError(
            f"click_rate {cfg.click_rate} must be below the mean examination {mean_exam:.3f}"
        )
    b[0] = _solve_bias(aff[0, calib], exam[calib], cfg.click_rate / mean_exam)
    p_click = exam * _sigmoid(b[0] + aff[0])
    b[1] = _solve_bias(aff[1, calib], p_click[calib], cfg.cart_rate)
    p_cart_w = p_click * _sigmoid(b[1] + aff[1])
    b[2] = _solve_bias(aff[2, calib], p_cart_w[calib], cfg.purchase_rate)
    b[3] = _solve_bias(aff[3, calib], p_click[calib], cfg.love_rate)
    world.biases = b

    drawn = draw_funnel(world, users, items, position, rng, aff)
    clicked, carted, bought, loved = (drawn[e] for e in ("click", "cart", "purchase", "love"))

    t0 = req_time[req].astype(np.int64)
    t_click = t0 + rng.exponential(30e6, items.size).astype(np.int64)
    t_cart = t_click + rng.exponential(120e6, items.size).astype(np.int64)
    t_buy = t_cart + rng.exponential(600e6, items.size).astype(np.int64)
    t_love = t_click + rng.exponential(60e6, items.size).astype(np.int64)

    parts = [
        (np.ones(items.size, bool), IMPRESSION, t0, True),
        (clicked, "click", t_click, False),
        (carted, "cart", t_cart, False),
        (bought, "purchase", t_buy, False),
        (loved, "love", t_love, False),
    ]
    frames = []
    start_us = int(cfg.start.timestamp() * 1e6)
    for mask, name, t, logged in parts:
        idx = np.flatnonzero(mask)
        frames.append(
            pl.DataFrame(
                {
                    Col.USER: user_id(users[idx]),
                    Col.ITEM: item_id(items[idx]),
                    Col.EVENT: np.full(idx.size, name),
                    Col.TS: t[idx] + start_us,
                    Col.SESSION: np.char.add("r", req[idx].astype(str)),
                    Col.POSITION: position[idx].astype(np.int32),
                    Col.PROPENSITY: prop[idx] if logged else np.full(idx.size, np.nan),
                }
            )
        )
    events = (
        pl.concat(frames)
        .with_columns(
            pl.col(Col.TS).cast(pl.Datetime("us", "UTC")),
            pl.col(Col.PROPENSITY).fill_nan(None),
        )
        .sort(Col.TS)
    )
    if cfg.bad_row_fraction > 0:
        events = pl.concat([events, _corrupt(events, cfg.bad_row_fraction, rng)]).sort(
            Col.TS, nulls_last=True
        )
    return events, world


def _corrupt(events: pl.DataFrame, fraction: float, rng: np.random.Generator) -> pl.DataFrame:
    """Copies of random rows, each broken in one of the ways the contract rejects."""
    n = max(1, int(events.height * fraction))
    bad = events.sample(n, seed=int(rng.integers(2**31)), with_replacement=True)
    kind = rng.integers(0, 4, n)
    return bad.with_columns(
        pl.when(pl.Series(kind == 0)).then(None).otherwise(pl.col(Col.USER)).alias(Col.USER),
        pl.when(pl.Series(kind == 1))
        .then(pl.lit("bogus_event"))
        .otherwise(pl.col(Col.EVENT).cast(pl.String))
        .alias(Col.EVENT),
        pl.when(pl.Series(kind == 2))
        .then(pl.lit(1.5))
        .otherwise(pl.col(Col.PROPENSITY))
        .alias(Col.PROPENSITY),
        pl.when(pl.Series(kind == 3)).then(None).otherwise(pl.col(Col.TS)).alias(Col.TS),
    )


def side_features(
    world: World, seed: int = 0, n_groups: int = 8
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Observable side features of the simulated users and items: ``(users, items)``.

    Items: ``category`` = the nearest of ``n_groups`` random prototypes to the item's click factors
    (informative about taste), ``price_band`` = a quintile of quality plus noise. Users: ``segment``
    = the nearest prototype to the user's click factors, ``region`` = uninformative noise.
    """
    rng = np.random.default_rng(seed + 7919)
    prototypes = rng.normal(size=(n_groups, world.item_factors.shape[2]))
    category = np.argmax(world.item_factors[0] @ prototypes.T, axis=1)
    segment = np.argmax(world.user_factors[0] @ prototypes.T, axis=1)
    noisy_quality = world.item_quality + rng.normal(0, 0.5, world.n_items)
    band = np.searchsorted(np.quantile(noisy_quality, [0.2, 0.4, 0.6, 0.8]), noisy_quality)
    users = pl.DataFrame(
        {
            Col.USER: user_id(np.arange(world.n_users)),
            "segment": np.char.add("s", segment.astype(str)),
            "region": np.char.add("r", rng.integers(0, 5, world.n_users).astype(str)),
        }
    )
    items = pl.DataFrame(
        {
            Col.ITEM: item_id(np.arange(world.n_items)),
            "category": np.char.add("c", category.astype(str)),
            "price_band": band.astype(np.int64),
        }
    )
    return users, items


# RetailRocket's event names for the contract events it logs (it has no click or reaction events).
RETAIL_EVENTS = {IMPRESSION: "view", "cart": "addtocart", "purchase": "transaction"}


def retail_log(events: pl.DataFrame) -> pl.DataFrame:
    """Simulated events as a RetailRocket-style log: what most shops can export.

    Columns ``timestamp`` (ms since the epoch), ``visitorid``, ``event`` (view / addtocart /
    transaction), ``itemid``; clicks, reactions, sessions, positions and propensities are dropped,
    as they are absent from such logs. Read it back with ``source.kind: csv`` and the mapping of
    the README's walkthrough (``contract.levels: [cart, purchase]``, ``contract.reactions: []``).
    """
    kept = events.filter(pl.col(Col.EVENT).cast(pl.String).is_in(list(RETAIL_EVENTS)))
    return kept.select(
        (pl.col(Col.TS).dt.epoch("us") // 1000).alias("timestamp"),
        pl.col(Col.USER).alias("visitorid"),
        pl.col(Col.EVENT).cast(pl.String).replace_strict(RETAIL_EVENTS).alias("event"),
        pl.col(Col.ITEM).alias("itemid"),
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m features.sources.synthetic --retail-csv PATH``: write an example shop log."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--retail-csv", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(
        n_users=args.users, n_items=args.items, n_impressions=args.impressions, seed=args.seed
    )
    events, _ = simulate(cfg, progress=False)
    log = retail_log(events)
    args.retail_csv.parent.mkdir(parents=True, exist_ok=True)
    log.write_csv(args.retail_csv)
    counts = dict(log.group_by("event").len().iter_rows())
    print(f"wrote {log.height:,} events {counts} to {args.retail_csv}")


if __name__ == "__main__":
    main()
