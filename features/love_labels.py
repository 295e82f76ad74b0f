"""Love labels per impression, their temporal split and negative down-sampling (methods.md §3).

Unit: an impression (user, item, session) — the first logged ``impression`` event of that key.
``love = 1`` iff a ``love`` event of the same key arrives in ``[t_imp, t_imp + window]``; ``click``
likewise (an auxiliary target). Which impressions are kept:

* only impressions that were rendered (an ``impression`` event exists); feedback-only keys are
  dropped, since nothing was shown that could be reacted to;
* impressions without any feedback stay, as negatives;
* impressions whose window runs past the end of the log (``t_imp + window > max ts``) are
  *censored* — a love may still arrive — and are dropped rather than counted as negatives.

Events without a session id share the key ``""``, so a null-session love only matches a null-session
impression of the same (user, item).

Down-sampling keeps every positive and each negative with probability w. A model fitted on the
sample estimates p′ with odds(p′) = odds(p) / w, so the exact correction is
``p = w·p′ / (w·p′ + 1 − p′)``, i.e. ``logit(p) = logit(p′) + log w``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import IMPRESSION, Col
from features.split import SPLITS, SplitConfig, assign_split, time_cuts

KEY = [Col.USER, Col.ITEM, Col.SESSION]
LABEL_COLUMNS = [*KEY, Col.TS, Col.POSITION, Col.PROPENSITY, "click", "love"]


class LoveLabelConfig(BaseModel):
    """How love labels are built from the event table (params.yaml → ``plove.labels``)."""

    model_config = ConfigDict(extra="forbid")

    reaction: str = Field("love", min_length=1, description="event name of the reaction")
    click_event: str = Field(
        "click", min_length=1, description="event of the auxiliary click label"
    )
    window_seconds: float = Field(
        3600.0, gt=0, description="a reaction counts if it follows the impression within this time"
    )
    negative_rate: float = Field(
        1.0, gt=0, le=1, description="w: share of negatives kept in training (1 = no sampling)"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = Field(0, description="seed of the negative down-sampling")

    @model_validator(mode="after")
    def _split_by_time(self) -> LoveLabelConfig:
        method = getattr(self.split, "method", "temporal")
        if method != "temporal":
            raise ValueError(
                f"love labels are split by time: split.method must be 'temporal', got {method!r}"
            )
        return self


def _window(seconds: float) -> pl.Expr:
    return pl.duration(microseconds=round(seconds * 1_000_000))


def love_labels(
    events: pl.LazyFrame,
    window_seconds: float,
    reaction: str = "love",
    click_event: str = "click",
) -> pl.LazyFrame:
    """One row per rendered, uncensored impression with its ``click`` and ``love`` flags (Int8).

    ``events`` follows the contract (``user_id, item_id, event, ts, session_id, position,
    propensity``). Output columns: :data:`LABEL_COLUMNS`, sorted by ``ts``; ``propensity`` and
    ``position`` are those of the first impression event of the key.
    """
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    event = pl.col(Col.EVENT).cast(pl.String)
    keyed = events.with_columns(pl.col(Col.SESSION).fill_null(""))
    log_end = keyed.select(pl.col(Col.TS).max().alias("_end"))
    impressions = (
        keyed.filter(event == IMPRESSION)
        .group_by(KEY)
        .agg(
            pl.col(Col.TS).min(),
            pl.col(Col.POSITION).sort_by(Col.TS).first(),
            pl.col(Col.PROPENSITY).sort_by(Col.TS).first(),
        )
    )
    reactions = keyed.filter(event.is_in([reaction, click_event])).select(
        *KEY, (event == reaction).alias("_is_love"), pl.col(Col.TS).alias("_t")
    )
    window = _window(window_seconds)
    in_window = (pl.col("_t") >= pl.col(Col.TS)) & (pl.col("_t") <= pl.col(Col.TS) + window)
    flags = (
        impressions.select(*KEY, Col.TS)
        .join(reactions, on=KEY, how="inner")
        .filter(in_window)
        .group_by(KEY)
        .agg(
            pl.col("_is_love").any().alias("love"),
            (~pl.col("_is_love")).any().alias("click"),
        )
    )
    return (
        impressions.join(flags, on=KEY, how="left")
        .join(log_end, how="cross")
        .filter(pl.col(Col.TS) + window <= pl.col("_end"))
        .select(
            *KEY,
            Col.TS,
            Col.POSITION,
            Col.PROPENSITY,
            pl.col("click").fill_null(False).cast(pl.Int8),
            pl.col("love").fill_null(False).cast(pl.Int8),
        )
        .sort(Col.TS, *KEY)
    )


def split_by_time(labels: pl.DataFrame, cfg: SplitConfig) -> dict[str, pl.DataFrame]:
    """Train / valid / test frames cut at the times of :func:`features.split.time_cuts`."""
    if labels.height < 3:
        raise ValueError(
            f"a temporal split needs at least 3 labelled impressions, got {labels.height}"
        )
    cuts = time_cuts(labels[Col.TS], cfg)
    tagged = assign_split(labels.lazy(), cuts).collect()
    return {s: tagged.filter(pl.col("split") == s).drop("split") for s in SPLITS}


def downsample_negatives(
    frame: pl.DataFrame, rate: float, seed: int = 0, label: str = "love"
) -> pl.DataFrame:
    """Every row with ``label = 1`` plus each other row independently with probability ``rate``."""
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate must lie in (0, 1], got {rate}")
    if rate == 1:
        return frame
    keep = np.random.default_rng(seed).random(frame.height) < rate
    return frame.filter(pl.Series(keep) | (pl.col(label) == 1))


def correct_downsampled(p_sampled: np.ndarray, rate: float) -> np.ndarray:
    """p = w·p′ / (w·p′ + 1 − p′): the probability on the full data from the sampled-data p′."""
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate must lie in (0, 1], got {rate}")
    p = np.asarray(p_sampled, dtype=np.float64)
    return rate * p / (rate * p + 1.0 - p)


def correct_downsampled_logit(logit_sampled: np.ndarray, rate: float) -> np.ndarray:
    """The same correction on the logit scale: logit(p) = logit(p′) + log w."""
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate must lie in (0, 1], got {rate}")
    return np.asarray(logit_sampled, dtype=np.float64) + np.log(rate)
