"""The OpenAPI 3.1 document of the public API, built from the same pydantic views the API returns."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from agex.app.http.rules import (
    APPROVALS_TOKEN_PATTERN,
    EVENTS_TOKEN_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    LABEL_PATTERN,
    MAX_IDEMPOTENCY_KEY,
    TEXT_PATTERN,
)
from agex.app.http.views import (
    AgentList,
    AgentView,
    ApprovalsPage,
    ApprovalView,
    DecisionView,
    ErrorBody,
    EventsPage,
    MemoryErased,
    MemoryList,
    RunsPage,
    RunView,
    ScheduleList,
    ScheduleView,
    ThreadView,
    VersionList,
)
from agex.core.approval import ApprovalStatus
from agex.core.run import RunStatus
from agex.engine.approvals import DecideRequest
from agex.engine.reports import (
    GROUPS,
    AgentMetrics,
    AlertsPage,
    EvalsPage,
    EvalSubmission,
    EvalView,
    UsageReport,
)
from agex.engine.runs import CreateRunRequest
from agex.engine.threads import CreateThreadRequest

_MODELS: list[type[BaseModel]] = [RunView, RunsPage, EventsPage, ScheduleView, ScheduleList, AgentView, AgentList, VersionList, ThreadView, CreateThreadRequest, ApprovalView, ApprovalsPage,
                                  DecisionView, ErrorBody, CreateRunRequest, DecideRequest, AgentMetrics, UsageReport,
                                  AlertsPage, EvalsPage, EvalSubmission, EvalView, MemoryList, MemoryErased]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(ErrorBody, "Error; `error.code` says which, `error.message` what to do.") for s in statuses}


_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}
_AGENT = {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}
_SCHEDULE = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}}
_APPROVAL_ID = {"name": "approval_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}
_PAGE_SIZE = {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                             "default": 100}}
_EVENTS_PAGE_TOKEN = {"name": "page_token", "in": "query",
                      "schema": {"type": "string", "minLength": 1, "pattern": EVENTS_TOKEN_PATTERN},
                      "description": "The `next_page_token` of the previous page; opaque. Anything else, "
                                     "the empty string included, is a 400."}
_SSE_EVENT = {"type": "object", "description": "One server-sent event: `id` the event's `seq`, `event` its kind (or "
               "`end`, `reconnect`), `data` the `EventView` as JSON (`end`: the run's `status`).",
               "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"},
                              "retry": {"type": "integer"}}}
_RUNS_PAGE_TOKEN = {"name": "page_token", "in": "query",
                    "schema": {"type": "string", "minLength": 1, "pattern": APPROVALS_TOKEN_PATTERN},
                    "description": "The `next_page_token` of the previous page, with the same filters; opaque. A "
                                   "string the API did not return, or the empty string, is a 400."}
_APPROVALS_PAGE_TOKEN = {"name": "page_token", "in": "query",
                         "schema": {"type": "string", "minLength": 1, "pattern": APPROVALS_TOKEN_PATTERN},
                         "description": "The `next_page_token` of the previous page, with the same `status`; "
                                        "opaque. A string the API did not return (even of this alphabet), or "
                                        "the empty string, is a 400."}


_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})$"
_TEXT_PARAM = "^[A-Za-z0-9_.@:+-]{1,128}$"


def _time(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "format": "date-time", "pattern": _TIME_PATTERN}}


def _text(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "pattern": _TEXT_PARAM}}


def _required(name: str, description: str) -> dict[str, Any]:
    return {**_text(name, description), "required": True}


_PERIOD = [_time("from", "Start of the period (runs that ended at or after it); default: `to` less 7 days."),
           _time("to", "End of the period (runs that ended before it); default: now. A period longer than 92 "
                        "days is cut to its last 92 (the answer's `from` and `truncated` say so).")]


_WAIT = {"name": "wait", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": r"^[0-9]{1,4}(\.[0-9]{1,3})?s?$"},
         "description": "Answer as soon as the run ended, or after this many seconds (`30s`, `30` or `2.5s`; at most "
                        "`AGEX_MAX_WAIT_SECONDS`, 50 by default), with the run as it is then."}


def _idempotency_key(description: str) -> dict[str, Any]:
    return {"name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY,
                       "pattern": IDEMPOTENCY_KEY_PATTERN},
            "description": f"{description} 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters, spaces inside "
                           "allowed, no comma; sent once (a header sent twice is a 400). Empty is a 400, not "
                           "the same as no key."}


def _link(operation: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": parameters}


def _with_links(response: dict[str, Any], **links: dict[str, Any]) -> dict[str, Any]:
    return {**response, "links": links}


_RUN_LINKS = {
    "GetRun": _link("get_run", run_id="$response.body#/run_id"),
    "ListEvents": _link("list_events", run_id="$response.body#/run_id"),
    "CancelRun": _link("cancel_run", run_id="$response.body#/run_id"),
}
_THREAD_ID = {"name": "thread_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}
_THREAD_LINKS = {
    "GetThread": _link("get_thread", thread_id="$response.body#/thread_id"),
    "PostToThread": _link("post_to_thread", thread_id="$response.body#/thread_id"),
}
_APPROVAL_LINKS = {
    "GetApproval": _link("get_approval", approval_id="$response.body#/approval_id"),
    "DecideApproval": _link("decide_approval", approval_id="$response.body#/approval_id"),
    "GetRun": _link("get_run", run_id="$response.body#/run_id"),
}


def _constrain(schemas: dict[str, Any]) -> None:
    """What the request models check beyond their field types, stated in their schemas: text without
    control characters (``agex.app.http.rules``), and the rules of a decision that do not depend on the
    approval (a rejection needs a comment; only an approval may edit the arguments)."""
    run = schemas["CreateRunRequest"]["properties"]
    run["input"]["pattern"] = TEXT_PATTERN
    run["metadata"]["additionalProperties"]["pattern"] = TEXT_PATTERN
    run["metadata"]["propertyNames"]["pattern"] = LABEL_PATTERN
    decide = schemas["DecideRequest"]
    decide["properties"]["comment"]["pattern"] = TEXT_PATTERN
    decide["allOf"] = [
        {"if": {"properties": {"decision": {"const": "reject"}}, "required": ["decision"]},
         "then": {"properties": {"comment": {"pattern": "\\S"}}, "required": ["comment"]}},
        {"if": {"properties": {"decision": {"not": {"const": "approve"}}}, "required": ["decision"]},
         "then": {"properties": {"arguments": {"type": "null"}}}},
    ]


@functools.cache
def _document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    _constrain(schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agent Executor API", "version": "1",
                 "description": "Start, follow and cancel durable agent runs, and decide the "
                                "tool calls they wait on. See docs/api.md."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/agents": {"get": {
                "operationId": "list_agents", "summary": "List the agents of this deployment",
                "responses": {"200": _with_links(_json(AgentList, "The agents."),
                                                 GetAgent=_link("get_agent", agent="$response.body#/agents/0/name"),
                                                 StartRun=_link("start_run", agent="$response.body#/agents/0/name")),
                              **_errors(401)}}},
            "/v1/agents/{agent}": {"get": {
                "operationId": "get_agent", "summary": "An agent's tools, model and limits",
                "parameters": [_AGENT],
                "responses": {"200": _with_links(_json(AgentView, "The agent."),
                                                 StartRun=_link("start_run", agent="$response.body#/name")),
                              **_errors(401, 404)}}},
            "/v1/agents/{agent}/versions": {"get": {
                "operationId": "agent_versions", "summary": "An agent's versions: served, current, and the runs "
                                                            "that have not ended on each",
                "parameters": [_AGENT],
                "responses": {"200": _json(VersionList, "The versions."), **_errors(401, 404)}}},
            "/v1/agents/{agent}/runs": {"post": {
                "operationId": "start_run", "summary": "Start a run of an agent",
                "parameters": [_AGENT, _WAIT, _idempotency_key("The same key and body return the same run; the "
                                                               "same key with another body is a 409.")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(CreateRunRequest)}}},
                "responses": {"202": _with_links(_json(RunView, "The run was accepted (or replayed for the same "
                                                                "key), and has not ended yet."), **_RUN_LINKS),
                              "200": _with_links(_json(RunView, "With `wait`: the run ended while the request "
                                                                "waited."), **_RUN_LINKS),
                              **_errors(400, 401, 404, 409, 413, 415, 429)}}},
            "/v1/agents/{agent}/threads": {"post": {
                "operationId": "create_thread", "summary": "Start a conversation with an agent (docs/threads.md)",
                "parameters": [_AGENT, _idempotency_key("The same key and body return the same thread; the same key "
                                                        "with another body is a 409.")],
                "requestBody": {"required": False,
                                "content": {"application/json": {"schema": _ref(CreateThreadRequest)}}},
                "responses": {"201": _with_links(_json(ThreadView, "The thread."), **_THREAD_LINKS),
                              "200": _with_links(_json(ThreadView, "The thread an earlier request with this "
                                                                   "Idempotency-Key created."), **_THREAD_LINKS),
                              **_errors(400, 401, 404, 409, 413, 415)}}},
            "/v1/threads/{thread_id}": {"get": {
                "operationId": "get_thread", "summary": "A thread: its run under way, queued runs, summary and last "
                                                        "turns",
                "parameters": [_THREAD_ID],
                "responses": {"200": _with_links(_json(ThreadView, "The thread."), **_THREAD_LINKS),
                              **_errors(401, 404)}}},
            "/v1/threads/{thread_id}/runs": {"post": {
                "operationId": "post_to_thread", "summary": "Send a message: the thread's next turn, a run with the "
                                                            "conversation so far",
                "parameters": [_THREAD_ID, _WAIT, _idempotency_key("The same key and body return the same run; the "
                                                                   "same key with another body is a 409.")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(CreateRunRequest)}}},
                "responses": {"202": _with_links(_json(RunView, "The run was accepted: started, or waiting its turn "
                                                                "(`waiting_turn`), or replayed for the same key."),
                                                 **_RUN_LINKS),
                              "200": _with_links(_json(RunView, "With `wait`: the run ended while the request "
                                                                "waited."), **_RUN_LINKS),
                              **_errors(400, 401, 404, 409, 413, 415, 429)}}},
            "/v1/runs": {"get": {
                "operationId": "list_runs", "summary": "The tenant's runs, newest first, filtered and paginated",
                "parameters": [_text("agent", "Only runs of this agent."),
                               {"name": "status", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": [s.value for s in RunStatus]},
                                "description": "Only runs in this status."},
                               _text("principal", "Only runs started by this principal."),
                               _text("thread", "Only the runs of this thread (its turns)."),
                               _time("created_after", "Only runs created at or after this time."),
                               _time("created_before", "Only runs created before this time."),
                               _PAGE_SIZE, _RUNS_PAGE_TOKEN],
                "responses": {"200": _with_links(
                    _json(RunsPage, "A page of runs."),
                    GetRun=_link("get_run", run_id="$response.body#/runs/0/run_id")), **_errors(400, 401)}}},
            "/v1/runs/{run_id}": {"get": {
                "operationId": "get_run", "summary": "A run's status, usage and result", "parameters": [_RUN_ID, _WAIT],
                "responses": {"200": _with_links(_json(RunView, "The run."), **_RUN_LINKS), **_errors(400, 401, 404)}}},
            "/v1/runs/{run_id}/events": {"get": {
                "operationId": "list_events", "summary": "A run's events in order, paginated, or followed live",
                "parameters": [_RUN_ID, _PAGE_SIZE, _EVENTS_PAGE_TOKEN,
                               {"name": "follow", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["true", "false"]},
                                "description": "`true`: answer `text/event-stream`, every event as it is committed "
                                               "until the run ended (docs/api.md, \"Following a run\")."},
                               {"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string", "pattern": EVENTS_TOKEN_PATTERN},
                                "description": "With `follow=true`: the id of the last event received, to resume "
                                               "after it."}],
                "responses": {"200": {"description": "A page of events; with `follow=true`, a stream of them.",
                                      "content": {"application/json": {"schema": _ref(EventsPage)},
                                                  "text/event-stream": {"schema": _SSE_EVENT}}},
                              **_errors(400, 401, 404)}}},
            "/v1/runs/{run_id}:cancel": {"post": {
                "operationId": "cancel_run", "summary": "Cancel an unfinished run", "parameters": [_RUN_ID],
                "responses": {"200": _with_links(_json(RunView, "The cancelled run."), **_RUN_LINKS),
                              **_errors(401, 404, 409)}}},
            "/v1/approvals": {"get": {
                "operationId": "list_approvals", "summary": "The tenant's approvals, oldest first, paginated",
                "parameters": [{"name": "status", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": [s.value for s in ApprovalStatus]},
                                "description": "Only approvals of this status; all when absent."},
                               _PAGE_SIZE, _APPROVALS_PAGE_TOKEN],
                "responses": {"200": _with_links(
                    _json(ApprovalsPage, "A page of approvals."),
                    GetApproval=_link("get_approval", approval_id="$response.body#/approvals/0/approval_id"),
                    DecideApproval=_link("decide_approval", approval_id="$response.body#/approvals/0/approval_id")),
                    **_errors(400, 401)}}},
            "/v1/approvals/{approval_id}": {
                "get": {"operationId": "get_approval", "summary": "An approval: the call waiting and its decision",
                        "parameters": [_APPROVAL_ID],
                        "responses": {"200": _with_links(_json(ApprovalView, "The approval."), **_APPROVAL_LINKS),
                                      **_errors(401, 404)}},
                "post": {
                    "operationId": "decide_approval", "summary": "Approve or reject the call waiting",
                    "description": "The body's schema is checked first (400). Then a decision that does not fit "
                                   "the approval's `kind` (`retry`, `done` or `fail` on an approval, `approve` "
                                   "or `reject` on a reconciliation) is a 400, an approval that is not pending "
                                   "any more or whose run finished a 409, a caller who may not decide a 403, "
                                   "and edited `arguments` the policy or the tool does not accept a 400.",
                    "parameters": [_APPROVAL_ID, _idempotency_key(
                        "A retry with the same key and body gets the same `decision_id` and is applied once.")],
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref(DecideRequest)}}},
                    "responses": {"202": _with_links(
                        _json(DecisionView, "The decision was submitted (or applied before, for the same key)."),
                        GetApproval=_link("get_approval", approval_id="$response.body#/approval/approval_id")),
                        "400": _json(ErrorBody, "Not a valid `DecideRequest`; a decision that does not fit the "
                                                "approval's `kind`; edited `arguments` the policy or the tool "
                                                "does not accept; a bad `Idempotency-Key`."),
                        **_errors(401, 403, 404, 409, 413, 415)}}},
            "/v1/agents/{agent}/metrics": {"get": {
                "operationId": "agent_metrics", "summary": "An agent's behavioural metrics per version and time bucket",
                "parameters": [_AGENT, _text("version", "Only this version."), *_PERIOD,
                               {"name": "bucket", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["hour", "day", "none"], "default": "day"}}],
                "responses": {"200": _json(AgentMetrics, "The metrics of the tenant's runs of the agent."),
                              **_errors(400, 401, 404)}}},
            "/v1/agents/{agent}/evals": {
                "get": {"operationId": "list_evals", "summary": "Evaluation results of an agent, newest first",
                        "parameters": [_AGENT, _text("version", "Only this version."),
                                       {"name": "accepted", "in": "query", "required": False,
                                        "schema": {"type": "string", "enum": ["true", "false"]}},
                                       {"name": "page_size", "in": "query",
                                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}],
                        "responses": {"200": _json(EvalsPage, "Evaluation results."), **_errors(400, 401, 404)}},
                "post": {"operationId": "put_eval", "summary": "Store an evaluation result (`agex eval`)",
                         "parameters": [_AGENT],
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": _ref(EvalSubmission)}}},
                         "responses": {"201": {"description": "Stored.", "content": {"application/json": {"schema": {
                             "type": "object", "properties": {"eval": _ref(EvalView)}, "required": ["eval"]}}}},
                                       **_errors(400, 401, 404, 413, 415)}}},
            "/v1/schedules": {"get": {
                "operationId": "list_schedules", "summary": "The tenant's schedules, paused or not, and when each fires next",
                "responses": {"200": _json(ScheduleList, "The schedules the fleet file declares for the caller's tenant."),
                              **_errors(401)}}},
            "/v1/schedules/{name}:pause": {"post": {
                "operationId": "pause_schedule", "summary": "Pause a schedule: its firings start no run until resumed",
                "parameters": [_SCHEDULE],
                "responses": {"200": _json(ScheduleView, "The schedule, paused."), **_errors(401, 404)}}},
            "/v1/schedules/{name}:resume": {"post": {
                "operationId": "resume_schedule", "summary": "Resume a paused schedule",
                "parameters": [_SCHEDULE],
                "responses": {"200": _json(ScheduleView, "The schedule, running again."), **_errors(401, 404)}}},
            "/v1/usage": {"get": {
                "operationId": "usage", "summary": "Tokens, cost and calls of the tenant's runs, grouped",
                "parameters": [{"name": "group_by", "in": "query", "required": False,
                                "description": f"Comma-separated, distinct, among {', '.join(GROUPS)}; not both "
                                               "model and tool. Default: agent.",
                                "schema": {"type": "string", "default": "agent",
                                           "pattern": f"^({'|'.join(GROUPS)})(,({'|'.join(GROUPS)}))*$"}},
                               _text("agent", "Only this agent's runs."), *_PERIOD],
                "responses": {"200": _json(UsageReport, "Usage per group."), **_errors(400, 401)}}},
            "/v1/alerts": {"get": {
                "operationId": "list_alerts", "summary": "Drift alerts, newest first",
                "parameters": [_text("agent", "Only this agent's."), _time("since", "Only alerts detected after it."),
                               _PAGE_SIZE],
                "responses": {"200": _json(AlertsPage, "Drift alerts (example runs of the caller's tenant only)."),
                              **_errors(400, 401, 404)}}},
            "/v1/memory": {
                "get": {
                    "operationId": "list_memory",
                    "summary": "What is remembered about a user (docs/memory.md): every scope of theirs, a page each, "
                               "or one scope paged on",
                    "parameters": [_required("user", "The user: a run's `metadata.user`, else its principal."),
                                   {"name": "agent", "in": "query", "required": False,
                                    "schema": {"type": "string", "pattern": r"^(\*|[A-Za-z0-9_.@:+-]{1,128})$"},
                                    "description": "One scope: the user's memories with this agent, or `*` for across "
                                                   "agents."},
                                   {"name": "page_size", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                                    "description": "Memories per scope."},
                                   {"name": "page_token", "in": "query", "required": False, "schema": {"type": "string"},
                                    "description": "`next_page_token` of a scope, with that scope's `agent`."}],
                    "responses": {"200": _json(MemoryList, "The user's memories, per scope."),
                                  **_errors(400, 401, 404)}},
                "delete": {
                    "operationId": "erase_memory",
                    "summary": "Erase everything remembered about a user: their scopes with every agent, and what "
                               "was learned from their conversations into shared scopes, in every store",
                    "parameters": [_required("user", "The user whose memories are erased.")],
                    "responses": {"200": _json(MemoryErased, "What was deleted."), **_errors(400, 401, 404)}}},
            "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                         "responses": {"200": {"description": "OpenAPI 3.1 document."}}}},
            "/healthz": {"get": {"operationId": "health", "summary": "Liveness", "security": [],
                                 "responses": {"200": {"description": "ok"}}}},
        },
    }


def document(base_url: str = "") -> dict[str, Any]:
    doc = dict(_document())
    if base_url:
        doc["servers"] = [{"url": base_url}]
    return doc
