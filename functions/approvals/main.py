"""The ``approvals`` function: the Pub/Sub push subscription of the decisions topic delivers each decision
here; it is authenticated twice (the push's OIDC token, the decision's signature) and applied to its run
exactly once (see docs/approvals.md)."""

import functions_framework
from flask import Request
from werkzeug.wrappers import Response

from agex.app.runtime import runtime


@functions_framework.http
def approvals(request: Request) -> Response:
    return runtime().decision_push(request)
