"""Serving settings that ``pipelines.params`` validates without loading a model or torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BatchConfig(BaseModel):
    """``params.yaml: batch``: how many items per user, seen-item filtering and which users."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(20, ge=1, le=1000, description="items per user")
    exclude_seen: bool = Field(True, description="drop the user's training positives")
    users: Literal["all"] | list[str] = Field(
        "all", description="'all' (every user in the bundle) or a list of external user ids"
    )
    batch_size: int = Field(4096, ge=1, description="users per retrieval call")
