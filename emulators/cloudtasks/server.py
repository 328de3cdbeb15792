"""gRPC service ``google.cloud.tasks.v2.CloudTasks`` on top of the store.

Requests and responses use the protobuf classes the client library was
generated with, so the unmodified client cannot tell this from the service.
RPCs not listed here (IAM, batch, CMEK, locations) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from . import protos
from .dispatch import Dispatcher
from .errors import ApiError
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
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                rpc: grpc.unary_unary_rpc_method_handler(
                    _guarded(rpc, fn),
                    request_deserializer=request_cls.FromString,
                    response_serializer=_serialize,
                )
                for rpc, (fn, request_cls) in methods.items()
            },
        )


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _guarded(rpc: str, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request)
        except ApiError as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:
            log.exception("%s failed", rpc)
            context.abort(grpc.StatusCode.INTERNAL, f"Internal emulator error in {rpc}: {exc}")

    return call


def build_grpc_server(
    service: CloudTasksService, host: str, port: int, workers: int = 16
) -> tuple[grpc.Server, int]:
    """Create and bind (not start) the server; returns it with the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudtasks-grpc"),
        # gRPC enables SO_REUSEPORT by default on Linux, which would let two
        # emulators silently share one port.
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((service.handler(),))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc reports bind failures this way
        bound = 0
        cause: Exception | None = exc
    else:
        cause = None
    if bound == 0:
        server.stop(None)
        raise OSError(f"could not bind gRPC server to {host}:{port} (address in use?)") from cause
    return server, bound
