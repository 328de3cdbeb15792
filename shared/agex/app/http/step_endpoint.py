"""The endpoint Cloud Tasks calls: ``POST /`` runs one step, ``POST /approval-expiry`` expires an approval
nobody decided, ``POST /webhook`` delivers a webhook, ``POST /thread`` moves a thread on past a run that ended, ``POST /sweep`` runs the sweep and ``POST /schedules/{name}:fire`` a schedule's firing (both
called by Cloud Scheduler in the cloud, by ``agex dev`` locally). All demand the expected OIDC token.

Status codes are the retry protocol with Cloud Tasks: 2xx acknowledges (done, or nothing to do);
409 (lease held elsewhere), 503 (a dependency is unavailable) and 500 (a crash) make it retry the task
with the queue's backoff, so waiting never keeps an instance busy.

Each request ends with its log entry (``httpRequest``, the run as the operation) and with its spans and
metrics exported: Cloud Run throttles the CPU once the answer is sent, so a batch left for later may wait
for the next request, or be lost with the instance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from opentelemetry import context
from pydantic import BaseModel, ConfigDict, ValidationError
from werkzeug.wrappers import Request, Response

from agex.app.http.responses import error_response, json_response, served
from agex.core.errors import AgexError, InvalidJson, NotFound, RequestError, StepControl, validation_problems
from agex.engine.approvals import ApprovalApplier
from agex.engine.decisions import Delivery
from agex.engine.memory import MemoryService
from agex.engine.runs import RunService
from agex.engine.schedules import ScheduleService
from agex.engine.stepper import StepRunner
from agex.engine.threads import ThreadService
from agex.engine.webhooks import WebhookSender
from agex.obs import logging as log
from agex.obs import tracing
from agex.ports.task_queue import StepTask

_log = log.get("step")
B = TypeVar("B", bound=BaseModel)


class StepTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    run_id: str
    step: int
    generation: int = 0
    window_through: int | None = None
    window: str | None = None


class ExpiryTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    run_id: str
    approval_id: str


class WebhookTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    run_id: str
    webhook: str


class ThreadTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    run_id: str
    thread_id: str


class MemoryTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    run_id: str


class StepEndpoint:
    def __init__(self, *, runner: StepRunner, service: RunService, approvals: ApprovalApplier,
                 verify: Callable[[Mapping[str, str]], None], instance: str,
                 schedules: Callable[[], ScheduleService] | None = None,
                 webhooks: Callable[[], WebhookSender] | None = None,
                 threads: Callable[[], ThreadService] | None = None,
                 memory: Callable[[], MemoryService] | None = None) -> None:
        self.runner, self.service, self.approvals = runner, service, approvals
        self.verify, self.instance, self.schedules, self.webhooks = verify, instance, schedules, webhooks
        self.threads, self.memory = threads, memory

    def __call__(self, request: Request) -> Response:
        # the task's trace context covers the whole request, so that its closing entry joins the trace
        attached = context.attach(tracing.extract(dict(request.headers)))
        try:
            return served(request, self._serve)
        finally:
            context.detach(attached)

    def _serve(self, request: Request) -> Response:
        try:
            if request.method != "POST":
                raise RequestError("the step endpoint takes POST requests from Cloud Tasks only")
            self.verify(dict(request.headers))
            path = request.path.rstrip("/")
            if path == "/sweep":
                report = self.service.sweep()
                expired = self.approvals.sweep(self.service.sweep_after)
                threads = self.threads().sweep(self.service.sweep_after) if self.threads is not None else 0
                memories = self.memory().delete_expired(self.service.clock.now()) if self.memory is not None else 0
                return json_response({"outcome": "swept", **report.__dict__, "approvals_expired": expired,
                                      "threads_repaired": threads, "memories_deleted": memories})
            fired = _FIRE.fullmatch(path)
            if fired is not None and self.schedules is not None:
                due = _due(request.headers.get("X-CloudScheduler-ScheduleTime"))
                started = self.schedules().fire(fired.group(1), due)
                if started is None:
                    return json_response({"outcome": "paused", "schedule": fired.group(1)})
                log.annotate_request(run=started.run.run_id, tenant=started.run.tenant)
                return json_response({"outcome": "replayed" if started.replayed else "started",
                                      "run_id": started.run.run_id, "due": due.isoformat()})
            if path == "/webhook" and self.webhooks is not None:
                hook = _parse(request, WebhookTaskBody)
                log.annotate_request(run=hook.run_id, tenant=hook.tenant)
                delivered = self.webhooks().deliver(hook.tenant, hook.run_id, hook.webhook)
                return json_response({"outcome": "delivered", "status": delivered.status, "detail": delivered.detail})
            if path == "/thread" and self.threads is not None:
                moved = _parse(request, ThreadTaskBody)
                log.annotate_request(run=moved.run_id, tenant=moved.tenant)
                advanced = self.threads().advance(moved.tenant, moved.thread_id, moved.run_id)
                return json_response({"outcome": advanced, "thread_id": moved.thread_id})
            if path == "/memory" and self.memory is not None:
                learn = _parse(request, MemoryTaskBody)
                log.annotate_request(run=learn.run_id, tenant=learn.tenant)
                return json_response({"outcome": self.memory().learn(learn.tenant, learn.run_id)})
            if path == "/approval-expiry":
                body = _parse(request, ExpiryTaskBody)
                log.annotate_request(run=body.run_id, tenant=body.tenant, approval=body.approval_id)
                outcome = self.approvals.expire(body.tenant, body.run_id, body.approval_id)
                return json_response({"outcome": outcome.result.value, "detail": outcome.detail})
            return self._step(request)
        except StepControl as e:
            return json_response({"outcome": e.code, "detail": e.message}, e.status)
        except NotFound as e:
            # the run is gone (deleted by TTL, or never existed): nothing will ever make this task useful
            _log.warning("acknowledged a task for a missing run: %s", e.message)
            return json_response({"outcome": "stale", "detail": e.message})
        except AgexError as e:
            if e.status >= 500:
                _log.exception("step failed; Cloud Tasks will retry it")
            return error_response(e)
        except Exception:
            _log.exception("step crashed; Cloud Tasks will retry it")
            return error_response(AgexError("the step crashed; it will be retried (see the log entry)"))

    def _step(self, request: Request) -> Response:
        body = _parse(request, StepTaskBody)
        task = StepTask(tenant=body.tenant, run_id=body.run_id, step=body.step, generation=body.generation,
                        window_through=body.window_through, window=body.window)
        delivery = Delivery.of(task, int(request.headers.get("X-CloudTasks-TaskRetryCount", "0") or 0), self.instance,
                               task_name=request.headers.get("X-CloudTasks-TaskName"))
        log.annotate_request(run=body.run_id, tenant=body.tenant, step=body.step)
        result = self.runner.run(delivery)
        return json_response({"outcome": result.outcome.value, "detail": result.detail})


def _parse(request: Request, model: type[B]) -> B:
    try:
        return model.model_validate(json.loads(request.get_data() or b"null"))
    except json.JSONDecodeError as e:
        raise InvalidJson(f"task body is not JSON: {e}") from e
    except ValidationError as e:
        raise RequestError(f"task body is malformed: {validation_problems(e, 'body')}") from e


_FIRE = re.compile(r"/schedules/([a-z][a-z0-9-]{0,62}):fire")


def _due(header: str | None) -> datetime:
    """When the firing was due: Cloud Scheduler's ``X-CloudScheduler-ScheduleTime`` (RFC 3339), to the minute
    (every delivery of one firing has the same), or now when a caller fires by hand."""
    due = datetime.now(UTC)
    if header:
        try:
            due = datetime.fromisoformat(header.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError as e:
            raise RequestError(f"header X-CloudScheduler-ScheduleTime is not an RFC 3339 time: {header[:40]!r}") from e
    return due.replace(second=0, microsecond=0)
