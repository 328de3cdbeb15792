"""The ``step`` function: Cloud Tasks delivers one step of one run here (see docs/architecture.md)."""

import functions_framework
from flask import Request
from werkzeug.wrappers import Response

from agex.app.runtime import runtime


@functions_framework.http
def step(request: Request) -> Response:
    return runtime().step_endpoint(request)
