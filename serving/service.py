"""The BentoML service: `bentoml serve serving.service:Recommender`.

Environment:

- ``LADDER_BUNDLE``: the serving bundle — a directory (default ``data/serving``, written by
  `dvc repro`) or ``models:/<name>@<alias>`` / ``models:/<name>/<version>`` from the MLflow registry
  (serving/resolve.py);
- ``LADDER_FEEDBACK_LOG``: directory of the durable feedback log (default ``data/feedback``);
- ``LADDER_EXPLORATION``: default softmax temperature of slate sampling (default 0 = top-k);
- ``LADDER_SYNC_IMPRESSIONS``: ``1`` to fsync each served slate before its response (default ``0``:
  written before the response, fsync'd by the log's background group commit within 50 ms);
- ``LADDER_API_TOKEN``, ``LADDER_AUTH_ALL``, ``LADDER_MAX_BODY_BYTES``: authentication and the
  body-size cap (serving/guard.py); ``LADDER_MIN_PROPENSITY``, ``LADDER_MAX_CLOCK_SKEW_S``,
  ``LADDER_MAX_EVENT_AGE_S``: what ``/feedback`` accepts (serving/feedback_policy.py);
- ``LADDER_PARAMS`` (default ``params.yaml``): its ``feedback_log`` section is the log's retention.
- ``LADDER_WORKERS``: worker processes on the one socket (default 1; a number or ``cpu_count``);
- ``LADDER_POLL_SECONDS``: every worker checks ``LADDER_BUNDLE`` this often and swaps in a new
  version (default 10; 0 = only on ``/reload``), keeping the old one when the new one fails to load.
- ``LADDER_ACCESS_LOG``: ``1`` turns on BentoML's access log (a line per request; default off);
- ``LADDER_TRACING``: ``1`` keeps BentoML's OpenTelemetry span per request (default off);
- ``LADDER_GC_FREEZE``: ``0`` / ``1``: ``gc.freeze()`` once the worker has started (default on in
  ``bentoml serve`` workers, off in-process);
- ``LADDER_BENCH_NOOP``: ``1`` turns on ``/noop``, the serving-cost benchmark's yardstick
  (benchmarks/serving_cost.py): the request and response of ``/recommend`` through the same
  service, middleware and workers, with no model work and no log write. Off (404) by default.

Endpoints (JSON; every response names the ``model_version`` that served it): ``/recommend``,
``/similar_items``, ``/score``, ``/feedback``, ``/reload``, ``/bundle`` (and ``/noop``, off unless
``LADDER_BENCH_NOOP=1``); BentoML adds ``/healthz``,
``/readyz``, ``/metrics`` (Prometheus) and the OpenAPI schema at ``/docs.json``.

Errors, all ``{"error": "<message>", "detail": ...}`` (serving/errors.py): a body that fails
pydantic validation (missing field, wrong type, k or a list size out of range) is a 400 naming the
fields, with the validation errors as detail; a request that is valid JSON but wrong for the bundle
(unknown item ids, unknown event names, no user_id and no recent_item_ids) or for the feedback
policy (posted impressions, a slate_id the service never issues, a propensity below the floor, a
time off the server clock) is a 400 naming the problem; 401 / 403 / 413 from serving/guard.py; a
failed ``/reload`` is a 409 with the reason and the old bundle keeps serving (``/reload``
reaches the one worker that receives it; the others follow within ``LADDER_POLL_SECONDS``); a
feedback log that cannot be written is a 503 naming the cause (``feedback log unavailable: disk
full (ENOSPC)``) and nothing is acknowledged.

Every served slate is appended to the feedback log as ``impression`` events (position, propensity,
slate_id, model_version) before the response — one locked ``write`` per request, so a killed server
loses no served slate; only an OS crash can lose the last ≤ 50 ms of impressions unless
``LADDER_SYNC_IMPRESSIONS=1``. ``/feedback`` answers 200 only once its events are fsync'd to disk.

The logic lives in serving/recommend.py (plain functions); API methods never call each other.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import time
from datetime import UTC, datetime
from typing import Annotated

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from features.contract import (
    ID_PATTERN,
    IMPRESSION,
    MAX_ID_LENGTH,
    MAX_POSITION,
    MAX_TS,
    MIN_TS,
    EventNames,
)
from features.feedback_log import Clock, FeedbackLog, RetentionConfig, utc_now
from models.blend import BlendWeights
from serving.bundle import Bundle
from serving.errors import ApiError, answers_errors, describe_os_error
from serving.feedback_policy import FeedbackPolicy
from serving.guard import RequestGuard
from serving.metrics import log_metrics
from serving.recommend import (
    SLATE_ID_PATTERN,
    impression_records,
    recommend,
    score_pairs,
    similar_items,
)
from serving.resolve import DEFAULT_BUNDLE, LiveBundle, ReloadError

log = logging.getLogger(__name__)

MAX_K = 1000
MAX_FILTER_IDS = 10_000  # allow_items / deny_items
MAX_RECENT = 1000
MAX_EVENTS = 10_000
MAX_PAIRS = 1000
FREE_BYTES_EVERY_S = 1.0  # the free-space gauge is refreshed at most this often

# The contract's id limits (features/contract.py): what the service accepts, ingest keeps.
Id = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN
    ),
]


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
    position: int = Field(description="0-based slot in the slate")
    propensity: float = Field(
        description="P(this item at this position | the items above it) under the serving "
        "policy: the Plackett-Luce step probability; 1.0 without exploration"
    )


class ObjectiveWeights(BaseModel):
    """Blend ``relevance·l_T + love·logit(P[Love])`` (methods.md §3); both finite and ≥ 0."""

    model_config = ConfigDict(extra="forbid")

    relevance: float = Field(1.0, ge=0, le=1e6, allow_inf_nan=False)
    love: float = Field(0.0, ge=0, le=1e6, allow_inf_nan=False)


class RecommendResponse(BaseModel):
    user_id: str = Field(description="the request's user_id, or anon-<slate_id> without one")
    slate_id: str
    items: list[RecommendedItem]
    model_version: str
    fallback: str | None = Field(
        None, description="'recent_items' (cold user) or 'popular' (unknown user, no items)"
    )


class FeedbackEvent(BaseModel):
    """One event of the data contract; ``slate_id`` links it to its slate (the session id)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    ts: datetime = Field(
        description="ISO-8601 (no zone = UTC) or seconds since the epoch (pydantic reads numbers "
        "above 2e10 as milliseconds); within LADDER_MAX_CLOCK_SKEW_S ahead of the server clock "
        "and LADDER_MAX_EVENT_AGE_S behind it"
    )
    position: StrictInt | None = Field(None, ge=0, le=MAX_POSITION)
    propensity: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False, description="at least LADDER_MIN_PROPENSITY"
    )
    slate_id: str | None = Field(
        None, description="the slate_id /recommend answered (32 lowercase hex characters)"
    )

    @field_validator("event")
    @classmethod
    def _not_an_impression(cls, event: str) -> str:
        if event == IMPRESSION:
            raise ValueError(
                "impressions are logged by the service itself for every slate it serves, with "
                "their propensities; post feedback events only"
            )
        return event

    @field_validator("slate_id")
    @classmethod
    def _issued_slate_id(cls, slate_id: str | None) -> str | None:
        if slate_id is not None and not SLATE_ID_PATTERN.fullmatch(slate_id):
            raise ValueError(
                "slate_id must be a slate_id /recommend returned (32 lowercase hex characters, "
                f"a uuid4), got {slate_id[:64]!r}"
            )
        return slate_id

    @field_validator("ts")
    @classmethod
    def _utc_in_range(cls, ts: datetime) -> datetime:
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        if not MIN_TS <= ts < MAX_TS:
            raise ValueError(f"ts must lie in [{MIN_TS:%Y-%m-%d}, {MAX_TS:%Y-%m-%d})")
        return ts

    def record(self) -> dict:
        data = self.model_dump()
        data["ts"] = self.ts.isoformat(timespec="microseconds")
        return data


class FeedbackResponse(BaseModel):
    accepted: int
    model_version: str


class SimilarItem(BaseModel):
    item_id: str
    score: float = Field(description="inner product of the two items' serving vectors")


class SimilarItemsResponse(BaseModel):
    item_id: str
    items: list[SimilarItem]
    model_version: str


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id


class PairScoreOut(BaseModel):
    user_id: str
    item_id: str
    probabilities: dict[str, float]
    p_love: float | None = None


class ScoreResponse(BaseModel):
    scores: list[PairScoreOut]
    model_version: str


class ReloadResponse(BaseModel):
    model_version: str
    previous_model_version: str
    bundle: str
    seconds: float
    worker_pid: int = Field(description="the worker process that reloaded")


class BundleStatus(BaseModel):
    model_version: str = Field(description="the bundle this worker serves")
    source: str = Field(description="LADDER_BUNDLE")
    source_version: str = Field(
        description="the version of the source loaded: CURRENT's name, or <model>/<number> of "
        "the registry"
    )
    worker_pid: int
    poll_seconds: float
    loaded_at: float = Field(description="seconds since the epoch")
    checked_at: float = Field(description="last check of the source, seconds since the epoch")
    error: str | None = Field(None, description="why the last check or load failed, if it did")


def _default_exploration() -> float:
    raw = os.environ.get("LADDER_EXPLORATION", "0")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"LADDER_EXPLORATION must be a number ≥ 0, got {raw!r}")
    return value


def _env_number(name: str, default: str, minimum: float) -> float:
    raw = os.environ.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a number ≥ {minimum:g}, got {raw!r}")
    return value


def workers_setting() -> int | str:
    """``LADDER_WORKERS``: a number of worker processes ≥ 1, or ``cpu_count``."""
    raw = os.environ.get("LADDER_WORKERS", "1").strip()
    return raw if raw == "cpu_count" else int(_env_number("LADDER_WORKERS", raw, 1))


TRUE = ("1", "true", "yes")


def _noop_item(position: int) -> RecommendedItem:
    return RecommendedItem(
        item_id=f"noop-{position}",
        score=-float(position),
        probabilities={"click": 0.5, "cart": 0.25, "purchase": 0.125},
        p_love=0.1,
        position=position,
        propensity=1.0,
    )


def event_names(bundle: Bundle) -> EventNames:
    """The event vocabulary: the bundle's levels and (if recorded) reactions, else the defaults."""
    reactions = bundle.manifest.get("reactions", EventNames().reactions)
    return EventNames(tuple(bundle.levels), tuple(reactions))


# LADDER_WORKERS processes (each follows the bundle source on its own); 4 threads per worker for
# the sync APIs so that an fsync does not hold up the other requests (benchmarks/serving_load.py).
def access_log_setting() -> bool:
    """``LADDER_ACCESS_LOG``: ``1`` for BentoML's per-request access log line (default off: every
    slate is in the feedback log, counts and latencies in ``/metrics``; benchmarks/serving_cost.py)."""
    return os.environ.get("LADDER_ACCESS_LOG", "0").lower() in TRUE


def gc_freeze_setting() -> bool:
    """``LADDER_GC_FREEZE``: ``1`` moves every object alive once the service has started into
    Python's permanent generation (``gc.freeze``), so that a full collection no longer scans the
    ~260k objects of the imports and the bundle — one took 430 ms on the loaded 2-core machine,
    a pause for every request in flight (docs/serving-cost.md). Default: on in a ``bentoml serve``
    worker, off in-process (tests)."""
    from bentoml._internal.context import server_context

    default = "1" if server_context.worker_index is not None else "0"
    return os.environ.get("LADDER_GC_FREEZE", default).lower() in TRUE


def tracing_setting() -> dict:
    """``LADDER_TRACING``: ``1`` keeps BentoML's OpenTelemetry span per request (set it when a
    tracing exporter is configured); default off — every URL excluded, so the middleware passes
    requests straight through (its spans were 9–16 % of a worker's samples, with no exporter)."""
    on = os.environ.get("LADDER_TRACING", "0").lower() in TRUE
    return {} if on else {"excluded_urls": [".*"]}


SERVICE_CONFIG = {
    "traffic": {"timeout": 30},
    "workers": workers_setting(),
    "threads": 4,
    "logging": {"access": {"enabled": access_log_setting()}},
    "tracing": tracing_setting(),
}


@bentoml.service(**SERVICE_CONFIG)
class Recommender:
    """GNOLR recommendations from one item index, logged with propensities, following the bundle.

    ``clock`` (the real UTC clock, read when the service starts) times the logged slates, picks the
    log's day file (and the day its retention ages files from) and bounds posted ``ts``: one clock
    for all of them, so a test can set it (e.g. across midnight).
    """

    clock: Clock = staticmethod(utc_now)

    def __init__(self) -> None:
        self.live = LiveBundle(
            os.environ.get("LADDER_BUNDLE", DEFAULT_BUNDLE),
            poll_seconds=_env_number("LADDER_POLL_SECONDS", "10", 0),
        )
        self.metrics = log_metrics()
        self.feedback_log = FeedbackLog(
            os.environ.get("LADDER_FEEDBACK_LOG", "data/feedback"),
            retention=RetentionConfig.from_params_file(
                os.environ.get("LADDER_PARAMS", "params.yaml")
            ),
            on_sync_failure=lambda exc: self.metrics.fsync_failures.inc(),
            clock=self.clock,
        )
        self.metrics.free_bytes.set(self.feedback_log.free_bytes())
        self._free_bytes_at = time.monotonic()
        self.feedback_policy = FeedbackPolicy.from_env()
        self.default_exploration = _default_exploration()
        self.sync_impressions = os.environ.get("LADDER_SYNC_IMPRESSIONS", "0").lower() in TRUE
        self.noop_items = (
            [_noop_item(i) for i in range(MAX_K)]
            if os.environ.get("LADDER_BENCH_NOOP", "0").lower() in TRUE
            else None
        )
        if gc_freeze_setting():
            gc.collect()
            gc.freeze()  # what start-up built (imports, the bundle) is never scanned again

    def _append(self, records: list[dict], when: datetime, durable: bool, consequence: str) -> None:
        """Append to the log (the day file of ``when``); a disk that fails it is a 503 naming the
        cause and ``consequence``."""
        try:
            self.feedback_log.append(records, when=when, durable=durable)
        except OSError as exc:
            self._free_bytes_at = -FREE_BYTES_EVERY_S  # a failed append refreshes it now
            self.metrics.append_failures.labels(errno.errorcode.get(exc.errno, "other")).inc()
            log.error("feedback log append failed: %s", exc)
            cause = describe_os_error(exc)
            raise ApiError(503, f"feedback log unavailable: {cause}; {consequence}") from exc
        finally:
            self._update_free_bytes()

    def _update_free_bytes(self, every_s: float = FREE_BYTES_EVERY_S) -> None:
        """Refresh the free-space gauge at most every ``every_s`` seconds (a ``statvfs`` per
        request was 4 % of a worker's samples under load, benchmarks/serving_cost.py)."""
        now = time.monotonic()
        if now - self._free_bytes_at < every_s:
            return
        self._free_bytes_at = now
        with contextlib.suppress(OSError):
            self.metrics.free_bytes.set(self.feedback_log.free_bytes())

    @bentoml.api(route="/recommend")
    @answers_errors
    def recommend(
        self,
        user_id: Annotated[Id | None, Field(description="external user id")] = None,
        recent_item_ids: Annotated[
            list[Id] | None,
            Field(max_length=MAX_RECENT, description="a cold user's recent items (query = mean)"),
        ] = None,
        k: Annotated[StrictInt, Field(ge=1, le=MAX_K, description="number of items")] = 10,
        exclude_seen: bool = True,
        allow_items: Annotated[
            list[Id] | None, Field(max_length=MAX_FILTER_IDS, description="only these items")
        ] = None,
        deny_items: Annotated[
            list[Id] | None, Field(max_length=MAX_FILTER_IDS, description="never these items")
        ] = None,
        objective_weights: ObjectiveWeights | None = None,
        exploration: Annotated[
            float | None,
            Field(
                ge=0,
                le=1e6,
                allow_inf_nan=False,
                description="softmax temperature of slate sampling; 0 = top-k; "
                "default LADDER_EXPLORATION",
            ),
        ] = None,
        seed: Annotated[
            StrictInt | None, Field(ge=0, le=2**63 - 1, description="seeds the slate sampling")
        ] = None,
    ) -> RecommendResponse:
        """A slate of k items, best first (or sampled), with per-level probabilities and P[Love].

        Known user: the user's vector. Unknown user with recent_item_ids: the normalised mean of
        those items' vectors (fallback 'recent_items'). Unknown user without: the most popular
        items (fallback 'popular'). Unknown item ids in any list are a 400 naming them.
        """
        bundle = self.live.current  # one reference for the whole request, even across a reload
        weights = (
            None
            if objective_weights is None
            else BlendWeights(objective_weights.relevance, objective_weights.love)
        )
        temperature = self.default_exploration if exploration is None else exploration
        try:
            result = recommend(
                bundle,
                user_id,
                k,
                exclude_seen,
                weights,
                recent_item_ids=recent_item_ids or (),
                allow_items=allow_items,
                deny_items=deny_items or (),
                exploration=temperature,
                rng=np.random.default_rng(seed) if temperature > 0 else None,  # top-k: none
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        self._append(
            impression_records(result, now := self.clock()),
            when=now,
            durable=self.sync_impressions,
            consequence="the slate was not served, as it could not be logged",
        )
        return RecommendResponse(
            user_id=result.user_id,
            slate_id=result.slate_id,
            items=[RecommendedItem(**vars(r)) for r in result.items],
            model_version=result.model_version,
            fallback=result.fallback,
        )

    @bentoml.api(route="/noop")
    @answers_errors
    def noop(
        self,
        user_id: Annotated[Id | None, Field(description="echoed back")] = None,
        k: Annotated[StrictInt, Field(ge=1, le=MAX_K, description="number of items")] = 10,
    ) -> RecommendResponse:
        """The benchmark's yardstick (off unless ``LADDER_BENCH_NOOP=1``, else 404): a response of
        ``/recommend``'s shape with k fixed items, no retrieval, no log write."""
        if self.noop_items is None:
            raise ApiError(404, "/noop is off: the server was started without LADDER_BENCH_NOOP=1")
        return RecommendResponse(
            user_id=user_id or "anonymous",
            slate_id="0" * 32,
            items=self.noop_items[:k],
            model_version=self.live.current.model_version,
        )

    @bentoml.api(route="/similar_items")
    @answers_errors
    def similar_items(
        self,
        item_id: Id,
        k: Annotated[StrictInt, Field(ge=1, le=MAX_K, description="number of items")] = 10,
    ) -> SimilarItemsResponse:
        """The k items nearest to ``item_id`` by the inner product of serving item vectors."""
        bundle = self.live.current
        try:
            found = similar_items(bundle, item_id, k)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        return SimilarItemsResponse(
            item_id=item_id,
            items=[SimilarItem(item_id=i, score=s) for i, s in found],
            model_version=bundle.model_version,
        )

    @bentoml.api(route="/score")
    @answers_errors
    def score(
        self, pairs: Annotated[list[Pair], Field(min_length=1, max_length=MAX_PAIRS)]
    ) -> ScoreResponse:
        """P(level reached) per level and P[Love] for each (user, item) pair; ids must be known."""
        bundle = self.live.current
        try:
            scored = score_pairs(bundle, [(p.user_id, p.item_id) for p in pairs])
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        return ScoreResponse(
            scores=[PairScoreOut(**vars(s)) for s in scored], model_version=bundle.model_version
        )

    @bentoml.api(route="/feedback")
    @answers_errors
    def feedback(
        self, events: Annotated[list[FeedbackEvent], Field(min_length=1, max_length=MAX_EVENTS)]
    ) -> FeedbackResponse:
        """Append events (data contract) to the durable log; 200 = all of them are on disk."""
        bundle = self.live.current
        allowed = set(event_names(bundle).all) - {IMPRESSION}
        unknown = sorted({e.event for e in events} - allowed)
        if unknown:
            raise ApiError(
                400, f"unknown event name(s) {unknown}; expected one of {sorted(allowed)}"
            )
        now = self.clock()
        problems = self.feedback_policy.problems(events, now)
        if problems:
            raise ApiError(400, f"{len(problems)} event(s) refused: {problems[0]}", problems)
        self._append(
            [e.record() for e in events],
            when=now,
            durable=True,
            consequence=f"none of the {len(events)} events was accepted; retry later",
        )
        return FeedbackResponse(accepted=len(events), model_version=bundle.model_version)

    @bentoml.api(route="/reload")
    @answers_errors
    def reload(self) -> ReloadResponse:
        """Load ``LADDER_BUNDLE`` again in this worker and swap it in; on failure keep serving the
        old one (409). The other workers follow within ``LADDER_POLL_SECONDS``."""
        start = time.perf_counter()
        try:
            old, new = self.live.reload()
        except ReloadError as exc:
            raise ApiError(409, str(exc)) from exc
        return ReloadResponse(
            model_version=new.model_version,
            previous_model_version=old.model_version,
            bundle=self.live.spec,
            seconds=time.perf_counter() - start,
            worker_pid=os.getpid(),
        )

    @bentoml.api(route="/bundle")
    def bundle(self) -> BundleStatus:
        """Which bundle version the worker that answers serves, and how it follows the source."""
        return BundleStatus(**self.live.status())


Recommender.add_asgi_middleware(RequestGuard)
