"""The Rel-MF loss against hand-computed values, its unbiasedness, and the MF model it trains."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from evaluation.validation import IPSDCG
from features.propensity import propensity_histogram, propensity_report
from models.data import Pairs
from models.relmf.config import RelMFConfig, RelMFLoss
from models.relmf.fit import check_propensity, csr_from_pairs, fit_relmf
from models.relmf.loss import ideal_loss, local_losses, pointwise, relmf_loss, weights
from models.relmf.network import MFEmbeddings
from serving.retrieval import Retriever

# Three pairs, predictions given as probabilities R̂; the third is a positive with θ = 0.05 < M.
P = torch.tensor([0.5, 0.25, 0.8], dtype=torch.float64)
Y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
THETA = torch.tensor([0.5, 0.2, 0.05], dtype=torch.float64)
# Squared loss: δ1 = (1 − R̂)² = [0.25, 0.5625, 0.04], δ0 = R̂² = [0.25, 0.0625, 0.64].


def loss_of(**kwargs) -> float:
    return relmf_loss(RelMFLoss(**kwargs), P, Y, THETA, from_logits=False).item()


def test_naive_squared_loss_treats_unclicked_as_irrelevant():
    # w = Y: ℓ = [δ1, δ0, δ1] = [0.25, 0.0625, 0.04]
    assert loss_of(estimator="naive") == pytest.approx((0.25 + 0.0625 + 0.04) / 3)


def test_ips_squared_loss_has_a_negative_weight_on_delta0_for_positives():
    # w = Y/θ = [2, 0, 20]: ℓ3 = 20·0.04 + (1 − 20)·0.64 = −11.36 < 0
    per_pair = pointwise(RelMFLoss(estimator="ips"), P, Y, THETA, from_logits=False)
    np.testing.assert_allclose(per_pair.numpy(), [0.25, 0.0625, -11.36], rtol=1e-12)
    assert loss_of(estimator="ips") == pytest.approx((0.25 + 0.0625 - 11.36) / 3)


def test_clipped_squared_loss_caps_the_weight_at_one_over_m():
    # w = Y/max(θ, 0.1) = [2, 0, 10]: ℓ3 = 10·0.04 − 9·0.64 = −5.36
    assert loss_of(estimator="clipped", clip=0.1) == pytest.approx((0.25 + 0.0625 - 5.36) / 3)
    # M below every θ is plain IPS; M = 1 is naive.
    assert loss_of(estimator="clipped", clip=0.01) == pytest.approx(loss_of(estimator="ips"))
    assert loss_of(estimator="clipped", clip=1.0) == pytest.approx(loss_of(estimator="naive"))


def test_non_negative_variant_bounds_each_pair_at_zero():
    assert loss_of(estimator="clipped", clip=0.1, non_negative=True) == pytest.approx(
        (0.25 + 0.0625 + 0.0) / 3
    )


def test_log_loss_matches_hand_computation():
    # δ1 = −log R̂, δ0 = −log(1 − R̂); w = [2, 0, 20]
    d1 = [math.log(2), -math.log(0.75), -math.log(0.8)]
    d0 = [math.log(2), -math.log(0.75), -math.log(0.2)]
    expected = [2 * d1[0] - d0[0], d0[1], 20 * d1[2] - 19 * d0[2]]  # ℓ3 ≈ −26.1165
    got = pointwise(RelMFLoss(estimator="ips", local_loss="log"), P, Y, THETA, from_logits=False)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)
    assert expected[2] == pytest.approx(-26.11645, abs=1e-4)


def test_log_loss_is_unbounded_below_for_a_positive_unless_non_negative():
    logits = torch.tensor([5.0, 20.0, 40.0], dtype=torch.float64)  # R̂ → 1
    y, theta = torch.ones(3, dtype=torch.float64), torch.full((3,), 0.1, dtype=torch.float64)
    raw = pointwise(RelMFLoss(estimator="ips", local_loss="log"), logits, y, theta)
    assert raw[2] < raw[1] < raw[0] < 0  # −(w − 1)·z: keeps falling as z grows
    assert raw[2].item() == pytest.approx(-9 * 40.0, rel=1e-6)
    bounded = RelMFLoss(estimator="ips", local_loss="log", non_negative=True)
    assert torch.all(pointwise(bounded, logits, y, theta) == 0)


def test_logits_and_probabilities_give_the_same_loss():
    logits = torch.log(P / (1 - P))
    for local in ("squared", "log"):
        loss = RelMFLoss(estimator="clipped", clip=0.1, local_loss=local)
        assert relmf_loss(loss, logits, Y, THETA).item() == pytest.approx(
            relmf_loss(loss, P, Y, THETA, from_logits=False).item(), rel=1e-9
        )


def test_sample_weights_give_a_weighted_mean():
    loss = RelMFLoss(estimator="naive")
    c = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    expected = (0.25 + 2 * 0.0625 + 0.04) / 4
    assert relmf_loss(
        loss, P, Y, THETA, from_logits=False, sample_weight=c
    ).item() == pytest.approx(expected)


def test_ips_loss_is_unbiased_for_the_ideal_loss_with_true_propensities():
    """Y = O·R with O ∼ Bern(θ), R ∼ Bern(γ): the mean IPS loss over draws equals the ideal loss.

    Tolerance: 4 standard errors of the mean over 20 000 draws of 300 pairs each.
    """
    gen = torch.Generator().manual_seed(0)
    n_pairs, n_draws = 300, 20_000
    gamma = torch.rand(n_pairs, generator=gen, dtype=torch.float64) * 0.5
    theta = 0.02 + 0.98 * torch.rand(n_pairs, generator=gen, dtype=torch.float64)
    logits = torch.randn(n_pairs, generator=gen, dtype=torch.float64)
    exposed = torch.rand(n_draws, n_pairs, generator=gen, dtype=torch.float64) < theta
    relevant = torch.rand(n_draws, n_pairs, generator=gen, dtype=torch.float64) < gamma
    y = (exposed & relevant).double()
    for local in ("squared", "log"):
        ideal = ideal_loss(logits, gamma, local).item()
        rows = logits.expand(n_draws, -1)
        for estimator, biased in (("ips", False), ("naive", True)):
            per_draw = pointwise(RelMFLoss(estimator=estimator, local_loss=local), rows, y, theta)
            draws = per_draw.mean(dim=1)
            se = draws.std().item() / math.sqrt(n_draws)
            gap = abs(draws.mean().item() - ideal)
            if biased:
                assert gap > 20 * se, (local, estimator, gap, se)
            else:
                assert gap < 4 * se, (local, estimator, gap, se)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip": 0.0},
        {"clip": -0.1},
        {"clip": 1.5},
        {"clip": float("nan")},
        {"estimator": "doubly_robust"},
        {"local_loss": "hinge"},
        {"unknown": 1},
    ],
)
def test_bad_loss_parameters_fail_at_construction(kwargs):
    with pytest.raises(ValidationError):
        RelMFLoss(**kwargs)


def test_bad_propensities_fail_with_a_clear_error():
    with pytest.raises(ValueError, match=r"propensities must lie in \(0, 1\]"):
        relmf_loss(
            RelMFLoss(estimator="ips"), P, Y, torch.tensor([0.5, 0.0, 0.1], dtype=torch.float64)
        )
    with pytest.raises(ValueError, match="needs propensities"):
        relmf_loss(RelMFLoss(estimator="clipped"), P, Y, None)
    with pytest.raises(ValueError, match="must match"):
        relmf_loss(RelMFLoss(estimator="naive"), P, Y[:2])
    with pytest.raises(ValueError, match="unknown local loss"):
        local_losses(P, "hinge")  # type: ignore[arg-type]


def test_local_losses_by_hand_and_the_probability_clamp():
    z = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)  # R̂ = ½, ¾
    d1, d0 = local_losses(z, "squared")
    np.testing.assert_allclose(d1.numpy(), [0.25, 0.0625], rtol=1e-12)
    np.testing.assert_allclose(d0.numpy(), [0.25, 0.5625], rtol=1e-12)
    d1, d0 = local_losses(z, "log")
    np.testing.assert_allclose(d1.numpy(), [math.log(2), math.log(4 / 3)], rtol=1e-12)
    np.testing.assert_allclose(d0.numpy(), [math.log(2), math.log(4)], rtol=1e-12)
    p = torch.tensor([0.25], dtype=torch.float64)
    d1, d0 = local_losses(p, "squared", from_logits=False)
    assert (d1.item(), d0.item()) == (0.5625, 0.0625)
    # Probabilities 0 and 1 are clamped to [1e-7, 1 − 1e-7] for the log loss: finite.
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    d1, d0 = local_losses(ends, "log", from_logits=False)
    np.testing.assert_allclose(d1.numpy(), [-math.log(1e-7), -math.log1p(-1e-7)], rtol=1e-9)
    np.testing.assert_allclose(d0.numpy(), [-math.log1p(-1e-7), -math.log(1e-7)], rtol=1e-9)
    d1, _ = local_losses(ends, "log", from_logits=False, eps=0.25)
    np.testing.assert_allclose(d1.numpy(), [math.log(4), math.log(4 / 3)], rtol=1e-12)
    with pytest.raises(
        ValueError, match="^unknown local loss 'hinge'; expected 'squared' or 'log'$"
    ):
        local_losses(p, "hinge")  # type: ignore[arg-type]


def test_ideal_loss_defaults_to_squared_on_logits():
    z = torch.tensor([math.log(3.0), 0.0], dtype=torch.float64)
    gamma = torch.tensor([0.5, 1.0], dtype=torch.float64)
    # squared: ½·0.0625 + ½·0.5625 = 0.3125 and 1·0.25: mean 0.28125
    assert ideal_loss(z, gamma).item() == pytest.approx(0.28125, rel=1e-12)
    probs = torch.tensor([0.75, 0.5], dtype=torch.float64)
    assert ideal_loss(probs, gamma, "log", from_logits=False).item() == pytest.approx(
        (0.5 * math.log(4 / 3) + 0.5 * math.log(4) + math.log(2)) / 2, rel=1e-12
    )


def test_weights_of_each_estimator_and_the_defaults():
    y = torch.tensor([1, 1, 1, 0])
    theta = torch.tensor([0.05, 0.1, 1.0, 0.5], dtype=torch.float64)
    naive = weights(RelMFLoss(estimator="naive"), y, None)
    assert naive.dtype == torch.get_default_dtype() and naive.tolist() == [1, 1, 1, 0]
    ips = weights(RelMFLoss(estimator="ips"), y.double(), theta)
    assert ips.dtype == torch.float64
    np.testing.assert_allclose(ips.numpy(), [20, 10, 1, 0], rtol=1e-12)
    # Defaults: clipped at M = 0.1 (θ = M exactly stays), squared local loss, signed.
    default = RelMFLoss()
    assert (default.estimator, default.clip, default.local_loss, default.non_negative) == (
        "clipped",
        0.1,
        "squared",
        False,
    )
    np.testing.assert_allclose(weights(default, y.double(), theta).numpy(), [10, 10, 1, 0])
    np.testing.assert_allclose(
        weights(RelMFLoss(clip=0.5), y.double(), theta).numpy(), [2, 2, 1, 0]
    )
    # w comes in y's dtype whatever θ's.
    w32 = weights(
        RelMFLoss(estimator="ips"), torch.ones(1), torch.tensor([0.3], dtype=torch.float64)
    )
    assert w32.dtype == torch.float32
    for estimator in ("ips", "clipped"):
        with pytest.raises(ValueError, match=f"^the {estimator} estimator needs propensities$"):
            weights(RelMFLoss(estimator=estimator), y, None)
    bad = torch.tensor([0.0, 1.5, -0.1, 2.0, 0.5], dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"^propensities must lie in \(0, 1\], found \[0.0, 1.5, -0.1\]$"
    ):
        weights(RelMFLoss(estimator="ips"), torch.ones(5, dtype=torch.float64), bad)
    with pytest.raises(ValueError, match=r"found \[1.25\]$"):
        weights(RelMFLoss(), torch.ones(2), torch.tensor([1.0, 1.25]))


def test_loss_call_checks_shapes_and_defaults_to_logits():
    with pytest.raises(ValueError, match=r"^pred \(3,\) and y \(2,\) must match$"):
        relmf_loss(RelMFLoss(estimator="naive"), P, Y[:2])
    logits = torch.log(P / (1 - P))
    naive = RelMFLoss(estimator="naive")
    assert relmf_loss(naive, logits, Y).item() == pytest.approx(
        (0.25 + 0.0625 + 0.04) / 3, rel=1e-9
    )
    assert relmf_loss(naive, logits, Y, sample_weight=torch.ones(3)).item() == pytest.approx(
        (0.25 + 0.0625 + 0.04) / 3, rel=1e-9
    )
    # float32 weights are summed in the loss's float64, not in float32.
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2000, generator=gen, dtype=torch.float64)
    y = (torch.rand(2000, generator=gen) < 0.3).double()
    c = torch.rand(2000, generator=gen, dtype=torch.float32)
    per_pair = pointwise(naive, pred, y)
    expected = (c.double() * per_pair).sum() / c.double().sum()
    assert relmf_loss(naive, pred, y, sample_weight=c).item() == pytest.approx(
        expected.item(), rel=1e-13
    )


def test_config_errors_name_the_key():
    with pytest.raises(ValidationError, match=r"loss\.clip"):
        RelMFConfig.model_validate({"loss": {"clip": 2}})
    with pytest.raises(ValidationError, match="extra"):
        RelMFConfig.model_validate({"dims": 8})
    with pytest.raises(ValueError, match=r"propensity must be \(n_items,\)"):
        check_propensity(np.ones(3), 2, 4)
    with pytest.raises(ValueError, match="floor them"):
        check_propensity(np.zeros(4), 2, 4)


def test_csr_keeps_each_positive_once_in_item_order():
    indptr, indices = csr_from_pairs(Pairs([1, 0, 1, 1], [3, 2, 0, 3]), 3, 4)
    assert indptr.tolist() == [0, 1, 3, 3]
    assert indices.tolist() == [2, 0, 3]
    with pytest.raises(ValueError, match="out of range"):
        csr_from_pairs(Pairs([0], [4]), 3, 4)


def _tiny_world(seed: int = 0):
    """40 users × 30 items with two taste groups; positives are each user's group items."""
    rng = np.random.default_rng(seed)
    group_u = rng.integers(0, 2, 40)
    group_i = np.arange(30) % 2
    liked = group_u[:, None] == group_i[None, :]
    clicked = liked & (rng.random((40, 30)) < 0.5)
    users, items = np.nonzero(clicked)
    return users, items, liked


def test_fit_exports_vectors_that_rank_like_the_model_through_the_retriever():
    users, items, liked = _tiny_world()
    cfg = RelMFConfig(dim=4, max_epochs=30, batch_users=16, lr=0.05)
    theta = np.full(30, 0.5)
    result = fit_relmf(Pairs(users, items), 40, 30, theta, cfg)
    emb = result.embeddings
    q = np.arange(40)
    ids, _ = Retriever(emb.item_vectors()).search(emb.user_vectors()[q], 30)
    scores = emb.scores(np.repeat(q, 30), np.tile(np.arange(30), 40)).reshape(40, 30)
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1, kind="stable"))
    # It learned the two groups: liked items outscore the others for most users.
    gap = (scores * liked).sum(1) / liked.sum(1) - (scores * ~liked).sum(1) / (~liked).sum(1)
    assert (gap > 0).mean() > 0.9
    assert emb.logits(q[:3], q[:3]).shape == (3, 1)


def test_fit_with_validation_keeps_the_best_epoch_and_round_trips(tmp_path):
    users, items, _ = _tiny_world(1)
    hold = np.arange(users.size) % 5 == 0
    cfg = RelMFConfig(
        loss={"estimator": "clipped", "clip": 0.2}, dim=4, max_epochs=6, patience=2, valid_k=3
    )
    theta = np.random.default_rng(0).uniform(0.05, 1.0, (40, 30))
    validation = IPSDCG(Pairs(users[hold], items[hold]), theta, cfg.valid_k, cfg.valid_floor)
    result = fit_relmf(Pairs(users[~hold], items[~hold]), 40, 30, theta, cfg, validation)
    assert 0 <= result.info["best_epoch"] < result.info["epochs_run"] <= 6
    assert 0 <= result.info["best_valid_ips_dcg_at_3"] <= 1
    result.embeddings.save(tmp_path / "mf.npz")
    again = MFEmbeddings.load(tmp_path / "mf.npz")
    np.testing.assert_array_equal(again.item_vectors(), result.embeddings.item_vectors())
    assert again.global_bias == result.embeddings.global_bias


def test_propensity_report_counts_the_share_below_m():
    theta = np.array([0.001, 0.01, 0.05, 0.2, 1.0])
    summary = propensity_report(theta, clip=0.05)
    assert summary["fraction_below_clip"] == pytest.approx(0.4)
    assert summary["count"] == 5 and summary["max"] == 1.0
    rows = propensity_histogram({"positives": theta, "items": np.array([0.5])}, n_bins=6)
    assert len(rows) == 6 and rows[0]["log10_theta"] == pytest.approx(-2.75)
    assert sum(r["positives"] for r in rows) == pytest.approx(1.0)
    assert sum(r["items"] for r in rows) == pytest.approx(1.0)


def _fake_features(directory, n_users: int = 30, n_items: int = 20) -> None:
    """A features folder with the columns the stage reads: train/valid/test rows, items, meta."""
    import json

    import polars as pl

    rng = np.random.default_rng(0)
    features = directory / "data/features"
    features.mkdir(parents=True)
    for split, n in (("train", 600), ("valid", 120), ("test", 120)):
        pl.DataFrame(
            {
                "user_idx": rng.integers(0, n_users, n).astype(np.int32),
                "item_idx": rng.integers(0, n_items, n).astype(np.int32),
                "level": (rng.random(n) < 0.3).astype(np.int8),
            }
        ).write_parquet(features / f"{split}.parquet")
    pl.DataFrame(
        {
            "item_idx": np.arange(n_items, dtype=np.int32),
            "propensity": np.linspace(0.01, 1.0, n_items),
        }
    ).write_parquet(features / "items.parquet")
    meta = {"n_users": n_users, "n_items": n_items, "levels": ["click"]}
    (features / "meta.json").write_text(json.dumps(meta))


def test_train_relmf_stage_writes_outputs_and_the_propensity_report(tmp_path, monkeypatch):
    import json

    from pipelines import train_relmf
    from tests.conftest import write_params

    _fake_features(tmp_path)
    write_params(tmp_path, {"relmf": {"dim": 4, "max_epochs": 2, "loss": {"clip": 0.2}}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("LADDER_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    train_relmf.main()
    out = tmp_path / "data/models/relmf"
    info = json.loads((out / "info.json").read_text())
    assert info["epochs_run"] == 2 and "test/ips_dcg_at_10" in info
    report = json.loads((out / "propensity.json").read_text())
    assert report["items"]["fraction_below_clip"] == pytest.approx(4 / 20)  # θ = 0.01..0.16 < 0.2
    assert MFEmbeddings.load(out / "embeddings.npz").item_vectors().shape == (20, 5)
    assert (out / "propensity.csv").read_text().startswith("log10_theta,items,train_positives")
    metrics = json.loads((tmp_path / "data/metrics/relmf.json").read_text())
    assert metrics["train_positives"]["count"] == info["n_positives"]
    plot = (tmp_path / "data/metrics/relmf_propensity.csv").read_text()
    assert plot == (out / "propensity.csv").read_text()


def test_train_relmf_config_errors_name_the_key(tmp_path):
    from pipelines.train_relmf import load_config
    from tests.conftest import write_params

    write_params(tmp_path, {"relmf": {"loss": {"estimator": "magic"}}})
    with pytest.raises(ValueError, match=r"relmf\.loss\.estimator"):
        load_config(tmp_path / "params.yaml")


def test_ips_training_undoes_an_exposure_bias_that_naive_training_learns():
    """Relevant items shown rarely, mediocre ones shown often: Y = O·R with P(Y) = θ·γ.

    Items 0–9: γ = 0.6, θ = 0.1 → P(Y) = 0.06; items 10–19: γ = 0.3, θ = 0.9 → P(Y) = 0.27.
    Naive training fits P(Y) and ranks the mediocre, well-exposed items first; IPS training with
    the true θ aims at γ (E[Y/θ] = γ) and ranks the relevant ones first. A regularised model is
    needed: one free enough to fit every pair predicts Y itself (p = 1 where Y = 1) either way.
    Measured (this data): naive 0.19 vs 0.23, IPS 0.52 vs 0.40; a model that ignores θ fails.
    """
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 20
    gamma = np.r_[np.full(10, 0.6), np.full(10, 0.3)]
    theta = np.r_[np.full(10, 0.1), np.full(10, 0.9)]
    users, items = np.nonzero(rng.random((n_users, n_items)) < gamma * theta)
    grid_u, grid_i = np.divmod(np.arange(n_users * n_items), n_items)

    def mean_prob(estimator: str) -> tuple[float, float]:
        cfg = RelMFConfig(
            loss=RelMFLoss(estimator=estimator),
            dim=1,
            weight_decay=1e-2,
            lr=0.05,
            batch_users=50,
            max_epochs=40,
        )
        fitted = fit_relmf(Pairs(users, items), n_users, n_items, theta, cfg)
        p = 1 / (1 + np.exp(-fitted.embeddings.scores(grid_u, grid_i))).reshape(n_users, n_items)
        return float(p[:, :10].mean()), float(p[:, 10:].mean())

    naive_rare, naive_common = mean_prob("naive")
    ips_rare, ips_common = mean_prob("ips")
    assert naive_rare < naive_common  # the bias, learnt
    assert ips_rare > ips_common + 0.05  # undone: the relevant items come first again
    assert ips_rare > naive_rare + 0.2
