"""gRPC service ``google.cloud.tasks.v2.CloudTasks`` on top of the store.

Requests and responses use the protobuf classes the client library was
generated with, so the unmodified client cannot tell this from the service.
RPCs not listed here (IAM, batch, CMEK, locations) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from agex.dev.emulators.grpc_service import bind_server, generic_handler

from . import protos
from .dispatch import Dispatcher
from .state import Store

log = logging.getLogger(__name__)

SERVICE_NAME = "google.cloud.tasks.v2.CloudTasks"


class CloudTasksService:
    def __init__(self, store: Store, dispatcher: Dispatcher) -> None:
        self._store = store
        self._dispatcher = dispatcher

    def list_queues(self, req: Any) -> Any:
        page = self._store.list_queues(req.parent, req.filter, req.page_size, req.page_token)
        return protos.ListQueuesResponse(queues=page.items, next_page_token=page.next_token)

    def get_queue(self, req: Any) -> Any:
        return self._store.get_queue(req.name)

    def create_queue(self, req: Any) -> Any:
        return self._store.create_queue(req.parent, req.queue)

    def update_queue(self, req: Any) -> Any:
        return self._store.update_queue(req.queue, req.update_mask if req.HasField("update_mask") else None)

    def delete_queue(self, req: Any) -> Any:
        self._store.delete_queue(req.name)
        return protos.Empty()

    def purge_queue(self, req: Any) -> Any:
        return self._store.purge_queue(req.name)

    def pause_queue(self, req: Any) -> Any:
        return self._store.set_queue_state(req.name, protos.STATE_PAUSED)

    def resume_queue(self, req: Any) -> Any:
        return self._store.set_queue_state(req.name, protos.STATE_RUNNING)

    def list_tasks(self, req: Any) -> Any:
        page = self._store.list_tasks(req.parent, req.response_view, req.page_size, req.page_token)
        return protos.ListTasksResponse(tasks=page.items, next_page_token=page.next_token)

    def get_task(self, req: Any) -> Any:
        return self._store.get_task(req.name, req.response_view)

    def create_task(self, req: Any) -> Any:
        return self._store.create_task(req.parent, req.task, req.response_view)

    def delete_task(self, req: Any) -> Any:
        self._store.delete_task(req.name)
        return protos.Empty()

    def run_task(self, req: Any) -> Any:
        return self._dispatcher.run_task(req.name, req.response_view)

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[[Any], Any], Any]] = {
            "ListQueues": (self.list_queues, protos.ListQueuesRequest),
            "GetQueue": (self.get_queue, protos.GetQueueRequest),
            "CreateQueue": (self.create_queue, protos.CreateQueueRequest),
            "UpdateQueue": (self.update_queue, protos.UpdateQueueRequest),
            "DeleteQueue": (self.delete_queue, protos.DeleteQueueRequest),
            "PurgeQueue": (self.purge_queue, protos.PurgeQueueRequest),
            "PauseQueue": (self.pause_queue, protos.PauseQueueRequest),
            "ResumeQueue": (self.resume_queue, protos.ResumeQueueRequest),
            "ListTasks": (self.list_tasks, protos.ListTasksRequest),
            "GetTask": (self.get_task, protos.GetTaskRequest),
            "CreateTask": (self.create_task, protos.CreateTaskRequest),
            "DeleteTask": (self.delete_task, protos.DeleteTaskRequest),
            "RunTask": (self.run_task, protos.RunTaskRequest),
        }
        return generic_handler(SERVICE_NAME, methods, log)


def build_grpc_server(
    service: CloudTasksService, host: str, port: int, workers: int = 16
) -> tuple[grpc.Server, int]:
    """Create and bind (not start) the server; returns it with the bound port."""
    return bind_server(service.handler(), host, port, workers=workers, name="cloudtasks")
