"""Published protocols reproduced exactly, intervals that call ties, and tuned settings written back."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from evaluation.bootstrap import grouped_replicates, paired_difference
from evaluation.metrics import auc
from evaluation.selection import over_seeds, summarise
from experiments.tune import apply_to_params, write_tuned
from features.protocols import ms_recommenders_movielens, ms_recommenders_split, split_ratings
from pipelines.params import load_params


def pandas_rule(users: np.ndarray, ratio: float = 0.75, seed: int = 42) -> np.ndarray:
    """The rule of recommenders ≤ 1.1.1's python_stratified_split, written with pandas."""
    frame = pd.DataFrame({"u": users})
    train = np.zeros(users.size, bool)
    for _, group in frame.groupby("u"):
        shuffled = group.sample(frac=1, random_state=seed)
        train[shuffled.index[: int(round(ratio * len(shuffled)))]] = True
    return train


def test_ms_split_hand_example():
    # user 7 has rows 0, 1, 2, 3, 5: RandomState(42).permutation(5) = [1, 4, 2, 0, 3] picks its
    # 2nd, 5th, 3rd and 1st rows (round(3.75) = 4) → rows 1, 5, 2, 0 train and row 3 tests; user 3
    # has 2 rows, round(1.5) = 2 (half to even) → both train.
    users = np.array([7, 7, 7, 7, 3, 7, 3])
    assert ms_recommenders_split(users).astype(int).tolist() == [1, 1, 1, 0, 1, 1, 1]


def test_ms_split_equals_the_pandas_rule_and_depends_on_row_order():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 25, 600)
    mask = ms_recommenders_split(users)
    np.testing.assert_array_equal(mask, pandas_rule(users))
    order = rng.permutation(users.size)  # same rows, another order within users
    moved = ms_recommenders_split(users[order]) != mask[order]
    assert moved.any()  # … another split: the protocol needs u.data's row order


def test_validation_is_cut_from_train_by_the_same_rule():
    users = np.repeat(np.arange(4), [8, 5, 12, 4])
    split = split_ratings(users, np.arange(users.size), np.ones(users.size), np.zeros(users.size))
    assert not (split.inner & ~split.train).any()
    np.testing.assert_array_equal(
        split.inner[split.train], ms_recommenders_split(split.users[split.train])
    )


def test_ms_split_of_movielens_equals_recommenders_1_1_1(wheel_cache: Path):
    split = ms_recommenders_movielens(wheel_cache)
    assert split.sizes() == {"train": 74992, "test": 25008, "inner": 56246, "valid": 18746}
    raw_users = split.user_ids[split.users[split.train]].astype(np.int64)
    raw_items = split.item_ids[split.items[split.train]].astype(np.int64)
    keys = np.sort(raw_users * 10_000 + raw_items)
    # sha256 of the sorted train (user, item) keys that recommenders 1.1.1's own
    # python_stratified_split(ratio=0.75, filter_by="user", seed=42) returns on u.data
    assert (
        hashlib.sha256(keys.tobytes()).hexdigest()
        == "8cb8373dc7f95a1bffbc726a4da9d138b211db564693f1e8ed1833bd7e54ba15"
    )


def test_paired_intervals_call_ties_and_differences():
    rng = np.random.default_rng(0)
    base = rng.normal(0.4, 0.2, 500)
    better = base + 0.02 + rng.normal(0, 0.01, 500)
    noisy = base + rng.normal(0, 0.05, 500)
    assert summarise(better, base, 500, 0)["verdict"] == "better"
    assert summarise(noisy, base, 500, 0)["verdict"] == "tie"
    diff = paired_difference(better, base, 500, 0)
    assert 0.015 < diff.lower < diff.estimate < diff.upper < 0.025
    cell = over_seeds([0.10, 0.12, 0.11])
    assert cell["lower"] < 0.11 < cell["upper"] and cell["n"] == 3


def test_grouped_bootstrap_of_an_auc_resamples_whole_users():
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.2])
    labels = np.array([1, 0, 1, 0, 1])
    users = np.array([0, 0, 1, 1, 1])
    reps = grouped_replicates(lambda w: auc(scores, labels, w), users, 200, 0)
    # a replicate draws users 0 and 1 some number of times: its AUC is one of the few values a
    # resampled set of whole users can have
    possible = {
        auc(
            np.r_[np.tile(scores[:2], a), np.tile(scores[2:], b)],
            np.r_[np.tile(labels[:2], a), np.tile(labels[2:], b)],
        )
        for a, b in ((2, 0), (1, 1), (0, 2))
    }
    finite = reps[np.isfinite(reps)]
    assert finite.size > 100
    assert all(any(abs(r - p) < 1e-12 for p in possible) for r in finite)


def test_tuned_settings_merge_and_apply_to_params_keeping_comments(tmp_path):
    tuned = tmp_path / "tuned" / "simulator.yaml"
    write_tuned(tuned, "simulator", {"als": {"settings": {"factors": 8}}})
    write_tuned(tuned, "simulator", {"gnolr": {"settings": {"scale": "per_head", "gamma": 3.0}}})
    assert set(yaml.safe_load(tuned.read_text())["models"]) == {"als", "gnolr"}
    params = tmp_path / "params.yaml"
    text = re.sub(r"(?m)^  id_dropout: .*\n", "", Path("params.yaml").read_text())  # a new key
    before = re.sub(r"(?m)^(  gamma: \S+)", r"\1  # keep me", text, count=1)
    params.write_text(before)
    apply_to_params({"scale": "per_head", "gamma": 3.0, "id_dropout": 0.25}, params)
    text = params.read_text()
    assert "# keep me" in text and "scale: per_head" in text
    loaded = yaml.safe_load(text)
    assert loaded["gnolr"]["gamma"] == 3.0 and loaded["gnolr"]["id_dropout"] == 0.25
    # every other line is kept as it was (``null`` stays ``null``); the new key sits in the section
    old_lines, new_lines = before.splitlines(), text.splitlines()
    assert {line.split(":")[0] for line in set(old_lines) ^ set(new_lines)} == {
        "  gamma",
        "  id_dropout",
    }
    assert new_lines.index("  id_dropout: 0.25") < new_lines.index("evaluate:") - 1
    assert new_lines[new_lines.index("evaluate:") - 1] == ""


def test_every_graded_variant_is_a_valid_change_of_the_pipeline_gnolr():
    from experiments.candidates import VARIANTS, graded_config

    base = load_params().gnolr
    per_head = graded_config(base, "gnolr_per_head")
    assert (per_head.scale, per_head.item_bias, per_head.embedding_dim) == (
        "per_head",
        "per_level",
        base.embedding_dim,
    )
    # a per-level bias falls back to a shared one where the ordering bound cannot hold it
    assert graded_config(base, "mt_bce", {"item_bias": "per_level"}).item_bias == "shared"
    for name in VARIANTS:
        graded_config(base, name)
