"""In-memory queues and tasks, and the API operations on them.

One condition variable guards everything: API handlers and the dispatcher
mutate the same task records, and the dispatcher sleeps on it until a task
becomes due or something changes (new task, resume, completion, update).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import field_mask_pb2

from . import names, protos
from .config import EmulatorConfig
from .errors import (
    QUEUE_ALREADY_EXISTS,
    QUEUE_NOT_FOUND,
    TASK_ALREADY_EXISTS,
    TASK_NOT_FOUND,
    TASK_RECENTLY_GONE,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
)
from .queue_config import OUTPUT_ONLY_PATHS, normalize_queue
from .task_input import normalize_new_task

MAX_QUEUE_PAGE_SIZE = 9800
MAX_TASK_PAGE_SIZE = 1000
_STATE_FILTER_RE = re.compile(r'\s*state\s*[:=]\s*"?([A-Za-z_]+)"?\s*')

# Shared across queues so that heap entries with equal due times keep
# creation (FIFO) order and stale entries can be recognised by identity.
_sequence = itertools.count(1)


MAX_TASK_BYTES = 1024 * 1024
"""Cloud Tasks refuses a task over 1 MiB (its quotas and limits page), the step window carried in a body included."""


@dataclass
class TaskState:
    task_id: str
    msg: protos.TaskMsg
    # Sequence number of this task's live heap entry; 0 when not scheduled.
    seq: int = 0
    running: int = 0
    first_dispatch_at: float | None = None
    # For the X-CloudTasks-TaskPreviousResponse / RetryReason headers.
    previous_status: int | None = None
    previous_reason: str | None = None
    # Responses that were not 5xx: what X-CloudTasks-TaskExecutionCount reports.
    execution_count: int = 0


@dataclass
class QueueStats:
    dispatched: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    dropped: int = 0


class QueueState:
    def __init__(self, msg: protos.QueueMsg, dedupe_window: float) -> None:
        self.msg = msg
        self.tasks: dict[str, TaskState] = {}
        self.heap: list[tuple[float, int, str]] = []
        self.in_flight = 0
        self.stats = QueueStats()
        self.tokens = float(msg.rate_limits.max_burst_size)
        self.bucket_updated = time.monotonic()
        self._dedupe_window = dedupe_window
        # Names of finished or deleted tasks stay reserved for the dedupe
        # window. The window is constant, so insertion order is expiry order
        # and expired names can be pruned from the front cheaply.
        self._reserved: dict[str, float] = {}
        self._reserved_order: deque[tuple[float, str]] = deque()

    @property
    def name(self) -> str:
        return str(self.msg.name)

    @property
    def running(self) -> bool:
        return bool(self.msg.state == protos.STATE_RUNNING)

    def schedule(self, task: TaskState, due: float) -> None:
        task.seq = next(_sequence)
        protos.set_timestamp(task.msg.schedule_time, due)
        heapq.heappush(self.heap, (protos.timestamp_seconds(task.msg.schedule_time), task.seq, task.task_id))

    @staticmethod
    def unschedule(task: TaskState) -> None:
        # The heap entry stays behind and is discarded when it surfaces.
        task.seq = 0

    def remove(self, task: TaskState) -> None:
        self.unschedule(task)
        if self.tasks.get(task.task_id) is task:
            del self.tasks[task.task_id]
        self.reserve(task.task_id)

    def reserve(self, task_id: str) -> None:
        if self._dedupe_window <= 0:
            return
        now = time.monotonic()
        self._prune(now)
        expiry = now + self._dedupe_window
        self._reserved[task_id] = expiry
        self._reserved_order.append((expiry, task_id))

    def recently_used(self, task_id: str) -> bool:
        self._prune(time.monotonic())
        return task_id in self._reserved

    def _prune(self, now: float) -> None:
        while self._reserved_order and self._reserved_order[0][0] <= now:
            expiry, task_id = self._reserved_order.popleft()
            if self._reserved.get(task_id) == expiry:
                del self._reserved[task_id]

    def refill_tokens(self, now_monotonic: float) -> None:
        rl = self.msg.rate_limits
        elapsed = max(0.0, now_monotonic - self.bucket_updated)
        self.tokens = min(float(rl.max_burst_size), self.tokens + elapsed * rl.max_dispatches_per_second)
        self.bucket_updated = now_monotonic


@dataclass
class _Page:
    items: list[Any] = field(default_factory=list)
    next_token: str = ""


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise invalid_argument("Invalid page_token.") from exc


def _page_size(requested: int, maximum: int) -> int:
    if requested < 0:
        raise invalid_argument("page_size cannot be negative.")
    return min(requested or maximum, maximum)


def task_view(task: protos.TaskMsg, view: int) -> protos.TaskMsg:
    """A copy of ``task`` as returned for ``view`` (BASIC omits the body)."""
    out = protos.Task()
    out.CopyFrom(task)
    if view != protos.VIEW_FULL:
        view = protos.VIEW_BASIC
        kind = out.WhichOneof("message_type")
        if kind is not None:
            getattr(out, kind).ClearField("body")
    out.view = view
    return out


def _copy_queue(msg: protos.QueueMsg) -> protos.QueueMsg:
    out = protos.Queue()
    out.CopyFrom(msg)
    return out


class Store:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.cond = threading.Condition()
        self.queues: dict[str, QueueState] = {}
        self._deleted_queues: dict[str, float] = {}

    # -- lookups (caller holds the lock) ------------------------------------

    def _queue_name(self, name: str) -> names.QueueName:
        qn = names.parse_queue(name)
        names.check_project(qn.project, self.config.project)
        return qn

    def queue(self, name: str) -> QueueState:
        self._queue_name(name)
        q = self.queues.get(name)
        if q is None:
            raise not_found(QUEUE_NOT_FOUND)
        return q

    def task(self, name: str) -> tuple[QueueState, TaskState]:
        tn = names.parse_task(name)
        q = self.queue(tn.queue)
        t = q.tasks.get(tn.task_id)
        if t is None:
            raise not_found(TASK_RECENTLY_GONE if q.recently_used(tn.task_id) else TASK_NOT_FOUND)
        return q, t

    # -- queues --------------------------------------------------------------

    def create_queue(self, parent: str, queue: protos.QueueMsg) -> protos.QueueMsg:
        project, _ = names.parse_location(parent)
        names.check_project(project, self.config.project)
        qn = names.parse_queue(queue.name)
        if qn.parent != parent:
            raise invalid_argument(
                f"The queue name ('{queue.name}') must be in the parent location ('{parent}')."
            )
        msg = _copy_queue(queue)
        for path in ("state", "purge_time"):
            msg.ClearField(path)
        normalize_queue(msg)
        msg.state = protos.STATE_RUNNING
        with self.cond:
            if msg.name in self.queues:
                raise already_exists(QUEUE_ALREADY_EXISTS)
            deleted_at = self._deleted_queues.get(msg.name)
            if deleted_at is not None and time.monotonic() - deleted_at < self.config.queue_tombstone_seconds:
                raise failed_precondition(
                    "The queue cannot be created because a queue with this name existed too recently."
                )
            self.queues[msg.name] = QueueState(msg, self.config.dedupe_window_seconds)
            return _copy_queue(msg)

    def get_queue(self, name: str) -> protos.QueueMsg:
        with self.cond:
            return _copy_queue(self.queue(name).msg)

    def list_queues(self, parent: str, filter_: str, page_size: int, page_token: str) -> _Page:
        project, _ = names.parse_location(parent)
        names.check_project(project, self.config.project)
        size = _page_size(page_size, MAX_QUEUE_PAGE_SIZE)
        wanted_state = self._parse_queue_filter(filter_)
        after = _decode_token(page_token) if page_token else ""
        prefix = parent + "/queues/"
        with self.cond:
            candidates = sorted(
                (q for n, q in self.queues.items() if n.startswith(prefix) and n > after),
                key=lambda q: q.name,
            )
            matching = [q for q in candidates if wanted_state is None or q.msg.state == wanted_state]
            page = _Page([_copy_queue(q.msg) for q in matching[:size]])
            if len(matching) > size:
                page.next_token = _encode_token(matching[size - 1].name)
            return page

    @staticmethod
    def _parse_queue_filter(filter_: str) -> int | None:
        if not filter_.strip():
            return None
        m = _STATE_FILTER_RE.fullmatch(filter_)
        states = {"RUNNING": protos.STATE_RUNNING, "PAUSED": protos.STATE_PAUSED, "DISABLED": 3}
        if not m or m.group(1).upper() not in states:
            raise invalid_argument(
                f'Unsupported filter "{filter_}": the emulator only supports "state: RUNNING|PAUSED|DISABLED".'
            )
        return states[m.group(1).upper()]

    def update_queue(self, queue: protos.QueueMsg, mask: field_mask_pb2.FieldMask | None) -> protos.QueueMsg:
        self._queue_name(queue.name)
        paths = [p for p in (mask.paths if mask is not None else []) if p not in OUTPUT_ONLY_PATHS]
        if mask is not None and mask.paths and not mask.IsValidForDescriptor(protos.Queue.DESCRIPTOR):
            raise invalid_argument(f"Invalid update_mask paths: {list(mask.paths)}.")
        with self.cond:
            existing = self.queues.get(queue.name)
            if existing is None:
                # UpdateQueue creates the queue when it does not exist.
                parent = names.parse_queue(queue.name).parent
                return self.create_queue(parent, queue)
            updated = _copy_queue(existing.msg)
            if mask is not None and mask.paths:
                if paths:
                    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
                        queue, updated, replace_message_field=True, replace_repeated_field=True
                    )
            else:
                for fname in (
                    "app_engine_routing_override",
                    "http_target",
                    "rate_limits",
                    "retry_config",
                    "stackdriver_logging_config",
                ):
                    updated.ClearField(fname)
                    if queue.HasField(fname):
                        getattr(updated, fname).CopyFrom(getattr(queue, fname))
            normalize_queue(updated)
            existing.msg = updated
            existing.tokens = min(existing.tokens, float(updated.rate_limits.max_burst_size))
            self.cond.notify_all()
            return _copy_queue(updated)

    def delete_queue(self, name: str) -> None:
        with self.cond:
            q = self.queue(name)
            del self.queues[name]
            for t in q.tasks.values():
                q.unschedule(t)
            q.tasks.clear()
            q.heap.clear()
            if self.config.queue_tombstone_seconds > 0:
                self._deleted_queues[name] = time.monotonic()
            self.cond.notify_all()

    def purge_queue(self, name: str) -> protos.QueueMsg:
        with self.cond:
            q = self.queue(name)
            for t in list(q.tasks.values()):
                q.remove(t)
            q.heap.clear()
            protos.set_timestamp(q.msg.purge_time, time.time())
            self.cond.notify_all()
            return _copy_queue(q.msg)

    def set_queue_state(self, name: str, state: int) -> protos.QueueMsg:
        with self.cond:
            q = self.queue(name)
            q.msg.state = state
            self.cond.notify_all()
            return _copy_queue(q.msg)

    # -- tasks ---------------------------------------------------------------

    def create_task(self, parent: str, task: protos.TaskMsg, view: int) -> protos.TaskMsg:
        self._queue_name(parent)
        if task.ByteSize() > MAX_TASK_BYTES:
            raise invalid_argument(f"Task size too large: {task.ByteSize()} bytes, over the limit of {MAX_TASK_BYTES}.")
        msg = protos.Task()
        msg.CopyFrom(task)
        task_id: str | None = None
        if msg.name:
            tn = names.parse_task(msg.name)
            if tn.queue != parent:
                raise invalid_argument(
                    f"The queue name from request ('{parent}') must be the same as the queue name "
                    f"in the named task ('{tn.queue}')."
                )
            task_id = tn.task_id
        now = time.time()
        normalize_new_task(msg, now, self.config)
        with self.cond:
            q = self.queue(parent)
            if task_id is not None:
                if task_id in q.tasks or q.recently_used(task_id):
                    raise already_exists(TASK_ALREADY_EXISTS)
            else:
                task_id = self._fresh_task_id(q)
            msg.name = f"{parent}/tasks/{task_id}"
            state = TaskState(task_id=task_id, msg=msg)
            q.tasks[task_id] = state
            q.schedule(state, protos.timestamp_seconds(msg.schedule_time))
            self.cond.notify_all()
            return task_view(msg, view)

    @staticmethod
    def _fresh_task_id(q: QueueState) -> str:
        # The service generates long numeric ids.
        while True:
            task_id = str(secrets.randbelow(9 * 10**18) + 10**18)
            if task_id not in q.tasks and not q.recently_used(task_id):
                return task_id

    def get_task(self, name: str, view: int) -> protos.TaskMsg:
        with self.cond:
            _, t = self.task(name)
            return task_view(t.msg, view)

    def list_tasks(self, parent: str, view: int, page_size: int, page_token: str) -> _Page:
        size = _page_size(page_size, MAX_TASK_PAGE_SIZE)
        after: tuple[int, str] | None = None
        if page_token:
            raw = _decode_token(page_token)
            nanos, _, task_id = raw.partition("|")
            if not nanos.isdigit():
                raise invalid_argument("Invalid page_token.")
            after = (int(nanos), task_id)
        with self.cond:
            q = self.queue(parent)

            def key(t: TaskState) -> tuple[int, str]:
                st = t.msg.schedule_time
                return (st.seconds * 1_000_000_000 + st.nanos, t.task_id)

            ordered = sorted((t for t in q.tasks.values() if after is None or key(t) > after), key=key)
            page = _Page([task_view(t.msg, view) for t in ordered[:size]])
            if len(ordered) > size:
                nanos_, last_id = key(ordered[size - 1])
                page.next_token = _encode_token(f"{nanos_}|{last_id}")
            return page

    def delete_task(self, name: str) -> None:
        with self.cond:
            q, t = self.task(name)
            q.remove(t)
            self.cond.notify_all()

    # -- observability -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {
                "queues": {
                    name: {
                        "state": "RUNNING" if q.running else "PAUSED",
                        "tasks": len(q.tasks),
                        "in_flight": q.in_flight,
                        "dispatched": q.stats.dispatched,
                        "succeeded": q.stats.succeeded,
                        "failed_attempts": q.stats.failed_attempts,
                        "dropped": q.stats.dropped,
                    }
                    for name, q in sorted(self.queues.items())
                }
            }
