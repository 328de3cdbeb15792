"""The rules every backend enforces the same way, defined once: what a store may write (document sizes and
names, event sequences, the approvals of a mutation, late decisions) and what a secret may be called. The
in-memory adapters enforce the cloud services' rules too, so code that passes the unit tests does not fail
in the cloud."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from agex.core.approval import Approval
from agex.core.errors import DocumentTooLarge, SecretNotFound
from agex.core.run import Event, RunHead

# --- names -----------------------------------------------------------------------------------------------

RESERVED_NAME = re.compile(r"^__.*__$")
"""Firestore reserves field names and document ids of the form ``__x__``."""

MAX_DOCUMENT_ID_BYTES = 1500


def valid_document_id(value: str) -> bool:
    """Whether ``value`` can name a Firestore document: not empty, no ``/``, not ``.``, ``..`` or
    ``__x__``, at most 1500 bytes."""
    return bool(
        value
        and "/" not in value
        and value not in (".", "..")
        and not RESERVED_NAME.match(value)
        and len(value.encode("utf-8", "surrogatepass")) <= MAX_DOCUMENT_ID_BYTES
    )


def check_collection_prefix(prefix: str) -> None:
    """A prefix of collection ids (tests isolate themselves with one): it must not make a reserved name."""
    if "/" in prefix or RESERVED_NAME.match(prefix or "x"):
        raise ValueError(f"invalid collection prefix {prefix!r}")


# --- documents -------------------------------------------------------------------------------------------

MAX_DOCUMENT_BYTES = 1_000_000
"""Largest document a store accepts. Firestore's hard limit is 1 MiB (1,048,576 bytes) by its size
formula (:func:`document_size`); the margin absorbs differences between that formula and the server."""


def check_size(path: str, doc: Mapping[str, Any]) -> int:
    """Refuse, before anything is written, a document over :data:`MAX_DOCUMENT_BYTES`."""
    size = document_size(path, doc)
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            f"document {path} would be {size:,} bytes, over the {MAX_DOCUMENT_BYTES:,}-byte limit of a "
            f"Firestore document (1 MiB); nothing was written. Keep large payloads out of run heads and "
            f"events (truncate tool outputs, store blobs elsewhere).", path=path, size=size)
    return size


def document_size(path: str, doc: Mapping[str, Any]) -> int:
    """Firestore's storage size of a document: its name (each path segment's UTF-8 length + 1, plus 16),
    plus each field's name (UTF-8 length + 1) and value, plus 32. Values: strings UTF-8 length + 1;
    booleans and null 1; integers, floats and timestamps 8; bytes their length; maps and arrays the sum
    of their contents. See https://cloud.google.com/firestore/docs/storage-size."""
    name = sum(len(seg.encode()) + 1 for seg in path.split("/")) + 16
    return name + _fields_size(doc) + 32


def _fields_size(doc: Mapping[Any, Any]) -> int:
    return sum(len(str(k).encode()) + 1 + _value_size(v) for k, v in doc.items())


def _value_size(v: object) -> int:
    if v is None or isinstance(v, bool):
        return 1
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogatepass")) + 1
    if isinstance(v, int | float | datetime):
        return 8
    if isinstance(v, bytes | bytearray):
        return len(v)
    if isinstance(v, Mapping):
        return _fields_size(v)
    if isinstance(v, Iterable):
        return sum(_value_size(x) for x in v)
    return 16


# --- runs and their approvals ----------------------------------------------------------------------------


def check_continues(seq: int, events: Sequence[Event]) -> None:
    """Events must continue the head's sequence exactly: a gap or overlap is a bug in a decision."""
    for i, event in enumerate(events, start=1):
        if event.seq != seq + i:
            raise ValueError(f"event seq {event.seq} does not continue the run's sequence at {seq + i}")


def check_update(read: RunHead, events: Sequence[Event], approvals: Sequence[Approval]) -> None:
    """What a store checks of a mutation of the head ``read`` before it writes any of it: its events
    continue the run's sequence, and its approvals are the run's own, with well-formed late decisions.
    Raises ``ValueError``: anything refused here is a bug in a decision."""
    check_continues(read.seq, events)
    for approval in approvals:
        check_belongs(approval, read.tenant, read.run_id)
        for entry in approval.late_decisions:
            check_late_decision(approval.approval_id, entry)


def check_belongs(approval: Approval, tenant: str, run_id: str) -> None:
    """An approval is written only with its own run's head: anything else is a bug in a decision."""
    if (approval.tenant, approval.run_id) != (tenant, run_id):
        raise ValueError(f"approval {approval.approval_id} of run {approval.tenant}/{approval.run_id} cannot be "
                         f"written with run {tenant}/{run_id}")


def check_late_decision(approval_id: str, entry: object) -> None:
    """A late decision is a flat map of strings under non-empty, unreserved names: Firestore stores it
    natively and its ``ArrayUnion`` compares entries exactly, so a redelivered one is recorded once."""
    if not isinstance(entry, dict) or not all(
        isinstance(k, str) and k and not RESERVED_NAME.match(k) and isinstance(v, str) for k, v in entry.items()
    ):
        raise ValueError(f"approval {approval_id}: a late decision must map non-empty field names (not '__x__') "
                         f"to strings, not {entry!r}")


# --- secrets ---------------------------------------------------------------------------------------------

SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")
"""Secret ids as Secret Manager accepts them: letters, digits, ``-`` and ``_``, at most 255."""
SECRET_ID_RULE = "letters, digits, '-', '_'; at most 255"


def valid_secret_id(secret: str) -> bool:
    return SECRET_ID.match(secret) is not None


def check_secret_id(secret: str, identity: str) -> None:
    """Secret Manager refuses a malformed name before any permission check: such a secret can never exist,
    so reading it is ``SecretNotFound`` for every identity."""
    if not valid_secret_id(secret):
        raise SecretNotFound(f"secret {secret!r} is not a valid secret id ({SECRET_ID_RULE})",
                             secret=secret, identity=identity)
