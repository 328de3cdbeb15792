"""``/v1/approvals``: list and read a tenant's approvals, and submit decisions.

Approvals are seeded through the store (``conftest.seed_approval``), as the engine writes them, so these
tests do not depend on the engine. Deciding only publishes a ``DecisionMessage`` (the ``approvals``
function applies it): a submitted decision writes nothing to the store, and a refused one publishes
nothing either.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Request

from agex.cli import main as cli_main
from agex.cli import timeline
from agex.cli.client import Client
from agex.core.agent import Agent
from agex.core.approval import DECISIONS_TOPIC, REDACTED, Approval, ApprovalPolicy, ApprovalStatus, Condition
from agex.core.run import RunStatus
from agex.ports.checkpoint_store import Mutation
from agex.testing import TestModel
from agex.testing.harness import InMemoryRuntime
from examples.support_agent import agent as support_agent
from tests.api.conftest import (
    ACME_TOKEN,
    ANA_TOKEN,
    APPROVERS,
    FINAL_TEXT,
    INTERN_TOKEN,
    LEAD_TOKEN,
    MAX_BODY_BYTES,
    REFUND_ARGS,
    SECRET_REASON,
    TOOL_ARGS,
    ApiClient,
    seed_approval,
)
from tests.api.test_public_api import error_of

JSON = "application/json"
APPROVE = {"decision": "approve"}
VIEW_FIELDS = {"approval_id", "kind", "resolution", "run_id", "agent", "step", "tool", "arguments", "reason", "approvers", "four_eyes",
               "allow_edits", "on_expiry", "requested_by", "status", "created_at", "expires_at", "decision_id", "decided_by",
               "decided_at", "comment", "edited_arguments", "late_decisions", "late_result", "links"}
REFUND_POLICY = ApprovalPolicy(
    tool="issue_refund", when=(Condition(field="amount_usd", op="gt", value=50),), approvers=APPROVERS,
    allow_edits=True, editable=("amount_usd", "reason"), expires_after_s=3600, redact=("reason",),
    reason="Refunds over $50 need a human.")
GUARDED = Agent(**{**dict(support_agent), "approvals": (REFUND_POLICY,)})


@pytest.fixture
def rt() -> InMemoryRuntime:
    """The support agent with an approval policy on refunds; nothing here runs its model."""
    return InMemoryRuntime([GUARDED], TestModel(FINAL_TEXT, args_for=lambda name: TOOL_ARGS[name]))


def decisions(rt: InMemoryRuntime) -> list[dict[str, Any]]:
    return [m.message for m in rt.bus.on(DECISIONS_TOPIC)]


def path(approval: Approval) -> str:
    return f"/v1/approvals/{approval.approval_id}"


def decide(client: ApiClient, approval: Approval, body: Any = None, *, token: str = LEAD_TOKEN,
           key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path(approval), json=APPROVE if body is None else body, token=token, headers=headers)


def settle(rt: InMemoryRuntime, approval: Approval, **fields: Any) -> Approval:
    """Apply a decision as the ``approvals`` function would: the approval and its run in one commit."""
    settled = approval.model_copy(update={"decided_by": "lead@example.com", "decided_at": rt.clock.now(), **fields})
    rt.store.update_run(approval.tenant, approval.run_id, lambda h: Mutation(
        h.model_copy(update={"status": RunStatus.queued, "approval_id": None, "wake_at": None}), [],
        approvals=[settled]))
    return settled


# --- the agent's policies ------------------------------------------------------------------------------


def test_the_agent_shows_its_approval_policies(client: ApiClient) -> None:
    view = client.get("/v1/agents/support").get_json()
    assert view["approvals"] == [{
        "tool": "issue_refund", "when": [{"field": "amount_usd", "op": "gt", "value": 50}],
        "approvers": ["lead@example.com", "*@finance.example.com"], "four_eyes": True, "allow_edits": True,
        "expires_after_s": 3600, "on_expiry": "reject", "redact": ["reason"],
        "reason": "Refunds over $50 need a human."}]
    assert client.get("/v1/agents").get_json()["agents"] == [view]


# --- list ----------------------------------------------------------------------------------------------


def test_list_shows_every_status_oldest_first_and_filters(client: ApiClient, rt: InMemoryRuntime) -> None:
    seeded = []
    for status in ["pending", "approved", "pending", "rejected", "cancelled", "expired"]:
        seeded.append(seed_approval(rt, status=status))
        rt.clock.advance(60)
    everything = client.get("/v1/approvals").get_json()
    assert [a["approval_id"] for a in everything["approvals"]] == [a.approval_id for a in seeded]
    assert everything["next_page_token"] is None
    for status in ApprovalStatus:
        page = client.get(f"/v1/approvals?status={status.value}").get_json()
        assert [a["approval_id"] for a in page["approvals"]] == [
            a.approval_id for a in seeded if a.status == status], status
    assert {a["status"] for a in client.get("/v1/approvals?status=pending").get_json()["approvals"]} == {"pending"}


def test_an_empty_list(client: ApiClient) -> None:
    assert client.get("/v1/approvals").get_json() == {"approvals": [], "next_page_token": None}


def test_list_paginates_with_opaque_tokens(client: ApiClient, rt: InMemoryRuntime) -> None:
    # two pairs share a created_at: the order (and the token) breaks ties by approval id
    for advance in [0, 0, 10, 10, 0, 10]:
        seed_approval(rt)
        rt.clock.advance(advance)
    everything = client.get("/v1/approvals").get_json()["approvals"]
    assert len(everything) == 6

    pages, token = [], None
    while True:
        query = "page_size=2" + (f"&page_token={token}" if token is not None else "")
        page = client.get(f"/v1/approvals?{query}").get_json()
        pages.append(page["approvals"])
        token = page["next_page_token"]
        if token is None:
            break
        assert isinstance(token, str) and "apr_" not in token  # opaque: not an id to build on
    assert [a for p in pages for a in p] == everything
    assert [len(p) for p in pages] == [2, 2, 2]
    # a page ending exactly at the end says so
    assert client.get("/v1/approvals?page_size=6").get_json()["next_page_token"] is None
    # a token keeps working after more approvals are requested: they come after it
    first = client.get("/v1/approvals?page_size=5").get_json()
    rt.clock.advance(60)
    late = seed_approval(rt)
    rest = client.get(f"/v1/approvals?page_token={first['next_page_token']}").get_json()
    assert [a["approval_id"] for a in rest["approvals"]] == [everything[5]["approval_id"], late.approval_id]


def test_pagination_within_a_status(client: ApiClient, rt: InMemoryRuntime) -> None:
    pending = []
    for i in range(5):
        approval = seed_approval(rt, status="pending" if i % 2 == 0 else "approved")
        pending += [approval.approval_id] if approval.status == "pending" else []
        rt.clock.advance(1)
    first = client.get("/v1/approvals?status=pending&page_size=2").get_json()
    rest = client.get(f"/v1/approvals?status=pending&page_token={first['next_page_token']}").get_json()
    assert [a["approval_id"] for a in first["approvals"] + rest["approvals"]] == pending
    assert rest["next_page_token"] is None


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("query", "fragment"), [
    pytest.param("status=nope", "status must be one of pending, approved, rejected, expired, cancelled",
                 id="unknown-status"),
    pytest.param("status=", "status must be one of", id="empty-status"),
    pytest.param("status=PENDING", "status must be one of", id="status-case"),
    pytest.param("page_size=0", "page_size", id="page-size-0"),
    pytest.param("page_size=1001", "page_size", id="page-size-over"),
    pytest.param("page_size=x", "page_size", id="page-size-not-a-number"),
    pytest.param("page_token=", "page_token", id="empty-token"),
    pytest.param("page_token=abc", "page_token", id="not-base64-json"),
    pytest.param("page_token=%FF%FE", "page_token", id="not-ascii"),
    pytest.param("page_token=12", "page_token", id="an-events-token"),
    pytest.param(f"page_token={_token(['2026-01-01T00:00:00+00:00'])}", "page_token", id="one-element"),
    pytest.param(f"page_token={_token(['2026-01-01T00:00:00', 'apr_x'])}", "page_token", id="naive-time"),
    pytest.param(f"page_token={_token(['yesterday', 'apr_x'])}", "page_token", id="not-a-time"),
    pytest.param(f"page_token={_token(['2026-01-01T00:00:00+00:00', 7])}", "page_token", id="id-not-a-string"),
    pytest.param(f"page_token={_token({'a': 1, 'b': 2})}", "page_token", id="an-object"),
    pytest.param(f"page_token={_token(5)}", "page_token", id="a-number"),
    pytest.param(f"page_token={_token([[], 'apr_x'])}", "page_token", id="time-not-a-string"),
])
def test_a_bad_list_query_is_a_400(client: ApiClient, rt: InMemoryRuntime, unchanged: Callable[[], Any],
                                   query: str, fragment: str) -> None:
    seed_approval(rt)
    with unchanged():
        status, code, message = error_of(client.get(f"/v1/approvals?{query}"))
    assert (status, code) == (400, "invalid_argument")
    assert fragment in message


def test_a_tenant_lists_only_its_approvals(client: ApiClient, rt: InMemoryRuntime) -> None:
    ours = seed_approval(rt)
    theirs = seed_approval(rt, tenant="acme", principal="ops@acme.test")
    assert [a["approval_id"] for a in client.get("/v1/approvals").get_json()["approvals"]] == [ours.approval_id]
    acme = client.get("/v1/approvals", token=ACME_TOKEN).get_json()["approvals"]
    assert [a["approval_id"] for a in acme] == [theirs.approval_id]


# --- get -----------------------------------------------------------------------------------------------


def test_get_shows_the_redacted_call_and_never_the_raw_arguments(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    response = client.get(path(approval))
    assert response.status_code == 200
    view = response.get_json()
    assert set(view) == VIEW_FIELDS
    assert view["arguments"] == {"order_id": "A-1042", "amount_usd": 89.0, "reason": REDACTED}
    assert (view["approval_id"], view["run_id"], view["agent"], view["step"], view["tool"]) == (
        approval.approval_id, approval.run_id, "support", 1, "issue_refund")
    assert (view["status"], view["requested_by"], view["approvers"]) == ("pending", "dev@example.com",
                                                                         list(APPROVERS))
    assert (view["four_eyes"], view["allow_edits"], view["on_expiry"]) == (True, True, "reject")
    assert (view["decided_by"], view["decided_at"], view["comment"], view["edited_arguments"]) == (None, None, "",
                                                                                                  None)
    assert view["created_at"] == "2026-01-01T00:00:00Z" and view["expires_at"] == "2026-01-02T00:00:00Z"
    assert view["links"] == {"self": path(approval), "run": f"/v1/runs/{approval.run_id}"}
    raw = response.get_data(as_text=True)
    for hidden in ["call_arguments", SECRET_REASON, "trace", approval.trace, "call_id", "expire_at\""]:
        assert hidden not in raw, hidden
    # the run it belongs to waits for it
    run = client.get(view["links"]["run"]).get_json()
    assert run["status"] == "waiting_approval"


def test_a_decided_approval_shows_the_decision_redacted_alike(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    edited = {**REFUND_ARGS, "amount_usd": 45.0}
    settle(rt, approval, status=ApprovalStatus.approved, decision_id="dec_1", comment="half, as agreed",
           edited_arguments=edited,  # a careless writer: stored unredacted
           late_decisions=[{"decision_id": "dec_2", "decision": "reject", "by": "ana@finance.example.com",
                            "at": "2026-01-01T00:05:00+00:00"}])
    view = client.get(path(approval)).get_json()
    assert (view["status"], view["decided_by"], view["comment"]) == ("approved", "lead@example.com",
                                                                    "half, as agreed")
    assert view["edited_arguments"] == {"order_id": "A-1042", "amount_usd": 45.0, "reason": REDACTED}
    assert view["late_decisions"] == [{"decision_id": "dec_2", "decision": "reject", "by": "ana@finance.example.com",
                                       "at": "2026-01-01T00:05:00+00:00"}]
    assert SECRET_REASON not in client.get("/v1/approvals").get_data(as_text=True)


@pytest.mark.parametrize("approval_id", ["apr_nope", "a" * 65, "apr_" + "z" * 26])
def test_an_unknown_approval_is_a_404(client: ApiClient, approval_id: str) -> None:
    status, code, message = error_of(client.get(f"/v1/approvals/{approval_id}"))
    assert (status, code) == (404, "not_found") and "not found" in message


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_another_tenants_approval_is_indistinguishable_from_a_missing_one(
        client: ApiClient, rt: InMemoryRuntime, unchanged: Callable[[], Any], method: str) -> None:
    theirs = seed_approval(rt, tenant="acme", principal="ops@acme.test", approvers=["*@example.com"])
    missing_id = "apr_" + "z" * (len(theirs.approval_id) - 4)
    kwargs: dict[str, Any] = {"json": APPROVE} if method == "POST" else {}
    with unchanged():
        found = client.open(method, path(theirs), token=LEAD_TOKEN, **kwargs)
        missing = client.open(method, f"/v1/approvals/{missing_id}", token=LEAD_TOKEN, **kwargs)
    assert found.status_code == missing.status_code == 404
    assert found.get_data(as_text=True).replace(theirs.approval_id, missing_id) == missing.get_data(as_text=True)
    assert client.get(path(theirs), token=ACME_TOKEN).status_code == 200


# --- decide --------------------------------------------------------------------------------------------


def test_approve_publishes_one_decision_and_writes_nothing(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    store_before = rt.store.get_approval("dev", approval.approval_id), rt.store.get_run("dev", approval.run_id)
    response = decide(client, approval, {"decision": "approve", "comment": "ok, damaged in transit"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "submitted" and body["decision_id"].startswith("dec_")
    assert set(body["approval"]) == VIEW_FIELDS and body["approval"]["status"] == "pending"
    assert response.headers["Location"] == path(approval) and "Idempotent-Replayed" not in response.headers
    (published,) = rt.bus.on(DECISIONS_TOPIC)
    signed = {k: published.message.pop(k) for k in ("source", "key_id", "signature")}
    assert signed["source"] == "api" and signed["key_id"] == rt.signer.key_id and signed["signature"]
    assert published.message == {
        "type": "approval.decision", "version": 2, "decision_id": body["decision_id"], "tenant": "dev",
        "approval_id": approval.approval_id, "decision": "approve", "principal": "lead@example.com",
        "comment": "ok, damaged in transit", "arguments": None, "decided_at": "2026-01-01T00:00:00Z"}
    assert published.attributes == {"type": "approval.decision", "version": "2", "tenant": "dev",
                                    "traceparent": approval.trace}
    # the approvals function applies it; until then the approval and the run are as they were
    assert (rt.store.get_approval("dev", approval.approval_id), rt.store.get_run("dev", approval.run_id)) == \
        store_before
    assert len(rt.bus.messages) == 1


def test_an_approver_by_pattern_may_decide(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    assert decide(client, approval, token=ANA_TOKEN).status_code == 202
    assert decisions(rt)[0]["principal"] == "ana@finance.example.com"


def test_reject_with_a_reason(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    response = decide(client, approval, {"decision": "reject", "comment": "over the policy limit"})
    assert response.status_code == 202 and response.get_json()["status"] == "submitted"
    (message,) = decisions(rt)
    assert (message["decision"], message["comment"], message["arguments"]) == ("reject", "over the policy limit",
                                                                               None)


def test_the_same_idempotency_key_gets_the_same_decision(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    first = decide(client, approval, key="k-1").get_json()
    second = decide(client, approval, key="k-1").get_json()
    assert first["decision_id"] == second["decision_id"]
    # a retry may publish again, with the same decision id: the approvals function applies it once
    assert {m["decision_id"] for m in decisions(rt)} == {first["decision_id"]}
    # another key, another principal or no key: another decision
    others = [decide(client, approval, key="k-2"), decide(client, approval, key="k-1", token=ANA_TOKEN),
              decide(client, approval), decide(client, approval)]
    ids = {first["decision_id"], *(r.get_json()["decision_id"] for r in others)}
    assert len(ids) == 5


def test_a_retry_after_the_decision_was_applied_says_so(client: ApiClient, rt: InMemoryRuntime,
                                                        unchanged: Callable[[], Any]) -> None:
    approval = seed_approval(rt)
    submitted = decide(client, approval, key="k-1").get_json()
    settle(rt, approval, status=ApprovalStatus.approved, decision_id=submitted["decision_id"])
    with unchanged():
        replay = decide(client, approval, key="k-1")
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    body = replay.get_json()
    assert (body["decision_id"], body["status"]) == (submitted["decision_id"], "already_applied")
    assert (body["approval"]["status"], body["approval"]["decided_by"]) == ("approved", "lead@example.com")
    # the same key with another decision is not a replay of the first
    with unchanged():
        status, code, message = error_of(decide(client, approval, {"decision": "reject", "comment": "no"}, key="k-1"))
    assert (status, code) == (409, "conflict") and "already approved by lead@example.com" in message


def test_a_non_approver_is_refused_with_the_approvers_named(client: ApiClient, rt: InMemoryRuntime,
                                                            unchanged: Callable[[], Any]) -> None:
    approval = seed_approval(rt)
    with unchanged():
        status, code, message = error_of(decide(client, approval, token=INTERN_TOKEN))
    assert (status, code) == (403, "permission_denied")
    assert "intern@example.com is not an approver" in message
    assert "lead@example.com, *@finance.example.com" in message


def test_four_eyes_refuses_the_principal_who_started_the_run(client: ApiClient, rt: InMemoryRuntime,
                                                             unchanged: Callable[[], Any]) -> None:
    approval = seed_approval(rt, principal="lead@example.com")
    with unchanged():
        status, code, message = error_of(decide(client, approval))
    assert (status, code) == (403, "permission_denied")
    assert "four-eyes" in message and approval.run_id in message
    # another approver may
    assert decide(client, approval, token=ANA_TOKEN).status_code == 202
    # and without four eyes, the starter may too
    relaxed = seed_approval(rt, principal="lead@example.com", four_eyes=False)
    assert decide(client, relaxed).status_code == 202


def test_edited_arguments_keep_the_redacted_values(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    edited = {"order_id": "A-1042", "amount_usd": 50.0, "reason": REDACTED}
    response = decide(client, approval, {"decision": "approve", "comment": "policy maximum", "arguments": edited})
    assert response.status_code == 202
    (message,) = decisions(rt)
    assert message["arguments"] == {"order_id": "A-1042", "amount_usd": 50.0, "reason": SECRET_REASON}
    # the response shows the approval, still redacted
    assert SECRET_REASON not in response.get_data(as_text=True)


def test_edited_arguments_may_replace_a_redacted_value(client: ApiClient, rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    edited = {"order_id": "A-1042", "amount_usd": 50.0, "reason": "goodwill"}
    assert decide(client, approval, {"decision": "approve", "arguments": edited}).status_code == 202
    assert decisions(rt)[0]["arguments"] == edited


@pytest.mark.parametrize(("arguments", "fragment"), [
    pytest.param({"order_id": "A-1042", "amount_usd": -5, "reason": REDACTED}, "amount_usd", id="negative"),
    pytest.param({"order_id": "B-1", "amount_usd": 5, "reason": REDACTED}, "order_id", id="bad-order"),
    pytest.param({"order_id": "A-1042", "reason": REDACTED}, "amount_usd: Field required", id="missing-field"),
    pytest.param({"order_id": "A-1042", "amount_usd": 5, "reason": "x"}, "reason", id="reason-too-short"),
])
def test_edited_arguments_are_validated_against_the_tool(client: ApiClient, rt: InMemoryRuntime,
                                                         unchanged: Callable[[], Any], arguments: dict[str, Any],
                                                         fragment: str) -> None:
    approval = seed_approval(rt)
    with unchanged():
        status, code, message = error_of(decide(client, approval, {"decision": "approve", "arguments": arguments}))
    assert (status, code) == (400, "invalid_argument")
    assert "not valid for issue_refund" in message and fragment in message
    assert SECRET_REASON not in message


def test_edits_are_refused_when_the_policy_does_not_allow_them(client: ApiClient, rt: InMemoryRuntime,
                                                               unchanged: Callable[[], Any]) -> None:
    approval = seed_approval(rt, allow_edits=False)
    with unchanged():
        status, code, message = error_of(decide(client, approval, {"decision": "approve",
                                                                   "arguments": dict(REFUND_ARGS)}))
    assert (status, code) == (400, "invalid_argument")
    assert "does not allow edited arguments" in message


@pytest.mark.parametrize("status", ["approved", "rejected", "expired", "cancelled"])
def test_only_a_pending_approval_can_be_decided(client: ApiClient, rt: InMemoryRuntime,
                                                unchanged: Callable[[], Any], status: str) -> None:
    approval = seed_approval(rt, status=status, run_status=RunStatus.running)
    with unchanged():
        code, _, message = error_of(decide(client, approval))
    assert code == 409 and f"already {status}" in message


@pytest.mark.parametrize("run_status", [RunStatus.failed, RunStatus.cancelled, RunStatus.succeeded])
def test_a_finished_run_cannot_be_decided_for(client: ApiClient, rt: InMemoryRuntime,
                                              unchanged: Callable[[], Any], run_status: RunStatus) -> None:
    approval = seed_approval(rt, run_status=run_status)
    with unchanged():
        status, code, message = error_of(decide(client, approval))
    assert (status, code) == (409, "conflict") and f"is {run_status.value}" in message


def test_a_run_past_its_retention_cannot_be_decided_for(client: ApiClient, rt: InMemoryRuntime,
                                                        unchanged: Callable[[], Any]) -> None:
    approval = seed_approval(rt, expires_at=rt.clock.now().replace(year=2027))
    rt.clock.advance(8 * 24 * 3600)  # the run expired; neither a step nor the sweep recorded it yet
    with unchanged():
        status, code, message = error_of(decide(client, approval))
    assert (status, code) == (409, "conflict") and "is expired" in message


LONG_COMMENT = "x" * 2001


@pytest.mark.parametrize(("kwargs", "status", "code", "fragment"), [
    pytest.param({"json": {"decision": "reject"}}, 400, "invalid_argument", "a rejection needs a comment",
                 id="reject-without-comment"),
    pytest.param({"json": {"decision": "reject", "comment": "  "}}, 400, "invalid_argument", "needs a comment",
                 id="reject-with-blank-comment"),
    pytest.param({"json": {"decision": "reject", "comment": "no", "arguments": {}}}, 400, "invalid_argument",
                 "only be edited when approving", id="reject-with-arguments"),
    pytest.param({"json": {"decision": "maybe"}}, 400, "invalid_argument", "decision", id="unknown-decision"),
    pytest.param({"json": {}}, 400, "invalid_argument", "decision: Field required", id="no-decision"),
    pytest.param({"json": {"decision": "approve", "by": "me"}}, 400, "invalid_argument",
                 "by: unknown field; allowed fields are decision, comment and arguments", id="unknown-field"),
    pytest.param({"json": {"decision": "approve", "arguments": ["a"]}}, 400, "invalid_argument", "arguments",
                 id="arguments-not-an-object"),
    pytest.param({"json": {"decision": "approve", "comment": LONG_COMMENT}}, 400, "invalid_argument", "comment",
                 id="comment-too-long"),
    pytest.param({"json": ["approve"]}, 400, "invalid_argument", "body", id="body-an-array"),
    pytest.param({"data": "{", "content_type": JSON}, 400, "invalid_json", "not valid JSON", id="bad-json"),
    pytest.param({"data": "", "content_type": JSON}, 400, "invalid_json", "not valid JSON", id="empty-body"),
    pytest.param({"data": '{"decision": "approve"}', "content_type": "text/plain"}, 415, "unsupported_media_type",
                 "application/json", id="text-plain"),
    pytest.param({"data": {"decision": "approve"}}, 415, "unsupported_media_type", "application/json",
                 id="form-encoded"),
    pytest.param({"json": {"decision": "approve", "comment": "x" * MAX_BODY_BYTES}}, 413, "payload_too_large",
                 f"the limit is {MAX_BODY_BYTES}", id="body-over-limit"),
    pytest.param({"json": APPROVE, "headers": {"Idempotency-Key": "k" * 256}}, 400, "invalid_argument",
                 "Idempotency-Key", id="idempotency-key-too-long"),
    pytest.param({"json": APPROVE, "headers": {"Idempotency-Key": "a\tb"}}, 400, "invalid_argument",
                 "Idempotency-Key", id="idempotency-key-not-printable"),
    pytest.param({"json": APPROVE, "token": None}, 401, "unauthenticated", "Bearer", id="no-token"),
    pytest.param({"json": APPROVE, "token": "wrong"}, 401, "unauthenticated", "unknown bearer token",
                 id="unknown-token"),
])
def test_a_bad_decision_request_publishes_nothing(
        client: ApiClient, rt: InMemoryRuntime, unchanged: Callable[[], Any], kwargs: dict[str, Any], status: int,
        code: str, fragment: str) -> None:
    approval = seed_approval(rt)
    kwargs = {"token": LEAD_TOKEN, **kwargs}
    with unchanged():
        response = client.post(path(approval), **kwargs)
    assert error_of(response)[:2] == (status, code), response.get_data(as_text=True)
    assert fragment in error_of(response)[2]


def test_an_unknown_approval_is_a_404_before_the_body_is_read(client: ApiClient, unchanged: Callable[[], Any]) -> None:
    with unchanged():
        response = client.post("/v1/approvals/apr_nope", data="{", content_type=JSON, token=LEAD_TOKEN)
    assert error_of(response)[:2] == (404, "not_found")


@pytest.mark.parametrize(("method", "where"), [("GET", "/v1/approvals"), ("GET", "/v1/approvals/apr_x"),
                                               ("DELETE", "/v1/approvals/apr_x"), ("PUT", "/v1/approvals")])
def test_wrong_methods_and_missing_tokens(client: ApiClient, method: str, where: str) -> None:
    response = client.open(method, where, token=None)
    expected = (401, "unauthenticated") if method == "GET" else (405, "method_not_allowed")
    assert error_of(response)[:2] == expected


# --- the command line, against this API ----------------------------------------------------------------


@pytest.fixture
def cli(api: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """``cli("approvals", token=...)`` runs ``agex`` against the in-process API; returns (code, out, err)."""

    def client(args: Any) -> Client:
        c = Client("http://agex.test", args.token or "dev-token")
        c.http = httpx.Client(base_url="http://agex.test", transport=httpx.WSGITransport(app=Request.application(api)),
                              headers={"Authorization": f"Bearer {args.token or 'dev-token'}"})
        return c

    monkeypatch.setattr(cli_main, "_client", client)

    def run(*argv: str, token: str = "dev-token") -> tuple[int, str, str]:
        code = cli_main.main(["--token", token, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_lists_pending_approvals_as_a_table(cli: Callable[..., Any], rt: InMemoryRuntime) -> None:
    pending = seed_approval(rt)
    decided = seed_approval(rt, status="approved", decided_by="lead@example.com")
    code, out, _ = cli("approvals")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == ["ID", "RUN", "AGENT", "TOOL", "ARGUMENTS", "STATUS", "EXPIRES"]
    assert len(rows) == 1 and rows[0].startswith(pending.approval_id)
    assert pending.run_id in rows[0] and "issue_refund" in rows[0] and "2026-01-02 00:00 UTC" in rows[0]
    assert SECRET_REASON not in out
    code, out, _ = cli("approvals", "--status", "all", "--json")
    assert code == 0 and [a["approval_id"] for a in json.loads(out)] == [pending.approval_id, decided.approval_id]
    assert cli("approvals", "--status", "expired")[1] == "no expired approvals\n"


def test_cli_shows_one_approval(cli: Callable[..., Any], rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    code, out, _ = cli("approval", approval.approval_id)
    assert code == 0
    assert 'issue_refund(order_id="A-1042", amount_usd=89.0, reason="[redacted]")' in out
    assert "lead@example.com, *@finance.example.com (four eyes, edits allowed)" in out
    assert f"agex reject {approval.approval_id} --reason TEXT" in out


def test_cli_approves_with_edited_arguments_and_rejects_with_a_reason(cli: Callable[..., Any],
                                                                       rt: InMemoryRuntime) -> None:
    first, second = seed_approval(rt), seed_approval(rt)
    edited = json.dumps({"order_id": "A-1042", "amount_usd": 50, "reason": REDACTED})
    code, out, _ = cli("approve", first.approval_id, "--comment", "policy maximum", "--args", edited,
                       token=LEAD_TOKEN)
    assert code == 0 and out.startswith(f"submitted: approve {first.approval_id}")
    code, out, _ = cli("reject", second.approval_id, "--reason", "duplicate request", token=LEAD_TOKEN)
    assert code == 0 and out.startswith(f"submitted: reject {second.approval_id}")
    approved, rejected = decisions(rt)
    assert approved["arguments"] == {"order_id": "A-1042", "amount_usd": 50, "reason": SECRET_REASON}
    assert (rejected["decision"], rejected["comment"]) == ("reject", "duplicate request")


def test_cli_refusals_print_the_api_error(cli: Callable[..., Any], rt: InMemoryRuntime) -> None:
    approval = seed_approval(rt)
    code, _, err = cli("approve", approval.approval_id, token=INTERN_TOKEN)
    assert code == 2 and "is not an approver" in err and "(permission_denied)" in err
    code, _, err = cli("approve", approval.approval_id, "--args", "[1]", token=LEAD_TOKEN)
    assert code == 2 and "--args must be a JSON object" in err
    with pytest.raises(SystemExit):
        cli("reject", approval.approval_id, token=LEAD_TOKEN)  # --reason is required
    assert not decisions(rt)


def test_the_timeline_renders_approval_and_timer_events() -> None:
    def line(kind: str, **data: Any) -> str | None:
        return timeline.line({"kind": kind, "step": 2, "data": data})

    assert line("approval_requested", approval_id="apr_1", call_id="c1", name="issue_refund",
                approvers=["lead@example.com"], expires_at="2026-01-02T00:00:00+00:00") == (
        "step   2  approval  issue_refund waits for a human: apr_1 (approvers lead@example.com; "
        "expires 2026-01-02 00:00:00 UTC)")
    assert line("approval_decided", approval_id="apr_1", call_id="c1", decision="approved", by="lead@example.com",
                comment="ok", decision_id="dec_1", arguments={"amount_usd": 50}) == (
        "step   2  approved  apr_1 by lead@example.com, edited to amount_usd=50: ok")
    assert line("approval_decided", approval_id="apr_1", call_id="c1", decision="expired", by=None,
                comment="nobody decided", decision_id=None, arguments=None) == (
        "step   2  expired   apr_1: nobody decided")
    assert line("tool_deferred", call_id="c1", name="lookup_order", retry_at="2026-01-01T00:01:00+00:00",
                reason="rate limited") == (
        "step   2  deferred  lookup_order did not run; retried at 2026-01-01 00:01:00 UTC: rate limited")
    assert line("timer_set", wake_at="2026-01-01T02:00:00+00:00", reason="check the shipment") == (
        "step   2  waiting   until 2026-01-01 02:00:00 UTC: check the shipment")
