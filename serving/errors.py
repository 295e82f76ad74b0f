"""One error shape for every failed request: ``{"error": "<message>", "detail": <optional>}``.

Two halves, both ours (BentoML is not patched):

- :class:`ApiError` is what an API method raises for a request it refuses or cannot serve;
  :func:`answers_errors` turns it into a JSON response with its status (BentoML passes a returned
  ``Response`` through untouched — left to itself it gives every 5xx a generic body, so a 503 could
  not say why, and wraps a 4xx in a one-element list);
- :func:`error_body` rewrites every other error response into the same shape (pydantic's 400s,
  the router's 404 / 405, BentoML's own); serving/guard.py applies it to each response ≥ 400.
  A validation error's message names the fields: ``"invalid request: k: Input should be ..."``.
"""

from __future__ import annotations

import errno
import functools
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ParamSpec, TypeVar

from starlette.responses import JSONResponse

P = ParamSpec("P")
R = TypeVar("R")
MAX_LISTED = 5  # validation errors named in the message (all of them are in "detail")


class ApiError(Exception):
    """A request answered with ``status`` and ``{"error": message, "detail": detail}``."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = int(status), message, detail

    def response(self) -> JSONResponse:
        return JSONResponse(error_json(self.message, self.detail), status_code=self.status)


def error_json(message: str, detail: Any = None) -> dict:
    return {"error": message} if detail is None else {"error": message, "detail": detail}


def answers_errors(api: Callable[P, R]) -> Callable[P, R]:
    """Decorate an API method (under ``@bentoml.api``) so that an :class:`ApiError` it raises
    becomes its JSON error response; any other exception stays a 500 (a bug, logged by BentoML)."""

    @functools.wraps(api)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return api(*args, **kwargs)
        except ApiError as exc:
            return exc.response()  # type: ignore[return-value]  # BentoML sends it as is

    return wrapper


# What an errno means to an operator reading a 503.
OS_ERRORS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files",
}


def describe_os_error(exc: OSError) -> str:
    """``"disk full (ENOSPC)"``: the cause in words, with the errno's name."""
    if exc.errno is None:
        return str(exc)
    words = OS_ERRORS.get(exc.errno) or exc.strerror or "error"
    return f"{words} ({errno.errorcode.get(exc.errno, exc.errno)})"


def _validation_message(detail: list) -> str:
    parts = []
    for err in detail[:MAX_LISTED]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f"; and {len(detail) - MAX_LISTED} more" if len(detail) > MAX_LISTED else ""
    return "invalid request: " + "; ".join(parts) + more


def _is_validation_detail(detail: Any) -> bool:
    return (
        isinstance(detail, list)
        and bool(detail)
        and all(isinstance(e, dict) and "msg" in e for e in detail)
    )


def error_body(status: int, body: bytes) -> dict:
    """The error response ``body`` (any shape: JSON object or list, text, nothing) in ours."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    try:
        data = json.loads(body) if body else None
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return error_json(text or phrase)
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML's ({"error": ...},) for a BentoMLException below 500
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        detail = data.get("detail")
        message = _validation_message(detail) if _is_validation_detail(detail) else data["error"]
        return error_json(message, detail)
    return error_json(phrase, data)
