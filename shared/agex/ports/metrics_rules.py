"""The rules every metrics store applies (``agex.ports.metrics_store``): what a version registration, an
alert claim and an evaluation result amount to, so the adapters cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agex.core.metrics import AgentVersion
from agex.ports.metrics_store import AlertClaim
from agex.ports.rules import valid_document_id

MAX_MISMATCHES = 20
"""Fingerprints noted under one version beyond its first: enough to see that it keeps changing."""


def utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken as UTC (as Firestore's client does)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_all(value: Any) -> Any:
    """:func:`utc` on every datetime in nested dicts and lists (tuples become lists, as in Firestore)."""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, dict):
        return {k: utc_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [utc_all(v) for v in value]
    return value


def merge_version(stored: AgentVersion | None, seen: AgentVersion) -> AgentVersion | None:
    """What ``register_version(seen)`` stores over ``stored``: the new document, or None to leave it."""
    if stored is None:
        return seen
    if seen.fingerprint == stored.fingerprint or len(stored.mismatches) >= MAX_MISMATCHES:
        return None
    if any(m.get("fingerprint") == seen.fingerprint for m in stored.mismatches):
        return None
    changed = sorted(k for k in stored.parts.keys() | seen.parts.keys() if stored.parts.get(k) != seen.parts.get(k))
    entry = {"fingerprint": seen.fingerprint, "seen_at": utc(seen.first_seen), "changed": changed}
    return stored.model_copy(update={"mismatches": [*stored.mismatches, entry]})


def claim_state(claimed_at: datetime, published_at: datetime | None, now: datetime, hold_s: float) -> AlertClaim:
    """The outcome of a claim on an alert stored already (``held`` is also "leave the document")."""
    if published_at is not None:
        return AlertClaim.published
    if (utc(now) - utc(claimed_at)).total_seconds() >= hold_s:
        return AlertClaim.reclaimed
    return AlertClaim.held


def check_eval(result: dict[str, Any]) -> None:
    missing = [k for k in ("eval_id", "agent", "version", "created_at", "accepted") if k not in result]
    if missing:
        raise ValueError(f"evaluation result without {', '.join(missing)}")
    if not isinstance(result["created_at"], datetime) or not isinstance(result["accepted"], bool):
        raise ValueError("evaluation result: created_at must be a datetime and accepted a bool")
    if not all(isinstance(result[k], str) for k in ("agent", "version")):
        raise ValueError("evaluation result: agent and version must be strings")
    if not isinstance(result["eval_id"], str) or not valid_document_id(result["eval_id"]):
        raise ValueError("evaluation result: eval_id must be a valid document id")


def check_query(agent: str | None, version: str | None) -> None:
    if version is not None and agent is None:
        raise ValueError("a version filter needs its agent: versions are named per agent")


def check_id(what: str, value: str) -> None:
    if not valid_document_id(value):
        raise ValueError(f"invalid {what} {value!r}: it must be a valid Firestore document id")
