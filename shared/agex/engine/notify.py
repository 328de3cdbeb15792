"""What the engine tells the outside after a commit: a run finished, an approval waits (its notification
and its one expiry task). Shared by the step runner and the approvals applier."""

from __future__ import annotations

from agex.core.approval import APPROVAL_REQUESTS_TOPIC, Approval, ApprovalRequested
from agex.core.run import RunHead
from agex.obs import logging as log
from agex.ports.event_bus import EventBus
from agex.ports.task_queue import ApprovalExpiryTask, TaskQueue

RUN_EVENTS_TOPIC = "agex-run-events"
_log = log.get("notify")


def run_finished(bus: EventBus, head: RunHead) -> None:
    """Best effort: the run is committed, so a lost notification must not fail or retry the step."""
    try:
        bus.publish(RUN_EVENTS_TOPIC, {
            "type": "run.finished", "version": 1, "tenant": head.tenant, "run_id": head.run_id,
            "agent": head.agent, "status": head.status.value, "usage": head.usage.model_dump()},
            {"type": "run.finished", "tenant": head.tenant, "traceparent": head.trace})
    except Exception:
        _log.exception("could not publish run.finished")


def approval_waiting(queue: TaskQueue, bus: EventBus, approval: Approval, base_url: str = "") -> None:
    """Schedule the approval's expiry task, then tell notifiers. Both may run again after a crash (the task
    name dedupes; notifiers get ``approval.requested`` at least once, keyed by ``approval_id``). A failure
    raises, so the delivery is retried and the retry repeats this."""
    queue.enqueue(ApprovalExpiryTask(tenant=approval.tenant, run_id=approval.run_id, approval_id=approval.approval_id,
                                     agent=approval.agent, schedule_at=approval.expires_at, traceparent=approval.trace))
    message = ApprovalRequested.of(approval, base_url)
    bus.publish(APPROVAL_REQUESTS_TOPIC, message.model_dump(mode="json"), {
        "type": message.type, "version": str(message.version), "tenant": approval.tenant, "agent": approval.agent,
        **({"traceparent": approval.trace} if approval.trace else {})})
