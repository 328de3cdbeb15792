"""JSON responses and the one error shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response

from agex.errors import AgexError, Unauthenticated


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, default=str), status=status, headers=headers, mimetype="application/json")


def error_response(error: AgexError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return json_response({"error": {"code": error.code, "message": error.message}}, error.status, headers)
