"""Cloud Tasks adapter of the task queue port: each task is an HTTP task to the step function (at the
task's path: ``/`` for steps, ``/approval-expiry`` for expiries), with an OIDC token for the step service
account and the run's trace context in its headers."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2

from agex.core.errors import ConfigurationError, TransientError
from agex.ports.task_queue import Task, TaskQueue

_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted, gexc.InternalServerError,
              gexc.Aborted)


class CloudTasksQueue(TaskQueue):
    def __init__(self, *, project: str, location: str, queue: str, url: str, service_account: str,
                 audience: str, emulator_host: str = "", client: Any = None, per_agent: bool = False) -> None:
        """``per_agent``: each agent's tasks go to its own queue ``{queue}-{agent}`` (its rate limits and
        retry settings, from the fleet file through Terraform); otherwise all share ``queue``."""
        self.url, self.service_account, self.audience = url, service_account, audience
        self.per_agent = per_agent
        self.emulator_host = emulator_host
        self._client = client
        self._lock = threading.Lock()
        self.queue_path = tasks_v2.CloudTasksClient.queue_path(project, location, queue)

    @property
    def client(self) -> tasks_v2.CloudTasksClient:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.emulator_host)
            return self._client

    def queue_of(self, task: Task) -> str:
        return f"{self.queue_path}-{task.agent}" if self.per_agent and task.agent else self.queue_path

    def task_path(self, task: Task) -> str:
        return f"{self.queue_of(task)}/tasks/{task.name}"

    def enqueue(self, task: Task) -> bool:
        request = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST, url=self.url.rstrip("/") + task.path, body=json.dumps(task.body()).encode(),
            headers={"Content-Type": "application/json", **({"traceparent": task.traceparent} if task.traceparent else {})},
            oidc_token=tasks_v2.OidcToken(service_account_email=self.service_account, audience=self.audience))
        proto = tasks_v2.Task(name=self.task_path(task), http_request=request)
        if task.schedule_at is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(task.schedule_at)
            proto.schedule_time = stamp
        try:
            self.client.create_task(parent=self.queue_of(task), task=proto)
            return True
        except gexc.AlreadyExists:
            return False
        except gexc.NotFound as e:
            raise ConfigurationError(f"queue {self.queue_of(task)} does not exist: create it (terraform apply, "
                                     "or agex dev locally)") from e
        except _TRANSIENT as e:
            raise TransientError(f"could not enqueue {task.name}: {e}") from e

    def exists(self, task: Task) -> bool:
        try:
            self.client.get_task(name=self.task_path(task))
            return True
        except gexc.NotFound:
            return False
        except _TRANSIENT as e:
            raise TransientError(f"could not look up task {task.name}: {e}") from e


def make_client(emulator_host: str = "") -> tasks_v2.CloudTasksClient:
    """A Cloud Tasks client; against ``emulator_host`` (host:port) over plaintext gRPC when given."""
    if not emulator_host:
        return tasks_v2.CloudTasksClient()
    import grpc
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(emulator_host)))


def ensure_queue(client: tasks_v2.CloudTasksClient, queue_path: str, *, max_attempts: int = 20,
                 min_backoff_s: float = 0.5, max_backoff_s: float = 60, max_dispatches_per_second: float = 500,
                 max_concurrent_dispatches: int = 1000) -> None:
    """Create the step queue if missing (local development; Terraform owns it in the cloud)."""
    from google.protobuf import duration_pb2

    queue = tasks_v2.Queue(
        name=queue_path,
        retry_config=tasks_v2.RetryConfig(max_attempts=max_attempts,
                                          min_backoff=duration_pb2.Duration(seconds=int(min_backoff_s), nanos=int(min_backoff_s % 1 * 1e9)),
                                          max_backoff=duration_pb2.Duration(seconds=int(max_backoff_s)), max_doublings=8),
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=max_dispatches_per_second,
                                        max_concurrent_dispatches=max_concurrent_dispatches))
    with contextlib.suppress(gexc.AlreadyExists):
        client.create_queue(parent=queue_path.rsplit("/queues/", 1)[0], queue=queue)


def post_with_oidc(client: tasks_v2.CloudTasksClient, queue_path: str, *, url: str, service_account: str,
                   audience: str, headers: dict[str, str] | None = None) -> None:
    """An unnamed POST task with an OIDC token: how the local stack plays Cloud Scheduler's jobs (the sweep, a
    schedule's firing with its ``X-CloudScheduler-ScheduleTime``)."""
    client.create_task(parent=queue_path, task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(
        http_method=tasks_v2.HttpMethod.POST, url=url, headers=headers or {},
        oidc_token=tasks_v2.OidcToken(service_account_email=service_account, audience=audience))))
