"""The ASGI middleware in front of the service: bearer-token authentication, the body-size cap and
one error shape (serving/errors.py) for every response ≥ 400.

Environment (read when the app starts):

- ``LADDER_API_TOKEN``: the bearer token (at least 16 characters; e.g.
  ``python -c "import secrets; print(secrets.token_urlsafe(32))"``). ``/feedback`` and ``/reload``
  need ``Authorization: Bearer <token>``; without a token configured they are refused (403), so a
  server is never writable by accident;
- ``LADDER_AUTH_ALL``: ``1`` to require the token on every endpoint except the probes
  ``/healthz``, ``/livez``, ``/readyz`` (``/metrics`` and ``/docs.json`` included);
- ``LADDER_MAX_BODY_BYTES``: the largest request body read (default 4 MiB); a larger declared
  ``Content-Length`` is refused before reading, a longer streamed body as soon as it passes the cap;
- ``LADDER_SERVER_TIMING``: ``1`` adds ``Server-Timing: app;dur=<ms>, pid;desc=<worker pid>`` to
  every response: the
  milliseconds from this middleware receiving the request to the response's start (body read,
  validation, the thread pool's queue, the API method, serialisation), so that a client can tell
  time spent in the app from time spent before it (sockets, the event loop; benchmarks/serving_cost.py).

Answers: no or malformed ``Authorization`` → 401 (with ``WWW-Authenticate: Bearer``), a wrong token
→ 403, an oversized body → 413, a form or pickle body → 415 (every endpoint reads JSON; BentoML
would hand a form to its multipart parser, which fails with a 500 on a missing boundary). The
token is compared in constant time (``hmac.compare_digest`` of SHA-256 digests, so not even its
length leaks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.errors import error_body, error_json

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITES = frozenset({"/feedback", "/reload"})  # always need the token
PROBES = frozenset({"/healthz", "/livez", "/readyz"})  # never need it
DEFAULT_MAX_BODY_BYTES = 4 << 20
MIN_TOKEN_LENGTH = 16
TRUE = ("1", "true", "yes")
# Media types BentoML would not read as JSON (any other, or none, is read as JSON).
NOT_JSON = frozenset(
    {"multipart/form-data", "application/x-www-form-urlencoded", "application/vnd.bentoml+pickle"}
)


@dataclass(frozen=True)
class GuardSettings:
    token: str | None = None
    auth_all: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    server_timing: bool = False

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"LADDER_API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters "
                f"(got {len(self.token)})"
            )
        if self.max_body_bytes < 1:
            raise ValueError(f"LADDER_MAX_BODY_BYTES must be positive, got {self.max_body_bytes}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GuardSettings:
        raw = env.get("LADDER_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))
        try:
            max_body = int(raw)
        except ValueError:
            raise ValueError(f"LADDER_MAX_BODY_BYTES must be an integer, got {raw!r}") from None
        return cls(
            token=env.get("LADDER_API_TOKEN") or None,
            auth_all=env.get("LADDER_AUTH_ALL", "0").lower() in TRUE,
            max_body_bytes=max_body,
            server_timing=env.get("LADDER_SERVER_TIMING", "0").lower() in TRUE,
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class RequestGuard:
    """``Recommender.add_asgi_middleware(RequestGuard)``; ``settings`` default: the environment,
    read again at each lifespan start (a fresh service instance in tests)."""

    def __init__(self, app: ASGIApp, settings: GuardSettings | None = None) -> None:
        self.app = app
        self.fixed = settings is not None
        self._configure(settings or GuardSettings.from_env())

    def _configure(self, settings: GuardSettings) -> None:
        self.settings = settings
        self._token_digest = None if settings.token is None else _digest(settings.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and not self.fixed:
            self._configure(GuardSettings.from_env())
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.settings.server_timing:
            send = _timed(send, time.perf_counter())
        refused = self._authorize(scope)
        if refused is not None:
            await _respond(send, *refused)
            return
        media_type = _header(scope, b"content-type").split(";")[0].strip().lower()
        if media_type in NOT_JSON:
            await _respond(
                send, 415, f"unsupported Content-Type {media_type}: send application/json"
            )
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), _shaping_errors(send))

    def _authorize(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """None when the request may go on, else ``(status, message, headers)``."""
        path = scope["path"].rstrip("/") or "/"
        if path in PROBES or not (path in WRITES or self.settings.auth_all):
            return None
        if self._token_digest is None:
            return 403, f"{path} is disabled: the server has no LADDER_API_TOKEN set", {}
        challenge = {"www-authenticate": "Bearer"}
        values = [v for k, v in scope["headers"] if k.lower() == b"authorization"]
        if not values:
            return 401, "authentication required: send 'Authorization: Bearer <token>'", challenge
        scheme, _, credentials = values[0].decode("latin-1").strip().partition(" ")
        if len(values) > 1 or scheme.lower() != "bearer" or not credentials.strip():
            return 401, "malformed Authorization header: expected 'Bearer <token>'", challenge
        if not hmac.compare_digest(_digest(credentials.strip()), self._token_digest):
            return 403, "the bearer token is not valid for this server", {}
        return None

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole request body, or None once a 413 (or 400) has been sent instead."""
        cap = self.settings.max_body_bytes
        declared = [v for k, v in scope["headers"] if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                await _respond(send, 400, "Content-Length is not an integer")
                return None
            if length > cap:
                await _respond(send, 413, _too_large(f"{length} bytes", cap))
                return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client is gone: nobody to answer
            body += message.get("body", b"")
            if len(body) > cap:
                await _respond(send, 413, _too_large(f"more than {cap} bytes", cap))
                return None
            if not message.get("more_body", False):
                return bytes(body)


def _header(scope: Scope, name: bytes) -> str:
    """The first value of header ``name`` (lowercase), or ``""``."""
    for k, v in scope["headers"]:
        if k.lower() == name:
            return v.decode("latin-1")
    return ""


def _too_large(size: str, cap: int) -> str:
    return f"request body of {size} is above the limit of {cap} bytes (LADDER_MAX_BODY_BYTES)"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then waits on the real one."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _timed(send: Send, start: float) -> Send:
    """A ``send`` that adds ``Server-Timing: app;dur=<ms since start>, pid;desc=<worker pid>``."""

    async def timed(message: Message) -> None:
        if message["type"] == "http.response.start":
            ms = f"app;dur={1e3 * (time.perf_counter() - start):.3f}, pid;desc={os.getpid()}"
            headers = [*message.get("headers", []), (b"server-timing", ms.encode())]
            message = {**message, "headers": headers}
        await send(message)

    return timed


def _shaping_errors(send: Send) -> Send:
    """A ``send`` that rewrites the body of every response ≥ 400 into the one error shape."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def shaped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = json.dumps(error_body(start["status"], b"".join(chunks))).encode()
        kept = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers = [*kept, *_json_headers(body)]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return shaped


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def _respond(
    send: Send, status: int, message: str, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps(error_json(message)).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*_json_headers(body), *extra]}
    )
    await send({"type": "http.response.body", "body": body})
