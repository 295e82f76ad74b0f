"""The one in-process ASGI app of the test session, shared by every test module that needs it, and
the bearer token the tests' servers are given."""

from __future__ import annotations

import contextlib
import functools

import pytest

TOKEN = "test-token-0123456789abcdef"  # LADDER_API_TOKEN of the tests' services
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@functools.cache
def service_app():
    """The one ASGI app of this process: a second ``to_asgi()`` re-registers BentoML's Prometheus
    metrics and fails. Each ``with TestClient(app)`` runs the lifespan, i.e. a fresh service
    instance (and fresh settings of serving/guard.py) reading the environment then."""
    from serving.service import Recommender

    return Recommender.to_asgi()


@contextlib.contextmanager
def serving(bundle, feedback_log, headers=AUTH, **env: str | None):
    """A TestClient of a fresh service on ``bundle`` logging to ``feedback_log``, with the tests'
    token configured and sent (``headers``); ``env`` sets (or, with None, unsets) more variables."""
    from starlette.testclient import TestClient

    settings = {
        "LADDER_BUNDLE": str(bundle),
        "LADDER_FEEDBACK_LOG": str(feedback_log),
        "LADDER_API_TOKEN": TOKEN,
        "LADDER_EXPLORATION": None,
        **env,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in settings.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        with TestClient(service_app(), headers=headers, raise_server_exceptions=False) as client:
            yield client
