"""Training beyond one process: sparse id-embedding gradients, DDP on CPU gloo, torchrun on loopback.

The fits are tiny (300 users × 200 items, 12,000 rows, 3 epochs; ``tests/ddp_worker.py``).
Tolerance: DDP×2 splits each global batch of 512 rows over the two ranks and averages their
gradients, which is the one-process gradient up to float rounding, so its best validation AUC
product must lie within 0.01 of the one-process fit's.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.validation import IPSDCG
from models.data import Pairs
from models.fitting import _strategy
from models.gnolr.config import GNOLRConfig
from models.gnolr.module import GNOLRModule
from models.gnolr.network import GNOLR
from models.optim import RowAdam, SparseDenseOptimizer
from models.relmf.config import RelMFConfig
from models.relmf.fit import fit_relmf
from pipelines.params import Params, ParamsError, load_params
from tests.ddp_worker import fit

ROOT = Path(__file__).resolve().parents[1]
AUC_TOLERANCE = 0.01


def _module(**cfg) -> GNOLRModule:
    cfg = GNOLRConfig(embedding_dim=4, hidden=[4], dim=2, **cfg)
    net = GNOLR(10, 8, np.array([1.0, 2.0]), np.array([0.3, 0.3]), cfg)
    return GNOLRModule(net, cfg)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_id_embedding_gradient_is_sparse_and_a_step_moves_only_the_looked_up_rows(weight_decay):
    torch.manual_seed(0)
    module = _module(weight_decay=weight_decay, lr=0.1)
    opt = module.configure_optimizers()
    assert isinstance(opt, SparseDenseOptimizer)
    users, items = torch.tensor([1, 3, 3]), torch.tensor([0, 5, 6])
    batch = (users, items, torch.tensor([0, 1, 2]))
    user_w = module.model.user_tower.embedding.weight
    item_w = module.model.item_tower.embedding.weight
    before_u, before_i = user_w.detach().clone(), item_w.detach().clone()
    head_before = module.model.user_tower.heads[0][0].weight.detach().clone()

    opt.zero_grad()
    module._loss(batch).backward()
    assert user_w.grad.is_sparse and item_w.grad.is_sparse
    assert sorted(set(user_w.grad.coalesce().indices()[0].tolist())) == [1, 3]
    opt.step()

    moved_u = (user_w.detach() != before_u).any(1).nonzero().flatten().tolist()
    moved_i = (item_w.detach() != before_i).any(1).nonzero().flatten().tolist()
    assert moved_u == [1, 3] and moved_i == [0, 5, 6]
    # the dense tower is optimised too (AdamW)
    assert not torch.equal(module.model.user_tower.heads[0][0].weight, head_before)
    # the optimiser's state round-trips (checkpoints)
    state = opt.state_dict()
    fresh = module.configure_optimizers()
    fresh.load_state_dict(state)
    assert len(fresh.state) == len(opt.state) > 0


def test_sparse_weight_decay_is_adamw_decay_on_the_looked_up_rows():
    # Adam's first step moves each looked-up coordinate by lr·sign(g) (m̂/√v̂ = ±1, up to ε); the
    # decoupled decay then scales the row by (1 − lr·λ).
    torch.manual_seed(0)
    emb = torch.nn.Embedding(4, 2, sparse=True)
    w0 = emb.weight.detach().clone()
    lr, lam = 0.1, 0.5
    opt = SparseDenseOptimizer(RowAdam(emb.parameters(), lr=lr, weight_decay=lam), None)
    emb(torch.tensor([2])).sum().backward()
    opt.step()
    expected = (w0[2] - lr * (1 - 1e-8 / (1 + 1e-8))) * (1 - lr * lam)
    assert torch.allclose(emb.weight[2], expected, atol=1e-6)
    assert torch.equal(emb.weight[[0, 1, 3]], w0[[0, 1, 3]])


def test_row_adam_is_sparse_adam_row_for_row():
    # torch.optim.SparseAdam is the reference: over steps with repeated rows, rows seen once and
    # rows never seen (lazy moments), both tables must stay equal to float rounding
    torch.manual_seed(0)
    ours, ref = torch.nn.Embedding(6, 3, sparse=True), torch.nn.Embedding(6, 3, sparse=True)
    ref.load_state_dict(ours.state_dict())
    w0 = ours.weight.detach().clone()
    opt_ours = RowAdam(ours.parameters(), lr=0.05, betas=(0.8, 0.99))
    opt_ref = torch.optim.SparseAdam(ref.parameters(), lr=0.05, betas=(0.8, 0.99))
    target = torch.randn(6, 3)
    for rows in ([0, 2, 2], [2, 4], [0], [5, 5, 5, 2], [0, 2, 4]):
        ids = torch.tensor(rows)
        for emb, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            ((emb(ids) - target[ids]) ** 2).sum().backward()
            opt.step()
    assert torch.equal(ours.weight[1], w0[1]) and torch.equal(ours.weight[3], w0[3])  # never seen
    assert torch.allclose(ours.weight, ref.weight, atol=1e-6, rtol=0)
    assert torch.allclose(
        opt_ours.state[ours.weight]["exp_avg_sq"],
        opt_ref.state[ref.weight]["exp_avg_sq"],
        atol=1e-7,
        rtol=1e-5,
    )


@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_ddp_uses_gloo_on_every_accelerator_because_id_gradients_are_sparse(accelerator):
    # NCCL refuses sparse all-reduce ("NCCL does not support all_reduce with sparse tensors",
    # an H200 run); ranks are spawned, never forked: CUDA cannot be forked once initialised, and
    # a rank forked from a pytest process with live thread pools aborted in CI
    # ("malloc(): unaligned tcache chunk detected")
    strategy = _strategy("ddp", accelerator)
    assert strategy.process_group_backend == "gloo"
    assert strategy._start_method == "spawn"


def test_scale_train_params_are_validated(tmp_path):
    p = Params()
    assert (p.scale.train.strategy, p.scale.train.devices, p.scale.train.nodes) == ("single", 1, 1)
    assert load_params(ROOT / "params.yaml").scale.train.strategy == "single"
    for bad, key in [
        ({"strategy": "horovod"}, "strategy"),
        ({"devices": 0}, "devices"),
        ({"strategy": "single", "devices": 2}, "strategy ddp"),
    ]:
        f = tmp_path / "params.yaml"
        f.write_text(json.dumps({"scale": {"train": bad}}))
        with pytest.raises(ParamsError, match=key):
            load_params(f)


def test_ddp_two_ranks_end_identical_and_match_one_process():
    one = fit("single", 1, 1)
    two = fit("ddp", 2, 1)
    assert two.info["world_size"] == 2
    # the fit raises if the ranks' final weights differ; its report says they agreed
    assert two.info["ranks_agree"] is True
    assert one.info["best_valid"] > 0.1  # the toy data carries signal at every level
    assert abs(two.info["best_valid"] - one.info["best_valid"]) <= AUC_TOLERANCE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_on_loopback_agree(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "tests.ddp_worker",
                str(tmp_path),
                "ddp",
                "1",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    logs = []
    for p in procs:
        out, _ = p.communicate(timeout=110)
        logs.append(out)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-3000:] for x in logs)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["hash"] == ranks[1]["hash"]  # the best weights, loaded on every rank
    assert ranks[0]["best_valid"] == ranks[1]["best_valid"] > 0.1


def test_relmf_trains_under_ddp_with_its_sparse_user_rows():
    # Rel-MF mixes a sparse user table with a dense item table; both go through DDP (gloo) and
    # the ranks end equal (the fit raises otherwise), the best epoch inside the run.
    rng = np.random.default_rng(0)
    liked = rng.integers(0, 2, 40)[:, None] == (np.arange(30) % 2)[None, :]
    users, items = np.nonzero(liked & (rng.random((40, 30)) < 0.5))
    hold = np.arange(users.size) % 5 == 0
    cfg = RelMFConfig(dim=4, max_epochs=3, patience=2, valid_k=3, batch_users=16)
    theta = np.full(30, 0.5)
    validation = IPSDCG(Pairs(users[hold], items[hold]), theta, cfg.valid_k, cfg.valid_floor)
    result = fit_relmf(
        Pairs(users[~hold], items[~hold]), 40, 30, theta, cfg, validation, strategy="ddp", devices=2
    )
    assert result.info["world_size"] == 2
    assert result.info["epochs_run"] == 3 and 0 <= result.info["best_epoch"] < 3
    assert result.model.user.sparse and not result.model.item.sparse


def test_plove_trains_under_ddp_and_ranks_agree_with_one_process():
    # P[Love] (sparse user and item rows, dense bucket and position parameters) under DDP × 2:
    # the ranks end equal (the fit raises otherwise) and rank for rank it learns what one process
    # learns on the same rows.
    from evaluation.metrics import auc
    from models.plove.config import PLoveConfig
    from models.plove.fit import LoveRows, fit_plove

    rng = np.random.default_rng(0)
    n_users, n_items, n = 40, 30, 12_000
    taste, kind = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    positions = rng.integers(0, 5, n)
    logit = -2.0 + 1.5 * (taste[users] * kind[items]).sum(1) - 0.3 * positions
    clicks = rng.random(n) < 1 / (1 + np.exp(-logit))
    loves = clicks & (rng.random(n) < 0.4)
    cols = (users, items, positions, clicks.astype(int), loves.astype(int))
    train_rows, valid_rows = (
        LoveRows(*(a[s] for a in cols)) for s in (slice(0, 9_000), slice(9_000, n))
    )
    cfg = PLoveConfig(dim=4, max_epochs=3, batch_size=1024, lr=0.05, l2=0.0, max_position=5)
    codes = np.ones(n_users, np.int64), np.ones(n_items, np.int64)
    scores = {}
    for strategy, devices in (("single", 1), ("ddp", 2)):
        fit = fit_plove(
            train_rows,
            valid_rows,
            n_users,
            n_items,
            *codes,
            cfg,
            accelerator="cpu",
            strategy=strategy,
            devices=devices,
        )
        assert fit.info["world_size"] == devices
        p = fit.scorer.predict(valid_rows.users, valid_rows.items, valid_rows.positions)
        scores[strategy] = auc(p, valid_rows.loves)
    assert scores["single"] > 0.7  # the toy rows carry signal
    assert abs(scores["ddp"] - scores["single"]) <= AUC_TOLERANCE


@pytest.mark.slow  # ~75 s on the shared 2-core box: ingest, features and the stage in a child
def test_train_gnolr_stage_runs_ddp_from_one_process(tmp_path, monkeypatch):
    # `dvc repro train_gnolr` with scale.train ddp × 2: the stage spawns its ranks, then alone logs
    # one MLflow run (one value per epoch, not one per rank) and writes its outputs.
    from pipelines import features, ingest
    from tests.conftest import TINY_PARAMS, write_params

    params = copy.deepcopy(TINY_PARAMS)
    params["source"]["synthetic"]["n_impressions"] = 20_000
    params["gnolr"]["max_epochs"] = 2
    params["scale"] = {"train": {"strategy": "ddp", "devices": 2}}
    write_params(tmp_path, params)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ingest.main()
    features.main()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.train_gnolr"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((tmp_path / "data/models/gnolr/info.json").read_text())
    assert info["world_size"] == 2 and info["ranks_agree"] is True
    from mlflow import MlflowClient

    history = MlflowClient(uri).get_metric_history(info["run_id"], "valid/auc_product")
    assert len(history) == info["epochs_run"]
