"""Tools on the local stack: credentials from the Secret Manager emulator read as each agent's identity
and scrubbed everywhere, an OpenAPI HTTP tool, MCP tools over stdio and streamable HTTP, limits held
across two step-function processes, and reconciling a call a crash left uncertain."""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.iam.v1 import iam_policy_pb2, policy_pb2

from agex.dev.emulators.secretmanager.client import make_client
from agex.dev.stack import ADMIN

from . import agents as test_agents
from .conftest import E2E, SECRETS


def _disguises(value: str) -> list[str]:
    return [value, base64.b64encode(value.encode()).decode(), value.encode().hex(), urllib.parse.quote(value)]


def _everything_seen(e2e: E2E, run_id: str) -> str:
    """The run's events, every model request body, and every line the functions wrote (logs and spans)."""
    events = repr(e2e.events(run_id))
    requests = repr(e2e.model_requests())
    logs = "".join((e2e.stack.config.workdir / "logs" / f"{f}.log").read_text(errors="replace")
                   for f in ("api", "step", "approvals"))
    return events + requests + logs


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def test_a_tool_secret_never_reaches_the_model_events_logs_or_traces(e2e: E2E) -> None:
    run = e2e.client.start_run("vault-a", "use the key")
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded", final
    result = [e for e in e2e.events(run["run_id"]) if e["kind"] == "tool_result"][0]["data"]["output"]
    assert result["plain"] == "[secret:vault-a-key]" and "[secret:vault-a-key]" in result["url"]
    assert result["fingerprint"] == _fingerprint(SECRETS["vault-a-key"])  # the tool did get the real key
    seen = _everything_seen(e2e, run["run_id"])
    assert '"name": "leak_key"' in seen or "leak_key" in seen  # the model request bodies were kept
    for disguise in _disguises(SECRETS["vault-a-key"]):
        assert disguise not in seen, f"the secret leaked as {disguise!r}"


def test_an_agent_whose_grant_is_missing_fails_naming_the_secret_and_the_grant(e2e: E2E) -> None:
    # agent A's identity loses its grant (say someone changed IAM by hand); Secret Manager refuses it
    admin = make_client(e2e.stack.secrets_host, ADMIN)
    resource = f"projects/{e2e.stack.config.project}/secrets/vault-a-key"
    policy = admin.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
    admin.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy_pb2.Policy(
        bindings=[], etag=policy.etag)))
    try:
        time.sleep(2.5)  # past the secret cache of the stack (AGEX_SECRET_CACHE_SECONDS=2)
        run = e2e.client.start_run("vault-a", "use the key")
        final = e2e.wait(run["run_id"])
        assert final["status"] == "failed" and final["error"]["code"] == "secret_access_denied"
        message = final["error"]["message"]
        assert "vault-a-key" in message and "agent-vault-a@" in message and "secretAccessor" in message
    finally:
        current = admin.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
        admin.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy_pb2.Policy(
            bindings=policy.bindings, etag=current.etag)))


def test_agent_b_reads_only_its_own_secret_and_a_rotation_is_picked_up(e2e: E2E) -> None:
    run = e2e.client.start_run("vault-b", "use b")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    first = [e for e in e2e.events(run["run_id"]) if e["kind"] == "tool_result"][0]["data"]["output"]
    assert first["fingerprint"] == _fingerprint(SECRETS["vault-b-key"])
    # B's identity cannot read A's secret (A's tool cannot be given B's either: the fleet check refuses it)
    b_client = make_client(e2e.stack.secrets_host, f"agent-vault-b@{e2e.stack.config.project}.iam.gserviceaccount.com")
    with pytest.raises(gexc.PermissionDenied):
        b_client.access_secret_version(name=f"projects/{e2e.stack.config.project}/secrets/vault-a-key/versions/latest")
    # rotate B's key: a new version, picked up once the cache time has passed
    admin = make_client(e2e.stack.secrets_host, ADMIN)
    rotated = "sk-live-rotated-77aa"
    admin.add_secret_version(parent=f"projects/{e2e.stack.config.project}/secrets/vault-b-key",
                             payload={"data": rotated.encode()})
    time.sleep(2.5)
    run = e2e.client.start_run("vault-b", "use b again")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    second = [e for e in e2e.events(run["run_id"]) if e["kind"] == "tool_result"][0]["data"]["output"]
    assert second["fingerprint"] == _fingerprint(rotated)


def test_an_openapi_http_tool_calls_with_its_credential_from_secret_manager(e2e: E2E) -> None:
    run = e2e.client.start_run("fetcher", "What is the weather in Lisbon tomorrow?")
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded", final
    (request,) = [r for r in e2e.weather.requests if r["path"] == "/forecast/Lisbon"]
    assert request["auth"] == f"Bearer {SECRETS['weather-token']}" and request["args"] == {"units": "metric"}
    assert request["idempotency_key"].startswith(run["run_id"] + ":")
    output = [e for e in e2e.events(run["run_id"]) if e["kind"] == "tool_result"][0]["data"]["output"]
    assert output["forecast"] == "sunny, 24 C"
    # the API echoed the token back; it was scrubbed before anything stored it
    assert output["debug"]["authorization"] == "Bearer [secret:weather-token]"
    assert SECRETS["weather-token"] not in _everything_seen(e2e, run["run_id"])
    view = e2e.client._call("GET", "/v1/agents/fetcher")
    (tool,) = view["tools"]
    assert tool["kind"] == "http" and tool["secrets"] == ["weather-token"] and "city" in tool["parameters"]["properties"]


def test_mcp_tools_over_stdio_and_streamable_http(e2e: E2E) -> None:
    run = e2e.client.start_run("notes", "keep two notes")
    final = e2e.wait(run["run_id"], timeout=120)
    assert final["status"] == "succeeded", final
    results = [e["data"] for e in e2e.events(run["run_id"]) if e["kind"] == "tool_result"]
    assert [r["name"] for r in results] == ["local_add_note", "remote_add_note"]
    assert all(r["ok"] for r in results)
    assert "buy milk" in repr(results[0]["output"]) and "call mom" in repr(results[1]["output"])
    view = e2e.client._call("GET", "/v1/agents/notes")
    assert {t["name"]: t["kind"] for t in view["tools"]} == {"local_add_note": "mcp", "remote_add_note": "mcp"}


def test_a_tool_limit_holds_across_two_step_processes_and_many_runs(e2e: E2E) -> None:
    runs = [e2e.client.start_run("limited", f"look up item{i}")["run_id"] for i in range(8)]
    for run_id in runs:
        assert e2e.wait(run_id, timeout=180)["status"] == "succeeded"
    calls = []
    for run_id in runs:
        (detail,) = test_agents.effects(run_id, "slow_lookup")
        start, end, pid = detail.split(":")
        calls.append((float(start), float(end), pid))
    calls.sort()
    for (_, end, _), (start, _, _) in zip(calls, calls[1:], strict=False):
        assert start >= end - 0.05, "two calls of a max_concurrent=1 tool overlapped"
    # the step function runs two worker processes here; which of them serves which call is gunicorn's
    # choice, so the test does not insist both did (tests/conformance/test_limiter_processes.py pins
    # two processes contending for one slot)
    waited = [e for run_id in runs for e in e2e.events(run_id) if e["kind"] == "tool_deferred"]
    assert waited, "some calls had to wait for the limit"


def _reconciliation(e2e: E2E, run_id: str) -> dict[str, Any]:
    e2e.wait_status(run_id, "waiting_approval", timeout=120)
    (approval,) = [a for a in e2e.manager.approvals("pending") if a["run_id"] == run_id]
    return approval


def test_a_crash_inside_a_non_idempotent_tool_asks_a_human_and_done_is_not_repeated(e2e: E2E) -> None:
    e2e.arm("step.after_tool")
    run = e2e.client.start_run("careful", "wire acme 500")
    approval = _reconciliation(e2e, run["run_id"])
    assert approval["kind"] == "reconcile" and approval["tool"] == "wire_money"
    assert test_agents.effects(run["run_id"], "wire_money") == ["acme:500"]
    e2e.manager.decide(approval["approval_id"], "done", comment="the bank shows the transfer")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "wire_money") == ["acme:500"]


def test_a_crash_inside_a_non_idempotent_tool_reconciled_as_retry_calls_it_again(e2e: E2E) -> None:
    e2e.arm("step.after_tool")
    run = e2e.client.start_run("careful", "wire globex 20")
    approval = _reconciliation(e2e, run["run_id"])
    e2e.manager.decide(approval["approval_id"], "retry", comment="the bank has no record")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "wire_money") == ["globex:20", "globex:20"]
