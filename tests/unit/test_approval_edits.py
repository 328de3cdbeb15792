"""What an approver may change in a held call (editable paths, limits, the agent's own check, the policies
re-evaluated), and how decisions are signed and verified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agex.core.agent import Agent, AgentRegistry
from agex.core.approval import (
    REDACTED,
    Approval,
    ApprovalPolicy,
    Condition,
    Decision,
    DecisionMessage,
    changed_paths,
    redact,
)
from agex.core.decision_signing import (
    DecisionRefused,
    DecisionSigner,
    DecisionVerifier,
    canonical,
    new_key_pair,
)
from agex.core.errors import ConfigurationError, Conflict, RequestError
from agex.engine.approvals import edited_arguments
from agex.tools import ToolContext, tool

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Payment(BaseModel):
    to: str
    amount: float
    memo: dict[str, Any] = {}


@tool(idempotent=False)
def pay(args: Payment, ctx: ToolContext) -> dict[str, Any]:
    """Pay a vendor."""
    return {}


def at_most_original(original: dict[str, Any], edited: dict[str, Any]) -> str | None:
    return "amount may only go down" if edited["amount"] > original["amount"] else None


LEAD = ApprovalPolicy(tool="pay", when=(Condition(field="amount", op="gt", value=100),), approvers=("lead@x.com",),
                      allow_edits=True, editable=("amount", "memo.note"), redact=("memo.iban",),
                      edit_limits=(Condition(field="amount", op="ge", value=10),), check_edit=at_most_original)
FINANCE = ApprovalPolicy(tool="pay", when=(Condition(field="amount", op="gt", value=1000),),
                         approvers=("cfo@x.com",), allow_edits=True, editable=("amount",))
# tiers: the first policy that applies holds the call, so the stricter one comes first
AGENTS = AgentRegistry([Agent(name="payer", instructions="pay", tools=(pay,), approvals=(FINANCE, LEAD))])
CALL = {"to": "acme", "amount": 500.0, "memo": {"note": "invoice 7", "iban": "DE00"}}


def approval(call: dict[str, Any] = CALL, policy: ApprovalPolicy = LEAD) -> Approval:
    return Approval(approval_id="apr_1", tenant="dev", run_id="run_1", agent="payer", step=1, call_id="c1", tool="pay",
                    arguments=redact(call, policy.redact), call_arguments=call, redact=list(policy.redact),
                    approvers=list(policy.approvers), four_eyes=policy.four_eyes, allow_edits=policy.allow_edits,
                    on_expiry="reject", requested_by="dev@x.com", created_at=T0, expires_at=T0 + timedelta(days=1),
                    updated_at=T0, expire_at=T0 + timedelta(days=7))


@pytest.mark.parametrize(("edit", "result"), [
    pytest.param({"amount": 300.0}, {**CALL, "amount": 300.0}, id="lower-amount"),
    pytest.param({"amount": 300}, {**CALL, "amount": 300}, id="int-for-float"),
    pytest.param({"memo": {"note": "inv 8", "iban": REDACTED}}, {**CALL, "memo": {"note": "inv 8", "iban": "DE00"}},
                 id="nested-editable-with-redacted-kept"),
    pytest.param({"amount": 50.0}, {**CALL, "amount": 50.0}, id="below-every-tier"),
])
def test_allowed_edits(edit: dict[str, Any], result: dict[str, Any]) -> None:
    sent = {**redact(CALL, LEAD.redact), **edit}
    assert edited_arguments(approval(), AGENTS, sent) == result


@pytest.mark.parametrize(("edit", "fragment"), [
    pytest.param({"to": "mallory"}, "to may not be edited", id="not-editable"),
    pytest.param({"memo": {"note": "x", "iban": "GB99"}}, "memo.iban may not be edited", id="nested-not-editable"),
    pytest.param({"extra": 1}, "extra may not be edited", id="added-field"),
    pytest.param({"amount": 5.0}, "amount must be ge 10", id="under-the-limit"),
    pytest.param({"amount": 900.0}, "amount may only go down", id="agent-check"),
    pytest.param({"amount": "lots"}, "not valid for pay", id="argument-model"),
])
def test_refused_edits(edit: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RequestError) as refused:
        edited_arguments(approval(), AGENTS, {**redact(CALL, LEAD.redact), **edit})
    assert fragment in refused.value.message


def test_an_edit_that_needs_another_approver_is_refused() -> None:
    call = {**CALL, "amount": 900.0}
    generous = ApprovalPolicy(tool="pay", when=(Condition(field="amount", op="gt", value=100),),
                              approvers=("lead@x.com",), allow_edits=True, editable=("amount",))
    agents = AgentRegistry([Agent(name="payer", instructions="pay", tools=(pay,), approvals=(FINANCE, generous))])
    with pytest.raises(RequestError, match="needs approval by cfo@x.com"):
        edited_arguments(approval(call, generous), agents, {**call, "amount": 5000.0})


def test_edits_of_a_policy_without_edits_or_of_a_gone_agent_are_refused() -> None:
    with pytest.raises(RequestError, match="does not allow edited arguments"):
        edited_arguments(approval().model_copy(update={"allow_edits": False}), AGENTS, CALL)
    with pytest.raises(Conflict, match="no longer deployed"):
        edited_arguments(approval(), AgentRegistry([]), CALL)


def test_policies_that_allow_edits_name_what_may_change() -> None:
    with pytest.raises(ValidationError, match="allow_edits needs `editable`"):
        ApprovalPolicy(tool="pay", approvers=("a",), allow_edits=True)
    with pytest.raises(ValidationError, match="need allow_edits=True"):
        ApprovalPolicy(tool="pay", approvers=("a",), editable=("amount",))


@pytest.mark.parametrize(("a", "b", "paths"), [
    ({"x": 1}, {"x": 1.0}, []),
    ({"x": 1}, {"x": True}, ["x"]),
    ({"x": {"y": 1, "z": 2}}, {"x": {"y": 1, "z": 3}}, ["x.z"]),
    ({"x": [1, 2]}, {"x": [2, 1]}, ["x"]),
    ({"x": 1}, {}, ["x"]),
    ({"x": {"y": 1}}, {"x": 5}, ["x"]),
])
def test_changed_paths(a: dict[str, Any], b: dict[str, Any], paths: list[str]) -> None:
    assert changed_paths(a, b) == paths


# --- signatures -----------------------------------------------------------------------------------

def message(**fields: Any) -> DecisionMessage:
    return DecisionMessage(**{"decision_id": "dec_1", "tenant": "dev", "approval_id": "apr_1", "decision": "approve",
                              "principal": "lead@x.com", "decided_at": T0, **fields})


def test_a_signature_covers_every_field_and_survives_the_wire() -> None:
    private, public = new_key_pair()
    signer, verifier = DecisionSigner.from_pem("api", private), DecisionVerifier.from_config({"api": [public]})
    signed = signer.sign(message(arguments={"amount": 5, "memo": {"ü": "x"}}))
    verifier.verify(DecisionMessage.model_validate_json(signed.model_dump_json()))
    for field, value in [("principal", "eve@x.com"), ("tenant", "acme"), ("approval_id", "apr_2"),
                         ("decision", Decision.reject), ("arguments", {"amount": 6}), ("comment", "x"),
                         ("decided_at", T0 + timedelta(seconds=1)), ("source", "other"), ("key_id", "0" * 16)]:
        with pytest.raises(DecisionRefused):
            verifier.verify(signed.model_copy(update={field: value}))
    assert b"signature" not in canonical(signed) and b"principal" in canonical(signed)


def test_keys_rotate_and_only_declared_sources_are_trusted() -> None:
    (old, old_public), (new, new_public) = new_key_pair(), new_key_pair()
    verifier = DecisionVerifier.from_config({"api": [old_public, new_public]})
    for key in (old, new):
        verifier.verify(DecisionSigner.from_pem("api", key).sign(message()))
    with pytest.raises(DecisionRefused, match="not a declared decision source"):
        verifier.verify(DecisionSigner.from_pem("bot", old).sign(message()))
    with pytest.raises(DecisionRefused, match="no decision source is declared"):
        DecisionVerifier.from_config({}).verify(DecisionSigner.from_pem("api", old).sign(message()))


def test_bad_key_configuration_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="not a PEM private key"):
        DecisionSigner.from_pem("api", "nope")
    with pytest.raises(ConfigurationError, match="not a PEM public key"):
        DecisionVerifier.from_config({"api": ["nope"]})
