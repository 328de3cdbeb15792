"""How heads, events and approvals are written as JSON for Postgres, and read back.

Datetimes are ISO 8601 strings in UTC (as Firestore hands them back: in UTC), enums their values. The
free-form parts (an event's ``data``; an approval's arguments and late result) are written as they are and
must be JSON already: anything else (a datetime, an object) is refused with ``ValueError``, as the Firestore
store refuses it, rather than silently read back as something else.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any

from agex.core.approval import Approval
from agex.core.run import Event, RunHead
from agex.ports.metrics_rules import utc

__all__ = ["decode_approval", "decode_event", "decode_head", "encode_approval", "encode_event", "encode_head"]

_APPROVAL_FREE_FORM = ("arguments", "call_arguments", "edited_arguments", "late_result", "late_decisions")


def encode_head(head: RunHead) -> str:
    return _dumps(_plain(head.model_dump(mode="python")), f"run {head.run_id}: the head")


def decode_head(doc: Any) -> RunHead:
    return RunHead.model_validate(_loaded(doc))


def encode_event(event: Event) -> str:
    doc = _plain(event.model_dump(mode="python", exclude={"data"}))
    doc["data"] = event.data
    return _dumps(doc, f"event {event.seq} ({event.kind}): data")


def decode_event(doc: Any) -> Event:
    return Event.model_validate(_loaded(doc))


def encode_approval(approval: Approval) -> str:
    doc = _plain(approval.model_dump(mode="python", exclude=set(_APPROVAL_FREE_FORM)))
    doc.update((name, getattr(approval, name)) for name in _APPROVAL_FREE_FORM)
    return _dumps(doc, f"approval {approval.approval_id}: its arguments and late result")


def decode_approval(doc: Any) -> Approval:
    return Approval.model_validate(_loaded(doc))


def _plain(value: Any) -> Any:
    """The typed parts of a model's dump as JSON values: datetimes in UTC, enums by value."""
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dumps(doc: Any, what: str) -> str:
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-compatible: {e}") from e


def _loaded(doc: Any) -> Any:
    """psycopg parses json and jsonb columns; a string is a document a driver left as text."""
    return json.loads(doc) if isinstance(doc, str | bytes) else doc
