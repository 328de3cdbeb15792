"""What the engine tells the outside after a commit: a run finished, an approval waits (its notification
and its one expiry task). Shared by the step runner and the approvals applier."""

from __future__ import annotations

from collections.abc import Sequence

from agex.core.approval import APPROVAL_REQUESTS_TOPIC, Approval, ApprovalRequested
from agex.core.run import RunHead
from agex.core.webhook import Webhook
from agex.obs import logging as log
from agex.ports.event_bus import EventBus
from agex.ports.task_queue import ApprovalExpiryTask, TaskQueue, ThreadTask, WebhookTask

RUN_EVENTS_TOPIC = "agex-run-events"
_log = log.get("notify")


def run_finished(bus: EventBus, head: RunHead, queue: TaskQueue | None = None,
                 webhooks: Sequence[Webhook] = ()) -> None:
    """Best effort: the run is committed, so a lost notification must not fail or retry the step."""
    if queue is not None:
        enqueue_webhooks(queue, head, webhooks)
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


def enqueue_webhooks(queue: TaskQueue, head: RunHead, webhooks: Sequence[Webhook]) -> None:
    """The tasks that follow a run's end, each named by the run so it is enqueued once however often this runs:
    the delivery of each webhook that applies, and the thread's move to its next turn when the run is a turn of
    one. Best effort, like the Pub/Sub message: logged when it fails (a thread left behind is moved on by its
    next message or the sweep)."""
    if head.thread_id is not None:
        try:
            queue.enqueue(ThreadTask(tenant=head.tenant, run_id=head.run_id, thread_id=head.thread_id,
                                     agent=head.agent, traceparent=head.trace))
        except Exception:
            _log.exception("could not enqueue the thread task of run %s", head.run_id)
    for webhook in webhooks:
        if not webhook.applies(head.tenant, head.agent):
            continue
        try:
            queue.enqueue(WebhookTask(tenant=head.tenant, run_id=head.run_id, webhook=webhook.name, agent=head.agent,
                                      traceparent=head.trace))
        except Exception:
            _log.exception("could not enqueue webhook %s of run %s", webhook.name, head.run_id)
