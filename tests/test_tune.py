"""Hyper-parameter search and blends: chosen on validation only, each trial a child MLflow run,
the best trial written back; blend weights and normalisation from validation; z-score and rank
blends and seed ensembles worked by hand."""

import mlflow
import numpy as np
import optuna
import pytest
import yaml

from evaluation.validation import RankingNDCG
from experiments.candidates import (
    TOPN,
    Candidate,
    graded_config,
    graded_defaults,
    graded_gnolr_space,
    load_tuned,
)
from experiments.compare import ms_settings
from experiments.protocols import Stage
from experiments.tune import run_study, write_tuned
from models.data import Interactions, Pairs
from models.ensemble import (
    Ensemble,
    Frozen,
    choose_weights,
    rank_normalised,
    simplex_grid,
    standardised,
)
from models.recommender import Recommender
from pipelines.params import load_params


class Fixed(Recommender):
    """Scores given in advance."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = np.asarray(scores, dtype=np.float64)

    def _fit(self, train, valid, validation) -> None:
        pass

    def score(self, users):
        return self.scores[users]


def tiny_stage() -> Stage:
    """Two taste groups of 6 users over 8 items; each user holds one item of their group out."""
    users, items, v_users, v_items = [], [], [], []
    for u in range(12):
        group = range(4) if u < 6 else range(4, 8)
        held = list(group)[u % 4]
        for i in group:
            (v_users if i == held else users).append(u)
            (v_items if i == held else items).append(i)
    train = Interactions(
        np.array(users), np.array(items), np.ones(len(users), np.int64), None, 12, 8
    )
    valid = Interactions(
        np.array(v_users), np.array(v_items), np.ones(len(v_users), np.int64), None, 12, 8
    )
    validation = RankingNDCG(Pairs(valid.users, valid.items), k=3)
    return Stage(train, valid, validation, ["rated"])


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One scratch MLflow database and Optuna storage for the module (creating one takes a while)."""
    tmp = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("LADDER_ARTIFACT_ROOT", str(tmp / "artifacts"))
        params = load_params()
        params.tune.storage = str(tmp / "optuna.db")
        params.tune.sampler = "random"
        yield params


def test_two_trials_keep_the_best_on_validation_log_child_runs_and_resume(tracking, tmp_path):
    stage = tiny_stage()
    candidate = TOPN["als"]
    entry = run_study("tiny", "als", candidate, stage, tracking, trials=2)
    assert entry["trials"] == 2 and entry["monitor"] == "valid/ndcg_at_3"

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("mlflow.runName") == "tune-tiny-als"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert {c.data.tags["stage"] for c in children} == {"tune"}
    values = {c.info.run_name: c.data.metrics["valid/ndcg_at_3"] for c in children}
    # trial 0 is the model's defaults; the kept entry is the trial with the best validation value
    assert entry["valid"] == pytest.approx(max(values.values()))
    best_child = next(c for c in children if c.info.run_name == f"als-trial{entry['best_trial']}")
    logged = {k.removeprefix("tune."): v for k, v in best_child.data.params.items()}
    assert {k: str(v) for k, v in entry["settings"].items()} == logged
    assert parent.data.metrics["best/valid/ndcg_at_3"] == pytest.approx(entry["valid"])
    trial0 = next(c for c in children if c.info.run_name == "als-trial0")
    assert float(trial0.data.params["tune.regularization"]) == candidate.defaults["regularization"]

    # the written file holds the best trial's settings, and compare's refit uses them as they are
    path = tmp_path / "tuned" / "tiny.yaml"
    write_tuned(path, "tiny", {"als": entry})
    assert yaml.safe_load(path.read_text())["models"]["als"]["settings"] == entry["settings"]
    assert ms_settings("als", candidate, load_tuned(str(path)), None) == {
        **candidate.defaults,
        **entry["settings"],
    }

    # a rerun with a larger budget resumes the study (one more trial, not two new ones)
    again = run_study("tiny", "als", candidate, stage, tracking, trials=3)
    assert again["trials"] == 3


def test_the_refit_runs_the_epochs_chosen_in_tuning_without_a_new_fit():
    tuned = {"bpr": {"settings": {"factors": 8}, "epochs": 7}}
    # protocol None: a validated fit would fail, so the epochs must come from the file
    settings = ms_settings("bpr", TOPN["bpr"], tuned, None)
    assert settings["factors"] == 8 and settings["max_epochs"] == 7
    assert settings["lr"] == TOPN["bpr"].defaults["lr"]


def test_standardised_scores_and_the_weighted_blend_by_hand():
    a = Fixed([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    b = Fixed([[3.0, 2.0, 1.0], [5.0, 4.0, 3.0]])
    train = Interactions(np.array([0]), np.array([0]), np.array([1]), None, 2, 3)
    for m in (a, b):
        m.fit(train)
    z = standardised(a, np.array([0, 1]))
    s = np.sqrt(2 / 3)  # sd of (1, 2, 3)
    np.testing.assert_allclose(z[0], [-1 / s, 0, 1 / s])
    np.testing.assert_allclose(z[1], [-1 / np.sqrt(2), -1 / np.sqrt(2), np.sqrt(2)])
    blend = Ensemble([a, b], [0.75, 0.25]).fit(train)
    np.testing.assert_allclose(blend.score(np.array([0])), [[-0.5 / s, 0, 0.5 / s]])
    # user 0's item 0 is seen: blend top-1 is item 2
    assert blend.recommend(np.array([0]), k=1)[0].tolist() == [[2]]
    with pytest.raises(ValueError, match="2 components need 2 weights"):
        Ensemble([a, b], [1.0])


def test_rank_normalisation_by_hand_ties_share_their_average_rank():
    m = Fixed([[10.0, -3.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    m.fit(Interactions(np.array([0]), np.array([0]), np.array([1]), None, 2, 4))
    # ranks 0-based: user 0 → (3, 0, 1.5, 1.5), user 1 → (0, 1, 2, 3); divided by n_items − 1 = 3
    np.testing.assert_allclose(
        rank_normalised(m, np.array([0, 1])), [[1, 0, 0.5, 0.5], [0, 1 / 3, 2 / 3, 1]]
    )
    alone = Ensemble([m], normalise="rank").fit(_one_row(2, 4))
    np.testing.assert_allclose(alone.score(np.array([0])), [[1, 0, 0.5, 0.5]])
    with pytest.raises(ValueError, match="normalisation 'max'"):
        Ensemble([m], normalise="max")


def _one_row(n_users: int, n_items: int) -> Interactions:
    return Interactions(np.array([0]), np.array([0]), np.array([1]), None, n_users, n_items)


def test_a_seed_ensemble_averages_the_refits_z_scores():
    # two "seeds" of one model: same ranking, different scales; a third disagrees
    s0 = Fixed([[0.0, 1.0, 2.0, 6.0]])
    s1 = Fixed([[0.0, 10.0, 20.0, 60.0]])
    s2 = Fixed([[6.0, 2.0, 1.0, 0.0]])
    train = _one_row(1, 4)
    for m in (s0, s1, s2):
        m.fit(train)
    z = standardised(s0, np.array([0]))[0]
    sd = np.sqrt((2.25**2 + 1.25**2 + 0.25**2 + 3.75**2) / 4)  # mean 9/4
    np.testing.assert_allclose(z, (np.array([0, 1, 2, 6]) - 2.25) / sd)
    pair = Ensemble([s0, s1]).fit(train)  # equal weights 1/2: scale-free, so the mean is z itself
    np.testing.assert_allclose(pair.score(np.array([0]))[0], z)
    three = Ensemble([s0, s1, s2]).fit(train)
    z2 = standardised(s2, np.array([0]))[0]
    np.testing.assert_allclose(three.score(np.array([0]))[0], (2 * z + z2) / 3)


def test_the_normalisation_is_chosen_on_validation_when_only_ranks_combine_right():
    # one user, four items, the held-out item is 1; a has an outlier at item 0, b prefers item 2.
    # z: item 1 beats item 2 only for w_a > 0.967 and item 0 only for w_a < 0.439: never top-1.
    # rank: a → (1, 2/3, 1/3, 0), b → (0, 2/3, 1, 1/3): item 1 scores 2/3 for every w_a, item 0
    # w_a, item 2 1 − 2·w_a/3, so item 1 is top-1 for w_a in [0.5, 2/3) (at 0.5 by the tie rule:
    # lower index first), i.e. the grid points 0.5 and 0.6.
    a, b = Fixed([[100.0, 2.0, 1.0, 0.0]]), Fixed([[0.0, 2.0, 3.0, 1.0]])
    train = Interactions(np.array([0]), np.array([3]), np.array([1]), None, 1, 4)
    for m in (a, b):
        m.fit(train)
    validation = RankingNDCG(Pairs(np.array([0]), np.array([1])), k=1)
    _, z_value, _ = choose_weights([a, b], train, validation, "ndcg_at_1", 0.1, ("z",))
    assert z_value == 0.0
    w, value, how = choose_weights([a, b], train, validation, "ndcg_at_1", 0.1, ("z", "rank"))
    assert how == "rank" and value == 1.0
    assert w[0] in (pytest.approx(0.5), pytest.approx(0.6)) and w.sum() == pytest.approx(1.0)
    # the frozen component of the search is the same blend as the live one
    frozen = Frozen(rank_normalised(a, np.array([0]))).fit(train)
    np.testing.assert_allclose(frozen.score(np.array([0])), [[1, 2 / 3, 1 / 3, 0]])
    live = Ensemble([a, b], w, "rank").fit(train)
    assert live.recommend(np.array([0]), k=1)[0].tolist() == [[1]]


def test_simplex_grid_covers_every_split_of_one():
    grid = simplex_grid(3, 0.1)
    assert len(grid) == 66  # C(10 + 2, 2)
    assert all(abs(w.sum() - 1) < 1e-12 and (w >= 0).all() for w in grid)


def test_blend_weights_are_chosen_on_validation():
    stage = tiny_stage()
    truth = np.zeros((12, 8))
    truth[stage.valid.users, stage.valid.items] = 1.0
    good, bad = Fixed(truth), Fixed(-truth)
    for m in (good, bad):
        m.fit(stage.train)
    w, value, how = choose_weights([bad, good], stage.train, stage.validation, "ndcg_at_3")
    assert w.tolist() == [0.0, 1.0] and value == pytest.approx(1.0) and how == "z"
    assert isinstance(TOPN["ease"], Candidate)


class TinyMS:
    """The MS protocol's shape on the tiny table (the held-out item doubles as the test item)."""

    name = "ms-recommenders"
    levels = ["rated"]

    def __init__(self, cache_dir) -> None:
        self.stage = tiny_stage()

    def tuning(self) -> Stage:
        return self.stage

    def final(self) -> Stage:
        return Stage(self.stage.train, None, None, self.levels)

    def score(self, model, stage):
        from experiments.protocols import Scores

        truth = RankingNDCG(Pairs(self.stage.valid.users, self.stage.valid.items), k=3)
        return Scores({f"{m}_at_10": v for m, v in truth.per_user(model).items()})

    def facts(self) -> dict:
        return {"users": 12}


def test_compare_writes_the_table_with_intervals_paired_differences_and_a_blend(
    tracking, tmp_path, monkeypatch
):
    import experiments.compare as compare

    monkeypatch.setattr(compare, "MSRecommenders", TinyMS)
    argv = ["compare", "--models", "popularity", "ease", "als", "bpr", "--blend", "ease", "bpr"]
    argv += ["--seeds", "0", "1"]  # bpr (and als) as seed ensembles, in the blend too
    argv += ["--bootstrap", "50", "--out", str(tmp_path / "out"), "--tuned", str(tmp_path / "x")]
    monkeypatch.setattr("sys.argv", [*argv, "--tag", "small"])
    compare.main()
    table = (tmp_path / "out" / "compare_ms-recommenders_small.md").read_text()
    rows = {
        line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")
    }
    assert {"popularity", "ease", "als", "bpr", "blend"} <= set(rows)
    assert rows["bpr"].split("|")[2].strip() != "–"  # its epochs were chosen on validation
    ease_ndcg = float(rows["ease"].split("|")[3].split()[0])
    assert ease_ndcg > float(rows["popularity"].split("|")[3].split()[0])  # taste groups found
    assert "tie" in rows["ease"] or "better" in rows["ease"] or "worse" in rows["ease"]
    assert rows["als"].split("|")[4].strip() == "–"  # the reference has no difference to itself
    assert '"weights"' in rows["blend"] and '"seeds": {"ease": 1, "bpr": 2}' in rows["blend"]
    assert '"normalise": "z"' in rows["blend"] or '"normalise": "rank"' in rows["blend"]
    # the seed ensemble: its validation score (inner fits of both seeds), test by the ensemble
    assert rows["bpr_x2"].split("|")[2].strip() != "–"
    assert len(rows["bpr"].split("|")[8].split("/")) == 2  # test NDCG@10 of each refit seed
    assert "--seeds 0 1" in table and "--tag small" in table  # the header regenerates this file
    assert not list((tmp_path / "out").glob(".*"))  # atomic: no temporary files left


@pytest.mark.parametrize(
    ("scale", "gamma", "item_bias"),
    [("per_head", "auto", "per_level"), ("per_head", 2.5, "shared"), ("shared", "auto", "none")],
)
def test_the_graded_studys_first_trial_is_the_pipelines_configuration(scale, gamma, item_bias):
    """Trial 0 of the graded GNOLR study (``graded_defaults``) is a point of its search space that
    rebuilds params' ``gnolr`` exactly, so a search can only end at or above the pipeline's own
    validation score."""
    update = {"scale": scale, "gamma": gamma, "item_bias": item_bias, "weight_decay": 1e-5}
    base = load_params().gnolr.model_copy(update=update)
    settings = graded_gnolr_space(optuna.trial.FixedTrial(graded_defaults(base)))
    rebuilt = graded_config(base, "gnolr", settings)
    expected = base.model_dump()
    if scale == "per_head" and gamma == "auto":
        expected["gamma"] = 4.0  # what "auto" starts γ_1 at
    assert rebuilt.model_dump() == expected
