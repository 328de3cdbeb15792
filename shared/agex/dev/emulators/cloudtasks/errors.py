"""API errors carried to the client as gRPC status codes."""

from __future__ import annotations

import grpc

from agex.dev.emulators.grpc_service import ApiError, status

__all__ = ["ApiError"]

invalid_argument = status(grpc.StatusCode.INVALID_ARGUMENT)
not_found = status(grpc.StatusCode.NOT_FOUND)
already_exists = status(grpc.StatusCode.ALREADY_EXISTS)
failed_precondition = status(grpc.StatusCode.FAILED_PRECONDITION)
permission_denied = status(grpc.StatusCode.PERMISSION_DENIED)


# Wording follows what the managed service answers, so log-matching and
# error-handling code written against production behaves the same here.
QUEUE_NOT_FOUND = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize."
)
TASK_NOT_FOUND = "Requested entity was not found."
TASK_RECENTLY_GONE = (
    "The task no longer exists, though a task with this name existed recently. "
    "The task either successfully completed or was deleted."
)
TASK_ALREADY_EXISTS = "Requested entity already exists"
QUEUE_ALREADY_EXISTS = "Queue already exists"
