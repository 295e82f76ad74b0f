"""GNOLR fit with validation, early stopping and the best checkpoint on the GPU, one process vs DDP.

Run by ``gpu_train.sh`` from the repository root: the toy rows of ``tests/ddp_worker.py``, 3 epochs,
``strategy`` single then ddp over ``torch.cuda.device_count()`` GPUs; prints both fits' facts as JSON
(the best validation AUC product of the two should agree).
"""

import json
import sys

import torch

sys.path.insert(0, ".")
from evaluation.validation import LevelAUC
from models.gnolr.config import GNOLRConfig
from models.gnolr.fit import fit_gnolr
from tests.ddp_worker import toy_rows

if __name__ == "__main__":
    train, valid = toy_rows()
    cfg = GNOLRConfig(embedding_dim=16, hidden=[16], dim=8, batch_size=512, max_epochs=3, lr=0.01)
    names = ["click", "cart", "buy"]
    out = {}
    for strategy, devices in (("single", 1), ("ddp", torch.cuda.device_count())):
        r = fit_gnolr(
            train,
            valid,
            train.n_users,
            train.n_items,
            names,
            cfg,
            LevelAUC(names),
            progress=False,
            accelerator="gpu",
            strategy=strategy,
            devices=devices,
        )
        out[strategy] = {
            k: r.info.get(k)
            for k in (
                "device",
                "world_size",
                "best_epoch",
                "best_valid_auc_product",
                "ranks_agree",
                "epochs_run",
            )
        }
    print(json.dumps(out, indent=1))
