"""One optimiser for a two-tower network: SparseAdam on the id-embedding tables, the family's dense
optimiser on everything else.

The id tables are ``nn.Embedding(n_ids, d, sparse=True)`` (:func:`id_embedding`): backward gives
a sparse gradient holding only the rows a batch looked up, so a step costs O(rows in the batch · d)
rather than O(n_ids · d), and under DDP only those rows are all-reduced. ``torch.optim.SparseAdam``
updates exactly those rows (its moment estimates are lazy: a row's moments decay only when it is
looked up). SparseAdam has no weight decay. A family that decayed its embeddings keeps an equivalent
on the looked-up rows only: AdamW's decoupled decay as ``sparse_weight_decay`` here (after the
step, each looked-up row r ← r·(1 − lr·λ)), Adam's coupled L2 as the loss term :func:`rows_l2`.

:class:`SparseDenseOptimizer` is a plain ``torch.optim.Optimizer`` to Lightning (automatic
optimisation, checkpoints, ``lr`` in ``param_groups``): ``step`` runs the closure once and then
steps both inner optimisers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def id_embedding(n_ids: int, dim: int) -> nn.Embedding:
    """An id-embedding table with sparse gradients (rows touched by the batch only)."""
    return nn.Embedding(n_ids, dim, sparse=True)


def rows_l2(*rows: torch.Tensor) -> torch.Tensor:
    """½ Σ‖row‖² of looked-up embedding rows: with weight λ its gradient on those rows, λ·row, is
    what Adam's (coupled) ``weight_decay = λ`` added to them."""
    return 0.5 * sum(r.pow(2).sum() for r in rows)


class SparseDenseOptimizer(torch.optim.Optimizer):
    """SparseAdam for the parameters with sparse gradients, ``dense`` for the rest, as one optimiser.

    ``param_groups`` are the inner optimisers' own group dicts (sparse first), so a scheduler or a
    logger that reads or sets ``lr`` acts on both.
    """

    def __init__(
        self,
        sparse: torch.optim.SparseAdam | None,
        dense: torch.optim.Optimizer | None,
        sparse_weight_decay: float = 0.0,
    ):
        self.optimizers = [o for o in (sparse, dense) if o is not None]
        self.sparse = sparse
        self.sparse_weight_decay = sparse_weight_decay
        if not self.optimizers:
            raise ValueError("nothing to optimise")
        self.defaults = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> _JointState:
        return _JointState(self.optimizers)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        if self.sparse is not None and self.sparse_weight_decay > 0:
            for g in self.sparse.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        rows = p.grad.coalesce().indices()[0]
                        p[rows] *= 1.0 - g["lr"] * self.sparse_weight_decay
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for o, s in zip(self.optimizers, state_dict["optimizers"], strict=True):
            o.load_state_dict(s)

    def __repr__(self) -> str:
        return f"SparseDenseOptimizer({', '.join(type(o).__name__ for o in self.optimizers)})"


class _JointState(dict):
    """Both inner optimisers' per-parameter state; assignments go to the optimiser that owns the
    parameter (Lightning moves optimiser state between devices this way)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        super().__init__()
        self._owners = {}
        for o in optimizers:
            for g in o.param_groups:
                for p in g["params"]:
                    self._owners[p] = o
            super().update(o.state)

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._owners[key].state[key] = value


def split_sparse(
    module: nn.Module,
) -> tuple[list[nn.Parameter], list[tuple[str, nn.Parameter]]]:
    """The weights of ``module``'s sparse-gradient embeddings, and its other named parameters."""
    sparse_ids = {
        id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse
    }
    sparse, dense = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (sparse.append(p) if id(p) in sparse_ids else dense.append((name, p)))
    return sparse, dense


def sparse_dense(
    module: nn.Module,
    lr: float,
    dense: Callable[[list[tuple[str, nn.Parameter]]], torch.optim.Optimizer],
    sparse_weight_decay: float = 0.0,
) -> SparseDenseOptimizer:
    """SparseAdam(lr) on ``module``'s sparse embeddings, ``dense(named other parameters)`` on the
    rest (the family builds its own groups and weight decay there)."""
    sparse, rest = split_sparse(module)
    return SparseDenseOptimizer(
        torch.optim.SparseAdam(sparse, lr=lr) if sparse else None,
        dense(rest) if rest else None,
        sparse_weight_decay,
    )
