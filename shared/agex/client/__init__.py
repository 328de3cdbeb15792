"""A typed Python client of the public API (docs/client.md): ``Client`` for blocking code, ``AsyncClient``
for async code. Both answer the API's own pydantic models (``agex.app.http.views``, ``agex.engine.reports``),
retry only what is safe to send twice, and follow a run's events over its server-sent event stream."""

from agex.app.http.views import (
    AgentView,
    ApprovalsPage,
    ApprovalView,
    DecisionView,
    EventsPage,
    EventView,
    RunsPage,
    RunView,
    ThreadView,
    VersionView,
)
from agex.client.async_client import AsyncClient
from agex.client.calls import DEFAULT_API, DEFAULT_TOKEN
from agex.client.errors import ApiError, ApiUnreachable, BudgetExceeded
from agex.client.follow import ModelText
from agex.client.retry import NO_RETRY, RetryPolicy
from agex.client.sync_client import Client
from agex.core.approval import ApprovalStatus, Decision
from agex.core.run import RunStatus
from agex.engine.reports import AgentMetrics, AlertView, EvalSubmission, EvalView, UsageReport

__all__ = [
    "DEFAULT_API", "DEFAULT_TOKEN", "NO_RETRY", "AgentMetrics", "AgentView", "AlertView", "ApiError",
    "ApiUnreachable", "ApprovalStatus", "ApprovalView", "ApprovalsPage", "AsyncClient", "BudgetExceeded",
    "Client", "Decision", "DecisionView", "EvalSubmission", "EvalView", "EventView", "EventsPage", "ModelText", "RetryPolicy",
    "RunStatus", "RunView", "RunsPage", "ThreadView", "UsageReport", "VersionView",
]
