"""The ``approvals`` function: a Pub/Sub push subscription on the decisions topic delivers each decision
here as a CloudEvent; it is applied to its run exactly once (see docs/approvals.md)."""

import functions_framework
from cloudevents.http import CloudEvent

from agex.runtime import runtime


@functions_framework.cloud_event
def approvals(event: CloudEvent) -> None:
    runtime().decision_push(event)
