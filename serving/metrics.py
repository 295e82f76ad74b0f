"""Prometheus metrics of the feedback log, on BentoML's ``/metrics`` beside its own:

- ``ladder_feedback_log_free_bytes``: free space of the log's filesystem (after each append);
- ``ladder_feedback_log_append_failures_total{reason}``: appends refused with a 503, by errno name;
- ``ladder_feedback_log_fsync_failures_total``: background fsyncs that failed (each also logged).

``prometheus_client`` is imported on first use, inside the worker: BentoML sets up multiprocess
collection (``PROMETHEUS_MULTIPROC_DIR``) after importing the service module, and the client reads
that setting when it is imported. One set of metrics per process (a second registration fails).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LogMetrics:
    free_bytes: Any  # Gauge
    append_failures: Any  # Counter, labelled by reason
    fsync_failures: Any  # Counter


@functools.cache
def log_metrics() -> LogMetrics:
    import prometheus_client as prom

    return LogMetrics(
        free_bytes=prom.Gauge(
            "ladder_feedback_log_free_bytes",
            "Free bytes on the feedback log's filesystem",
            multiprocess_mode="livemin",
        ),
        append_failures=prom.Counter(
            "ladder_feedback_log_append_failures",
            "Feedback log appends that failed (answered 503), by errno",
            ["reason"],
        ),
        fsync_failures=prom.Counter(
            "ladder_feedback_log_fsync_failures",
            "Background fsyncs of the feedback log that failed",
        ),
    )
