"""What ``/feedback`` accepts beyond its schema: limits that keep posted events from poisoning training.

Environment (read when the service starts):

- ``LADDER_MIN_PROPENSITY`` (default 1e-6): a posted ``propensity`` below it is refused — 5e-324
  is "> 0" but becomes 0 in float32 training, and no real logging policy shows an item that rarely;
- ``LADDER_MAX_CLOCK_SKEW_S`` (default 300): how far a posted ``ts`` may be ahead of the server's
  clock;
- ``LADDER_MAX_EVENT_AGE_S`` (default 30 days): how far behind it (late feedback is normal, events
  from last year are a replay or a forgery).

``impression`` events are not postable at all (serving/service.py): the service logs the slates it
serves, with their true propensities, and only those train and evaluate the propensity-weighted
models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class PostedEvent(Protocol):
    event: str
    ts: datetime
    propensity: float | None


@dataclass(frozen=True)
class FeedbackPolicy:
    min_propensity: float = 1e-6
    max_clock_skew_s: float = 300.0
    max_event_age_s: float = 30 * 86_400.0

    def __post_init__(self) -> None:
        if not 0 < self.min_propensity <= 1:
            raise ValueError(f"LADDER_MIN_PROPENSITY must be in (0, 1], got {self.min_propensity}")
        if self.max_clock_skew_s < 0 or self.max_event_age_s <= 0:
            raise ValueError("LADDER_MAX_CLOCK_SKEW_S must be ≥ 0 and LADDER_MAX_EVENT_AGE_S > 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> FeedbackPolicy:
        def number(name: str, default: float) -> float:
            raw = env.get(name)
            try:
                return default if raw is None else float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None

        return cls(
            number("LADDER_MIN_PROPENSITY", cls.min_propensity),
            number("LADDER_MAX_CLOCK_SKEW_S", cls.max_clock_skew_s),
            number("LADDER_MAX_EVENT_AGE_S", cls.max_event_age_s),
        )

    def problems(self, events: Sequence[PostedEvent], now: datetime) -> list[str]:
        """One message per event this policy refuses, naming its index (empty: all accepted)."""
        latest = now + timedelta(seconds=self.max_clock_skew_s)
        earliest = now - timedelta(seconds=self.max_event_age_s)
        found = []
        for n, e in enumerate(events):
            if e.propensity is not None and e.propensity < self.min_propensity:
                found.append(
                    f"events.{n}.propensity {e.propensity:g} is below the floor "
                    f"{self.min_propensity:g} (LADDER_MIN_PROPENSITY)"
                )
            if e.ts > latest:
                found.append(
                    f"events.{n}.ts {e.ts.isoformat()} is ahead of the server clock "
                    f"({now.isoformat(timespec='seconds')}) by more than {self.max_clock_skew_s:g} "
                    "s (LADDER_MAX_CLOCK_SKEW_S)"
                )
            elif e.ts < earliest:
                found.append(
                    f"events.{n}.ts {e.ts.isoformat()} is older than {self.max_event_age_s:g} s "
                    "(LADDER_MAX_EVENT_AGE_S)"
                )
        return found
