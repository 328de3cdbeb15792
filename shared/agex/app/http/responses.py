"""JSON responses and the one error shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from agex.core.errors import (
    AgexError,
    BudgetExceeded,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    Unauthenticated,
    UnsupportedMediaType,
)
from agex.obs import logging as log
from agex.obs import metrics, tracing


def served(request: Request, serve: Callable[[Request], Response],
           span: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> Response:
    """Answer ``request`` with ``serve`` (inside ``span``, the request's own span if it has one): the request
    ends with one log entry (``httpRequest``), and its spans and metrics are exported before the answer
    goes, because Cloud Run throttles the CPU once it is sent."""
    with log.request_context(request) as entry, span():
        response = serve(request)
        entry.respond(response)
    tracing.flush()
    metrics.flush()
    return response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, default=str), status=status, headers=headers, mimetype="application/json")


def error_body(error: AgexError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message, **getattr(error, "details", {})}}


def error_response(error: AgexError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, BudgetExceeded):
        headers["Retry-After"] = str(error.retry_after_s)
    return json_response(error_body(error), error.status, headers)


def internal_error() -> AgexError:
    return AgexError("internal error; the request may be retried, and if it fails again report it with the "
                     "time of the request")


def not_found(method: str, path: str) -> NotFound:
    return NotFound(f"no route for {method} {path}; see GET /v1/openapi.json")


def method_not_allowed(method: str, allowed: str) -> MethodNotAllowed:
    return MethodNotAllowed(f"{method} is not allowed here; use {allowed}")


def http_exception_response(e: HTTPException, method: str, path: str) -> Response:
    """The API's JSON error for an HTTP error raised by the web framework itself (werkzeug's routing in
    front of the API, Flask, functions-framework), never an HTML page."""
    status = e.code or 500
    headers: dict[str, str] = {}
    error: AgexError
    if status == 404:
        error = not_found(method, path)
    elif status == 405:
        allowed = ", ".join(sorted(getattr(e, "valid_methods", None) or []))
        error, headers = method_not_allowed(method, allowed), {"Allow": allowed}
    elif status == 408:
        error = RequestTimeout("the request was not received in time")
    elif status == 413:
        error = PayloadTooLarge("the request body is over the limit")
    elif status == 415:
        error = UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    elif 400 <= status < 500:
        error = RequestError(f"bad request: {e.description or e.name}")
        error.status = status
    else:
        error = internal_error()
    return error_response(error, headers)
