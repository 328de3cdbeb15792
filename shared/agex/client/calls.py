"""The API's operations as data (``Call``: method, path, query, body, whether it may be sent twice, what it
answers), shared by the blocking and the asyncio client, which only differ in how they send them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel, RootModel

from agex.app.http.views import (
    AgentList,
    AgentView,
    ApprovalsPage,
    ApprovalView,
    DecisionView,
    EventsPage,
    MemoryErased,
    MemoryList,
    RunsPage,
    RunView,
    ThreadView,
    VersionList,
)
from agex.client.errors import ApiError, ApiUnreachable, error_of
from agex.client.retry import NOT_SENT, RetryPolicy
from agex.core.approval import ApprovalStatus, Decision
from agex.core.run import RunStatus
from agex.engine.reports import AgentMetrics, AlertsPage, EvalsPage, EvalSubmission, EvalView, UsageReport

M = TypeVar("M", bound=BaseModel)

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_TOKEN = "dev-token"
"""The local stack's (``agex dev``)."""

Time = datetime | str
"""A time for a query: an aware ``datetime`` (a naive one is taken as UTC) or an ISO 8601 string."""


class EvalStored(BaseModel):
    eval: EvalView


@dataclass(frozen=True)
class Call(Generic[M]):
    method: str
    path: str
    model: type[M]
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    safe: bool = True
    """Sending it twice does what sending it once does: a read, or a write the API deduplicates."""
    wait_s: float = 0.0
    """How long the API may hold the answer (``?wait=``), on top of the request timeout."""


def endpoint(api: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    """The API's base URL and the headers of every request: the arguments, else ``$AGEX_API_URL`` and
    ``$AGEX_TOKEN``, else the local stack's."""
    url = (api or os.environ.get("AGEX_API_URL") or DEFAULT_API).rstrip("/")
    bearer = token or os.environ.get("AGEX_TOKEN") or DEFAULT_TOKEN
    return url, {"Authorization": f"Bearer {bearer}", "User-Agent": "agex-client"}


class Raw(RootModel[Any]):
    """Any JSON: what ``request`` answers."""


def raw(method: str, path: str, params: Mapping[str, str] | None, body: Any, headers: Mapping[str, str] | None,
        safe: bool | None) -> Call[Raw]:
    headers = dict(headers or {})
    if safe is None:
        safe = method.upper() in ("GET", "HEAD") or "Idempotency-Key" in headers
    return Call(method.upper(), path, Raw, params=dict(params or {}), body=body, headers=headers, safe=safe)


def parse(call: Call[M], response: httpx.Response) -> M:
    # fields a newer API added are ignored, so an older client keeps working
    return call.model.model_validate_json(response.content, extra="ignore")


def again(call: Call[Any], attempt: int, retry: RetryPolicy, api: str, *,
          response: httpx.Response | None = None, failure: httpx.TransportError | None = None) -> float:
    """The pause before sending ``call`` again after attempt ``attempt`` got the error ``response`` or no
    answer (``failure``); raises the error when it must not be sent again."""
    if failure is not None:
        pause = retry.after_failure(attempt) if call.safe or isinstance(failure, NOT_SENT) else None
        if pause is None:
            raise ApiUnreachable(api, failure, attempt) from failure
        return pause
    assert response is not None
    error = error_of(response, attempt)
    pause = retry.after_error(error, attempt) if call.safe else None
    if pause is None:
        raise error
    return pause


def retried_cancel(error: ApiError) -> bool:
    """A ``409`` to a cancel sent again: the attempt whose answer was lost may have cancelled the run."""
    return error.status == 409 and error.attempts > 1


def _seg(value: str) -> str:
    return quote(value, safe="")


def key(given: str | None) -> dict[str, str]:
    # always keyed, so sending it again after a lost answer is the same request, applied once
    return {"Idempotency-Key": given or f"agex-client-{uuid.uuid4()}"}


def seconds(value: float) -> str:
    """A ``?wait=`` value the API accepts: at most three decimals."""
    text = f"{max(0.0, round(value, 3)):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def time_param(value: Time) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def present(**params: str | int | bool | datetime | None) -> dict[str, str]:
    """The query parameters that are set, as the API spells them."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            out[name] = time_param(value)
        else:
            out[name] = str(value)
    return out


def _status(value: str | RunStatus | ApprovalStatus | None) -> str | None:
    return value.value if isinstance(value, RunStatus | ApprovalStatus) else value


# --- the operations ----------------------------------------------------------------------------------

def agents() -> Call[AgentList]:
    return Call("GET", "/v1/agents", AgentList)


def agent(name: str) -> Call[AgentView]:
    return Call("GET", f"/v1/agents/{_seg(name)}", AgentView)


def versions(agent: str) -> Call[VersionList]:
    return Call("GET", f"/v1/agents/{_seg(agent)}/versions", VersionList)


def start_run(agent: str, input: str, metadata: Mapping[str, str] | None, idempotency_key: str | None,
              wait: float | None) -> Call[RunView]:
    return _new_run(f"/v1/agents/{_seg(agent)}/runs", input, metadata, idempotency_key, wait)


def _new_run(path: str, input: str, metadata: Mapping[str, str] | None, idempotency_key: str | None,
             wait: float | None) -> Call[RunView]:
    """A request that starts a run (of an agent, or a thread's next turn): keyed, optionally waited for."""
    return Call("POST", path, RunView, params={"wait": seconds(wait)} if wait is not None else {},
                body={"input": input, "metadata": dict(metadata or {})}, headers=key(idempotency_key),
                wait_s=wait or 0.0)


def create_thread(agent: str, policy: str, metadata: Mapping[str, str] | None,
                  idempotency_key: str | None) -> Call[ThreadView]:
    return Call("POST", f"/v1/agents/{_seg(agent)}/threads", ThreadView,
                body={"policy": policy, "metadata": dict(metadata or {})}, headers=key(idempotency_key))


def thread(thread_id: str) -> Call[ThreadView]:
    return Call("GET", f"/v1/threads/{_seg(thread_id)}", ThreadView)


def send(thread_id: str, input: str, metadata: Mapping[str, str] | None, idempotency_key: str | None,
         wait: float | None) -> Call[RunView]:
    return _new_run(f"/v1/threads/{_seg(thread_id)}/runs", input, metadata, idempotency_key, wait)


def memory(user: str, agent: str | None, page_size: int | None, page_token: str | None) -> Call[MemoryList]:
    params = {"user": user, **({"agent": agent} if agent is not None else {}),
              **({"page_size": str(page_size)} if page_size is not None else {}),
              **({"page_token": page_token} if page_token is not None else {})}
    return Call("GET", "/v1/memory", MemoryList, params=params)


def erase_memory(user: str) -> Call[MemoryErased]:
    # erasing twice erases what the first left: nothing (safe to send again)
    return Call("DELETE", "/v1/memory", MemoryErased, params={"user": user})


def run(run_id: str, wait: float | None = None) -> Call[RunView]:
    return Call("GET", f"/v1/runs/{_seg(run_id)}", RunView,
                params={"wait": seconds(wait)} if wait is not None else {}, wait_s=wait or 0.0)


class RunFilters(TypedDict, total=False):
    agent: str | None
    status: str | RunStatus | None
    principal: str | None
    thread: str | None
    created_after: Time | None
    """Inclusive."""
    created_before: Time | None
    """Exclusive."""
    page_size: int | None


def runs_page(page_token: str | None, **filters: Unpack[RunFilters]) -> Call[RunsPage]:
    return Call("GET", "/v1/runs", RunsPage, params=present(
        agent=filters.get("agent"), status=_status(filters.get("status")), principal=filters.get("principal"),
        thread=filters.get("thread"), created_after=filters.get("created_after"), created_before=filters.get("created_before"),
        page_size=filters.get("page_size"), page_token=page_token))


def events_page(run_id: str, after: int = 0, page_size: int | None = None) -> Call[EventsPage]:
    return Call("GET", f"/v1/runs/{_seg(run_id)}/events", EventsPage,
                params=present(page_size=page_size, page_token=str(after) if after else None))


def cancel(run_id: str) -> Call[RunView]:
    # a repeat of a cancel that went through answers 409: see ``retried_cancel``
    return Call("POST", f"/v1/runs/{_seg(run_id)}:cancel", RunView)


def approvals_page(status: str | ApprovalStatus | None = None, page_token: str | None = None,
                   page_size: int | None = None) -> Call[ApprovalsPage]:
    return Call("GET", "/v1/approvals", ApprovalsPage,
                params=present(status=_status(status), page_token=page_token, page_size=page_size))


def approval(approval_id: str) -> Call[ApprovalView]:
    return Call("GET", f"/v1/approvals/{_seg(approval_id)}", ApprovalView)


def decide(approval_id: str, decision: str | Decision, comment: str, arguments: Mapping[str, Any] | None,
           idempotency_key: str | None) -> Call[DecisionView]:
    body: dict[str, Any] = {"decision": decision.value if isinstance(decision, Decision) else decision,
                            "comment": comment}
    if arguments is not None:
        body["arguments"] = dict(arguments)
    return Call("POST", f"/v1/approvals/{_seg(approval_id)}", DecisionView, body=body,
                headers=key(idempotency_key))


def metrics(agent: str, version: str | None, start: Time | None, end: Time | None,
            bucket: str | None) -> Call[AgentMetrics]:
    return Call("GET", f"/v1/agents/{_seg(agent)}/metrics", AgentMetrics,
                params=present(version=version, bucket=bucket, **{"from": start, "to": end}))


def usage(group_by: str | Sequence[str] | None, agent: str | None, start: Time | None,
          end: Time | None) -> Call[UsageReport]:
    grouped = group_by if group_by is None or isinstance(group_by, str) else ",".join(group_by)
    return Call("GET", "/v1/usage", UsageReport,
                params=present(group_by=grouped, agent=agent, **{"from": start, "to": end}))


def alerts(agent: str | None, since: Time | None, page_size: int | None) -> Call[AlertsPage]:
    return Call("GET", "/v1/alerts", AlertsPage, params=present(agent=agent, since=since, page_size=page_size))


def evals(agent: str, version: str | None, accepted: bool | None, page_size: int | None) -> Call[EvalsPage]:
    return Call("GET", f"/v1/agents/{_seg(agent)}/evals", EvalsPage,
                params=present(version=version, accepted=accepted, page_size=page_size))


def put_eval(agent: str, result: EvalSubmission | Mapping[str, Any]) -> Call[EvalStored]:
    body = result.model_dump(mode="json") if isinstance(result, EvalSubmission) else dict(result)
    # the same eval_id replaces the result, so only a keyed result is safe to send twice
    return Call("POST", f"/v1/agents/{_seg(agent)}/evals", EvalStored, body=body,
                safe=body.get("eval_id") is not None)
