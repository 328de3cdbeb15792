"""The ``api`` function: the public HTTP API (see docs/api.md)."""

import functions_framework
from flask import Request
from werkzeug.wrappers import Response

from agex.runtime import runtime


@functions_framework.http
def api(request: Request) -> Response:
    return runtime().public_api(request)
