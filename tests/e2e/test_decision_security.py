"""Forged, altered and replayed approval decisions on the local stack: the approvals function checks the
push's OIDC token and each decision's signature itself, refuses what fails, logs it as a security event,
and changes nothing (docs/security.md)."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agex.core.approval import DecisionMessage
from agex.core.decision_signing import DecisionSigner, new_key_pair
from agex.dev.emulators.cloudtasks.oidc import OidcSigner
from agex.dev.stack import PUSH_IDENTITY

from . import agents as test_agents
from .conftest import E2E
from .test_approvals import CHATBOT, approval_of, decision, log_lines, publish_decision


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def push_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """What a Pub/Sub push request carries."""
    return {"subscription": "projects/agex-local/subscriptions/agex-approvals-push", "message": {
        "data": base64.b64encode(json.dumps(message).encode()).decode(), "messageId": uuid.uuid4().hex,
        "attributes": {}}}


def security_events(e2e: E2E, kind: str, needle: str) -> list[dict[str, Any]]:
    return [e for e in e2e.log_entries("approvals") if e.get("security_event") == kind and needle in str(e)]


def wait_for(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return found


def via_relay(e2e: E2E, body: dict[str, Any], *, email: str, audience: str) -> httpx.Response:
    """A push with a genuine emulator-signed token, for the identity and audience given."""
    query = urllib.parse.urlencode({"endpoint": e2e.stack.approvals_url, "email": email, "audience": audience})
    return httpx.post(f"{e2e.stack.tasks_http}/_emulator/push?{query}", json=body, timeout=30)


def test_pushes_without_the_push_identitys_token_are_refused_whatever_they_carry(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 310")
    approval = approval_of(e2e, run["run_id"])
    # a decision the chat bot really signed: only the transport is wrong in each attempt below
    body = push_envelope(decision(approval, f"dec_{uuid.uuid4().hex}"))
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": e2e.stack.approvals_url, "email": PUSH_IDENTITY,
              "email_verified": True, "iat": now, "exp": now + 3600, "sub": "1"}
    forged = {
        "no token": {},
        "alg none": {"Authorization": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."},
        "an API token": {"Authorization": "Bearer dev-token"},
        "a foreign key": {"Authorization": f"Bearer {OidcSigner().id_token(PUSH_IDENTITY, e2e.stack.approvals_url)}"},
    }
    for why, headers in forged.items():
        response = httpx.post(e2e.stack.approvals_url, json=body, headers=headers, timeout=30)
        assert response.status_code == 401, why
        assert response.json()["error"]["code"] == "unauthenticated", why
    assert via_relay(e2e, body, email="intruder@agex-local.iam.gserviceaccount.com",
                     audience=e2e.stack.approvals_url).status_code == 403
    assert via_relay(e2e, body, email=PUSH_IDENTITY, audience="https://elsewhere.example/").status_code == 401
    wait_for(lambda: len(security_events(e2e, "push_unauthenticated", "")) >= 6, "six refusals logged")
    time.sleep(1)
    assert e2e.manager.approval(approval["approval_id"])["status"] == "pending"
    assert e2e.client.run(run["run_id"])["status"] == "waiting_approval"
    assert test_agents.effects(run["run_id"], "pay") == []
    # the genuine push of the same decision is applied
    assert via_relay(e2e, body, email=PUSH_IDENTITY, audience=e2e.stack.approvals_url).json()["outcome"] == "applied"
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "pay") == ["acme:310"]


def test_forged_altered_and_replayed_decisions_are_refused_and_change_nothing(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 320")
    approval = approval_of(e2e, run["run_id"])
    approval_id = approval["approval_id"]

    unsigned = {"type": "approval.decision", "version": 1, "decision_id": f"dec_{uuid.uuid4().hex}",
                "tenant": "dev", "approval_id": approval_id, "decision": "approve",
                "principal": "manager@example.com", "decided_at": datetime.now(UTC).isoformat()}
    altered = decision(approval, f"dec_{uuid.uuid4().hex}", principal="clerk@example.com")
    altered["principal"] = "manager@example.com"  # after signing: a clerk's decision passed off as the manager's
    impostor = DecisionSigner.from_pem("chatbot", new_key_pair()[0])  # the bot's name, someone else's key
    wrong_key = impostor.sign(DecisionMessage.model_validate(decision(approval, f"dec_{uuid.uuid4().hex}"))
                              ).model_dump(mode="json")
    replayed = CHATBOT.sign(DecisionMessage(
        decision_id=f"dec_{uuid.uuid4().hex}", tenant="dev", approval_id=approval_id, decision="approve",
        principal="manager@example.com", decided_at=datetime.now(UTC) - timedelta(days=1))).model_dump(mode="json")
    malformed_before = len(log_lines(e2e, "approvals", "refused malformed decision message"))
    for message in (unsigned, altered, wrong_key, replayed):
        publish_decision(e2e, message)

    wait_for(lambda: len(log_lines(e2e, "approvals", "refused malformed decision message")) > malformed_before,
             "the unsigned v1 message refused")
    for message, kind in ((altered, "decision_unauthenticated"), (wrong_key, "decision_unauthenticated"),
                          (replayed, "decision_replayed")):
        wait_for(lambda m=message, k=kind: security_events(e2e, k, m["decision_id"]), f"{kind} logged")
    time.sleep(1)
    assert e2e.manager.approval(approval_id)["status"] == "pending"
    assert test_agents.effects(run["run_id"], "pay") == []
    # the genuine decision still goes through, once
    e2e.manager.decide(approval_id, "approve")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "pay") == ["acme:320"]


@pytest.mark.parametrize(("edit", "fragment"), [
    pytest.param({"amount_usd": 100000}, "at most 89.00", id="beyond-the-refundable-amount"),
    pytest.param({"order_id": "A-2077"}, "order_id may not be edited", id="another-order"),
])
def test_an_approver_cannot_edit_a_refund_beyond_the_agents_rules(e2e: E2E, edit: dict[str, Any],
                                                                  fragment: str) -> None:
    run = e2e.client.start_run("support", "Hi, I'd like a refund for order A-1042: the boots arrived with a "
                                          "split sole.")
    approval = approval_of(e2e, run["run_id"])
    arguments = {**approval["arguments"], **edit}
    from agex.cli.client import ApiError

    with pytest.raises(ApiError) as refused:
        e2e.manager.decide(approval["approval_id"], "approve", arguments=arguments)
    assert refused.value.status == 400 and fragment in refused.value.message
    # a decision source that skips the API's check is held to the same rule by the approvals function
    publish_decision(e2e, decision(approval, f"dec_{uuid.uuid4().hex}", arguments=arguments))
    wait_for(lambda: log_lines(e2e, "approvals", fragment), "the approvals function refused the edit")
    assert e2e.manager.approval(approval["approval_id"])["status"] == "pending"
    e2e.manager.decide(approval["approval_id"], "approve", arguments={**approval["arguments"], "amount_usd": 60})
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
