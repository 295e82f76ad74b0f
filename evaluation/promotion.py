"""Promotion gates: may a newly registered model version take the ``champion`` alias?

A candidate passes when every check passes:

- **champion comparison** on the family's metric m with tolerance t ≥ 0 (absolute):
  ``max`` mode: m_new ≥ m_champion − t; ``min`` mode: m_new ≤ m_champion + t. A negative t demands
  an improvement of at least |t|. No champion yet (first version) → passes.
- **bounds**: a metric against a fixed limit, e.g. index recall@K ≥ floor, P[Love] ECE / love rate ≤ bound.

A missing or non-finite candidate value fails its check. Pure functions, no MLflow: the
``promote`` stage (pipelines/promote.py) feeds them the metrics and the registry's champion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FAMILIES = ("gnolr", "relmf", "plove")


DEEPEST = "{deepest}"  # placeholder in a gate's metric name: the deepest feedback level


class FamilyGate(BaseModel):
    """The metric a family is judged on against its current champion."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(
        description="MLflow metric name, e.g. test/ips_auc/{deepest}; '{deepest}' stands for "
        "the deepest level of contract.levels"
    )
    mode: Literal["max", "min"] = Field("max", description="max: higher is better")
    tolerance: float = Field(
        0.0,
        description="how much worse than the champion (absolute) still passes; < 0 demands gain",
    )

    def resolved(self, deepest: str) -> FamilyGate:
        """This gate with ``{deepest}`` in the metric name replaced by the level's name."""
        return self.model_copy(update={"metric": self.metric.replace(DEEPEST, deepest)})


class PromoteConfig(BaseModel):
    """params.yaml → ``promote``."""

    model_config = ConfigDict(extra="forbid")

    alias: str = "champion"
    model_prefix: str = Field("ladder-", description="registered model name = prefix + family")
    fail_on_refusal: bool = Field(False, description="a refused gate fails the stage")
    index_recall_floor: float = Field(
        0.9, ge=0, le=1, description="gnolr: recall@index.recall_k of the served index ≥ this"
    )
    plove_max_relative_ece: float = Field(
        0.5,
        ge=0,
        description="plove, and gnolr when its bundle serves P[Love]: test ECE / love rate ≤ this "
        "(a model that always says 0 scores 1; an absolute bound cannot tell it from a good one "
        "when loves are rare)",
    )
    gnolr: FamilyGate = Field(
        # IPS-weighted, not observed, NDCG: a popularity-biased logger lets popular-item rankers win
        # the observed metric while they lose on true relevance (see README, "Promotion").
        default_factory=lambda: FamilyGate(metric=f"test/ips_auc/{DEEPEST}", tolerance=0.002)
    )
    relmf: FamilyGate = Field(
        default_factory=lambda: FamilyGate(metric="test/ips_dcg_at_10", tolerance=0.005)
    )
    plove: FamilyGate = Field(
        default_factory=lambda: FamilyGate(metric="test/log_loss", mode="min", tolerance=0.0005)
    )

    def gate(self, family: str, deepest: str) -> FamilyGate:
        """The family's gate, its metric name resolved for the deepest feedback level."""
        return getattr(self, family).resolved(deepest)


@dataclass(frozen=True)
class Bound:
    """``metric`` must be ≥ (``op='>='``) or ≤ (``op='<='``) ``limit``."""

    name: str
    metric: str
    limit: float
    op: Literal[">=", "<="]


@dataclass
class Check:
    name: str
    passed: bool
    reason: str
    metric: str
    value: float | None
    limit: float | None = None


@dataclass
class Decision:
    family: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks]

    @property
    def failed(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
        }


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _signed(x: float) -> str:
    """``+ |x|`` or ``− |x|``; a zero tolerance (``-0.0`` after negation) reads ``+ 0``."""
    return f"+ {abs(x):g}" if x >= 0 else f"− {-x:g}"


def champion_check(gate: FamilyGate, candidate: float | None, champion: float | None) -> Check:
    """Compare the candidate with the champion on ``gate.metric`` (see the module docstring)."""
    m, t = gate.metric, gate.tolerance
    if not _finite(candidate):
        return Check("champion", False, f"candidate has no finite {m}", m, candidate)
    if champion is None:
        return Check(
            "champion", True, f"no champion with {m} yet: {m} = {candidate:.6g}", m, candidate
        )
    if gate.mode == "max":
        limit, ok, sign = champion - t, candidate >= champion - t, "≥"
        expr = f"champion {champion:.6g} {_signed(-t)}"
    else:
        limit, ok, sign = champion + t, candidate <= champion + t, "≤"
        expr = f"champion {champion:.6g} {_signed(t)}"
    verdict = sign if ok else ("<" if gate.mode == "max" else ">")
    return Check("champion", ok, f"{m} {candidate:.6g} {verdict} {expr}", m, candidate, limit)


def bound_check(bound: Bound, value: float | None) -> Check:
    """``value`` against ``bound.limit``."""
    if not _finite(value):
        return Check(
            bound.name, False, f"{bound.metric} is missing", bound.metric, value, bound.limit
        )
    ok = value >= bound.limit if bound.op == ">=" else value <= bound.limit
    sign = {(">=", True): "≥", (">=", False): "<", ("<=", True): "≤", ("<=", False): ">"}
    reason = f"{bound.name}: {bound.metric} {value:.6g} {sign[bound.op, ok]} {bound.limit:g}"
    return Check(bound.name, ok, reason, bound.metric, value, bound.limit)


def decide(
    family: str,
    gate: FamilyGate,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    bounds: list[Bound] = (),
) -> Decision:
    """All checks of one family: the champion comparison, then each bound.

    ``candidate`` and ``champion`` map metric names to values; ``champion`` is None when the
    registered model has no champion yet. A champion lacking ``gate.metric`` (the metric was
    changed since) counts as no champion for the comparison.
    """
    champ = None if champion is None else champion.get(gate.metric)
    checks = [champion_check(gate, candidate.get(gate.metric), champ)]
    checks += [bound_check(b, candidate.get(b.metric)) for b in bounds]
    return Decision(family, checks)
