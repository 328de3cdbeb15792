"""The public HTTP API (``/v1``) in-process: the sample support agent on the in-memory runtime.

Every response these tests get is also checked against the OpenAPI document (see ``conftest``), and
every refused request is checked to have written nothing: no run, no event, no task.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from werkzeug.test import TestResponse

from agex.core.guard import DEFAULT_GUARDS
from agex.core.run import EventKind, RunStatus
from agex.testing.harness import InMemoryRuntime
from examples.support_agent import agent as support_agent
from tests.api.conftest import (
    ACME_TOKEN,
    FINAL_TEXT,
    MAX_BODY_BYTES,
    TOOL_ARGS,
    ApiClient,
    OpenApiChecker,
    make_api,
)

MAX_INPUT_BYTES = 32 * 1024


def error_of(response: TestResponse) -> tuple[int, str, str]:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], "an error message says what was wrong"
    return response.status_code, body["error"]["code"], body["error"]["message"]


def start(client: ApiClient, **kwargs: Any) -> dict[str, Any]:
    response = client.start(**kwargs)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def deliver_first_step(rt: InMemoryRuntime) -> None:
    """Deliver only the pending step-1 task: the run is then ``running`` with step 2 enqueued."""
    (task,) = rt.queue.pending()
    rt.deliver(task)
    rt.queue.drop(task)


def all_events(client: ApiClient, run_id: str) -> list[dict[str, Any]]:
    page = client.get(f"/v1/runs/{run_id}/events?page_size=1000").get_json()
    assert page["next_page_token"] is None
    return page["events"]


# --- health and agents -------------------------------------------------------------------------------


def test_healthz_needs_no_token(client: ApiClient) -> None:
    response = client.get("/healthz", token=None)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_list_agents(client: ApiClient) -> None:
    response = client.get("/v1/agents")
    assert response.status_code == 200
    assert [a["name"] for a in response.get_json()["agents"]] == ["support"]
    assert response.get_json()["agents"][0] == client.get("/v1/agents/support").get_json()


def test_get_agent_shows_tools_with_json_schema_parameters_and_no_secrets(client: ApiClient) -> None:
    response = client.get("/v1/agents/support")
    assert response.status_code == 200
    view = response.get_json()
    assert set(view) == {"name", "version", "description", "model", "identity", "tools", "limits", "approvals",
                         "operators", "fingerprint", "watch", "fallbacks", "guards"}
    assert [g["name"] for g in view["guards"]] == [g.use for g in DEFAULT_GUARDS]
    assert view["fingerprint"].startswith("sha256:") and view["watch"] == ["issue_refund.amount_usd", "refund_share"]
    assert view["fallbacks"] == ["gemini-2.5-flash-lite"]
    assert view["identity"] == "agent-support@test"
    assert view["approvals"] == []  # the sample agent holds no call for a human
    assert (view["name"], view["version"], view["model"]) == ("support", "1", "gemini-2.5-flash")
    assert view["description"] == support_agent.description
    assert view["limits"] == {"max_steps": 10, "max_tokens": 100_000, "max_cost_usd": 0.5,
                              "max_wall_time_s": support_agent.limits.max_wall_time_s, "max_repeated_calls": 5,
                              "max_context_tokens": 100_000, "max_steps_per_minute": 60}
    assert [t["name"] for t in view["tools"]] == ["lookup_order", "check_refund_policy", "issue_refund"]
    for tool in view["tools"]:
        assert set(tool) == {"name", "kind", "description", "idempotent", "parameters", "timeout_s", "secrets",
                             "limits"}
        assert tool["description"] and tool["idempotent"] is True and tool["kind"] == "python"
        assert tool["secrets"] == [] and tool["limits"] == {"max_concurrent": None, "per_second": None}
        Draft202012Validator.check_schema(tool["parameters"])
        assert tool["parameters"]["type"] == "object"
        parameters = Draft202012Validator(tool["parameters"])
        assert parameters.is_valid(TOOL_ARGS[tool["name"]])
        assert not parameters.is_valid({"order_id": "B-1"})
    issue = view["tools"][2]["parameters"]
    assert sorted(issue["required"]) == ["amount_usd", "order_id", "reason"]
    # the instructions (the agent's prompt) and the tool implementations are not part of the API
    raw = response.get_data(as_text=True)
    assert support_agent.instructions not in raw and "instructions" not in raw


# --- the life of a run -------------------------------------------------------------------------------


def test_start_run_accepts_it_queued_with_links_and_location(client: ApiClient, rt: InMemoryRuntime) -> None:
    response = client.start("Refund order A-1042, please.", extra={"metadata": {"ticket": "T-1"}})
    assert response.status_code == 202
    run = response.get_json()
    run_id = run["run_id"]
    assert run_id.startswith("run_")
    assert run["status"] == "queued" and run["step"] == 0
    assert (run["agent"], run["agent_version"]) == ("support", "1")
    assert run["input"] == "Refund order A-1042, please." and run["metadata"] == {"ticket": "T-1"}
    assert run["usage"] == {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "model_calls": 0}
    assert run["result"] is None and run["error"] is None
    assert run["links"] == {"self": f"/v1/runs/{run_id}", "events": f"/v1/runs/{run_id}/events",
                            "cancel": f"/v1/runs/{run_id}:cancel"}
    assert response.headers["Location"] == f"/v1/runs/{run_id}"
    assert "Idempotent-Replayed" not in response.headers
    # stored for the caller's tenant, one step task enqueued
    head = rt.store.get_run("dev", run_id)
    assert head is not None and head.principal == "dev@example.com"
    assert [(t.run_id, t.step) for t in rt.queue.pending()] == [(run_id, 1)]
    assert client.get(f"/v1/runs/{run_id}").get_json() == run


def test_content_type_with_charset_is_json(client: ApiClient) -> None:
    response = client.post("/v1/agents/support/runs", data=json.dumps({"input": "hi"}),
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 202


def test_input_of_exactly_the_limit_is_accepted(client: ApiClient) -> None:
    assert client.start("x" * MAX_INPUT_BYTES).status_code == 202


def test_links_use_the_public_base_url(rt: InMemoryRuntime, checker: OpenApiChecker) -> None:
    client = ApiClient(make_api(rt, base_url="https://agex.example.com/"), checker)
    response = client.start()
    run_id = response.get_json()["run_id"]
    assert response.headers["Location"] == f"https://agex.example.com/v1/runs/{run_id}"
    assert response.get_json()["links"]["cancel"] == f"https://agex.example.com/v1/runs/{run_id}:cancel"
    assert client.get("/v1/openapi.json", token=None).get_json()["servers"] == [{"url": "https://agex.example.com"}]


def test_a_driven_run_succeeds_with_usage_and_result(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    rt.drive()
    response = client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "succeeded"
    assert run["result"] == FINAL_TEXT and run["error"] is None
    assert run["step"] == 2  # step 1 calls the three tools, step 2 answers
    usage = run["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["cost_usd"] > 0
    assert usage["model_calls"] == 2
    assert not rt.queue.pending()


def test_a_running_run_shows_its_progress(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    deliver_first_step(rt)
    run = client.get(f"/v1/runs/{run_id}").get_json()
    assert (run["status"], run["step"], run["result"]) == ("running", 1, None)
    assert run["usage"]["model_calls"] == 1


def test_events_are_ordered(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    rt.drive()
    events = all_events(client, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["step"] for e in events] == sorted(e["step"] for e in events)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_created" and kinds[-1] == "run_finished"
    assert kinds.count("step_started") == 2
    assert [e["data"]["name"] for e in events if e["kind"] == "tool_result"] == list(TOOL_ARGS)
    assert set(kinds) <= {k.value for k in EventKind}
    assert events[0]["data"]["input"] == "Refund order A-1042, please."


def test_events_paginate(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    rt.drive()
    everything = all_events(client, run_id)
    n = len(everything)
    assert n > 5

    pages, token = [], None
    while True:
        query = "page_size=3" + (f"&page_token={token}" if token is not None else "")
        page = client.get(f"/v1/runs/{run_id}/events?{query}").get_json()
        pages.append(page["events"])
        token = page["next_page_token"]
        if token is None:
            break
        assert isinstance(token, str)
    assert [e for p in pages for e in p] == everything
    assert all(len(p) == 3 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 3

    # a page that ends exactly at the last event says so; one short of it points at the last
    exact = client.get(f"/v1/runs/{run_id}/events?page_size={n}").get_json()
    assert len(exact["events"]) == n and exact["next_page_token"] is None
    short = client.get(f"/v1/runs/{run_id}/events?page_size={n - 1}").get_json()
    assert short["next_page_token"] == str(everything[n - 2]["seq"])
    last = client.get(f"/v1/runs/{run_id}/events?page_token={short['next_page_token']}").get_json()
    assert last == {"events": [everything[-1]], "next_page_token": None}
    # past the end: an empty page
    assert client.get(f"/v1/runs/{run_id}/events?page_token={n}").get_json() == {"events": [],
                                                                                   "next_page_token": None}


def test_events_default_page_size_is_100(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    page = client.get(f"/v1/runs/{run_id}/events").get_json()
    assert len(page["events"]) == 1 and page["next_page_token"] is None
    assert client.get(f"/v1/runs/{run_id}/events?page_size=1000").status_code == 200


def test_cancel_a_running_run(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    deliver_first_step(rt)
    response = client.post(f"/v1/runs/{run_id}:cancel")
    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "cancelled" and run["run_id"] == run_id
    events = all_events(client, run_id)
    assert events[-1]["kind"] == "run_cancelled" and events[-1]["data"]["by"] == "dev@example.com"
    # the enqueued step 2 finds the run cancelled and does nothing
    rt.drive()
    assert client.get(f"/v1/runs/{run_id}").get_json()["status"] == "cancelled"
    assert all_events(client, run_id) == events


def test_cancel_a_queued_run_before_any_model_call(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = start(client)["run_id"]
    assert client.post(f"/v1/runs/{run_id}:cancel").get_json()["status"] == "cancelled"
    rt.drive()
    run = client.get(f"/v1/runs/{run_id}").get_json()
    assert run["status"] == "cancelled" and run["usage"]["model_calls"] == 0


def test_cancel_a_finished_run_is_a_conflict(client: ApiClient, rt: InMemoryRuntime,
                                             unchanged: Callable[[], Any]) -> None:
    run_id = start(client)["run_id"]
    rt.drive()
    with unchanged():
        status, code, message = error_of(client.post(f"/v1/runs/{run_id}:cancel"))
    assert (status, code) == (409, "conflict")
    assert "already succeeded" in message


def test_cancel_twice_is_a_conflict(client: ApiClient, unchanged: Callable[[], Any]) -> None:
    run_id = start(client)["run_id"]
    assert client.post(f"/v1/runs/{run_id}:cancel").status_code == 200
    with unchanged():
        assert error_of(client.post(f"/v1/runs/{run_id}:cancel"))[:2] == (409, "conflict")


# --- Idempotency-Key -----------------------------------------------------------------------------------


def test_same_key_and_body_replays_the_run(client: ApiClient, rt: InMemoryRuntime,
                                           snapshot: Callable[[], Any]) -> None:
    key = {"Idempotency-Key": "order-A-1042-refund"}
    first = client.start(headers=key, extra={"metadata": {"a": "1", "b": "2"}})
    after_first = snapshot()
    # the same request, its metadata in another order
    second = client.post("/v1/agents/support/runs", headers=key,
                         json={"metadata": {"b": "2", "a": "1"}, "input": "Refund order A-1042, please."})
    assert (first.status_code, second.status_code) == (202, 202)
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json() == first.get_json()
    assert second.headers["Location"] == first.headers["Location"]
    assert snapshot() == after_first
    assert len(after_first.runs) == 1 and len(rt.queue.pending()) == 1


def test_a_replay_returns_the_run_as_it_is_now(client: ApiClient, rt: InMemoryRuntime) -> None:
    key = {"Idempotency-Key": "k-1"}
    run_id = start(client, headers=key)["run_id"]
    rt.drive()
    replay = client.start(headers=key)
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert (replay.get_json()["run_id"], replay.get_json()["status"]) == (run_id, "succeeded")
    assert not rt.queue.pending(), "a replay of a finished run enqueues nothing"


def test_an_omitted_metadata_equals_an_empty_one(client: ApiClient) -> None:
    key = {"Idempotency-Key": "k-2"}
    first = client.post("/v1/agents/support/runs", headers=key, json={"input": "hi"})
    second = client.post("/v1/agents/support/runs", headers=key, json={"input": "hi", "metadata": {}})
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json()["run_id"] == first.get_json()["run_id"]


@pytest.mark.parametrize("body", [
    pytest.param({"input": "Refund order A-3310 instead."}, id="other-input"),
    pytest.param({"input": "Refund order A-1042, please.", "metadata": {"ticket": "T-9"}}, id="other-metadata"),
])
def test_same_key_with_another_body_is_a_conflict(client: ApiClient, body: dict[str, Any],
                                                  unchanged: Callable[[], Any]) -> None:
    key = {"Idempotency-Key": "order-A-1042-refund"}
    start(client, headers=key)
    with unchanged():
        status, code, message = error_of(client.post("/v1/agents/support/runs", headers=key, json=body))
    assert (status, code) == (409, "conflict")
    assert "Idempotency-Key" in message


def test_same_key_in_another_tenant_is_another_run(client: ApiClient, rt: InMemoryRuntime) -> None:
    key = {"Idempotency-Key": "shared-key"}
    dev_run = start(client, headers=key)["run_id"]
    acme = client.start(headers=key, token=ACME_TOKEN)
    assert acme.status_code == 202 and "Idempotent-Replayed" not in acme.headers
    acme_run = acme.get_json()["run_id"]
    assert acme_run != dev_run
    assert rt.store.get_run("dev", dev_run) is not None and rt.store.get_run("acme", acme_run) is not None
    assert len(rt.queue.pending()) == 2
    assert client.get(f"/v1/runs/{acme_run}").status_code == 404
    assert client.get(f"/v1/runs/{dev_run}", token=ACME_TOKEN).status_code == 404


def test_without_a_key_every_request_is_a_new_run(client: ApiClient, rt: InMemoryRuntime) -> None:
    assert start(client)["run_id"] != start(client)["run_id"]
    assert len(rt.queue.pending()) == 2


# --- refused requests: the error shape, the status, and nothing written -------------------------------

RUN, ACME_RUN = "{run}", "{acme_run}"
JSON = "application/json"
RUNS = "/v1/agents/support/runs"


def _json(body: Any) -> dict[str, Any]:
    return {"data": json.dumps(body, ensure_ascii=False).encode(), "content_type": JSON}


def _key(value: str) -> dict[str, Any]:
    return {**_json({"input": "hi"}), "headers": {"Idempotency-Key": value}}


# (method, path, request kwargs, status, code, a fragment of the message)
BAD_REQUESTS = [
    # the body
    pytest.param("POST", RUNS, {"data": '{"input": "hi"', "content_type": JSON}, 400, "invalid_json",
                 "not valid JSON", id="malformed-json"),
    pytest.param("POST", RUNS, {"data": "", "content_type": JSON}, 400, "invalid_json", "not valid JSON",
                 id="empty-body"),
    pytest.param("POST", RUNS, {"data": b'{"input": "\xff"}', "content_type": JSON}, 400, "invalid_json",
                 "not valid JSON", id="not-utf8"),
    pytest.param("POST", RUNS, {"data": '{"input": "hi"}', "content_type": "text/plain"}, 415,
                 "unsupported_media_type", "application/json", id="text-plain"),
    pytest.param("POST", RUNS, {"data": {"input": "hi"}}, 415, "unsupported_media_type", "application/json",
                 id="form-encoded"),
    pytest.param("POST", RUNS, {"data": b'{"input": "hi"}'}, 415, "unsupported_media_type", "application/json",
                 id="no-content-type"),
    pytest.param("POST", RUNS, _json({"input": "x" * (MAX_INPUT_BYTES + 1)}), 413, "payload_too_large",
                 f"the limit is {MAX_INPUT_BYTES} bytes", id="input-over-32KiB"),
    pytest.param("POST", RUNS, _json({"input": "é" * (MAX_INPUT_BYTES // 2 + 1)}), 413, "payload_too_large",
                 f"the limit is {MAX_INPUT_BYTES} bytes", id="input-over-32KiB-in-utf8-bytes"),
    pytest.param("POST", RUNS, _json({"input": "x" * (MAX_BODY_BYTES + 1)}), 413, "payload_too_large",
                 f"the limit is {MAX_BODY_BYTES}", id="body-over-limit"),
    pytest.param("POST", RUNS, {"data": "x" * (MAX_BODY_BYTES + 1), "content_type": "text/plain"}, 413,
                 "payload_too_large", "request body", id="body-over-limit-checked-before-type"),
    pytest.param("POST", RUNS, _json({"input": "hi", "priority": "high"}), 400, "invalid_argument",
                 "priority: unknown field", id="unknown-field"),
    pytest.param("POST", RUNS, _json({}), 400, "invalid_argument", "input: Field required", id="missing-input"),
    pytest.param("POST", RUNS, _json({"metadata": {"a": "b"}}), 400, "invalid_argument", "input",
                 id="only-metadata"),
    pytest.param("POST", RUNS, _json({"input": ""}), 400, "invalid_argument", "input", id="empty-input"),
    pytest.param("POST", RUNS, _json({"input": 42}), 400, "invalid_argument", "input", id="input-not-a-string"),
    pytest.param("POST", RUNS, _json({"input": None}), 400, "invalid_argument", "input", id="input-null"),
    pytest.param("POST", RUNS, _json(["hi"]), 400, "invalid_argument", "body", id="body-an-array"),
    pytest.param("POST", RUNS, _json("hi"), 400, "invalid_argument", "body", id="body-a-string"),
    pytest.param("POST", RUNS, _json({"input": "hi", "metadata": ["a"]}), 400, "invalid_argument", "metadata",
                 id="metadata-not-an-object"),
    pytest.param("POST", RUNS, _json({"input": "hi", "metadata": {"n": 1}}), 400, "invalid_argument", "metadata",
                 id="metadata-value-not-a-string"),
    pytest.param("POST", RUNS, _json({"input": "hi", "metadata": {f"k{i}": "v" for i in range(33)}}), 400,
                 "invalid_argument", "at most 32 items", id="metadata-33-entries"),
    pytest.param("POST", RUNS, _json({"input": "hi", "metadata": {"k" * 65: "v"}}), 400, "invalid_argument",
                 "at most 64 characters", id="metadata-key-too-long"),
    pytest.param("POST", RUNS, _json({"input": "hi", "metadata": {"": "v"}}), 400, "invalid_argument",
                 "at least 1 character", id="metadata-key-empty"),
    pytest.param("POST", RUNS, _json({"input": "hi", "metadata": {"k": "v" * 513}}), 400, "invalid_argument",
                 "at most 512 characters", id="metadata-value-too-long"),
    pytest.param("POST", RUNS, _key("k" * 256), 400, "invalid_argument", "Idempotency-Key",
                 id="idempotency-key-too-long"),
    pytest.param("POST", RUNS, _key(""), 400, "invalid_argument", "Idempotency-Key", id="idempotency-key-empty"),
    pytest.param("POST", RUNS, _key("a\tb"), 400, "invalid_argument", "Idempotency-Key",
                 id="idempotency-key-not-printable"),
    # unknown things
    pytest.param("POST", "/v1/agents/nope/runs", _json({"input": "hi"}), 404, "not_found", "unknown agent 'nope'",
                 id="unknown-agent"),
    pytest.param("POST", "/v1/agents/nope/runs", {"data": "{", "content_type": JSON}, 404, "not_found",
                 "unknown agent", id="unknown-agent-before-the-body"),
    pytest.param("GET", "/v1/agents/nope", {}, 404, "not_found", "agents here: support", id="get-unknown-agent"),
    pytest.param("GET", "/v1/runs/run_nope", {}, 404, "not_found", "'run_nope' not found", id="unknown-run"),
    pytest.param("GET", "/v1/runs/run_nope/events", {}, 404, "not_found", "not found", id="unknown-run-events"),
    pytest.param("POST", "/v1/runs/run_nope:cancel", {}, 404, "not_found", "not found", id="unknown-run-cancel"),
    pytest.param("GET", "/v1/runs/" + "r" * 129, {}, 404, "not_found", "not found", id="run-id-too-long"),
    pytest.param("GET", f"/v1/runs/{ACME_RUN}", {}, 404, "not_found", "not found", id="other-tenant-run"),
    pytest.param("GET", f"/v1/runs/{ACME_RUN}/events", {}, 404, "not_found", "not found",
                 id="other-tenant-events"),
    pytest.param("POST", f"/v1/runs/{ACME_RUN}:cancel", {}, 404, "not_found", "not found",
                 id="other-tenant-cancel"),
    # credentials
    *[pytest.param(method, path, {"token": None, **kwargs}, 401, "unauthenticated", "Authorization: Bearer",
                   id=f"no-token-{name}") for name, method, path, kwargs in [
        ("list-agents", "GET", "/v1/agents", {}),
        ("get-agent", "GET", "/v1/agents/support", {}),
        ("start-run", "POST", RUNS, _json({"input": "hi"})),
        ("get-run", "GET", f"/v1/runs/{RUN}", {}),
        ("events", "GET", f"/v1/runs/{RUN}/events", {}),
        ("cancel", "POST", f"/v1/runs/{RUN}:cancel", {}),
        ("malformed-body", "POST", RUNS, {"data": "{", "content_type": JSON}),
        ("unknown-agent", "POST", "/v1/agents/nope/runs", _json({"input": "hi"})),
    ]],
    pytest.param("GET", "/v1/agents", {"token": "wrong-token"}, 401, "unauthenticated", "unknown bearer token",
                 id="unknown-token"),
    pytest.param("GET", f"/v1/runs/{RUN}", {"token": "dev-token-but-longer"}, 401, "unauthenticated",
                 "unknown bearer token", id="token-with-known-prefix"),
    pytest.param("GET", "/v1/agents", {"token": None, "headers": {"Authorization": "Basic ZGV2OmRldg=="}}, 401,
                 "unauthenticated", "Bearer", id="basic-auth"),
    pytest.param("GET", "/v1/agents", {"token": None, "headers": {"Authorization": "Bearer "}}, 401,
                 "unauthenticated", "Bearer", id="empty-bearer"),
    # routes and methods
    pytest.param("GET", "/v1/nope", {}, 404, "not_found", "no route for GET /v1/nope", id="unknown-route"),
    pytest.param("GET", "/v2/agents", {}, 404, "not_found", "openapi.json", id="unknown-version"),
    pytest.param("GET", "/", {}, 404, "not_found", "no route", id="root"),
    pytest.param("POST", "/v1/runs", _json({"input": "hi"}), 405, "method_not_allowed", "use GET", id="post-runs"),
    pytest.param("POST", f"/v1/runs/{RUN}:pause", {}, 404, "not_found", "no route", id="unknown-verb"),
    pytest.param("GET", "/v1/nope", {"token": None}, 404, "not_found", "no route", id="unknown-route-no-token"),
    pytest.param("DELETE", f"/v1/runs/{RUN}", {}, 405, "method_not_allowed", "use GET", id="delete-run"),
    pytest.param("GET", f"/v1/runs/{RUN}:cancel", {}, 405, "method_not_allowed", "use POST", id="get-cancel"),
    pytest.param("POST", f"/v1/runs/{RUN}", {}, 405, "method_not_allowed", "use GET", id="post-run"),
    pytest.param("PUT", "/v1/agents", {}, 405, "method_not_allowed", "use GET", id="put-agents"),
    pytest.param("GET", RUNS, {}, 405, "method_not_allowed", "use POST", id="get-start-run"),
    pytest.param("PATCH", f"/v1/runs/{RUN}", {"token": None}, 405, "method_not_allowed", "use GET",
                 id="wrong-method-no-token"),
    # pagination
    *[pytest.param("GET", f"/v1/runs/{RUN}/events?{query}", {}, 400, "invalid_argument", query.split("=")[0],
                   id=f"events-{query}") for query in [
        "page_size=0", "page_size=1001", "page_size=-5", "page_size=abc", "page_size=1.5", "page_size=",
        "page_token=abc", "page_token=-1", "page_token=1.5",
    ]],
    pytest.param("GET", f"/v1/runs/{ACME_RUN}/events?page_size=0", {}, 400, "invalid_argument", "page_size",
                 id="events-bad-page-size-of-other-tenant"),
]


@pytest.fixture
def runs(client: ApiClient, rt: InMemoryRuntime) -> dict[str, str]:
    """A dev run, driven to the end, and a queued acme run: something the bad requests must not touch."""
    dev = start(client)["run_id"]
    rt.drive()
    acme = start(client, token=ACME_TOKEN)["run_id"]
    return {"run": dev, "acme_run": acme}


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code", "fragment"), BAD_REQUESTS)
def test_a_bad_request_gets_an_error_and_writes_nothing(
        client: ApiClient, runs: dict[str, str], unchanged: Callable[[], Any], method: str, path: str,
        kwargs: dict[str, Any], status: int, code: str, fragment: str) -> None:
    path = path.format(**runs)
    with unchanged():
        response = client.open(method, path, **kwargs)
    assert error_of(response)[:2] == (status, code), response.get_data(as_text=True)
    assert fragment in error_of(response)[2]


@pytest.mark.parametrize("suffix", ["", "/events", ":cancel"])
def test_another_tenants_run_is_indistinguishable_from_a_missing_one(
        client: ApiClient, runs: dict[str, str], suffix: str) -> None:
    method = "POST" if suffix == ":cancel" else "GET"
    theirs = client.open(method, f"/v1/runs/{runs['acme_run']}{suffix}")
    missing_id = "run_" + "z" * (len(runs["acme_run"]) - 4)
    missing = client.open(method, f"/v1/runs/{missing_id}{suffix}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.headers == missing.headers
    assert theirs.get_data(as_text=True).replace(runs["acme_run"], missing_id) == missing.get_data(as_text=True)
    # and the owner still sees it, untouched
    assert client.get(f"/v1/runs/{runs['acme_run']}", token=ACME_TOKEN).get_json()["status"] == "queued"


# --- implementation bugs (see the reasons) ----------------------------------------------------------


def test_deeply_nested_json_is_invalid_json(client: ApiClient, unchanged: Callable[[], Any]) -> None:
    depth = 5000
    with unchanged():
        response = client.post(RUNS, data="[" * depth + "]" * depth, content_type=JSON)
    assert error_of(response)[:2] == (400, "invalid_json")


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        chunk = super().readline(size)
        self.bytes_read += len(chunk)
        return chunk


def test_a_chunked_body_is_not_read_past_the_limit(client: ApiClient, unchanged: Callable[[], Any]) -> None:
    stream = _CountingStream(json.dumps({"input": "x" * (4 * 1024 * 1024)}).encode())
    with unchanged():
        response = client.post(RUNS, input_stream=stream, headers={"Transfer-Encoding": "chunked",
                                                                   "Content-Type": JSON},
                               environ_overrides={"wsgi.input_terminated": True})
    assert error_of(response)[:2] == (413, "payload_too_large")
    assert stream.bytes_read <= MAX_BODY_BYTES + 64 * 1024


def test_a_401_says_how_to_authenticate(client: ApiClient) -> None:
    response = client.get("/v1/agents", token=None)
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_a_405_lists_the_allowed_methods(client: ApiClient, runs: dict[str, str]) -> None:
    response = client.get(f"/v1/runs/{runs['run']}:cancel")
    assert response.status_code == 405
    assert response.headers.get("Allow") == "POST"


def _expired_run(client: ApiClient, rt: InMemoryRuntime) -> str:
    run_id = start(client)["run_id"]
    rt.clock.advance(8 * 24 * 3600)  # past the 7-day retention, before the sweep noticed
    assert client.get(f"/v1/runs/{run_id}").get_json()["status"] == "expired"
    return run_id


def test_cancel_a_run_shown_as_expired_is_a_conflict(client: ApiClient, rt: InMemoryRuntime,
                                                     unchanged: Callable[[], Any]) -> None:
    run_id = _expired_run(client, rt)
    with unchanged():
        response = client.post(f"/v1/runs/{run_id}:cancel")
    assert error_of(response)[:2] == (409, "conflict")


def test_an_expired_run_says_why_before_and_after_the_sweep(client: ApiClient, rt: InMemoryRuntime) -> None:
    run_id = _expired_run(client, rt)
    before = client.get(f"/v1/runs/{run_id}").get_json()
    rt.service.sweep()
    after = client.get(f"/v1/runs/{run_id}").get_json()
    assert after["status"] == RunStatus.expired and after["error"]["code"] == "expired"
    assert before["error"] == after["error"]


def test_an_agent_whose_mcp_server_is_down_is_still_listed(checker: Any) -> None:
    """The listing, an agent and its versions answer while an MCP server cannot be reached: the tool without its
    schema, the fingerprint (which covers the schema) unknown."""
    import socket

    from agex.core.agent import Agent
    from agex.tools.mcp import HttpServer, mcp_tools
    from tests.api.conftest import ApiClient, make_api

    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]  # closed again: nothing listens there
    notes = Agent(name="notes", instructions="You keep notes.",
                  tools=mcp_tools(HttpServer(f"http://127.0.0.1:{port}/mcp"), ["add_note"], timeout_s=2))
    rt = InMemoryRuntime([support_agent, notes], lambda request: "ok")  # type: ignore[arg-type]
    client = ApiClient(make_api(rt), checker)
    listed = client.get("/v1/agents")
    assert listed.status_code == 200
    view = next(a for a in listed.get_json()["agents"] if a["name"] == "notes")
    assert view["fingerprint"] is None and view["tools"][0]["parameters"] == {}
    assert client.get("/v1/agents/notes").status_code == 200
    (version,) = client.get("/v1/agents/notes/versions").get_json()["versions"]
    assert version["fingerprint"] is None and version["served"]
