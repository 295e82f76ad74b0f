"""GNOLR fit with validation, early stopping and the best checkpoint on the GPU, one process vs DDP.

Run by ``gpu_train.sh`` from the repository root: the toy rows of ``tests/ddp_worker.py``, 3 epochs,
``strategy`` single then ddp over ``torch.cuda.device_count()`` GPUs; prints both fits' facts as JSON
(the best validation AUC product of the two should agree).
"""

import json
import sys

import torch

sys.path.insert(0, ".")
from tests.ddp_worker import fit

if __name__ == "__main__":
    out = {}
    for strategy, devices in (("single", 1), ("ddp", torch.cuda.device_count())):
        r = fit(strategy, devices, 1, accelerator="gpu")
        keys = ("device", "world_size", "best_epoch", "best_valid", "ranks_agree", "epochs_run")
        out[strategy] = {k: r.info.get(k) for k in keys}
    print(json.dumps(out, indent=1))
