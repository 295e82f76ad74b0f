"""The BentoML service: `bentoml serve serving.service:Recommender`.

Loads the serving bundle from ``LADDER_BUNDLE`` (default ``data/serving``, written by `dvc repro`).
BentoML adds ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus) and the OpenAPI schema at
``/docs.json``; request bodies are validated by pydantic and rejected with a 4xx and a message.
"""

from __future__ import annotations

import os
from typing import Annotated

import bentoml
from pydantic import BaseModel, Field

from serving.bundle import load_bundle
from serving.recommend import recommend

MAX_K = 1000


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="deepest level's logit (personal) or −popularity rank (fallback)"
    )
    probabilities: dict[str, float] | None = Field(
        None, description="P(level reached) per feedback level; null for the popularity fallback"
    )


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
    ) -> RecommendResponse:
        """Top-k items for a user, best first, with per-level probabilities."""
        k = min(k, len(self.bundle.item_ids))
        result = recommend(self.bundle, user_id, k, exclude_seen)
        return RecommendResponse(
            user_id=user_id,
            items=[
                RecommendedItem(item_id=r.item_id, score=r.score, probabilities=r.probabilities)
                for r in result.items
            ],
            model_version=result.model_version,
            fallback=result.fallback,
        )
