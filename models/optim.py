"""One optimiser for a two-tower network: Adam on the looked-up rows of the id-embedding tables,
the family's dense optimiser on everything else.

The id tables are ``nn.Embedding(n_ids, d, sparse=True)`` (:func:`id_embedding`): backward gives
a sparse gradient holding only the rows a batch looked up, so a step costs O(rows in the batch · d)
rather than O(n_ids · d), and under DDP only those rows are all-reduced. :class:`RowAdam` updates
exactly those rows with ``torch.optim.SparseAdam``'s update (its moment estimates are lazy: a row's
moments decay only when it is looked up), written with row gathers and scatters instead of sparse
tensor algebra. A family that decayed its embeddings keeps an equivalent on the looked-up rows
only: AdamW's decoupled decay as ``RowAdam(weight_decay=λ)`` (after the step, each looked-up row
r ← r·(1 − lr·λ)), Adam's coupled L2 as the loss term :func:`rows_l2`.

:class:`SparseDenseOptimizer` is a plain ``torch.optim.Optimizer`` to Lightning (automatic
optimisation, checkpoints, ``lr`` in ``param_groups``): ``step`` runs the closure once and then
steps both inner optimisers.
"""

from __future__ import annotations

import math
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


def _closure_loss(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    """The loss of ``closure`` (re-evaluated with gradients on, as ``Optimizer.step`` does)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class RowAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam``'s update of the rows a sparse gradient holds, then AdamW's
    decoupled decay of those rows.

    For the coalesced rows R of the gradient g, at step t:

        m_R ← β1·m_R + (1 − β1)·g,    v_R ← β2·v_R + (1 − β2)·g²,
        θ_R ← θ_R − lr·(√(1 − β2ᵗ)/(1 − β1ᵗ))·m_R/(√v_R + ε),   then θ_R ← θ_R·(1 − lr·λ).

    Rows outside R keep their parameters and moments. SparseAdam does the same with
    ``sparse_mask`` and sparse additions; gathering the rows (``index_select``) and writing them
    back (``index_copy_``) is the same arithmetic in half the time (benchmarks/optimizer_step.py).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid RowAdam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(
                        "RowAdam is for sparse gradients (nn.Embedding(sparse=True))"
                    )
                grad = p.grad.coalesce()
                rows, g = grad.indices()[0], grad.values()
                if rows.numel() == 0:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2)
                v.addcmul_(g, g, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                t = state["step"]
                step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                new = p.index_select(0, rows).addcdiv_(m, v.sqrt_().add_(eps), value=-step_size)
                if group["weight_decay"] > 0:
                    new.mul_(1.0 - lr * group["weight_decay"])
                p.index_copy_(0, rows, new)
        return loss


class SparseDenseOptimizer(torch.optim.Optimizer):
    """:class:`RowAdam` for the parameters with sparse gradients, ``dense`` for the rest, as one
    optimiser.

    ``param_groups`` are the inner optimisers' own group dicts (sparse first), so a scheduler or a
    logger that reads or sets ``lr`` acts on both.
    """

    def __init__(self, sparse: RowAdam | None, dense: torch.optim.Optimizer | None):
        self.optimizers = [o for o in (sparse, dense) if o is not None]
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
        loss = _closure_loss(closure)
        for o in self.optimizers:
            o.step()
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
    """RowAdam(lr, decoupled decay ``sparse_weight_decay``) on ``module``'s sparse embeddings,
    ``dense(named other parameters)`` on the rest (the family builds its own groups and weight decay
    there)."""
    sparse, rest = split_sparse(module)
    return SparseDenseOptimizer(
        RowAdam(sparse, lr=lr, weight_decay=sparse_weight_decay) if sparse else None,
        dense(rest) if rest else None,
    )
