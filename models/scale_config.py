"""params.yaml → ``scale.train``: how the trainers run (one process, or data-parallel ranks).

Kept free of torch and Lightning so that params.yaml validates in a second.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainScaleConfig(BaseModel):
    """``strategy: single`` (one process, the reference) or ``ddp`` (Lightning DDP: ``devices``
    ranks on each of ``nodes`` machines; global batch = the family's ``batch_size``, split over
    the ranks). See docs/scaling-out.md."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["single", "ddp"] = Field(
        "single", description="single: one process; ddp: Lightning DistributedDataParallel"
    )
    devices: int = Field(1, ge=1, description="ddp: ranks per machine (CPU processes or GPUs)")
    nodes: int = Field(1, ge=1, description="ddp: machines (launched by torchrun or SLURM)")

    @model_validator(mode="after")
    def _several_ranks_need_ddp(self) -> TrainScaleConfig:
        if self.strategy == "single" and (self.devices > 1 or self.nodes > 1):
            raise ValueError(
                f"devices={self.devices}, nodes={self.nodes} need strategy ddp "
                "(strategy single is one process)"
            )
        return self

    def trainer_kwargs(self) -> dict:
        """The arguments of :func:`models.fitting.train` (and of the families' fit functions)."""
        return {"strategy": self.strategy, "devices": self.devices, "num_nodes": self.nodes}
