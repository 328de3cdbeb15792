"""Checkpoint store port: run heads and their append-only events."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from agex.core.approval import Approval, ApprovalStatus
from agex.core.errors import DocumentTooLarge
from agex.core.run import Event, RunHead, RunStatus

T = TypeVar("T")


@dataclass(frozen=True)
class Mutation(Generic[T]):
    """What a transactional update decided: the new head (or None to write nothing), new events, and a
    value handed back to the caller. ``events`` must continue ``head.seq`` of the head read.

    ``approvals`` are written (whole, created or replaced) in the same atomic commit: an approval
    changes state only together with its run's head, so the head's precondition guards both."""

    head: RunHead | None
    events: Sequence[Event] = field(default_factory=tuple)
    value: T | None = None
    approvals: Sequence[Approval] = field(default_factory=tuple)


class CheckpointStore(abc.ABC):
    """Transactions on one run head plus appends to its events.

    ``update_run`` is the only way to change a run: the store reads the head, calls ``mutate`` (a pure
    function, which may run several times when the store retries on contention), and writes the new head
    and events atomically, or nothing. Events are created, never overwritten.
    """

    @abc.abstractmethod
    def create_run(self, head: RunHead, events: Sequence[Event]) -> RunHead:
        """Create the head and its first events; raise ``AlreadyExists`` with the stored head attached
        as ``existing`` if a run with this id exists already."""

    @abc.abstractmethod
    def get_run(self, tenant: str, run_id: str) -> RunHead | None: ...

    @abc.abstractmethod
    def update_run(self, tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        """Apply ``mutate`` in a transaction; raise ``NotFound`` if the run does not exist."""

    @abc.abstractmethod
    def list_events(
        self, tenant: str, run_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events with ``seq > after_seq`` in order, at most ``limit``."""

    @abc.abstractmethod
    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        """Events of steps ``>= step`` in order: the context window and the step in progress."""

    @abc.abstractmethod
    def find_runs(
        self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100
    ) -> list[RunHead]:
        """Runs of every tenant in one of ``statuses`` not updated since ``updated_before``: the sweep's
        query for runs that lost their step task."""

    @abc.abstractmethod
    def find_waiting(self, due_before: datetime, limit: int = 100) -> list[RunHead]:
        """Runs of every tenant in a waiting status whose ``wake_at`` is before ``due_before``, earliest
        first: the sweep's query for waits whose scheduled task was lost."""

    @abc.abstractmethod
    def get_approval(self, tenant: str, approval_id: str) -> Approval | None: ...

    @abc.abstractmethod
    def list_approvals(self, tenant: str, *, status: ApprovalStatus | None = None, limit: int = 100,
                       after: tuple[datetime, str] | None = None) -> list[Approval]:
        """A tenant's approvals (of one status, or all) ordered by ``(created_at, approval_id)``, starting
        after the ``after`` position."""

    @abc.abstractmethod
    def add_late_decision(self, tenant: str, approval_id: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` to the approval's ``late_decisions`` unless an equal entry is there already
        (a redelivered late decision is recorded once). Raise ``NotFound`` if there is no such approval."""



# --- rules every store enforces the same way --------------------------------------------------------

MAX_DOCUMENT_BYTES = 1_000_000
"""Largest document a store accepts. Firestore's hard limit is 1 MiB (1,048,576 bytes) by its size
formula (:func:`document_size`); the margin absorbs differences between that formula and the server."""


def check_continues(seq: int, events: Sequence[Event]) -> None:
    """Events must continue the head's sequence exactly: a gap or overlap is a bug in a decision."""
    for i, event in enumerate(events, start=1):
        if event.seq != seq + i:
            raise ValueError(f"event seq {event.seq} does not continue the run's sequence at {seq + i}")


def check_size(path: str, doc: dict[str, Any]) -> int:
    """Refuse, before anything is written, a document over :data:`MAX_DOCUMENT_BYTES`."""
    size = document_size(path, doc)
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            f"document {path} would be {size:,} bytes, over the {MAX_DOCUMENT_BYTES:,}-byte limit of a "
            f"Firestore document (1 MiB); nothing was written. Keep large payloads out of run heads and "
            f"events (truncate tool outputs, store blobs elsewhere).", path=path, size=size)
    return size


def document_size(path: str, doc: dict[str, Any]) -> int:
    """Firestore's storage size of a document: its name (each path segment's UTF-8 length + 1, plus 16),
    plus each field's name (UTF-8 length + 1) and value, plus 32. Values: strings UTF-8 length + 1;
    booleans and null 1; integers, floats and timestamps 8; bytes their length; maps and arrays the sum
    of their contents. See https://cloud.google.com/firestore/docs/storage-size."""
    name = sum(len(seg.encode()) + 1 for seg in path.split("/")) + 16
    return name + _fields_size(doc) + 32


def _fields_size(doc: dict[str, Any]) -> int:
    return sum(len(str(k).encode()) + 1 + _value_size(v) for k, v in doc.items())


def _value_size(v: Any) -> int:
    if v is None or isinstance(v, bool):
        return 1
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogatepass")) + 1
    if isinstance(v, int | float | datetime):
        return 8
    if isinstance(v, bytes | bytearray):
        return len(v)
    if isinstance(v, dict):
        return _fields_size(v)
    if isinstance(v, Iterable):
        return sum(_value_size(x) for x in v)
    return 16
