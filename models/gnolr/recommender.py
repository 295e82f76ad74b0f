"""GNOLR behind the library's front door: ``GNOLRRecommender(cfg).fit(train, valid, validation)``.

One class for every way the project trains GNOLR:

* on a logged impression table (the pipeline's default: level-0 rows are the shown-but-ignored
  exposures, ``logged_negatives``), pointwise, early-stopped on the validation rows' AUCs;
* on positives only (MovieLens under the MS protocol): negatives re-drawn at every step from each
  user's non-positives in *training* (``negatives``), or a full / sampled softmax, early-stopped on
  validation NDCG@K through :meth:`recommend`.

Thresholds a_c = −logit(p_c) come from the rows the model trains on
(:func:`models.gnolr.config.training_base_rates`), so a zero score returns the base rate. Ranking
is by the deepest level's logit (``rank_level`` picks another), exactly what the serving index
returns for :meth:`embeddings` (:meth:`GNOLREmbeddings.level_vectors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.data import Interactions, TensorBatches, UserBatches
from models.fitting import Strategy, is_ranking, seed_everything, train, trigger_batches
from models.gnolr.config import (
    GNOLRConfig,
    resolve_scales,
    thresholds_from_base_rates,
    training_base_rates,
)
from models.gnolr.module import POINTWISE, GNOLRModule
from models.gnolr.network import GNOLR, GNOLREmbeddings
from models.negatives import NegativeSampler
from models.recommender import Recommender


class GNOLRRecommender(Recommender):
    """GNOLR (any number of levels) as a top-k model; see the module docstring.

    ``levels`` names the feedback levels (their number T; default: the deepest level in the
    training table); ``user_features`` / ``item_features`` feed the MLP towers' side embeddings.
    After ``fit``: ``model`` (the network), ``embeddings`` (:class:`GNOLREmbeddings`) and
    ``fit_info`` (scales, thresholds, epochs, the best validation score, seconds, speed).
    """

    def __init__(
        self,
        cfg: GNOLRConfig | None = None,
        levels: Sequence[str] | None = None,
        rank_level: int | None = None,
        user_features: dict[str, np.ndarray] | None = None,
        item_features: dict[str, np.ndarray] | None = None,
        logger=None,
        progress: bool = False,
        accelerator: str = "cpu",
        checkpoint_dir: str | Path | None = None,
        strategy: Strategy = "single",
        devices: int = 1,
        num_nodes: int = 1,
    ) -> None:
        super().__init__()
        self.cfg = cfg or GNOLRConfig()
        self.strategy, self.devices, self.num_nodes = strategy, devices, num_nodes
        self.levels = None if levels is None else list(levels)
        self.rank_level = rank_level
        self.user_features = user_features
        self.item_features = item_features
        self.logger = logger
        self.progress = progress
        self.accelerator = accelerator
        self.checkpoint_dir = checkpoint_dir
        self._vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _fit(self, train_rows: Interactions, valid: Interactions | None, validation) -> None:
        cfg = self.cfg
        n_levels = len(self.levels) if self.levels is not None else train_rows.n_levels
        names = self.levels or [f"level{c}" for c in range(1, n_levels + 1)]
        if cfg.loss == "ips" and (
            train_rows.propensity is None or (valid is not None and valid.propensity is None)
        ):
            raise ValueError("gnolr.loss = ips needs each row's propensity in the training data")
        rows = train_rows if cfg.logged_negatives else train_rows.positives()
        if len(rows) == 0:
            raise ValueError("no training rows to fit GNOLR on")
        active = np.zeros(self.n_users, bool)
        active[rows.users] = True
        rates = training_base_rates(
            rows.levels, n_levels, cfg.negatives, int(active.sum()) * self.n_items
        )
        thresholds = thresholds_from_base_rates(rates)
        scales = resolve_scales(cfg, thresholds, names)
        seed_everything(cfg.seed)
        net = GNOLR(
            self.n_users,
            self.n_items,
            thresholds,
            scales,
            cfg,
            self.user_features,
            self.item_features,
            cold_users=~active,
        )
        sampler = NegativeSampler(train_rows, cfg.seed, cfg.popularity_power)
        module = GNOLRModule(net, cfg, validation, sampler, owner=self)
        self.model = net
        batches = (
            UserBatches(rows.tensors(), cfg.batch_users, seed=cfg.seed)
            if cfg.batch_users
            else TensorBatches(
                rows.tensors(), cfg.batch_size, shuffle=True, seed=cfg.seed, shard=True
            )
        )
        if is_ranking(validation):
            valid_batches, monitor, mode = trigger_batches(), validation.monitor, validation.mode
        elif valid is not None and (validation is not None or cfg.loss in POINTWISE):
            valid_batches = TensorBatches(valid.tensors(), 65536, shuffle=False)
            monitor, mode = (
                (validation.monitor, validation.mode)
                if validation is not None
                else ("valid/loss", "min")
            )
        else:
            valid_batches, monitor, mode = None, None, "max"
        trained = train(
            module,
            batches,
            valid_batches,
            max_epochs=cfg.max_epochs,
            monitor=monitor,
            mode=mode,
            patience=cfg.patience,
            logger=self.logger,
            progress=self.progress,
            accelerator=self.accelerator,
            checkpoint_dir=self.checkpoint_dir,
            eval_every=cfg.eval_every,
            strategy=self.strategy,
            devices=self.devices,
            num_nodes=self.num_nodes,
        )
        self.model = module.model.cpu()
        self._export()
        epochs = cfg.max_epochs if trained.best_epoch is None else trained.best_epoch + 1
        self.fit_info = {
            "gamma": self.embeddings.gamma.tolist(),
            "scale": cfg.scale,
            "thresholds": self.embeddings.thresholds.tolist(),
            "epochs_run": trained.epochs_run,
            "best_epoch": trained.best_epoch,
            "epochs": epochs,
            "monitor": monitor,
            "best_valid": trained.best_score,
            "train_seconds": trained.seconds,
            "seconds": trained.seconds,
            "train_samples_per_second": len(rows) * trained.epochs_run / max(trained.seconds, 1e-9),
            "device": trained.device,
            "world_size": trained.world_size,
            "ranks_agree": trained.ranks_agree,
        }
        if monitor is not None:
            self.fit_info[f"best_{monitor.replace('/', '_')}"] = trained.best_score

    def _export(self) -> None:
        """Refresh :attr:`embeddings` from the network (also called by validation each epoch)."""
        self.embeddings = GNOLREmbeddings.from_model(self.model)
        self._vectors = {}

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) vectors of 0-based ``level`` (inner product = l_c + a_c), cached."""
        if level not in self._vectors:
            self._vectors[level] = self.embeddings.level_vectors(level)
        return self._vectors[level]

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The cumulative logits l_c of aligned (user, item) pairs, shape (n, T)."""
        return self.embeddings.logits(np.asarray(users), np.asarray(items))

    def score(self, users: np.ndarray) -> np.ndarray:
        level = self.embeddings.n_levels - 1 if self.rank_level is None else self.rank_level
        q, v = self.level_vectors(level)
        return q[np.asarray(users)] @ v.T


class PerLevelRecommender(Recommender):
    """The per-level baseline: one single-level BCE GNOLR per level c, trained on 1{level ≥ c}
    (the usual industry set-up); ``rank_level`` picks the level model that ranks.

    A validation is split per level with its ``for_level(c)`` (1-based), e.g. ``LevelAUC`` and
    ``LevelsNDCG`` of :mod:`evaluation.validation`.
    """

    def __init__(
        self, cfg: GNOLRConfig | None = None, levels: Sequence[str] | None = None, **kwargs
    ) -> None:
        super().__init__()
        base = cfg or GNOLRConfig()
        bias = "shared" if base.item_bias == "per_level" else base.item_bias
        self.cfg = base.model_copy(update={"loss": "bce", "item_bias": bias})
        self.levels = None if levels is None else list(levels)
        self.kwargs = kwargs

    def _fit(self, train_rows: Interactions, valid, validation) -> None:
        n_levels = len(self.levels) if self.levels is not None else train_rows.n_levels
        names = self.levels or [f"level{c}" for c in range(1, n_levels + 1)]
        self.models = []
        for c, name in enumerate(names, start=1):
            tr, va = (
                None
                if x is None
                else Interactions(
                    x.users,
                    x.items,
                    (x.levels >= c).astype(np.int64),
                    x.propensity,
                    x.n_users,
                    x.n_items,
                )
                for x in (train_rows, valid)
            )
            sub = None if validation is None else validation.for_level(c)
            self.models.append(GNOLRRecommender(self.cfg, [name], **self.kwargs).fit(tr, va, sub))
        self.fit_info = {
            "seconds": sum(m.fit_info["seconds"] for m in self.models),
            "epochs": [m.fit_info["epochs"] for m in self.models],
        }

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.concatenate([m.pair_scores(users, items) for m in self.models], axis=1)

    def score(self, users: np.ndarray) -> np.ndarray:
        level = len(self.models) - 1 if self.rank_level is None else self.rank_level
        return self.models[level].score(users)
