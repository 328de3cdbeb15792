"""Firestore adapter of the checkpoint store port.

Layout (``prefix`` is empty in production)::

    {prefix}tenants/{tenant}/{prefix}runs/{run_id}                      the RunHead
    {prefix}tenants/{tenant}/{prefix}runs/{run_id}/{prefix}events/{seq:010d}   one Event each

Encoding:

- Heads and events are stored as native Firestore documents (``model_dump(mode="python")``), so
  datetimes are Timestamps (the TTL policy on ``expire_at`` needs that) and ``status``/``kind`` are
  strings that queries can filter on.
- ``Event.data`` is free-form JSON (model messages, tool arguments and outputs). Firestore cannot store
  every JSON value natively (no arrays of arrays, no ``__x__`` or empty field names, integers only up to
  64 bits) and indexes every leaf of a map, so ``data`` is stored as one JSON string, ``data_json``.
  Event data must therefore be JSON-compatible; anything else is refused with ``ValueError``.
- ``RunHead.metadata`` is a native map unless one of its keys is a name Firestore refuses; then it is
  stored as a JSON string in ``metadata_json``. Reading accepts both.

Every document is measured before it is sent: one over :data:`MAX_DOCUMENT_BYTES` (by Firestore's own
size formula, with margin under its hard 1 MiB limit) raises :class:`DocumentTooLarge` naming it, and
nothing of the write is committed.

Indexes the deployment must declare (Terraform):

- ``find_runs``: a composite *collection-group* index on ``runs``: ``status`` ASC, ``updated_at`` ASC.
- ``list_events`` / ``events_since_step`` need only the automatic single-field indexes on ``seq`` and
  ``step``; exempt ``events.data_json`` and ``runs.input``/``runs.result`` from single-field indexing
  (large strings, never queried) to save index writes.
- TTL policies on ``runs.expire_at`` and ``events.expire_at`` (collection groups).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from agex.errors import AlreadyExists, ConfigurationError, NotFound, TransientError
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.run import Event, RunHead, RunStatus

T = TypeVar("T")

__all__ = ["MAX_DOCUMENT_BYTES", "DocumentTooLarge", "FirestoreCheckpointStore", "document_size"]

MAX_DOCUMENT_BYTES = 1_000_000
"""Largest document this adapter sends. Firestore's hard limit is 1 MiB (1,048,576 bytes) by its size
formula (:func:`document_size`); the margin absorbs differences between that formula and the server."""

_EVENT_ID_WIDTH = 10
_RESERVED_FIELD = re.compile(r"^__.*__$")
_TRANSIENT = (
    gexc.Aborted,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.InternalServerError,
    gexc.RetryError,
)
_MISCONFIGURED = (gexc.PermissionDenied, gexc.Unauthenticated, gexc.FailedPrecondition, gexc.NotFound)


class DocumentTooLarge(ConfigurationError, ValueError):
    """A head or event would exceed Firestore's document size limit. A ``ValueError`` too, like the
    store's other refusals of a malformed write."""

    def __init__(self, message: str, path: str, size: int) -> None:
        super().__init__(message)
        self.path = path
        self.size = size


class FirestoreCheckpointStore(CheckpointStore):
    """Run heads and events in Firestore (native mode).

    ``client``: a ``google.cloud.firestore.Client`` (honours ``FIRESTORE_EMULATOR_HOST``); if omitted,
    one is made for ``project``/``database``. ``prefix`` is prepended to each collection id
    (``tenants``, ``runs``, ``events``); tests use a unique prefix to isolate themselves, and the
    collection-group query of :meth:`find_runs` only sees runs of the same prefix.
    ``max_attempts``: commits of one ``update_run`` tried before contention becomes ``TransientError``.

    ``stats`` counts operations for benchmarks: ``reads`` (documents read, as billed: a miss or an empty
    query counts one), ``writes`` (documents written), ``bytes_written`` (by :func:`document_size`),
    ``commits`` (commit attempts), ``queries``, ``retries`` (transaction attempts after the first).
    """

    def __init__(
        self,
        client: firestore.Client | None = None,
        *,
        project: str | None = None,
        database: str | None = None,
        prefix: str = "",
        max_attempts: int = 20,
    ) -> None:
        if "/" in prefix or _RESERVED_FIELD.match(prefix or "x"):
            raise ValueError(f"invalid collection prefix {prefix!r}")
        self._client = client or firestore.Client(project=project, database=database or "(default)")
        self.prefix = prefix
        self._tenants = f"{prefix}tenants"
        self._runs = f"{prefix}runs"
        self._events = f"{prefix}events"
        self._max_attempts = max_attempts
        self._stats_lock = threading.Lock()
        self.stats: dict[str, int] = {}
        self.reset_stats()

    @property
    def client(self) -> firestore.Client:
        return self._client

    # --- stats ------------------------------------------------------------------------------------------

    def reset_stats(self) -> dict[str, int]:
        """Zero the counters; return their values before."""
        with self._stats_lock:
            before = dict(self.stats)
            self.stats.update(reads=0, writes=0, bytes_written=0, commits=0, queries=0, retries=0)
            return before

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for k, v in deltas.items():
                self.stats[k] = self.stats.get(k, 0) + v

    # --- references -------------------------------------------------------------------------------------

    def _head_ref(self, tenant: str, run_id: str) -> firestore.DocumentReference:
        _check_id("tenant", tenant)
        _check_id("run id", run_id)
        return self._client.collection(self._tenants).document(tenant).collection(self._runs).document(run_id)

    def _event_ref(self, head_ref: firestore.DocumentReference, seq: int) -> firestore.DocumentReference:
        return head_ref.collection(self._events).document(f"{seq:0{_EVENT_ID_WIDTH}d}")

    # --- port -------------------------------------------------------------------------------------------

    def create_run(self, head: RunHead, events: Sequence[Event]) -> RunHead:
        _check_continues(head.seq - len(events), events)
        ref = self._head_ref(head.tenant, head.run_id)
        writes = [(ref, _encode_head(head))] + [(self._event_ref(ref, e.seq), _encode_event(e)) for e in events]
        sizes = [_checked_size(r, doc) for r, doc in writes]
        batch = self._client.batch()
        for r, doc in writes:
            batch.create(r, doc)  # create: fails if the document exists, so nothing is overwritten
        try:
            self._count(commits=1)
            batch.commit()
        except gexc.Conflict as e:  # ALREADY_EXISTS; the whole batch is rejected
            existing = self.get_run(head.tenant, head.run_id)
            if existing is None:
                raise AlreadyExists(
                    f"run {head.run_id} of tenant {head.tenant} cannot be created: events of an earlier "
                    f"run with this id are still stored",
                ) from e
            raise AlreadyExists(f"run {head.run_id} exists", existing=existing) from e
        except gexc.GoogleAPIError as e:
            raise _translate(e, f"creating run {head.run_id}") from e
        self._count(writes=len(writes), bytes_written=sum(sizes))
        return head

    def get_run(self, tenant: str, run_id: str) -> RunHead | None:
        ref = self._head_ref(tenant, run_id)
        try:
            snap = ref.get()
        except gexc.GoogleAPIError as e:
            raise _translate(e, f"reading run {run_id}") from e
        self._count(reads=1)
        return _decode_head(snap.to_dict()) if snap.exists else None

    def update_run(self, tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        ref = self._head_ref(tenant, run_id)
        attempts = 0
        staged: dict[str, int] = {}

        def body(transaction: firestore.Transaction) -> Mutation[T]:
            nonlocal attempts
            attempts += 1
            staged.clear()
            snap = next(iter(transaction.get(ref)))
            if not snap.exists:
                raise NotFound(f"run {run_id} not found")
            head = _decode_head(snap.to_dict())
            result = mutate(head)
            if result.head is None:
                return result
            _check_continues(head.seq, result.events)
            writes = [(ref, _encode_head(result.head))]
            writes += [(self._event_ref(ref, e.seq), _encode_event(e)) for e in result.events]
            sizes = [_checked_size(r, doc) for r, doc in writes]
            transaction.set(ref, writes[0][1])
            for r, doc in writes[1:]:
                transaction.create(r, doc)  # an event is never overwritten
            staged.update(writes=len(writes), bytes_written=sum(sizes))
            return result

        try:
            while True:
                transaction = self._client.transaction(max_attempts=max(1, self._max_attempts - attempts))
                try:
                    result = firestore.transactional(body)(transaction)
                    break
                except gexc.Aborted:
                    # Aborted while reading: the client retries aborted commits only. Start over.
                    if attempts >= self._max_attempts:
                        raise
        except ValueError as e:
            if isinstance(e.__cause__, gexc.Aborted):  # the client's "failed to commit in N attempts"
                raise TransientError(
                    f"updating run {run_id}: too much contention, gave up after {attempts} attempts"
                ) from e
            raise
        except gexc.GoogleAPIError as e:
            raise _translate(e, f"updating run {run_id}") from e
        finally:
            self._count(reads=attempts, commits=attempts, retries=max(0, attempts - 1))
        self._count(**staged)
        return result

    def list_events(self, tenant: str, run_id: str, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        if limit <= 0:
            return []
        query = (
            self._head_ref(tenant, run_id)
            .collection(self._events)
            .where(filter=FieldFilter("seq", ">", after_seq))
            .order_by("seq")
            .limit(limit)
        )
        return [_decode_event(d) for d in self._query(query, f"listing events of run {run_id}")]

    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        # Inequality and (implicit) first order on the same field: served by the automatic single-field
        # index on `step`; ties are broken by document id, the zero-padded seq. The sort by seq keeps
        # the port's order even if a later event were ever recorded under an earlier step.
        query = self._head_ref(tenant, run_id).collection(self._events).where(filter=FieldFilter("step", ">=", step))
        docs = self._query(query.order_by("step"), f"reading events of run {run_id}")
        return sorted((_decode_event(d) for d in docs), key=lambda e: e.seq)

    def find_runs(self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100) -> list[RunHead]:
        if not statuses or limit <= 0:
            return []
        # Production needs a composite collection-group index on `runs` (status ASC, updated_at ASC);
        # the Terraform declares it. The emulator needs none.
        query = (
            self._client.collection_group(self._runs)
            .where(filter=FieldFilter("status", "in", sorted({str(RunStatus(s)) for s in statuses})))
            .where(filter=FieldFilter("updated_at", "<", updated_before))
            .order_by("updated_at")
            .limit(limit)
        )
        return [_decode_head(d) for d in self._query(query, "finding runs")]

    def _query(self, query: Any, what: str) -> list[dict[str, Any]]:
        try:
            docs = [snap.to_dict() for snap in query.stream()]
        except gexc.GoogleAPIError as e:
            raise _translate(e, what) from e
        self._count(queries=1, reads=max(1, len(docs)))
        return docs


# --- encoding -----------------------------------------------------------------------------------------


def _encode_head(head: RunHead) -> dict[str, Any]:
    doc = _plain(head.model_dump(mode="python"))
    metadata = doc.get("metadata") or {}
    if any(not k or _RESERVED_FIELD.match(k) for k in metadata):
        doc["metadata_json"] = json.dumps(doc.pop("metadata"), ensure_ascii=False, separators=(",", ":"))
    return doc


def _decode_head(doc: dict[str, Any] | None) -> RunHead:
    doc = _from_firestore(doc or {})
    if "metadata_json" in doc:
        doc["metadata"] = json.loads(doc.pop("metadata_json"))
    return RunHead.model_validate(doc)


def _encode_event(event: Event) -> dict[str, Any]:
    doc = _plain(event.model_dump(mode="python", exclude={"data"}))
    try:
        doc["data_json"] = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"event {event.seq} ({event.kind}): data must be JSON-compatible: {e}") from e
    return doc


def _decode_event(doc: dict[str, Any] | None) -> Event:
    doc = _from_firestore(doc or {})
    data = doc.pop("data_json", None)
    if data is not None:
        doc["data"] = json.loads(data)
    return Event.model_validate(doc)


def _plain(value: Any) -> Any:
    """Enums to their values, tuples to lists: what the Firestore client encodes without surprises."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _from_firestore(value: Any) -> Any:
    """Firestore's DatetimeWithNanoseconds to plain aware-UTC datetimes, recursively."""
    if isinstance(value, datetime):
        tz = value.tzinfo or UTC
        return datetime(
            value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, tzinfo=tz
        )
    if isinstance(value, dict):
        return {k: _from_firestore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_firestore(v) for v in value]
    return value


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


def _checked_size(ref: firestore.DocumentReference, doc: dict[str, Any]) -> int:
    size = document_size(ref.path, doc)
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            f"document {ref.path} would be {size:,} bytes, over the {MAX_DOCUMENT_BYTES:,}-byte limit of a "
            f"Firestore document (1 MiB); nothing was written. Keep large payloads out of run heads and "
            f"events (truncate tool outputs, store blobs elsewhere).",
            path=ref.path,
            size=size,
        )
    return size


def _check_id(what: str, value: str) -> None:
    if not value or "/" in value or value in (".", "..") or _RESERVED_FIELD.match(value) or len(value.encode()) > 1500:
        raise ValueError(f"invalid {what} {value!r}: Firestore document ids must be non-empty, without '/', "
                         f"not '.', '..' or '__...__', and at most 1500 bytes")


def _check_continues(seq: int, events: Sequence[Event]) -> None:
    """Events must continue the head's sequence exactly (as the in-memory store checks)."""
    for i, event in enumerate(events, start=1):
        if event.seq != seq + i:
            raise ValueError(f"event seq {event.seq} does not continue the run's sequence at {seq + i}")


def _translate(e: gexc.GoogleAPIError, what: str) -> Exception:
    msg = getattr(e, "message", None) or str(e)
    if isinstance(e, _TRANSIENT):
        return TransientError(f"{what}: Firestore is unavailable or overloaded ({type(e).__name__}: {msg})")
    if isinstance(e, _MISCONFIGURED):
        return ConfigurationError(
            f"{what}: Firestore refused the request ({type(e).__name__}: {msg}); check the database, "
            f"its indexes and the service account's roles"
        )
    if isinstance(e, gexc.InvalidArgument):
        return ConfigurationError(f"{what}: Firestore rejected the data ({msg})")
    return TransientError(f"{what}: unexpected Firestore error ({type(e).__name__}: {msg})")
