"""The BentoML service: `bentoml serve serving.service:Recommender`.

Loads the serving bundle from ``LADDER_BUNDLE`` (default ``data/serving``, written by `dvc repro`).
BentoML adds ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus) and the OpenAPI schema at
``/docs.json``; request bodies are validated by pydantic and rejected with a 4xx and a message.
"""

from __future__ import annotations

import os
from typing import Annotated

import bentoml
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, ConfigDict, Field

from models.ranking_blend import BlendWeights
from serving.bundle import load_bundle
from serving.recommend import recommend

MAX_K = 1000


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="deepest level's logit, the blend when objective_weights are given, "
        "or −popularity rank (fallback)"
    )
    probabilities: dict[str, float] | None = Field(
        None, description="P(level reached) per feedback level; null for the popularity fallback"
    )
    p_love: float | None = Field(None, description="calibrated P[Love] at the top position")


class ObjectiveWeights(BaseModel):
    """Blend ``relevance·l_T + love·logit(P[Love])`` (methods.md §3); both finite and ≥ 0."""

    model_config = ConfigDict(extra="forbid")

    relevance: float = Field(1.0, ge=0, le=1e6, allow_inf_nan=False)
    love: float = Field(0.0, ge=0, le=1e6, allow_inf_nan=False)


class RecommendResponse(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    model_version: str
    fallback: str | None = Field(None, description="'popular' when the user is unknown")


@bentoml.service(traffic={"timeout": 30})
class Recommender:
    """GNOLR recommendations from one FAISS index, with a popularity fallback for unknown users."""

    def __init__(self) -> None:
        self.bundle = load_bundle(os.environ.get("LADDER_BUNDLE", "data/serving"))

    @bentoml.api(route="/recommend")
    def recommend(
        self,
        user_id: Annotated[
            str, Field(min_length=1, max_length=256, description="external user id")
        ],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="number of items")] = 10,
        exclude_seen: bool = True,
        objective_weights: ObjectiveWeights | None = None,
    ) -> RecommendResponse:
        """Top-k items for a user, best first, with per-level probabilities and P[Love].

        ``objective_weights`` re-ranks the relevance candidates by the blend of relevance and
        logit(P[Love]); without it the order is relevance alone.
        """
        k = min(k, len(self.bundle.item_ids))
        weights = (
            None
            if objective_weights is None
            else BlendWeights(objective_weights.relevance, objective_weights.love)
        )
        try:
            result = recommend(self.bundle, user_id, k, exclude_seen, weights)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        return RecommendResponse(
            user_id=user_id,
            items=[
                RecommendedItem(
                    item_id=r.item_id, score=r.score, probabilities=r.probabilities, p_love=r.p_love
                )
                for r in result.items
            ],
            model_version=result.model_version,
            fallback=result.fallback,
        )
