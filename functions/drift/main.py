"""The ``drift`` function: Cloud Scheduler calls it to collect runs' metrics and test agents for drift
(see docs/observability.md)."""

import functions_framework
from flask import Request
from werkzeug.wrappers import Response

from agex.app.runtime import runtime


@functions_framework.http
def drift(request: Request) -> Response:
    return runtime().drift_endpoint(request)
