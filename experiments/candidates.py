"""The models the comparison and tuning commands know, each built through the library API.

Per model: how to build it from a settings dict, its Optuna search space (None: nothing to tune)
and whether it is iterative (fits with early stopping on the injected validation; the number of
epochs chosen there is what a refit runs). Defaults are the settings used when no tuned file
(``tuned/<protocol>.yaml``, written by ``experiments.tune``) says otherwise.

Top-N models (one level, positives only): ``popularity``, ``als`` (implicit), ``ease``, ``bpr``,
``gnolr`` (GNOLR retrieval recipe: id towers, a fixed per-head scale γ_1, item bias, full softmax
over the catalogue), ``gnolr_pointwise`` (the same network with GNOLR's own pointwise loss — BCE
for one level — on every positive and 32 negatives re-drawn at every step from the user's
non-positives in training), ``gnolr_sampled`` (sampled softmax, popularity proposal, log-Q).

Graded models start from the ``gnolr`` section of params.yaml (the pipeline's configuration) and
change one thing each: ``gnolr_capped`` (the paper's shared γ under the ordering cap, no item
bias: the pipeline default before per-head scales were chosen on validation),
``gnolr_per_head`` (per-head scales, γ_1 learned, per-level item bias), ``gnolr_v0``
(no nesting), ``gnolr_v1`` (full NLL only), ``naive_olr`` (one cosine), ``mt_bce`` (independent
BCE heads), ``bce_per_level`` (one model per level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models.als import ALS, ALSConfig
from models.bpr import BPR, BPRConfig
from models.ease import EASE, EASEConfig
from models.gnolr.config import GNOLRConfig
from models.gnolr.recommender import GNOLRRecommender, PerLevelRecommender
from models.recommender import Popularity, Recommender

Settings = dict[str, Any]

# The retrieval recipe's fixed choices (docs/quality.md: what mattered, on validation).
RETRIEVAL: Settings = {
    "tower": "id",
    "scale": "per_head",
    "learn_gamma": False,
    "item_bias": "shared",
    "logged_negatives": False,
    "eval_every": 5,
    "patience": 4,
    "max_epochs": 200,
}


@dataclass(frozen=True)
class Candidate:
    build: Callable[[Settings, Any], Recommender]  # (settings, stage) -> unfitted model
    space: Callable[[Any], Settings] | None  # optuna trial -> settings
    iterative: bool
    defaults: Settings


# --------------------------------------------------------------------------- search spaces


def _als_space(t) -> Settings:
    return {
        "factors": t.suggest_int("factors", 16, 256, log=True),
        "regularization": t.suggest_float("regularization", 1e-3, 50.0, log=True),
        "alpha": t.suggest_float("alpha", 0.5, 100.0, log=True),
        "iterations": t.suggest_int("iterations", 5, 40),
    }


def _ease_space(t) -> Settings:
    return {"l2": t.suggest_float("l2", 10.0, 5000.0, log=True)}


def _bpr_space(t) -> Settings:
    return {
        "factors": t.suggest_categorical("factors", [32, 64, 128, 256]),
        "lr": t.suggest_float("lr", 1e-3, 5e-2, log=True),
        "l2": t.suggest_float("l2", 1e-6, 1e-2, log=True),
        "bias_l2": t.suggest_float("bias_l2", 1e-6, 1e-2, log=True),
        "negatives": t.suggest_categorical("negatives", [1, 4]),
        "batch_size": t.suggest_categorical("batch_size", [1024, 4096]),
    }


def _tower_space(t) -> Settings:
    return {
        "gamma": t.suggest_float("gamma", 1.5, 10.0, log=True),
        "dim": t.suggest_categorical("dim", [32, 64, 128, 256]),
        "lr": t.suggest_float("lr", 1e-3, 2e-2, log=True),
        "dropout": t.suggest_float("dropout", 0.0, 0.5),
        "weight_decay": t.suggest_float("weight_decay", 1e-4, 1.0, log=True),
        "batch_users": t.suggest_categorical("batch_users", [32, 64, 128]),
    }


def _pointwise_space(t) -> Settings:
    return {**_tower_space(t), "negatives": t.suggest_categorical("negatives", [4, 8, 16, 32, 64])}


def _sampled_space(t) -> Settings:
    return {
        **_tower_space(t),
        "negatives": t.suggest_categorical("negatives", [32, 64, 128, 256]),
        "popularity_power": t.suggest_float("popularity_power", 0.0, 1.0),
    }


# --------------------------------------------------------------------------- builders


def _gnolr(fixed: Settings) -> Callable[[Settings, Any], Recommender]:
    def build(settings: Settings, stage) -> Recommender:
        cfg = GNOLRConfig(**{**RETRIEVAL, **fixed, **settings})
        return GNOLRRecommender(cfg, stage.levels)

    return build


# The full-softmax GNOLR's validation-chosen settings (docs/quality.md), also the sampled variant's.
_SOFTMAX_DEFAULTS: Settings = {
    "gamma": 3.56,
    "dim": 256,
    "lr": 1.6e-3,
    "dropout": 0.054,
    "weight_decay": 0.12,
    "batch_users": 64,
}

TOPN: dict[str, Candidate] = {
    "popularity": Candidate(lambda s, stage: Popularity(), None, False, {}),
    # Defaults: the best settings of the prototype's validation-only searches (25 TPE trials each
    # on the MS protocol's inner/valid split); every study starts from them (trial 0).
    "ease": Candidate(lambda s, stage: EASE(EASEConfig(**s)), _ease_space, False, {"l2": 535.0}),
    "als": Candidate(
        lambda s, stage: ALS(ALSConfig(**s)),
        _als_space,
        False,
        {"factors": 25, "regularization": 25.9, "alpha": 5.13, "iterations": 20},
    ),
    "bpr": Candidate(
        lambda s, stage: BPR(BPRConfig(**s)),
        _bpr_space,
        True,
        {
            "factors": 64,
            "lr": 2.0e-3,
            "l2": 9.0e-3,
            "bias_l2": 4.8e-6,
            "negatives": 1,
            "batch_size": 1024,
        },
    ),
    "gnolr": Candidate(_gnolr({"loss": "softmax"}), _tower_space, True, dict(_SOFTMAX_DEFAULTS)),
    "gnolr_pointwise": Candidate(
        _gnolr({"loss": "nested"}),
        _pointwise_space,
        True,
        {
            "gamma": 3.69,
            "dim": 256,
            "lr": 1.5e-3,
            "dropout": 0.018,
            "weight_decay": 1e-3,
            "batch_users": 32,
            "negatives": 32,
        },
    ),
    "gnolr_sampled": Candidate(
        _gnolr({"loss": "sampled_softmax", "negative_sampler": "popularity"}),
        _sampled_space,
        True,
        {**_SOFTMAX_DEFAULTS, "negatives": 128},
    ),
}


# --------------------------------------------------------------------------- graded variants

VARIANTS: dict[str, Settings] = {
    "gnolr": {},
    # the previous pipeline default (the paper's form): a shared γ under the cap, no item bias
    "gnolr_capped": {"scale": "shared", "gamma": "auto", "item_bias": "none"},
    # the per-head scale without the cap (γ_1 free and learned, deeper scales inside their
    # bounds) and a per-level item bias kept inside the ordering bound
    "gnolr_per_head": {"scale": "per_head", "gamma": "auto", "item_bias": "per_level"},
    "gnolr_v0": {"scoring": "independent", "scale": "shared", "gamma": "auto"},
    "gnolr_v1": {"loss": "full"},
    "naive_olr": {"scoring": "shared", "loss": "full"},
    "mt_bce": {"scoring": "independent", "loss": "bce"},
}


def graded_config(base: GNOLRConfig, variant: str, settings: Settings | None = None) -> GNOLRConfig:
    """params' ``gnolr`` with the variant's change (and any tuned settings); a per-level item bias
    falls back to a shared one where the variant cannot keep it inside the ordering bound."""
    update = {**VARIANTS[variant], **(settings or {})}
    merged = {**base.model_dump(), **update}
    if merged["item_bias"] == "per_level" and (
        merged["scoring"] != "nested" or merged["scale"] != "per_head"
    ):
        merged["item_bias"] = "shared"
    return GNOLRConfig(**merged)


def graded_candidates(base: GNOLRConfig) -> dict[str, Candidate]:
    """The graded protocols' models: GNOLR and its one-change variants from ``base``, the
    per-level BCE set, and the references."""

    def variant(name: str) -> Candidate:
        def build(settings: Settings, stage) -> Recommender:
            return GNOLRRecommender(
                graded_config(base, name, settings),
                stage.levels,
                user_features=stage.user_features,
                item_features=stage.item_features,
            )

        return Candidate(build, None, True, {})

    def per_level(settings: Settings, stage) -> Recommender:
        cfg = GNOLRConfig(**{**base.model_dump(), **settings})
        return PerLevelRecommender(
            cfg,
            stage.levels,
            user_features=stage.user_features,
            item_features=stage.item_features,
        )

    out = {name: variant(name) for name in VARIANTS}
    out["bce_per_level"] = Candidate(per_level, None, True, {})
    out["popularity"] = Candidate(lambda s, stage: Popularity(), None, False, {})
    for name in ("als", "ease", "bpr"):
        out[name] = TOPN[name]
    return out


def graded_gnolr_space(t) -> Settings:
    """The graded GNOLR search (the pipeline's data): the form of the scale (the paper's shared γ
    under the cap, or per head with a free, learned γ_1 from ``gamma``), the item bias, the size of
    the sub-embeddings, the optimiser, the batch and the id dropout (which teaches the heads to
    rank from side features alone, as they must for users without training rows); the loss and
    the data stay as configured."""
    scale = t.suggest_categorical("scale", ["shared", "per_head"])
    out: Settings = {"scale": scale, "gamma": "auto"}
    if scale == "per_head":
        out["gamma"] = t.suggest_float("gamma", 1.0, 8.0, log=True)
        out["item_bias"] = t.suggest_categorical("item_bias", ["none", "shared", "per_level"])
    else:
        out["item_bias"] = t.suggest_categorical("item_bias_shared", ["none", "shared"])
    out["dim"] = t.suggest_categorical("dim", [16, 32, 64])
    out["lr"] = t.suggest_float("lr", 5e-4, 1e-2, log=True)
    out["weight_decay"] = t.suggest_float("weight_decay", 1e-7, 1e-3, log=True)
    out["batch_size"] = t.suggest_categorical("batch_size", [1024, 2048, 4096])
    out["id_dropout"] = t.suggest_float("id_dropout", 0.0, 0.5)
    return out


def graded_defaults(cfg: GNOLRConfig) -> Settings:
    """The point of :func:`graded_gnolr_space` that ``cfg`` (params' ``gnolr``) is: the study's
    trial 0, so a search starts from the pipeline's configuration (γ_1 'auto' starts at 4; a
    weight decay of 0 enters as the range's floor, 1e-7; the space searches a shared scale with
    γ 'auto' only)."""
    out: Settings = {"scale": cfg.scale}
    if cfg.scale == "per_head":
        out["gamma"] = 4.0 if cfg.gamma == "auto" else float(np.atleast_1d(cfg.gamma)[0])
        out["item_bias"] = cfg.item_bias
    else:
        out["item_bias_shared"] = cfg.item_bias
    return {
        **out,
        "dim": cfg.dim,
        "lr": cfg.lr,
        "weight_decay": max(cfg.weight_decay, 1e-7),
        "batch_size": cfg.batch_size,
        "id_dropout": cfg.id_dropout,
    }


# --------------------------------------------------------------------------- tuned settings

TUNED_DIR = "tuned"


def tuned_path(protocol: str, tag: str = "") -> str:
    return f"{TUNED_DIR}/{protocol}{'-' + tag if tag else ''}.yaml"


def load_tuned(path: str) -> dict[str, dict]:
    """``{model: {settings, epochs, valid, trials, ...}}`` of a tuned file ({} when absent)."""
    p = Path(path)
    if not p.exists():
        return {}
    return (yaml.safe_load(p.read_text()) or {}).get("models", {})
