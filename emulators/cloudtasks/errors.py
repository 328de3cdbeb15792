"""API errors carried to the client as gRPC status codes."""

from __future__ import annotations

import grpc


class ApiError(Exception):
    """An error the service reports to the caller (never a server bug)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, message)


def failed_precondition(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message)


def permission_denied(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message)


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
