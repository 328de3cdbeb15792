"""The ``api`` function: the public HTTP API (see docs/api.md)."""

import functions_framework
from flask import Request
from werkzeug.wrappers import Response

from agex.app.http import limits
from agex.app.runtime import runtime
from agex.app.settings import Settings


@functions_framework.http
def api(request: Request) -> Response:
    return runtime().public_api(request)


# request limits and JSON errors in front of the API, at the server, WSGI and Flask layers (agex.app.http.limits);
# functions-framework loads this module before it starts its server, here and on Cloud Run
_settings = Settings()
limits.install(max_body_bytes=limits.body_limit(_settings.max_input_bytes), read_timeout_s=_settings.request_timeout_seconds)
