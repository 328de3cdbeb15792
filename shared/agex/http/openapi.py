"""The OpenAPI 3.1 document of the public API, built from the same pydantic views the API returns."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from agex.approval import ApprovalStatus
from agex.approval_service import DecideRequest
from agex.http.views import (
    AgentList,
    AgentView,
    ApprovalsPage,
    ApprovalView,
    DecisionView,
    ErrorBody,
    EventsPage,
    RunView,
)
from agex.service import CreateRunRequest

_MODELS: list[type[BaseModel]] = [RunView, EventsPage, AgentView, AgentList, ApprovalView, ApprovalsPage,
                                  DecisionView, ErrorBody, CreateRunRequest, DecideRequest]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(ErrorBody, "Error; `error.code` says which, `error.message` what to do.") for s in statuses}


_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}
_AGENT = {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}
_APPROVAL_ID = {"name": "approval_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}
_PAGE_SIZE = {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                             "default": 100}}
_PAGE_TOKEN = {"name": "page_token", "in": "query", "schema": {"type": "string"},
               "description": "The `next_page_token` of the previous page; opaque."}


@functools.cache
def _document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
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
            "/v1/agents": {"get": {"operationId": "list_agents", "summary": "List the agents of this deployment",
                                   "responses": {"200": _json(AgentList, "The agents."), **_errors(401)}}},
            "/v1/agents/{agent}": {"get": {
                "operationId": "get_agent", "summary": "An agent's tools, model and limits",
                "parameters": [_AGENT], "responses": {"200": _json(AgentView, "The agent."), **_errors(401, 404)}}},
            "/v1/agents/{agent}/runs": {"post": {
                "operationId": "start_run", "summary": "Start a run of an agent",
                "parameters": [_AGENT, {"name": "Idempotency-Key", "in": "header", "required": False,
                                        "schema": {"type": "string", "maxLength": 255},
                                        "description": "The same key and body return the same run; "
                                                       "the same key with another body is a 409."}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(CreateRunRequest)}}},
                "responses": {"202": _json(RunView, "The run was accepted (or replayed for the same key)."),
                              **_errors(400, 401, 404, 409, 413, 415)}}},
            "/v1/runs/{run_id}": {"get": {
                "operationId": "get_run", "summary": "A run's status, usage and result", "parameters": [_RUN_ID],
                "responses": {"200": _json(RunView, "The run."), **_errors(401, 404)}}},
            "/v1/runs/{run_id}/events": {"get": {
                "operationId": "list_events", "summary": "A run's events in order, paginated",
                "parameters": [_RUN_ID, _PAGE_SIZE, _PAGE_TOKEN],
                "responses": {"200": _json(EventsPage, "A page of events."), **_errors(400, 401, 404)}}},
            "/v1/runs/{run_id}:cancel": {"post": {
                "operationId": "cancel_run", "summary": "Cancel an unfinished run", "parameters": [_RUN_ID],
                "responses": {"200": _json(RunView, "The cancelled run."), **_errors(401, 404, 409)}}},
            "/v1/approvals": {"get": {
                "operationId": "list_approvals", "summary": "The tenant's approvals, oldest first, paginated",
                "parameters": [{"name": "status", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": [s.value for s in ApprovalStatus]},
                                "description": "Only approvals of this status; all when absent."},
                               _PAGE_SIZE, _PAGE_TOKEN],
                "responses": {"200": _json(ApprovalsPage, "A page of approvals."), **_errors(400, 401)}}},
            "/v1/approvals/{approval_id}": {
                "get": {"operationId": "get_approval", "summary": "An approval: the call waiting and its decision",
                        "parameters": [_APPROVAL_ID],
                        "responses": {"200": _json(ApprovalView, "The approval."), **_errors(401, 404)}},
                "post": {
                    "operationId": "decide_approval", "summary": "Approve or reject the call waiting",
                    "parameters": [_APPROVAL_ID, {
                        "name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "A retry with the same key and body gets the same `decision_id` and is "
                                       "applied once."}],
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref(DecideRequest)}}},
                    "responses": {"202": _json(DecisionView, "The decision was submitted (or applied before, "
                                                             "for the same key)."),
                                  **_errors(400, 401, 403, 404, 409, 413, 415)}}},
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
