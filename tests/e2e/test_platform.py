"""Limits, tracing, logging, authentication and bad input, through the real functions."""

from __future__ import annotations

import json
import time

import httpx
from google.cloud import firestore

from .conftest import E2E

FIRESTORE_DOCUMENT_LIMIT = 1_048_576


def _size(value: object) -> int:
    """Upper bound of Firestore's stored size of a value (its JSON is larger than its storage size)."""
    return len(json.dumps(value, default=str).encode())


def test_a_500_step_run_stays_under_every_document_limit(e2e: E2E) -> None:
    run = e2e.client.start_run("ticker", "tick 499 padded")
    final = e2e.wait(run["run_id"], timeout=900)
    assert final["status"] == "succeeded", final
    assert final["step"] == 500
    with e2e.stack.client_env():
        db = firestore.Client(project=e2e.stack.config.project)
        head_ref = db.collection("tenants").document("dev").collection("runs").document(run["run_id"])
        head = head_ref.get().to_dict()
        docs = [doc.to_dict() for doc in head_ref.collection("events").stream()]
        sizes = [_size(doc) for doc in docs]
    assert _size(head) < 8 * 1024, "the head does not grow with the run"
    assert max(sizes) < FIRESTORE_DOCUMENT_LIMIT // 100
    # run_created; 499 tool steps of 5 events (started, model, intent, result, completed); the last step's 4
    assert sum(len(json.loads(doc["events_json"])) for doc in docs) == 1 + 499 * 5 + 4
    # in one document per commit: the run's creation, two commits a step, and the first step's claim (the API
    # enqueued its task; no commit issued it a lease)
    assert len(docs) == 1 + 500 * 2 + 1


def test_one_trace_per_run_carried_through_every_cloud_tasks_hop(e2e: E2E) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = e2e.http.post("/v1/agents/ticker/runs", json={"input": "tick 3"}, headers={
        "Authorization": "Bearer dev-token", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert e2e.wait(run_id)["status"] == "succeeded"
    time.sleep(0.5)  # let the step function flush its last log line
    entries = [e for e in e2e.log_entries("step")
               if e.get("logging.googleapis.com/labels", {}).get("run") == run_id]
    steps = {e["logging.googleapis.com/labels"]["step"] for e in entries}
    assert steps == {"1", "2", "3", "4"}
    traces = {e["logging.googleapis.com/trace"] for e in entries}
    assert traces == {f"projects/{e2e.stack.config.project}/traces/{trace_id}"}
    assert all(e["severity"] in {"INFO", "WARNING", "ERROR"} and e["message"] for e in entries)
    labels = entries[-1]["logging.googleapis.com/labels"]
    assert labels["agent"] == "ticker" and labels["tenant"] == "dev"
    spans = {e["logging.googleapis.com/spanId"] for e in entries}
    assert len(spans) >= 4, "each step has a span of its own within the run's trace"


def test_the_step_function_refuses_requests_without_a_valid_oidc_token(e2e: E2E) -> None:
    body = {"tenant": "dev", "run_id": "run_x", "step": 1}
    no_token = httpx.post(e2e.stack.step_url, json=body)
    assert no_token.status_code == 401 and no_token.json()["error"]["code"] == "unauthenticated"
    forged = httpx.post(e2e.stack.step_url, json=body, headers={"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.x"})
    assert forged.status_code == 401


def test_bad_input_gets_a_clear_error_and_writes_nothing(e2e: E2E) -> None:
    auth = {"Authorization": "Bearer dev-token"}
    cases = [
        (e2e.http.post("/v1/agents/support/runs", content=b"{not json", headers={**auth, "Content-Type": "application/json"}),
         400, "invalid_json"),
        (e2e.http.post("/v1/agents/nobody/runs", json={"input": "hi"}, headers=auth), 404, "not_found"),
        (e2e.http.post("/v1/agents/support/runs", json={"input": "x" * 40_000}, headers=auth), 413, "payload_too_large"),
        (e2e.http.post("/v1/agents/support/runs", json={"input": "hi", "priority": 1}, headers=auth), 400,
         "invalid_argument"),
        (e2e.http.get("/v1/runs/run_doesnotexist", headers=auth), 404, "not_found"),
        (e2e.http.get("/v1/runs/run_x"), 401, "unauthenticated"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
    assert "priority" in cases[3][0].json()["error"]["message"]


def test_another_tenants_run_is_not_found_and_cancel_stops_a_run(e2e: E2E) -> None:
    run = e2e.client.start_run("ticker", "tick 400")
    other = e2e.http.get(f"/v1/runs/{run['run_id']}", headers={"Authorization": "Bearer acme-token"})
    assert other.status_code == 404
    cancelled = e2e.client.cancel(run["run_id"])
    assert cancelled["status"] == "cancelled"
    time.sleep(2)
    final = e2e.client.run(run["run_id"])
    assert final["status"] == "cancelled" and final["step"] < 400
    again = e2e.http.post(f"/v1/runs/{run['run_id']}:cancel", headers={"Authorization": "Bearer dev-token"})
    assert again.status_code == 409


def test_the_openapi_document_is_served(e2e: E2E) -> None:
    doc = e2e.http.get("/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and "/v1/agents/{agent}/runs" in doc["paths"]
