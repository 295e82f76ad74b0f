"""The one in-process ASGI app of the test session, shared by every test module that needs it."""

from __future__ import annotations

import functools


@functools.cache
def service_app():
    """The one ASGI app of this process: a second ``to_asgi()`` re-registers BentoML's Prometheus
    metrics and fails. Each ``with TestClient(app)`` runs the lifespan, i.e. a fresh service
    instance reading the environment then."""
    from serving.service import Recommender

    return Recommender.to_asgi()
