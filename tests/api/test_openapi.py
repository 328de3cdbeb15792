"""The OpenAPI document at ``GET /v1/openapi.json``: valid OpenAPI 3.1, in step with the routes, and
true to what the API actually answers (every response of the API tests goes through the same check;
see ``conftest.OpenApiChecker``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import ValidationError
from openapi_spec_validator import validate

from agex.app.http.public_api import _routes
from agex.core.agent import Agent
from agex.core.errors import RequestError
from agex.core.memory import MemoryPolicy
from agex.core.spend import Budget
from agex.testing import FunctionModel, TestModel
from agex.testing.harness import InMemoryRuntime
from examples.support_agent import agent as support_agent
from tests.api.conftest import (
    ACME_TOKEN,
    HTTP_METHODS,
    LEAD_TOKEN,
    MAX_BODY_BYTES,
    UNGUARDED,
    ApiClient,
    OpenApiChecker,
    make_api,
    seed_approval,
)

RUNS = "/v1/agents/support/runs"
JSON = "application/json"


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method.upper()): op for path, item in doc["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS}


def _rule_path(rule: str) -> str:
    """werkzeug's ``/v1/runs/<id:run_id>:cancel`` as OpenAPI's ``/v1/runs/{run_id}:cancel``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_the_document_is_served_without_credentials(client: ApiClient, openapi_doc: dict[str, Any]) -> None:
    response = client.get("/v1/openapi.json", token=None)
    assert response.status_code == 200
    assert response.mimetype == JSON
    assert response.get_json() == openapi_doc
    assert "servers" not in openapi_doc  # links are relative unless a public URL is configured


def test_the_document_is_valid_openapi_3_1(openapi_doc: dict[str, Any]) -> None:
    assert openapi_doc["openapi"].startswith("3.1.")
    validate(openapi_doc)


def test_every_route_is_documented_and_every_documented_operation_is_routed(openapi_doc: dict[str, Any]) -> None:
    routed = {(_rule_path(rule.rule), method): rule.endpoint for rule in _routes.iter_rules()
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    documented = _operations(openapi_doc)
    assert set(routed) == set(documented)
    # and the operation ids are the endpoints' names
    assert {key: op["operationId"] for key, op in documented.items()} == routed


def test_docs_describe_every_operation_and_error_code(openapi_doc: dict[str, Any]) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for path, method in _operations(openapi_doc):
        assert f"{method} {path}" in docs, f"docs/api.md does not describe {method} {path}"
    codes = {cls.code: cls.status for cls in _subclasses(RequestError)} | {"invalid_argument": 400}
    for code, status in codes.items():
        assert re.search(rf"\| {status} +\| `{code}`", docs), f"docs/api.md has no row for {status} {code}"


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_path_parameters_are_declared(openapi_doc: dict[str, Any]) -> None:
    for (path, method), op in _operations(openapi_doc).items():
        in_path = set(re.findall(r"\{([^}]+)\}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == in_path, f"{method} {path}"
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")


def test_only_the_document_and_health_are_public(openapi_doc: dict[str, Any]) -> None:
    assert openapi_doc["security"] == [{"bearer": []}]
    assert openapi_doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    public = {key for key, op in _operations(openapi_doc).items() if op.get("security") == []}
    assert public == {("/v1/openapi.json", "GET"), ("/healthz", "GET")}
    for key, op in _operations(openapi_doc).items():
        assert ("401" in op["responses"]) == (key not in public), key


def test_every_error_response_is_an_error_body(openapi_doc: dict[str, Any]) -> None:
    for (path, method), op in _operations(openapi_doc).items():
        for status, response in op["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{method} {path} {status}"


def test_every_documented_response_happens_and_matches_its_schema(
        client: ApiClient, rt: InMemoryRuntime, checker: OpenApiChecker, openapi_doc: dict[str, Any]) -> None:
    # the client checks each response against the document as it comes; here we make every one happen
    client.get("/healthz", token=None)
    client.get("/v1/openapi.json", token=None)
    client.get("/v1/agents")
    client.get("/v1/agents", token=None)
    client.get("/v1/agents/support")
    client.get("/v1/agents/support", token=None)
    client.get("/v1/agents/nope")
    client.get("/v1/agents/support/versions")
    client.get("/v1/agents/support/versions", token=None)
    client.get("/v1/agents/nope/versions")

    run = client.start(headers={"Idempotency-Key": "k"}).get_json()["run_id"]
    client.start(headers={"Idempotency-Key": "k"})  # replayed: 202 too
    client.start("another request", headers={"Idempotency-Key": "k"})  # 409
    client.start(token=None)
    client.post(RUNS, data="{", content_type=JSON)
    client.start(agent="nope")
    client.start("x" * (32 * 1024 + 1))
    client.post(RUNS, data="hi", content_type="text/plain")

    client.get(f"/v1/runs/{run}")  # queued
    (task,) = rt.queue.pending()
    rt.deliver(task)
    rt.queue.drop(task)
    client.get(f"/v1/runs/{run}")  # running
    client.get(f"/v1/runs/{run}/events?page_size=2")
    rt.drive()
    client.get(f"/v1/runs/{run}")  # succeeded
    client.get(f"/v1/runs/{run}?wait=1s")  # ended already: answered at once
    # a replay of the ended run, waited for: 200 with the run as it ended
    client.post(f"{RUNS}?wait=1s", json={"input": "Refund order A-1042, please."}, headers={"Idempotency-Key": "k"})
    client.get(f"/v1/runs/{run}?wait=forever")
    client.get("/v1/runs?agent=support&status=succeeded&page_size=1")
    client.get("/v1/runs?status=sleeping")
    client.get("/v1/runs", token=None)
    client.get("/v1/schedules")
    client.get("/v1/schedules", token=None)
    client.post("/v1/schedules/nightly:pause")
    client.post("/v1/schedules/nightly:resume")
    client.post("/v1/schedules/weekly:pause")
    client.post("/v1/schedules/weekly:resume")
    client.post("/v1/schedules/nightly:pause", token=None)
    client.post("/v1/schedules/nightly:resume", token=None)
    acme = ApiClient(make_api(rt), checker, token=ACME_TOKEN)
    assert acme.get("/v1/schedules").get_json() == {"schedules": []}  # another tenant's is not listed
    assert acme.post("/v1/schedules/nightly:pause").status_code == 404
    client.get(f"/v1/runs/{run}", token=None)
    client.get("/v1/runs/run_nope")
    client.get(f"/v1/runs/{run}/events")
    client.get(f"/v1/runs/{run}/events?page_size=0")
    client.get(f"/v1/runs/{run}/events", token=None)
    client.get("/v1/runs/run_nope/events")

    other = client.start().get_json()["run_id"]
    client.post(f"/v1/runs/{other}:cancel")
    client.post(f"/v1/runs/{other}:cancel")  # 409
    client.post(f"/v1/runs/{other}:cancel", token=None)
    client.post("/v1/runs/run_nope:cancel")

    capped = ApiClient(make_api(rt, budgets=[Budget(name="acme-day", scope="tenant", tenants=("acme",), max_tokens=1)]),
                       checker, token=ACME_TOKEN)
    capped.start()
    rt.drive()
    refused = capped.start()  # the tenant's budget is spent: 429, with when it frees up
    assert refused.status_code == 429 and refused.get_json()["error"]["budget"] == "acme-day"
    assert int(refused.headers["Retry-After"]) > 0

    refused = capped.post("/v1/agents/support/threads", json={})
    capped_thread = refused.get_json()["thread_id"]
    assert capped.post(f"/v1/threads/{capped_thread}/runs", json={"input": "hi"}).status_code == 429

    thread = client.post("/v1/agents/support/threads", json={"policy": "reject"}, headers={"Idempotency-Key": "t"})
    thread_id = thread.get_json()["thread_id"]
    client.post("/v1/agents/support/threads", json={"policy": "reject"}, headers={"Idempotency-Key": "t"})  # 200
    client.post("/v1/agents/support/threads", json={"policy": "queue"}, headers={"Idempotency-Key": "t"})  # 409
    client.post("/v1/agents/support/threads", json={"policy": "whenever"})
    client.post("/v1/agents/support/threads", json={}, token=None)
    client.post("/v1/agents/nope/threads", json={})
    client.post("/v1/agents/support/threads", data="x" * (MAX_BODY_BYTES + 1), content_type=JSON)
    client.post("/v1/agents/support/threads", data="{}", content_type="text/plain")
    client.get(f"/v1/threads/{thread_id}")
    client.get(f"/v1/threads/{thread_id}", token=None)
    client.get("/v1/threads/thr_nope")
    turn = f"/v1/threads/{thread_id}/runs"
    client.post(turn, json={"input": "Refund order A-1042, please."})
    client.post(turn, json={"input": "And the other one?"})  # the first is still going: 409 thread_busy
    rt.drive()
    client.post(turn, json={"input": "Thanks."}, headers={"Idempotency-Key": "t2"})
    rt.drive()
    client.post(f"{turn}?wait=1s", json={"input": "Thanks."}, headers={"Idempotency-Key": "t2"})  # ended: 200
    client.post(turn, json={"input": ""})
    client.post(turn, json={"input": "hi"}, token=None)
    client.post("/v1/threads/thr_nope/runs", json={"input": "hi"})
    client.post(turn, data="x" * (MAX_BODY_BYTES + 1), content_type=JSON)
    client.post(turn, data="hi", content_type="text/plain")
    client.get(f"/v1/runs?thread={thread_id}")
    rt.drive()

    pending = f"/v1/approvals/{seed_approval(rt).approval_id}"
    decided = f"/v1/approvals/{seed_approval(rt, status='approved', decided_by='lead@example.com').approval_id}"
    client.get("/v1/approvals")
    client.get("/v1/approvals?status=pending&page_size=1")
    client.get("/v1/approvals?status=nope")
    client.get("/v1/approvals", token=None)
    client.get(pending)
    client.get(pending, token=None)
    client.get("/v1/approvals/apr_nope")
    client.post(pending, json={"decision": "approve"}, token=LEAD_TOKEN)
    client.post(pending, json={"decision": "maybe"}, token=LEAD_TOKEN)
    client.post(pending, json={"decision": "approve"}, token=None)
    client.post(pending, json={"decision": "approve"})  # the run's own principal is no approver: 403
    client.post("/v1/approvals/apr_nope", json={"decision": "approve"})
    client.post(decided, json={"decision": "approve"}, token=LEAD_TOKEN)  # 409
    client.post(pending, data="x" * (MAX_BODY_BYTES + 1), content_type=JSON, token=LEAD_TOKEN)
    client.post(pending, data="approve", content_type="text/plain", token=LEAD_TOKEN)

    client.get("/v1/agents/support/metrics")
    client.get("/v1/agents/support/metrics?bucket=week")
    client.get("/v1/agents/support/metrics", token=None)
    client.get("/v1/agents/nope/metrics")
    client.get("/v1/usage?group_by=user,model")
    client.get("/v1/usage?group_by=model,tool")
    client.get("/v1/usage", token=None)
    client.get("/v1/alerts?agent=support")
    client.get("/v1/alerts?since=yesterday")
    client.get("/v1/alerts", token=None)
    client.get("/v1/alerts?agent=nope")
    result = {"version": "1", "evalset": "golden", "passed": True, "accepted": True, "summary": {"pass_rate": 1.0},
              "cases": [{"id": "a", "passed": True}]}
    client.post("/v1/agents/support/evals", json=result)
    client.post("/v1/agents/support/evals", json={**result, "passed": "maybe"})
    client.post("/v1/agents/support/evals", json=result, token=None)
    client.post("/v1/agents/nope/evals", json=result)
    client.post("/v1/agents/support/evals", data="x" * (MAX_BODY_BYTES + 1), content_type=JSON)
    client.post("/v1/agents/support/evals", data="{}", content_type="text/plain")
    client.get("/v1/agents/support/evals?accepted=true")
    client.get("/v1/agents/support/evals?accepted=maybe")
    client.get("/v1/agents/support/evals", token=None)
    client.get("/v1/agents/nope/evals")

    client.get("/v1/memory?user=dev@example.com")  # no agent here keeps memory: 404
    client.open("DELETE", "/v1/memory?user=dev@example.com")
    remembering = InMemoryRuntime([UNGUARDED, Agent(name="concierge", instructions="help", memory=MemoryPolicy())],
                                  TestModel("noted"))
    memory = ApiClient(make_api(remembering), checker)
    memory.get("/v1/memory?user=dev@example.com")
    memory.get("/v1/memory?user=dev@example.com&agent=*&page_size=5")
    memory.get("/v1/memory")  # no user: 400
    memory.get("/v1/memory?user=dev@example.com", token=None)
    memory.open("DELETE", "/v1/memory?user=dev@example.com")
    memory.open("DELETE", "/v1/memory?user=a%20b")
    memory.open("DELETE", "/v1/memory?user=dev@example.com", token=None)

    client.get("/v1/nope")  # undocumented route and method: ErrorBody, 404 and 405
    client.open("DELETE", f"/v1/runs/{run}")

    documented = {(op["operationId"], int(status)) for op in _operations(openapi_doc).values()
                  for status in op["responses"]}
    seen = {(e.operation, e.status) for e in checker.seen if e.operation is not None}
    assert seen == documented
    assert {(e.status, e.body["error"]["code"]) for e in checker.seen if e.operation is None} == {
        (404, "not_found"), (405, "method_not_allowed")}


def test_a_failed_run_with_an_error_matches_the_schema(checker: OpenApiChecker) -> None:
    # a model that never stops calling tools (each time another order) runs into the agent's max_steps
    asked: list[int] = []

    def model_fn(request: Any) -> list[tuple[str, dict[str, str]]]:
        asked.append(1)
        return [("lookup_order", {"order_id": f"A-{1000 + len(asked)}"})]

    model = FunctionModel(model_fn)
    rt = InMemoryRuntime([support_agent], model)
    client = ApiClient(make_api(rt), checker)
    run_id = client.start().get_json()["run_id"]
    rt.drive()
    run = client.get(f"/v1/runs/{run_id}").get_json()
    assert run["status"] == "failed" and run["error"]["code"] == "max_steps"
    client.get(f"/v1/runs/{run_id}/events?page_size=1000")


def test_the_checker_rejects_what_the_document_does_not_allow(checker: OpenApiChecker) -> None:
    """A control: the schema check is not vacuous."""
    run = {"run_id": "run_1", "status": "queued"}
    with pytest.raises(AssertionError, match="does not match the documented schema"):
        checker.check("GET", "/v1/runs/run_1", 200, JSON, b'{"run_id": "run_1", "status": "queued"}')
    with pytest.raises(AssertionError, match="does not list"):
        checker.check("GET", "/v1/runs/run_1", 418, JSON, b'{"error": {"code": "teapot", "message": "no"}}')
    with pytest.raises(AssertionError, match="does not match"):
        checker.check("GET", "/v1/runs/run_1", 404, JSON, b'{"error": {"code": "not_found"}}')
    with pytest.raises(ValidationError):
        checker.component("RunView").validate({**run, "status": "paused"})


# what the API accepts (202) and refuses (400) for its request schema alone
REQUESTS = [
    pytest.param({"input": "hi"}, True, id="input"),
    pytest.param({"input": "hi", "metadata": {"ticket": "T-1"}}, True, id="input-and-metadata"),
    pytest.param({}, False, id="missing-input"),
    pytest.param({"input": ""}, False, id="empty-input"),
    pytest.param({"input": 1}, False, id="input-not-a-string"),
    pytest.param({"input": "hi", "extra": 1}, False, id="unknown-field"),
    pytest.param({"input": "hi", "metadata": {"n": 1}}, False, id="metadata-value-not-a-string"),
    pytest.param(["hi"], False, id="not-an-object"),
]


@pytest.mark.parametrize(("body", "accepted"), REQUESTS)
def test_the_request_schema_agrees_with_the_api(client: ApiClient, checker: OpenApiChecker,
                                                 body: Any, accepted: bool) -> None:
    schema = checker.component("CreateRunRequest")
    assert schema.is_valid(body) == accepted
    assert client.post(RUNS, json=body).status_code == (202 if accepted else 400)


@pytest.mark.parametrize("metadata", [
    pytest.param({f"k{i}": "v" for i in range(33)}, id="33-entries"),
    pytest.param({"k" * 65: "v"}, id="key-too-long"),
    pytest.param({"": "v"}, id="empty-key"),
    pytest.param({"k": "v" * 513}, id="value-too-long"),
])
def test_the_request_schema_states_the_metadata_limits(client: ApiClient, checker: OpenApiChecker,
                                                       metadata: dict[str, str]) -> None:
    body = {"input": "hi", "metadata": metadata}
    assert client.post(RUNS, json=body).status_code == 400
    assert not checker.component("CreateRunRequest").is_valid(body)
