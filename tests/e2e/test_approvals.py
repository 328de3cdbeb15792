"""Approvals and timers on the local stack: the real functions, Pub/Sub push, Cloud Tasks and Firestore."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agex.cli.client import ApiError, Client
from agex.core.approval import DecisionMessage
from agex.core.decision_signing import DecisionSigner

from . import agents as test_agents
from .conftest import CHATBOT_KEY, E2E
from .test_support_agent import refunds_of

CHATBOT = DecisionSigner.from_pem("chatbot", CHATBOT_KEY)
REFUND_OVER_LIMIT = "Hi, I'd like a refund for order A-1042: the boots arrived with a split sole."


def approval_of(e2e: E2E, run_id: str) -> dict[str, Any]:
    run = e2e.wait_status(run_id, "waiting_approval")
    (approval,) = [a for a in e2e.manager.approvals("pending") if a["run_id"] == run_id]
    assert run["status"] == "waiting_approval"
    return approval


def tasks_of(e2e: E2E, run_id: str) -> list[Any]:
    from agex.adapters.gcp.cloud_tasks import make_client

    client = make_client(e2e.stack.tasks_host)
    queue = client.queue_path(e2e.stack.config.project, "us-central1", "agex-steps")
    return [t for t in client.list_tasks(parent=queue) if run_id in t.name]


def publish_decision(e2e: E2E, payload: dict[str, Any] | bytes) -> None:
    """Publish straight to the decisions topic, as a chat bot would (not through the API)."""
    from google.cloud import pubsub_v1

    with e2e.stack.client_env():
        publisher = pubsub_v1.PublisherClient()
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        publisher.publish(f"projects/{e2e.stack.config.project}/topics/agex-approval-decisions", data).result(30)


def decision(approval: dict[str, Any], decision_id: str, verdict: str = "approve",
             principal: str = "manager@example.com", **extra: Any) -> dict[str, Any]:
    """A decision as the stack's declared chat bot publishes it: signed with its key."""
    message = DecisionMessage(decision_id=decision_id, tenant="dev", approval_id=approval["approval_id"],
                              decision=verdict, principal=principal, decided_at=datetime.now(UTC), **extra)
    return CHATBOT.sign(message).model_dump(mode="json")


def log_lines(e2e: E2E, function: str, needle: str) -> list[dict[str, Any]]:
    return [e for e in e2e.log_entries(function) if needle in str(e.get("message", ""))]


def test_a_refund_over_the_limit_waits_with_only_its_expiry_task_then_an_approval_resumes_it(e2e: E2E) -> None:
    run = e2e.client.start_run("support", REFUND_OVER_LIMIT)
    approval = approval_of(e2e, run["run_id"])
    assert approval["tool"] == "issue_refund" and approval["arguments"]["amount_usd"] == 89.0
    assert approval["requested_by"] == "dev@example.com" and "call_arguments" not in approval
    # parked: the queue holds the expiry task and nothing else (once the parking step's own task is
    # acknowledged: Cloud Tasks deletes it after the step answered), and no step runs meanwhile
    expiry = [f"dev--{run['run_id']}--{approval['approval_id']}-expiry"]
    deadline = time.monotonic() + 10
    while [t.name.rsplit("/", 1)[1] for t in tasks_of(e2e, run["run_id"])] != expiry:
        assert time.monotonic() < deadline, f"the queue holds {tasks_of(e2e, run['run_id'])}, not only the expiry"
        time.sleep(0.2)
    seen = len(e2e.events(run["run_id"]))
    time.sleep(2)
    assert len(e2e.events(run["run_id"])) == seen and refunds_of(e2e, run["run_id"]) == []

    submitted = e2e.manager.decide(approval["approval_id"], "approve", comment="customer is a regular")
    assert submitted["status"] == "submitted"
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded"
    assert len(refunds_of(e2e, run["run_id"])) == 1
    decided = [e for e in e2e.events(run["run_id"]) if e["kind"] == "approval_decided"]
    assert [(d["data"]["decision"], d["data"]["by"], d["data"]["comment"]) for d in decided] == [
        ("approved", "manager@example.com", "customer is a regular")]
    assert e2e.manager.approval(approval["approval_id"])["status"] == "approved"
    # the decision was applied in the run's trace: the approval carries the run's traceparent
    trace_ids = {e.get("logging.googleapis.com/trace") for e in e2e.log_entries("step")
                 if e.get("logging.googleapis.com/labels", {}).get("run") == run["run_id"]}
    applied = [e for e in log_lines(e2e, "approvals", approval["approval_id"]) if "logging.googleapis.com/trace" in e]
    assert applied and {e["logging.googleapis.com/trace"] for e in applied} <= trace_ids


def test_reject_tells_the_agent_and_nothing_is_paid(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 250")
    approval = approval_of(e2e, run["run_id"])
    e2e.manager.decide(approval["approval_id"], "reject", comment="acme is not a vendor of ours")
    final = e2e.wait(run["run_id"])
    assert final["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "pay") == []
    result = [e for e in e2e.events(run["run_id"]) if e["kind"] == "tool_result"][0]["data"]
    assert result["ok"] is False and "acme is not a vendor of ours" in result["output"]["error"]


def test_an_approver_can_edit_the_arguments(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 250")
    approval = approval_of(e2e, run["run_id"])
    e2e.manager.decide(approval["approval_id"], "approve", arguments={"to": "acme", "amount": 120})
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "pay") == ["acme:120"]
    assert e2e.manager.approval(approval["approval_id"])["edited_arguments"] == {"to": "acme", "amount": 120}


def test_an_unanswered_approval_expires_and_the_run_goes_on(e2e: E2E) -> None:
    run = e2e.client.start_run("payer-quick", "pay acme 90")
    approval = approval_of(e2e, run["run_id"])
    final = e2e.wait(run["run_id"], timeout=60)
    assert final["status"] == "succeeded"
    assert e2e.manager.approval(approval["approval_id"])["status"] == "expired"
    assert test_agents.effects(run["run_id"], "pay") == []
    with pytest.raises(ApiError) as refused:
        e2e.manager.decide(approval["approval_id"], "approve")
    assert refused.value.status == 409


def test_the_starter_and_non_approvers_are_refused_and_nothing_changes(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 250")
    approval = approval_of(e2e, run["run_id"])
    with pytest.raises(ApiError) as own:
        e2e.client.decide(approval["approval_id"], "approve")
    assert own.value.status == 403 and "four-eyes" in own.value.message
    with pytest.raises(ApiError) as clerk:
        e2e.clerk.decide(approval["approval_id"], "approve")
    assert clerk.value.status == 403 and "manager@example.com" in clerk.value.message
    with pytest.raises(ApiError) as other_tenant:
        e2e.acme.decide(approval["approval_id"], "approve")
    assert other_tenant.value.status == 404
    # a bot publishing on the topic directly is held to the same rule by the approvals function
    publish_decision(e2e, decision(approval, f"dec_{uuid.uuid4().hex}", principal="clerk@example.com"))
    deadline = time.monotonic() + 20
    while not log_lines(e2e, "approvals", "clerk@example.com is not an approver"):
        assert time.monotonic() < deadline, "the approvals function did not answer the refused decision"
        time.sleep(0.3)
    assert e2e.client.run(run["run_id"])["status"] == "waiting_approval"
    assert e2e.manager.approval(approval["approval_id"])["status"] == "pending"
    e2e.client.cancel(run["run_id"])


def test_duplicate_and_conflicting_decisions_apply_once(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 75")
    approval = approval_of(e2e, run["run_id"])
    first = decision(approval, f"dec_{uuid.uuid4().hex}")
    publish_decision(e2e, first)
    publish_decision(e2e, first)
    late = decision(approval, f"dec_{uuid.uuid4().hex}", "reject", comment="too late")
    final = e2e.wait(run["run_id"])
    publish_decision(e2e, late)
    publish_decision(e2e, first)
    deadline = time.monotonic() + 20
    while not e2e.manager.approval(approval["approval_id"])["late_decisions"]:
        assert time.monotonic() < deadline, "the late decision was not recorded"
        time.sleep(0.3)
    time.sleep(1)
    assert final["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "pay") == ["acme:75"]
    settled = e2e.manager.approval(approval["approval_id"])
    assert settled["status"] == "approved" and settled["decision_id"] == first["decision_id"]
    assert [d["decision_id"] for d in settled["late_decisions"]] == [late["decision_id"]]
    assert len([e for e in e2e.events(run["run_id"]) if e["kind"] == "approval_decided"]) == 1


def test_a_decision_after_cancel_changes_nothing(e2e: E2E) -> None:
    run = e2e.client.start_run("payer", "pay acme 60")
    approval = approval_of(e2e, run["run_id"])
    e2e.client.cancel(run["run_id"])
    assert e2e.manager.approval(approval["approval_id"])["status"] == "cancelled"
    with pytest.raises(ApiError) as refused:
        e2e.manager.decide(approval["approval_id"], "approve")
    assert refused.value.status == 409
    publish_decision(e2e, decision(approval, f"dec_{uuid.uuid4().hex}"))
    deadline = time.monotonic() + 20
    while not log_lines(e2e, "approvals", f"on {approval['approval_id']}: approval is cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert e2e.client.run(run["run_id"])["status"] == "cancelled"
    assert test_agents.effects(run["run_id"], "pay") == []


def test_a_poison_message_is_dead_lettered_after_bounded_retries(e2e: E2E) -> None:
    # one at a time: the Pub/Sub emulator stops redelivering when several pushed messages fail at once
    # (the service does not), so each poison message is published after the previous one was moved
    for poison in (b"not json %s", b'{"type": "approval.decision", "version": 99, "note": "%s"}'):
        marker = uuid.uuid4().hex
        publish_decision(e2e, poison.replace(b"%s", marker.encode()))
        (dead,) = _dead_letters(e2e, marker)
        assert dead.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    refusals = log_lines(e2e, "approvals", "refused malformed decision message")
    assert len(refusals) >= 10 and all(e["severity"] == "ERROR" for e in refusals)
    assert not any("Traceback" in str(e) for e in refusals)
    # and the function still serves
    run = e2e.client.start_run("payer", "pay acme 55")
    e2e.manager.decide(approval_of(e2e, run["run_id"])["approval_id"], "approve")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"


def _dead_letters(e2e: E2E, marker: str) -> list[Any]:
    from google.cloud import pubsub_v1

    found: list[Any] = []
    with e2e.stack.client_env():
        subscriber = pubsub_v1.SubscriberClient()
        path = f"projects/{e2e.stack.config.project}/subscriptions/agex-approval-decisions-dead-local"
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            response = subscriber.pull(subscription=path, max_messages=10, timeout=10)
            if response.received_messages:
                subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
            found += [m.message for m in response.received_messages if marker.encode() in m.message.data]
    return found


def test_a_timer_parks_the_run_and_a_scheduled_task_resumes_it(e2e: E2E) -> None:
    run = e2e.client.start_run("watcher", "check the shipment again in a bit")
    e2e.wait_status(run["run_id"], "waiting_timer", timeout=30)
    (task,) = tasks_of(e2e, run["run_id"])
    assert task.schedule_time.timestamp() > time.time()
    final = e2e.wait(run["run_id"], timeout=60)
    assert final["status"] == "succeeded"
    timer = [e for e in e2e.events(run["run_id"]) if e["kind"] == "timer_set"]
    assert len(timer) == 1


def test_a_rate_limited_tool_resumes_after_retry_after(e2e: E2E) -> None:
    run = e2e.client.start_run("poller", "is the database green?")
    final = e2e.wait(run["run_id"], timeout=60)
    assert final["status"] == "succeeded" and "green" in final["result"]
    events = e2e.events(run["run_id"])
    deferred = [e for e in events if e["kind"] == "tool_deferred"]
    assert len(deferred) == 1 and "429" in deferred[0]["data"]["reason"]
    resumed = [e for e in events if e["kind"] == "step_started" and e["step"] == 1]
    waited = datetime.fromisoformat(resumed[-1]["at"]) - datetime.fromisoformat(deferred[0]["at"])
    assert waited.total_seconds() >= 1.0
    assert len(test_agents.effects(run["run_id"], "fetch_status")) == 2


def test_a_hundred_waiting_runs_approved_in_a_burst_each_resume_once(e2e: E2E) -> None:
    runs = [e2e.client.start_run("payer", f"pay vendor{i} {100 + i}")["run_id"] for i in range(100)]
    deadline = time.monotonic() + 240
    waiting: dict[str, dict[str, Any]] = {}
    while len(waiting) < len(runs):
        assert time.monotonic() < deadline, f"only {len(waiting)} of {len(runs)} runs are waiting"
        for approval in e2e.manager.approvals("pending"):
            if approval["run_id"] in runs:
                waiting[approval["run_id"]] = approval
        time.sleep(0.5)

    def approve(approval: dict[str, Any]) -> None:
        Client(e2e.stack.api_url, "manager-token").decide(approval["approval_id"], "approve")

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(approve, waiting.values()))
    for run_id in runs:
        assert e2e.wait(run_id, timeout=240)["status"] == "succeeded"
    for i, run_id in enumerate(runs):
        assert test_agents.effects(run_id, "pay") == [f"vendor{i}:{100 + i}"]
        decided = [e for e in e2e.events(run_id) if e["kind"] == "approval_decided"]
        assert len(decided) == 1



def test_a_step_killed_right_after_parking_the_run_is_repaired_by_its_retry(e2e: E2E) -> None:
    e2e.arm("step.after_approval_request")
    run = e2e.client.start_run("payer", "pay acme 65")
    approval = approval_of(e2e, run["run_id"])
    # the worker died before scheduling the expiry and announcing; Cloud Tasks' retry of the step task
    # finds the run parked and does both
    expected = [f"dev--{run['run_id']}--{approval['approval_id']}-expiry"]
    deadline = time.monotonic() + 60
    while [t.name.rsplit("/", 1)[1] for t in tasks_of(e2e, run["run_id"])] != expected:
        assert time.monotonic() < deadline, f"the queue holds {tasks_of(e2e, run['run_id'])}, not only the expiry"
        time.sleep(0.3)
    assert e2e.armed() == []
    e2e.manager.decide(approval["approval_id"], "approve")
    assert e2e.wait(run["run_id"])["status"] == "succeeded"
    assert test_agents.effects(run["run_id"], "pay") == ["acme:65"]
