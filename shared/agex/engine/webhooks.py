"""Delivering completion webhooks (docs/webhooks.md): what a run's webhook says, signed, and what the endpoint
answered. The POST itself and the signing key are the caller's (ports): this decides and reports."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agex.core.clock import Clock
from agex.core.errors import NotFound, TransientError
from agex.core.run import RunHead
from agex.core.webhook import SIGNATURE_HEADER, Webhook, sign
from agex.obs import logging as log
from agex.ports.checkpoint_store import CheckpointStore

_log = log.get("webhooks")

Post = Callable[[str, bytes, dict[str, str]], int]
"""POST ``body`` to ``url`` with ``headers``; the status it answered (0: no answer)."""


def payload(head: RunHead, webhook: str) -> dict[str, object]:
    return {"type": "run.finished", "version": 1, "id": f"{head.run_id}:{webhook}", "tenant": head.tenant,
            "run": {"run_id": head.run_id, "agent": head.agent, "agent_version": head.agent_version,
                    "status": head.status.value, "result": head.result,
                    "error": head.error.model_dump() if head.error else None, "usage": head.usage.model_dump(),
                    "metadata": head.metadata, "created_at": head.created_at.isoformat(),
                    "updated_at": head.updated_at.isoformat()}}


@dataclass(frozen=True)
class Delivered:
    status: int
    detail: str


class WebhookSender:
    def __init__(self, webhooks: Sequence[Webhook], store: CheckpointStore, secret: Callable[[str], str],
                 post: Post, clock: Clock) -> None:
        self.webhooks = {w.name: w for w in webhooks}
        self.store, self.secret, self.post, self.clock = store, secret, post, clock

    def deliver(self, tenant: str, run_id: str, name: str) -> Delivered:
        """POST the webhook of the run, signed; raise ``TransientError`` unless the endpoint answered 2xx (the
        task is retried), ``NotFound`` if the webhook or the run is gone (it never will be delivered)."""
        webhook = self.webhooks.get(name)
        head = self.store.get_run(tenant, run_id)
        if webhook is None or head is None:
            raise NotFound(f"webhook {name!r} of run {run_id} cannot be delivered: "
                           f"{'no such webhook here' if webhook is None else 'the run is gone'}")
        body = json.dumps(payload(head, name), separators=(",", ":")).encode()
        now = int(self.clock.now().timestamp())
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret(webhook.secret), body, now),
                   "Agex-Webhook-Id": f"{run_id}:{name}", "Agex-Event": "run.finished"}
        status = self.post(webhook.url, body, headers)
        if not 200 <= status < 300:
            _log.warning("webhook %s of run %s: the endpoint answered %s; Cloud Tasks retries it", name, run_id,
                         status or "nothing", extra={"fields": {"webhook": name, "status": status}})
            raise TransientError(f"webhook {name}: {webhook.url} answered {status or 'nothing'}")
        log.info(_log, f"webhook {name} of run {run_id} delivered ({status})", webhook=name, run=run_id)
        return Delivered(status, f"delivered to {webhook.url}")
