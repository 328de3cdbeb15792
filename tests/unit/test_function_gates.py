"""The negative-test suite of the two internal functions: the approvals function (Pub/Sub push) and the step
function (Cloud Tasks) refuse forged, expired, wrong-audience, wrong-identity, alg-none and foreign-key
tokens themselves, and the approvals function refuses forged, altered and replayed decisions; nothing
changes either way. Tokens are signed by the Cloud Tasks emulator's signer and its keys served over HTTP,
the way Google serves its own."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from agex.adapters.gcp.oidc import GoogleIdTokens, OidcVerifier
from agex.app.http.decision_push import DecisionPush
from agex.app.http.step_endpoint import StepEndpoint
from agex.core.agent import Agent
from agex.core.approval import ApprovalPolicy, ApprovalStatus, DecisionMessage
from agex.core.decision_signing import DecisionSigner, new_key_pair
from agex.core.run import RunStatus
from agex.dev.emulators.cloudtasks.oidc import OidcSigner
from agex.engine.approvals import Applied
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import scripted
from agex.tools import ToolContext, tool

from .conftest import GOOGLE

PUSH = "agex-push@p.iam.gserviceaccount.com"
STEP = "agex-step@p.iam.gserviceaccount.com"
PUSH_AUDIENCE, STEP_AUDIENCE = "https://agex-approvals.example.run.app", "https://agex-step.example.run.app/"
google = GOOGLE
paid: list[float] = []


class Payment(BaseModel):
    to: str
    amount: float


@tool(idempotent=False)
def pay(args: Payment, ctx: ToolContext) -> dict[str, Any]:
    """Pay a vendor."""
    paid.append(args.amount)
    return {"paid": args.amount}


AGENT = Agent(name="payer", instructions="pay", tools=(pay,), approvals=(
    ApprovalPolicy(tool="pay", approvers=("manager@example.com",)),))


@pytest.fixture
def rt() -> InMemoryRuntime:
    paid.clear()
    return InMemoryRuntime([AGENT], scripted([("pay", {"to": "acme", "amount": 250.0})], "paid"))


def waiting(rt: InMemoryRuntime) -> Any:
    run = rt.start("payer", "pay acme")
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.waiting_approval and head.approval_id
    approval = rt.store.get_approval("dev", head.approval_id)
    assert approval is not None
    return approval


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def forged_tokens(email: str, audience: str) -> dict[str, dict[str, str]]:
    """Every way of presenting a token that is not the platform's for ``email`` and ``audience``."""
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": audience, "email": email, "email_verified": True,
              "iat": now, "exp": now + 3600, "sub": "1"}
    return {
        "none": {},
        "not-bearer": {"Authorization": f"Basic {base64.b64encode(b'a:b').decode()}"},
        "alg-none": {"Authorization": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."},
        "api-token": {"Authorization": "Bearer dev-token"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "foreign-key": {"Authorization": f"Bearer {OidcSigner().id_token(email, audience)}"},
        "expired": {"Authorization": f"Bearer {google.id_token(email, audience, issued_at=now - 7200)}"},
        "wrong-audience": {"Authorization": f"Bearer {google.id_token(email, 'https://elsewhere.example/')}"},
        "wrong-identity": {"Authorization": f"Bearer {google.id_token('intruder@p.iam.gserviceaccount.com', audience)}"},
    }


def served(handler: Callable[[Request], Response]) -> Client:
    """The handler as functions-framework serves it: one werkzeug request in, one response out."""
    return Client(Request.application(handler))  # type: ignore[arg-type]


def push_gate(rt: InMemoryRuntime, certs_url: str) -> Client:
    verify = OidcVerifier(GoogleIdTokens(audience=PUSH_AUDIENCE, certs_url=certs_url), PUSH)
    return served(DecisionPush(rt.applier, verify))


def push_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"subscription": "projects/p/subscriptions/agex-approvals-push", "message": {
        "data": base64.b64encode(json.dumps(message).encode()).decode(), "messageId": "1", "attributes": {}}}


def genuine() -> dict[str, str]:
    return {"Authorization": f"Bearer {google.id_token(PUSH, PUSH_AUDIENCE)}"}


def signed(rt: InMemoryRuntime, approval: Any, signer: DecisionSigner | None = None, **fields: Any) -> dict[str, Any]:
    message = DecisionMessage(**{"decision_id": "dec_1", "tenant": "dev", "approval_id": approval.approval_id,
                                 "decision": "approve", "principal": "manager@example.com",
                                 "decided_at": rt.clock.now(), **fields})
    return (signer or rt.signer).sign(message).model_dump(mode="json")


@pytest.mark.parametrize("why", list(forged_tokens(PUSH, PUSH_AUDIENCE)))
def test_the_approvals_function_refuses_every_push_not_signed_for_its_push_identity(
        rt: InMemoryRuntime, certs_url: str, why: str) -> None:
    approval = waiting(rt)
    response = push_gate(rt, certs_url).post("/", json=push_body(signed(rt, approval)),
                                             headers=forged_tokens(PUSH, PUSH_AUDIENCE)[why])
    assert response.status_code in (401, 403), response.get_data(as_text=True)
    assert response.json["error"]["code"] in ("unauthenticated", "permission_denied")
    rt.drive()
    assert rt.store.get_approval("dev", approval.approval_id).status == ApprovalStatus.pending  # type: ignore[union-attr]
    assert paid == []


def test_a_genuine_push_of_a_signed_decision_is_applied_once_however_often_it_is_replayed(
        rt: InMemoryRuntime, certs_url: str) -> None:
    approval = waiting(rt)
    gate, body = push_gate(rt, certs_url), push_body(signed(rt, approval))
    outcomes = [gate.post("/", json=body, headers=genuine()).json["outcome"] for _ in range(3)]
    assert outcomes == ["applied", "duplicate", "duplicate"]
    rt.drive()
    assert paid == [250.0]


def test_forged_altered_and_replayed_decisions_are_refused_and_change_nothing(rt: InMemoryRuntime,
                                                                              certs_url: str) -> None:
    approval = waiting(rt)
    gate = push_gate(rt, certs_url)
    unsigned = {"type": "approval.decision", "version": 1, "decision_id": "dec_v1", "tenant": "dev",
                "approval_id": approval.approval_id, "decision": "approve", "principal": "manager@example.com",
                "decided_at": rt.clock.now().isoformat()}
    altered = signed(rt, approval, decision_id="dec_alt", principal="eve@example.com")
    altered["principal"] = "manager@example.com"
    retargeted = signed(rt, approval, decision_id="dec_rt")
    retargeted["tenant"] = "acme"
    stripped = {**signed(rt, approval, decision_id="dec_strip"), "signature": ""}
    undeclared = signed(rt, approval, DecisionSigner.from_pem("api", new_key_pair()[0]), decision_id="dec_key")
    other_source = signed(rt, approval, DecisionSigner.from_pem("slackbot", new_key_pair()[0]), decision_id="dec_src")
    cases = {"unsigned-v1": (unsigned, 400), "altered": (altered, 403), "retargeted": (retargeted, 403),
             "signature-stripped": (stripped, 403), "undeclared-key": (undeclared, 403),
             "undeclared-source": (other_source, 403)}
    for why, (message, status) in cases.items():
        response = gate.post("/", json=push_body(message), headers=genuine())
        assert response.status_code == status, (why, response.get_data(as_text=True))
    old = signed(rt, approval, decision_id="dec_old", decided_at=approval.created_at - timedelta(hours=1))
    assert gate.post("/", json=push_body(old), headers=genuine()).json["outcome"] == "refused"
    future = signed(rt, approval, decision_id="dec_future", decided_at=rt.clock.now() + timedelta(hours=1))
    assert gate.post("/", json=push_body(future), headers=genuine()).json["outcome"] == "refused"
    rt.drive()
    assert rt.store.get_approval("dev", approval.approval_id).status == ApprovalStatus.pending  # type: ignore[union-attr]
    assert paid == []


def test_refusals_are_logged_as_security_events(rt: InMemoryRuntime, certs_url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    approval = waiting(rt)
    gate = push_gate(rt, certs_url)
    gate.post("/", json=push_body(signed(rt, approval)), headers={"Authorization": "Bearer dev-token"})
    altered = {**signed(rt, approval), "comment": "changed in flight"}
    gate.post("/", json=push_body(altered), headers=genuine())
    events = [getattr(r, "fields", {}).get("security_event") for r in caplog.records]
    assert "push_unauthenticated" in events and "decision_unauthenticated" in events


def test_the_applier_checks_signatures_whatever_the_transport(rt: InMemoryRuntime) -> None:
    approval = waiting(rt)
    forged = DecisionMessage(decision_id="dec_f", tenant="dev", approval_id=approval.approval_id,
                             decision="approve", principal="manager@example.com", decided_at=rt.clock.now())
    assert rt.applier.apply(forged).result == Applied.unauthenticated
    assert rt.applier.apply(rt.signer.sign(forged)).result == Applied.applied


def test_a_malformed_push_is_a_clear_400(rt: InMemoryRuntime, certs_url: str) -> None:
    gate = push_gate(rt, certs_url)
    for body in (b"not json", b"[]", b'{"message": "x"}', json.dumps(push_body({"type": "x"})).encode()):
        response = gate.post("/", data=body, headers={**genuine(), "Content-Type": "application/json"})
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid_argument"
    assert gate.get("/", headers=genuine()).status_code == 400


@pytest.mark.parametrize("why", list(forged_tokens(STEP, STEP_AUDIENCE)))
def test_the_step_function_refuses_every_task_not_signed_for_the_step_identity(
        rt: InMemoryRuntime, certs_url: str, why: str) -> None:
    run = rt.start("payer", "pay acme")
    verify = OidcVerifier(GoogleIdTokens(audience=STEP_AUDIENCE, certs_url=certs_url), STEP)
    step = served(StepEndpoint(runner=rt.runner, service=rt.service, approvals=rt.applier, verify=verify,
                               instance="test"))
    body = {"tenant": "dev", "run_id": run.run_id, "step": 1}
    for path in ("/", "/sweep", "/approval-expiry"):
        response = step.post(path, json=body, headers=forged_tokens(STEP, STEP_AUDIENCE)[why])
        assert response.status_code in (401, 403), (path, response.get_data(as_text=True))
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.queued and head.step == 0
    ok = step.post("/", json=body, headers={"Authorization": f"Bearer {google.id_token(STEP, STEP_AUDIENCE)}"})
    assert ok.status_code == 200
