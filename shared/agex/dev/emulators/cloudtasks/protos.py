"""Protobuf message classes behind the client's proto-plus types.

The emulator works on the raw protobuf messages rather than the proto-plus
wrappers: they are cheaper to copy and keep real field presence
(``HasField``), which the API semantics depend on ("unset means default").
Using the classes the client itself was generated with guarantees the wire
format matches what the client sends and expects.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.rpc import status_pb2

# The classes are built at import time by proto-plus, so there are no static
# stubs to refer to; these aliases only document intent in signatures.
QueueMsg: TypeAlias = Any
TaskMsg: TypeAlias = Any
RetryConfigMsg: TypeAlias = Any

Queue = tasks_v2.Queue.pb()
Task = tasks_v2.Task.pb()
Attempt = tasks_v2.Attempt.pb()
RetryConfig = tasks_v2.RetryConfig.pb()
RateLimits = tasks_v2.RateLimits.pb()

ListQueuesRequest = tasks_v2.ListQueuesRequest.pb()
ListQueuesResponse = tasks_v2.ListQueuesResponse.pb()
GetQueueRequest = tasks_v2.GetQueueRequest.pb()
CreateQueueRequest = tasks_v2.CreateQueueRequest.pb()
UpdateQueueRequest = tasks_v2.UpdateQueueRequest.pb()
DeleteQueueRequest = tasks_v2.DeleteQueueRequest.pb()
PurgeQueueRequest = tasks_v2.PurgeQueueRequest.pb()
PauseQueueRequest = tasks_v2.PauseQueueRequest.pb()
ResumeQueueRequest = tasks_v2.ResumeQueueRequest.pb()
ListTasksRequest = tasks_v2.ListTasksRequest.pb()
ListTasksResponse = tasks_v2.ListTasksResponse.pb()
GetTaskRequest = tasks_v2.GetTaskRequest.pb()
CreateTaskRequest = tasks_v2.CreateTaskRequest.pb()
DeleteTaskRequest = tasks_v2.DeleteTaskRequest.pb()
RunTaskRequest = tasks_v2.RunTaskRequest.pb()

Empty = empty_pb2.Empty
Duration = duration_pb2.Duration
Timestamp = timestamp_pb2.Timestamp
Status = status_pb2.Status

STATE_RUNNING: int = int(tasks_v2.Queue.State.RUNNING)
STATE_PAUSED: int = int(tasks_v2.Queue.State.PAUSED)
VIEW_BASIC: int = int(tasks_v2.Task.View.BASIC)
VIEW_FULL: int = int(tasks_v2.Task.View.FULL)
METHOD_POST: int = int(tasks_v2.HttpMethod.POST)


def http_method_name(value: int) -> str:
    return tasks_v2.HttpMethod(value).name


def duration_seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def duration_from_seconds(seconds: float) -> Any:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def timestamp_seconds(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


def set_timestamp(ts: Any, seconds: float) -> None:
    """Store a wall-clock time, truncated to microseconds like the service."""
    micros = int(seconds * 1_000_000)
    ts.seconds, rem = divmod(micros, 1_000_000)
    ts.nanos = rem * 1000
