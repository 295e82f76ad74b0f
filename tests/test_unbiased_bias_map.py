"""The bias map of experiments.unbiased: naive vs clipped IPS over logger bias β × seeds."""

from __future__ import annotations

import argparse
import json

import pytest

from experiments.unbiased import BIAS_MAP_METRICS, bias_map_cell, bias_map_table, run_bias_map


def _rows(naive: list[float], clipped: list[float]) -> list[dict]:
    out = []
    for seed, (n, c) in enumerate(zip(naive, clipped, strict=True)):
        out.append({"seed": seed, "method": "naive", "m": n})
        out.append({"seed": seed, "method": "clipped", "m": c})
    return out


def test_a_cell_is_the_paired_difference_over_seeds_with_a_student_t_interval():
    # diffs 0.1, 0.05, 0.1: mean 1/12, sd 0.028868, t(0.975, 2) = 4.302653
    cell = bias_map_cell(_rows([0.1, 0.2, 0.3], [0.2, 0.25, 0.4]), "m")
    half = 4.302653 * 0.0288675 / 3**0.5
    assert cell["diff"]["mean"] == pytest.approx(1 / 12)
    assert cell["diff"]["lower"] == pytest.approx(1 / 12 - half, abs=1e-5)
    assert cell["diff"]["upper"] == pytest.approx(1 / 12 + half, abs=1e-5)
    assert cell["naive"]["mean"] == pytest.approx(0.2)
    assert cell["clipped"]["mean"] == pytest.approx(0.85 / 3)
    assert cell["verdict"] == "better"


def test_a_difference_that_changes_sign_between_seeds_is_a_tie():
    cell = bias_map_cell(_rows([0.3, 0.3, 0.3], [0.35, 0.25, 0.31]), "m")
    assert cell["diff"]["lower"] < 0 < cell["diff"]["upper"]
    assert cell["verdict"] == "tie"
    worse = bias_map_cell(_rows([0.3, 0.31, 0.32], [0.2, 0.2, 0.2]), "m")
    assert worse["verdict"] == "worse"


def test_the_table_has_one_row_per_beta_with_every_metric():
    cell = bias_map_cell(_rows([0.1, 0.2, 0.3], [0.2, 0.25, 0.4]), "m")
    table = bias_map_table(
        {0.5: {m: cell for m in BIAS_MAP_METRICS}, 2.0: dict.fromkeys(BIAS_MAP_METRICS, cell)}
    )
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 0.5 |") and lines[3].startswith("| 2 |")
    assert lines[2].count("better") == len(BIAS_MAP_METRICS)
    assert "+0.0833" in lines[2]


def test_the_command_writes_the_table_and_every_run(tmp_path):
    stem = tmp_path / "map"
    args = argparse.Namespace(
        betas=[0.5, 2.0],
        seeds=[0, 1],
        clip=0.3,
        n_users=120,
        n_items=60,
        slots=300.0,
        relevance_rate=0.1,
        dim=4,
        lr=0.01,
        weight_decay=1e-5,
        epochs=1,
        table=str(stem),
    )
    run_bias_map(args)
    data = json.loads(stem.with_suffix(".json").read_text())
    assert len(data["rows"]) == 2 * 2 * 2  # β × seeds × {naive, clipped}
    assert set(data["cells"]) == {"0.5", "2"}
    for beta, cells in data["cells"].items():
        rows = [r for r in data["rows"] if f"{r['beta']:g}" == beta]
        naive = [r["gt_ndcg@10/rare"] for r in rows if r["method"] == "naive"]
        assert cells["gt_ndcg@10/rare"]["naive"]["mean"] == pytest.approx(sum(naive) / 2)
    text = stem.with_suffix(".md").read_text()
    assert "M = 0.3" in text and "| 0.5 |" in text and "| 2 |" in text
