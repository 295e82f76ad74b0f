"""MovieLens 100K as graded implicit feedback, read from the pinned ``recbole`` wheel.

The files are RecBole "atomic" files (tab separated, header ``name:type``) under
``recbole/dataset_example/ml-100k/`` in ``recbole==1.2.1``; the wheel is downloaded and read with
zipfile, never installed (:mod:`features.sources.fetch`).

Mapping of one rating (user u, item i, rating r, time t in epoch seconds) to contract events, all at
``ts = t`` with ``session_id = "ml-<u>-<i>"`` and null position and propensity:

* ``impression`` and ``click`` always — having rated the film is feedback level 1;
* ``cart`` when ``r >= cart_min_rating`` (default 4);
* ``purchase`` when ``r >= purchase_min_rating`` (default 5);
* no ``love``: MovieLens has no separate reaction.

MovieLens logs no impressions, so the unrated exposures are *sampled*: for each rating,
``negatives_per_rating`` items are drawn uniformly (with replacement, seeded) from the items u had
not rated by time t, and emitted as ``impression`` rows at ``ts = t`` with their own session id
``"ml-<u>-<i>-neg<k>"`` (k = 0..negatives_per_rating-1; ``i`` is the rated item they accompany).
They are plausible non-clicks, not logged exposures: models see them as level 0.

The pool is "not rated *by then*", not "never rated": an item u rates later can be sampled. Drawing
from the items u never rated anywhere in the log would keep every one of u's validation and test
items out of its training negatives — the held-out future leaking into training (it inflated a
validation NDCG@10 by 0.034 in one measurement). With a temporal split the items excluded from a
training row's pool are all training items of u.

:func:`load_movielens_features` returns the user table (age, gender, occupation) and the item table
(release year, genres).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import IMPRESSION, Col
from features.negatives import PairSet
from features.sources.fetch import RECBOLE, fetch_wheel, read_member

ML100K_DIR = "recbole/dataset_example/ml-100k"


class MovieLensConfig(BaseModel):
    """How ratings become graded feedback and how many unrated exposures are sampled."""

    model_config = ConfigDict(extra="forbid")

    negatives_per_rating: int = Field(
        4, ge=0, description="sampled unrated items per rating, emitted as plain impressions"
    )
    cart_min_rating: int = Field(4, ge=1, le=5, description="lowest rating that also logs a cart")
    purchase_min_rating: int = Field(
        5, ge=1, le=5, description="lowest rating that also logs a purchase"
    )
    seed: int = Field(0, description="seed of the negative sampling")

    @model_validator(mode="after")
    def _purchase_implies_cart(self) -> MovieLensConfig:
        if self.purchase_min_rating < self.cart_min_rating:
            raise ValueError(
                f"purchase_min_rating ({self.purchase_min_rating}) must be >= cart_min_rating "
                f"({self.cart_min_rating}): every purchase must also be a cart"
            )
        return self


def _read_atomic(wheel: Path, name: str) -> pl.DataFrame:
    """An ML-100K atomic file as all-string columns, ``:type`` suffixes stripped from the names."""
    data = read_member(wheel, f"{ML100K_DIR}/{name}")
    frame = pl.read_csv(
        io.BytesIO(data), separator="\t", quote_char=None, infer_schema=False, encoding="utf8-lossy"
    )
    return frame.rename({c: c.split(":", 1)[0] for c in frame.columns})


def read_ratings(cache_dir: Path) -> pl.DataFrame:
    """The 100 000 ratings: ``user_id``, ``item_id`` (str), ``rating`` (Int32), ``ts`` (µs UTC)."""
    wheel = fetch_wheel(*RECBOLE, cache_dir)
    return _read_atomic(wheel, "ml-100k.inter").select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("rating").cast(pl.Float64).cast(pl.Int32),
        (pl.col("timestamp").cast(pl.Float64) * 1_000_000)
        .round()
        .cast(pl.Int64)
        .cast(pl.Datetime("us", "UTC"))
        .alias(Col.TS),
    )


def sample_unrated(
    users: np.ndarray,
    rated: np.ndarray,
    n_items: int,
    k: int,
    rng: np.random.Generator,
    ts: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` item codes per rating drawn uniformly from the items its user had not rated by then.

    ``users``, ``rated`` (n,) are the integer user and item codes of the ratings and ``ts`` (n,)
    their times; items are ``0..n_items-1``. Row r's draws avoid every item ``users[r]`` rated at or
    before ``ts[r]`` (without ``ts``: every item the user rated at all). Returns shape (n, k).
    """
    n = users.size
    if k == 0 or n == 0:
        return np.empty((n, k), dtype=np.int64)
    rated_pairs = PairSet(users, rated, n_items, ts)
    return rated_pairs.sample_outside(users, k, rng, at=ts)


def load_movielens(cfg: MovieLensConfig, cache_dir: Path) -> pl.DataFrame:
    """ML-100K as contract events (see the module docstring for the mapping).

    Returns columns ``user_id, item_id, event, session_id`` (str), ``ts`` (Datetime µs UTC),
    ``position`` (Int32, null), ``propensity`` (Float64, null); sorted by ``ts``, ``user_id``,
    ``session_id``.
    """
    ratings = read_ratings(cache_dir).with_columns(
        pl.concat_str(pl.lit("ml-"), Col.USER, pl.lit("-"), Col.ITEM).alias(Col.SESSION)
    )
    base = ratings.select(Col.USER, Col.ITEM, Col.TS, Col.SESSION)
    parts = [
        base.with_columns(pl.lit(IMPRESSION).alias(Col.EVENT)),
        base.with_columns(pl.lit("click").alias(Col.EVENT)),
        base.filter(ratings["rating"] >= cfg.cart_min_rating).with_columns(
            pl.lit("cart").alias(Col.EVENT)
        ),
        base.filter(ratings["rating"] >= cfg.purchase_min_rating).with_columns(
            pl.lit("purchase").alias(Col.EVENT)
        ),
    ]

    k = cfg.negatives_per_rating
    if k > 0:
        _, user_code = np.unique(ratings[Col.USER].to_numpy(), return_inverse=True)
        item_vocab, item_code = np.unique(ratings[Col.ITEM].to_numpy(), return_inverse=True)
        rng = np.random.default_rng(cfg.seed)
        ts = ratings[Col.TS].dt.epoch("us").to_numpy()
        draws = sample_unrated(user_code, item_code, item_vocab.size, k, rng, ts)
        owner = np.repeat(np.arange(ratings.height), k)
        slot = np.tile(np.arange(k), ratings.height).astype(str)
        negatives = base.select(pl.col(Col.USER, Col.TS, Col.SESSION).gather(owner)).with_columns(
            pl.Series(Col.ITEM, item_vocab[draws.ravel()], dtype=pl.String),
            pl.concat_str(pl.col(Col.SESSION), pl.lit("-neg"), pl.Series(slot)).alias(Col.SESSION),
            pl.lit(IMPRESSION).alias(Col.EVENT),
        )
        parts.append(negatives)

    return (
        pl.concat([p.select(Col.USER, Col.ITEM, Col.EVENT, Col.TS, Col.SESSION) for p in parts])
        .with_columns(
            pl.lit(None, pl.Int32).alias(Col.POSITION),
            pl.lit(None, pl.Float64).alias(Col.PROPENSITY),
        )
        .sort(Col.TS, Col.USER, Col.SESSION, maintain_order=True)
    )


def load_movielens_features(cache_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """User and item features of ML-100K.

    Returns ``(users, items)``: ``users`` has ``user_id`` (str), ``age`` (Int32), ``gender`` and
    ``occupation`` (str), 943 rows; ``items`` has ``item_id`` (str), ``release_year`` (Int32, null
    where unknown) and ``genres`` (list[str]), 1682 rows.
    """
    wheel = fetch_wheel(*RECBOLE, cache_dir)
    users = _read_atomic(wheel, "ml-100k.user").select(
        pl.col("user_id").alias(Col.USER),
        pl.col("age").cast(pl.Int32, strict=False),
        "gender",
        "occupation",
    )
    items = _read_atomic(wheel, "ml-100k.item").select(
        pl.col("item_id").alias(Col.ITEM),
        pl.col("release_year").cast(pl.Int32, strict=False),
        pl.col("class").str.split(" ").alias("genres"),
    )
    return users, items
