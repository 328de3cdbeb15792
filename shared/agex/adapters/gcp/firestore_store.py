"""Firestore adapter of the checkpoint store port.

Layout (``prefix`` is empty in production)::

    {prefix}tenants/{tenant}/{prefix}runs/{run_id}                      the RunHead
    {prefix}tenants/{tenant}/{prefix}runs/{run_id}/{prefix}events/{seq:010d}   the Events of one commit
    {prefix}tenants/{tenant}/{prefix}approvals/{approval_id}            one Approval each

Encoding:

- Heads and events are stored as native Firestore documents (``model_dump(mode="python")``), so
  datetimes are Timestamps (the TTL policy on ``expire_at`` needs that) and ``status``/``kind`` are
  strings that queries can filter on.
- The events one commit appends are stored together, in one document named by the first one's ``seq``:
  ``seq`` and ``last_seq``, ``step`` and ``last_step`` (the ranges they cover, which the queries filter on),
  ``expire_at`` (the latest of theirs: the TTL policy deletes the document whole) and ``events_json``, the
  events as a JSON array (an event's ``expire_at`` and ``format`` only when they differ from the
  document's). A step's commits write 2 event documents, not 5: Firestore bills per document written.
  Events too large to share one document (their sum over :data:`MAX_DOCUMENT_BYTES`) are split over
  several, each a contiguous range named by its first ``seq``; an event alone over the limit is refused.
- ``Event.data`` is free-form JSON (model messages, tool arguments and outputs). Firestore cannot store
  every JSON value natively (no arrays of arrays, no ``__x__`` or empty field names, integers only up to
  64 bits) and indexes every leaf of a map, which is why events are kept as JSON text. Event data must
  therefore be JSON-compatible; anything else is refused with ``ValueError``.
- ``Approval.arguments``, ``call_arguments`` and ``edited_arguments`` are tool arguments, and
  ``late_result`` holds a tool's output: free-form JSON like event data, stored as JSON strings for the
  same reasons (``arguments_json``, ``call_arguments_json``, ``edited_arguments_json``,
  ``late_result_json``; ``null`` when there are none). The rest of an
  approval is native: datetimes are Timestamps (TTL on ``expire_at``), ``status`` a string that
  :meth:`list_approvals` filters on, and ``late_decisions`` an array of maps of strings, so that
  :meth:`add_late_decision` appends with ``ArrayUnion``, which adds an entry only if no equal one is there.
- ``RunHead.metadata`` is a native map unless one of its keys is a name Firestore refuses; then it is
  stored as a JSON string in ``metadata_json``. Reading accepts both.

Every document is measured before it is sent: one over :data:`MAX_DOCUMENT_BYTES` (by Firestore's own
size formula, with margin under its hard 1 MiB limit) raises :class:`DocumentTooLarge` naming it, and
nothing of the write is committed.

An approval changes state only together with its run's head: :meth:`update_run` writes the mutation's
approvals (``set``: whole documents) in the same batch or transaction as the head, so the head's
precondition guards them too. The one write outside it is :meth:`add_late_decision`, an ``ArrayUnion``
on a settled approval; a whole-document write of that approval racing it would drop the late entry.

Indexes the deployment must declare (Terraform):

- ``find_runs``: a composite *collection-group* index on ``runs``: ``status`` ASC, ``updated_at`` ASC.
- ``list_events`` / ``events_since_step`` need only the automatic single-field indexes on ``last_seq`` and
  ``last_step``; exempt ``events.events_json`` and ``runs.input``/``runs.result`` from single-field
  indexing (large strings, never queried) to save index writes.
- ``find_waiting``: a composite *collection-group* index on ``runs``: ``status`` ASC, ``wake_at`` ASC.
- ``list_approvals``: composite indexes on ``approvals``: ``status`` ASC, ``created_at`` ASC,
  ``approval_id`` ASC (one status) and ``created_at`` ASC, ``approval_id`` ASC (all statuses).
- TTL policies on ``runs.expire_at``, ``events.expire_at`` and ``approvals.expire_at`` (collection
  groups).
- Exempt ``approvals.arguments_json``, ``approvals.call_arguments_json``,
  ``approvals.edited_arguments_json`` and ``approvals.late_result_json`` from single-field indexing
  (never queried).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, NamedTuple, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from agex.core.approval import Approval, ApprovalStatus
from agex.core.errors import AlreadyExists, ConfigurationError, NotFound, TransientError
from agex.core.run import FORMAT_VERSION, UNFINISHED_STATUSES, WAITING_STATUSES, Event, RunHead, RunStatus
from agex.ports.checkpoint_store import CheckpointStore, Mutation, RunFilter
from agex.ports.rules import (
    MAX_DOCUMENT_BYTES,
    RESERVED_NAME,
    check_collection_prefix,
    check_continues,
    check_late_decision,
    check_size,
    check_update,
    document_size,
    valid_document_id,
)

T = TypeVar("T")

__all__ = ["MAX_WRITES_PER_COMMIT", "FirestoreCheckpointStore"]

MAX_WRITES_PER_COMMIT = 500
"""Firestore commits (batches, transactions) write at most 500 documents."""

_EVENT_ID_WIDTH = 10

_OWN_EXPIRY_BYTES = 64
"""Upper bound of what an event's own ``expire_at`` and ``format`` add to its JSON in a shared document."""

_EVENTS_BUDGET = MAX_DOCUMENT_BYTES - 4_096
"""Bytes of events' JSON one event document takes: under the document limit by its other fields and its
name, which are bounded (a path of ids of at most 1,500 bytes each would not fit; ours are short)."""
_TRANSIENT = (
    gexc.Aborted,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.InternalServerError,
    gexc.RetryError,
)
_MISCONFIGURED = (gexc.PermissionDenied, gexc.Unauthenticated, gexc.FailedPrecondition, gexc.NotFound)
_APPROVAL_JSON_FIELDS = ("arguments", "call_arguments", "edited_arguments", "late_result")

_Write = tuple[firestore.DocumentReference, dict[str, Any]]


class _Writes(NamedTuple):
    """The documents one update writes, by how each is written, and their total size."""

    head: _Write
    events: list[_Write]
    """Created: an event is never overwritten."""
    sets: list[_Write]
    """Set, created or replaced whole: approvals, and spend entries (whose id is the event's, so writing one
    again writes the same document)."""
    size: int
    """Of every document whole."""
    head_size: int
    events_size: int

    @property
    def n(self) -> int:
        return 1 + len(self.events) + len(self.sets)


class FirestoreCheckpointStore(CheckpointStore):
    """Run heads and events in Firestore (native mode).

    ``client``: a ``google.cloud.firestore.Client`` (honours ``FIRESTORE_EMULATOR_HOST``); if omitted,
    one is made for ``project``/``database``. ``prefix`` is prepended to each collection id
    (``tenants``, ``runs``, ``events``, ``approvals``); tests use a unique prefix to isolate themselves, and the
    collection-group queries of :meth:`find_runs` and :meth:`find_waiting` only see runs of the same prefix.

    ``concurrency`` of :meth:`update_run`: ``"optimistic"`` (default) reads the head, runs ``mutate`` and
    commits head and events in one atomic batch conditioned on the head's update time, retrying with a
    short jittered backoff when another writer got there first; ``"transaction"`` uses a Firestore
    read-write transaction (``@firestore.transactional``, pessimistic locks). Both write all or
    nothing and create events with an exists-not precondition. The optimistic mode needs 2 RPCs per
    attempt instead of 3 and holds no locks: the Firestore emulator deadlocks concurrent transactions
    on one document until its ~2 s lock timeout (firebase/firebase-tools#6758), so only the optimistic
    mode is usable under contention there.
    ``max_attempts``: attempts of one ``update_run`` before contention becomes ``TransientError``.

    ``stats`` counts operations for benchmarks: ``reads`` (documents read, as billed: a miss or an empty
    query counts one), ``writes`` (documents written), ``bytes_written`` (by :func:`document_size`; of a head
    updated, the fields sent: those that changed; of them ``bytes_head`` and ``bytes_events``, the rest being
    approvals and spend entries),
    ``commits`` (commit attempts), ``queries``, ``retries`` (transaction attempts after the first).
    """

    def __init__(
        self,
        client: firestore.Client | None = None,
        *,
        project: str | None = None,
        database: str | None = None,
        prefix: str = "",
        concurrency: Literal["optimistic", "transaction"] = "optimistic",
        max_attempts: int = 20,
    ) -> None:
        if concurrency not in ("optimistic", "transaction"):
            raise ValueError(f"concurrency must be 'optimistic' or 'transaction', not {concurrency!r}")
        self.concurrency = concurrency
        check_collection_prefix(prefix)
        self._client = client or firestore.Client(project=project, database=database or "(default)")
        self.prefix = prefix
        self._tenants = f"{prefix}tenants"
        self._runs = f"{prefix}runs"
        self._events = f"{prefix}events"
        self._approvals = f"{prefix}approvals"
        self._spend = f"{prefix}spend"
        self._max_attempts = max_attempts
        self._known = _KnownHeads()
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
            self.stats.update(reads=0, writes=0, bytes_written=0, commits=0, queries=0, retries=0, bytes_head=0,
                              bytes_events=0)
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

    def _event_docs(self, head_ref: firestore.DocumentReference, events: Sequence[Event]) -> list[_Write]:
        """The events of one commit in as few documents as fit under the size limit, each a contiguous range
        named by its first seq."""
        docs: list[_Write] = []
        group: list[tuple[Event, str]] = []
        size = 0
        for e in events:
            item = _event_json(e)
            # and its comma, and room for its own expiry and format should they differ from the document's
            n = len(item.encode()) + 1 + _OWN_EXPIRY_BYTES
            if group and size + n > _EVENTS_BUDGET:
                docs.append(self._event_doc(head_ref, group))
                group, size = [], 0
            group.append((e, item))
            size += n
        if group:
            docs.append(self._event_doc(head_ref, group))
        return docs

    def _event_doc(self, head_ref: firestore.DocumentReference, group: list[tuple[Event, str]]) -> _Write:
        events = [e for e, _ in group]
        expire_at = max(e.expire_at for e in events)
        items = [item if e.expire_at == expire_at and e.format == FORMAT_VERSION
                 else _event_json(e, with_expiry=True) for e, item in group]
        doc = {"seq": events[0].seq, "last_seq": events[-1].seq, "step": min(e.step for e in events),
               "last_step": max(e.step for e in events), "expire_at": expire_at, "format": FORMAT_VERSION,
               "events_json": "[" + ",".join(items) + "]"}
        return self._event_ref(head_ref, events[0].seq), doc

    def _approval_ref(self, tenant: str, approval_id: str) -> firestore.DocumentReference:
        _check_id("tenant", tenant)
        _check_id("approval id", approval_id)
        return self._client.collection(self._tenants).document(tenant).collection(self._approvals).document(approval_id)

    # --- port -------------------------------------------------------------------------------------------

    def create_run(self, head: RunHead, events: Sequence[Event]) -> RunHead:
        check_continues(head.seq - len(events), events)
        ref = self._head_ref(head.tenant, head.run_id)
        writes = [(ref, _encode_head(head))] + self._event_docs(ref, events)
        _check_write_count(head.run_id, len(writes))
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
        if not _valid_ids(tenant, run_id):
            return None  # no run can have this name: create_run refuses it
        ref = self._head_ref(tenant, run_id)
        snap = self._get_snapshot(ref, run_id)
        if not snap.exists:
            return None
        doc = snap.to_dict() or {}  # a copy, and the decoder builds new values: the known head can keep it
        self._known.remember(ref.path, doc, snap.update_time, document_size(ref.path, doc))
        return _decode_head(doc)

    def update_run(self, tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        if not _valid_ids(tenant, run_id):
            raise NotFound(f"run {run_id} not found")
        ref = self._head_ref(tenant, run_id)
        if self.concurrency == "transaction":
            return self._update_in_transaction(ref, run_id, mutate)
        return self._update_optimistic(ref, run_id, mutate)

    def _prepare(
        self, ref: firestore.DocumentReference, snap: Any, run_id: str, mutate: Callable[[RunHead], Mutation[T]]
    ) -> tuple[Mutation[T], _Writes | None]:
        """Run ``mutate`` on the head read; return its result and the documents to write (None: nothing)."""
        if not snap.exists:
            raise NotFound(f"run {run_id} not found")
        head = _decode_head(snap.to_dict())
        result = mutate(head)
        if result.head is None:
            return result, None
        check_update(head, result.events, result.approvals)
        head_write = (ref, _encode_head(result.head))
        events = self._event_docs(ref, result.events)
        _check_write_count(run_id, 1 + len(events) + len(result.approvals) + len(result.spend))
        sets = [(self._approval_ref(a.tenant, a.approval_id), _encode_approval(a)) for a in result.approvals]
        sets += [(self._client.collection(self._spend).document(e.entry_id), _plain(e.model_dump(mode="python")))
                 for e in result.spend]
        head_size = _checked_size(*head_write)
        events_size = sum(_checked_size(r, doc) for r, doc in events)
        size = head_size + events_size + sum(_checked_size(r, doc) for r, doc in sets)
        return result, _Writes(head_write, events, sets, size, head_size, events_size)

    def _update_optimistic(
        self, ref: firestore.DocumentReference, run_id: str, mutate: Callable[[RunHead], Mutation[T]]
    ) -> Mutation[T]:
        """Read the head, decide, then commit head and events in one atomic batch on the precondition that
        the head is still the version read (its update time). A concurrent writer makes the commit fail
        with FAILED_PRECONDITION and the whole update is tried again: no locks, so no lock waits, and
        2 RPCs (get, commit) per attempt instead of a transaction's 3.

        The first attempt skips the read when this store last saw the head (read it, or committed it) in
        this process: the precondition proves at the commit that it is still that version, and a decision
        that writes nothing, or refuses, is taken again on a fresh read, since nothing would prove it. A
        step thus reads its head once, not once per commit."""
        known = self._known.recall(ref.path)
        attempt = 0
        while attempt < self._max_attempts:
            if known is None:
                attempt += 1
                if attempt > 1:
                    self._count(retries=1)
                    time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # de-synchronize contenders
            snap, known = known or self._get_snapshot(ref, run_id), None
            try:
                result, writes = self._prepare(ref, snap, run_id, mutate)
            except Exception:
                if isinstance(snap, _KnownHead):
                    continue  # decided on what this process last saw: decide again on what is stored
                raise
            if writes is None:
                if isinstance(snap, _KnownHead):
                    continue
                return result
            changes = _head_changes(snap.to_dict() or {}, writes.head[1])
            batch = self._client.batch()
            # update() of the top-level fields that changed (and deletion of those gone) leaves the document
            # equal to the new head, sends only what changed, and unlike set() takes a precondition.
            batch.update(ref, changes, option=self._client.write_option(last_update_time=snap.update_time))
            for r, doc in writes.events:
                batch.create(r, doc)  # an event is never overwritten
            for r, doc in writes.sets:
                batch.set(r, doc)  # guarded by the head's precondition: the whole batch fails with it
            self._count(commits=1)
            try:
                written = batch.commit()
            except (gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):
                self._known.forget(ref.path)
                continue  # the head changed (or went) since it was read: decide again on the new one
            except gexc.Conflict as e:
                # An event document exists already. If the head changed, a concurrent writer took these
                # sequence numbers: decide again. If not, the events collection is out of step with
                # the head: retrying cannot help.
                self._known.forget(ref.path)
                current = self._get_snapshot(ref, run_id)
                if current.exists and current.update_time != snap.update_time:
                    continue
                raise AlreadyExists(
                    f"run {run_id}: an event document among {[r.id for r, _ in writes.events]} exists already "
                    f"although the head was not changed; the run's events are inconsistent with its head"
                ) from e
            except gexc.GoogleAPIError as e:
                self._known.forget(ref.path)
                raise _translate(e, f"updating run {run_id}") from e
            # the head's write comes first in the batch: its result carries the new version's update time
            self._known.remember(ref.path, writes.head[1], written[0].update_time, writes.head_size)
            sent = document_size(ref.path, {k: None if v is firestore.DELETE_FIELD else v for k, v in changes.items()})
            self._count(writes=writes.n, bytes_written=writes.size - writes.head_size + sent, bytes_head=sent,
                        bytes_events=writes.events_size)
            return result
        raise TransientError(f"updating run {run_id}: too much contention, gave up after {self._max_attempts} attempts")

    def _get_snapshot(self, ref: firestore.DocumentReference, run_id: str) -> Any:
        return self._get(ref, f"reading run {run_id}")

    def _get(self, ref: firestore.DocumentReference, what: str) -> Any:
        try:
            snap = ref.get()
        except gexc.GoogleAPIError as e:
            raise _translate(e, what) from e
        self._count(reads=1)
        return snap

    def _update_in_transaction(
        self, ref: firestore.DocumentReference, run_id: str, mutate: Callable[[RunHead], Mutation[T]]
    ) -> Mutation[T]:
        """The same in a Firestore read-write transaction (pessimistic locking; retried on ABORTED)."""
        attempts = 0
        staged: dict[str, int] = {}

        def body(transaction: firestore.Transaction) -> Mutation[T]:
            nonlocal attempts
            attempts += 1
            staged.clear()
            snap = next(iter(transaction.get(ref)))
            result, writes = self._prepare(ref, snap, run_id, mutate)
            if writes is not None:
                transaction.set(ref, writes.head[1])
                for r, doc in writes.events:
                    transaction.create(r, doc)  # an event is never overwritten
                for r, doc in writes.sets:
                    transaction.set(r, doc)
                staged.update(writes=writes.n, bytes_written=writes.size)
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
        if limit <= 0 or not _valid_ids(tenant, run_id):
            return []
        # a document holds one or more events: `limit` documents hold at least `limit` events past `after_seq`
        # (the first may start before it); ranges do not overlap, so ordering by their ends orders them
        query = (
            self._head_ref(tenant, run_id)
            .collection(self._events)
            .where(filter=FieldFilter("last_seq", ">", after_seq))
            .order_by("last_seq")
            .limit(limit)
        )
        docs = self._query(query, f"listing events of run {run_id}")
        return [e for d in docs for e in _decode_events(d) if e.seq > after_seq][:limit]

    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        # Inequality and (implicit) first order on the same field: served by the automatic single-field
        # index on `last_step`. The sort by seq keeps the port's order even if a later event were ever
        # recorded under an earlier step.
        if not _valid_ids(tenant, run_id):
            return []
        query = (self._head_ref(tenant, run_id).collection(self._events)
                 .where(filter=FieldFilter("last_step", ">=", step)))
        docs = self._query(query.order_by("last_step"), f"reading events of run {run_id}")
        return sorted((e for d in docs for e in _decode_events(d) if e.step >= step), key=lambda e: e.seq)

    def find_runs(self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100, *,
                  updated_after: datetime | None = None) -> list[RunHead]:
        if not statuses or limit <= 0:
            return []
        # Production needs a composite collection-group index on `runs` (status ASC, updated_at ASC);
        # the Terraform declares it. The emulator needs none.
        query = (
            self._client.collection_group(self._runs)
            .where(filter=FieldFilter("status", "in", sorted({str(RunStatus(s)) for s in statuses})))
            .where(filter=FieldFilter("updated_at", "<", updated_before))
        )
        if updated_after is not None:
            query = query.where(filter=FieldFilter("updated_at", ">", updated_after))
        query = query.order_by("updated_at").limit(limit)
        return [_decode_head(d) for d in self._query(query, "finding runs")]

    def list_runs(self, tenant: str, where: RunFilter, *, limit: int = 100,
                  after: tuple[datetime, str] | None = None) -> list[RunHead]:
        if limit <= 0 or not valid_document_id(tenant):
            return []
        # Equality filters, then the creation range, newest first: the Terraform declares a composite index
        # for each combination of agent, status, principal and thread (docs/operations.md). Ordered by the run_id
        # field, not the document id, so any cursor works.
        query: Any = self._client.collection(self._tenants).document(tenant).collection(self._runs)
        for name, value in (("agent", where.agent), ("status", str(RunStatus(where.status)) if where.status else None),
                            ("principal", where.principal), ("thread_id", where.thread)):
            if value is not None:
                query = query.where(filter=FieldFilter(name, "==", value))
        if where.created_after is not None:
            query = query.where(filter=FieldFilter("created_at", ">=", where.created_after))
        if where.created_before is not None:
            query = query.where(filter=FieldFilter("created_at", "<", where.created_before))
        query = query.order_by("created_at", direction="DESCENDING").order_by("run_id", direction="DESCENDING")
        if after is not None:
            query = query.start_after({"created_at": after[0], "run_id": after[1]})
        return [_decode_head(d) for d in self._query(query.limit(limit), f"listing runs of tenant {tenant}")]

    def unfinished_versions(self, *, tenant: str | None = None, agent: str | None = None) -> dict[tuple[str, str], int]:
        if tenant is not None and not valid_document_id(tenant):
            return {}
        # Every tenant: a collection-group query on status with agent after it, the composite index
        # runs_status_agent that the Terraform declares. One tenant: equality filters the automatic single-field
        # indexes serve. Only the two fields counted are read back.
        query: Any = (self._client.collection_group(self._runs) if tenant is None
                      else self._client.collection(self._tenants).document(tenant).collection(self._runs))
        query = query.where(filter=FieldFilter("status", "in", [str(s) for s in UNFINISHED_STATUSES]))
        if agent is not None:
            query = query.where(filter=FieldFilter("agent", "==", agent))
        counts: Counter[tuple[str, str]] = Counter()
        for data in self._query(query.select(["agent", "agent_version"]), "counting unfinished runs per version"):
            counts[(str(data.get("agent", "")), str(data.get("agent_version", "")))] += 1
        return dict(counts)

    def find_waiting(self, due_before: datetime, limit: int = 100) -> list[RunHead]:
        if limit <= 0:
            return []
        # Composite collection-group index on `runs` (status ASC, wake_at ASC). Runs without `wake_at`
        # (null) never match the inequality.
        query = (
            self._client.collection_group(self._runs)
            .where(filter=FieldFilter("status", "in", [str(s) for s in WAITING_STATUSES]))
            .where(filter=FieldFilter("wake_at", "<", due_before))
            .order_by("wake_at")
            .limit(limit)
        )
        return [_decode_head(d) for d in self._query(query, "finding waiting runs")]

    def get_approval(self, tenant: str, approval_id: str) -> Approval | None:
        if not _valid_ids(tenant, approval_id):
            return None  # no approval can have this name
        snap = self._get(self._approval_ref(tenant, approval_id), f"reading approval {approval_id}")
        return _decode_approval(snap.to_dict()) if snap.exists else None

    def list_approvals(self, tenant: str, *, status: ApprovalStatus | None = None, limit: int = 100,
                       after: tuple[datetime, str] | None = None) -> list[Approval]:
        if limit <= 0 or not valid_document_id(tenant):
            return []
        # Ordered by the approval_id *field*, not the document id, so any cursor string works (a cursor
        # on __name__ must be a valid document id); costs the (created_at, approval_id) index.
        query: Any = self._client.collection(self._tenants).document(tenant).collection(self._approvals)
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", str(ApprovalStatus(status))))
        query = query.order_by("created_at").order_by("approval_id")
        if after is not None:
            query = query.start_after({"created_at": after[0], "approval_id": after[1]})
        docs = self._query(query.limit(limit), f"listing approvals of tenant {tenant}")
        return [_decode_approval(d) for d in docs]

    def add_late_decision(self, tenant: str, approval_id: str, entry: dict[str, Any]) -> None:
        if not _valid_ids(tenant, approval_id):
            raise NotFound(f"approval {approval_id} not found")
        check_late_decision(approval_id, entry)
        ref = self._approval_ref(tenant, approval_id)
        what = f"recording a late decision on approval {approval_id}"
        # Read first only to refuse, like every write here, a document that would outgrow the limit.
        snap = self._get(ref, what)
        if not snap.exists:
            raise NotFound(f"approval {approval_id} not found")
        doc = snap.to_dict() or {}
        late = list(doc.get("late_decisions") or [])
        if entry in late:
            return  # a redelivered late decision is recorded once
        size = _checked_size(ref, {**doc, "late_decisions": [*late, entry]})
        try:
            self._count(commits=1)
            # ArrayUnion adds the entry only if no equal one is there, so a concurrent redelivery that
            # raced the read above still records it once; update fails if the approval went.
            ref.update({"late_decisions": firestore.ArrayUnion([dict(entry)])})
        except gexc.NotFound as e:
            raise NotFound(f"approval {approval_id} not found") from e
        except gexc.GoogleAPIError as e:
            raise _translate(e, what) from e
        self._count(writes=1, bytes_written=size)

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
    if any(not k or RESERVED_NAME.match(k) for k in metadata):
        doc["metadata_json"] = json.dumps(doc.pop("metadata"), ensure_ascii=False, separators=(",", ":"))
    return doc


def _decode_head(doc: dict[str, Any] | None) -> RunHead:
    doc = _from_firestore(doc or {})
    if "metadata_json" in doc:
        doc["metadata"] = json.loads(doc.pop("metadata_json"))
    return RunHead.model_validate(doc)


def _event_json(event: Event, *, with_expiry: bool = False) -> str:
    """An event as JSON text, without the ``expire_at`` and ``format`` its document carries for it."""
    # the envelope as JSON (datetimes as ISO text); the data as it is, so that what is not JSON is refused
    doc = event.model_dump(mode="json", exclude={"data"} if with_expiry else {"data", "expire_at", "format"})
    doc["data"] = event.data
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"event {event.seq} ({event.kind}): data must be JSON-compatible: {e}") from e


def _decode_events(doc: dict[str, Any] | None) -> list[Event]:
    doc = doc or {}
    expire_at, version = _from_firestore(doc.get("expire_at")), doc.get("format", FORMAT_VERSION)
    return [Event.model_validate({"expire_at": expire_at, "format": version, **item})
            for item in json.loads(doc.get("events_json") or "[]")]


def _encode_approval(approval: Approval) -> dict[str, Any]:
    doc = _plain(approval.model_dump(mode="python", exclude=set(_APPROVAL_JSON_FIELDS)))
    for name in _APPROVAL_JSON_FIELDS:
        try:
            doc[f"{name}_json"] = json.dumps(getattr(approval, name), ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"approval {approval.approval_id}: {name} must be JSON-compatible: {e}") from e
    return doc


def _decode_approval(doc: dict[str, Any] | None) -> Approval:
    doc = _from_firestore(doc or {})
    for name in _APPROVAL_JSON_FIELDS:
        if f"{name}_json" in doc:
            doc[name] = json.loads(doc.pop(f"{name}_json"))
    return Approval.model_validate(doc)


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


def _check_write_count(run_id: str, n: int) -> None:
    if n > MAX_WRITES_PER_COMMIT:
        raise ValueError(
            f"run {run_id}: one update may write at most {MAX_WRITES_PER_COMMIT} documents (the head, its "
            f"events and approvals), not {n}: Firestore's limit of writes per commit"
        )


class _KnownHead(NamedTuple):
    """A head as this process last saw it, standing in for a snapshot: what an update decides on it commits
    only if the stored head is still this version."""

    doc: dict[str, Any]
    update_time: Any
    exists: bool = True

    def to_dict(self) -> dict[str, Any]:
        # not a copy (a snapshot's to_dict is one, at 0.5 ms a head): its readers, the head's decoder (which
        # builds new values) and _head_changes, only read it
        return self.doc


class _KnownHeads:
    """The last version of each recently used head this process read or committed, by document path, the least
    recently used dropped first. Bounded in bytes (a head is a few KB, a thread's turn's up to a few hundred): a
    step function serves many runs, and a head not found here is read, as before."""

    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heads: OrderedDict[str, tuple[_KnownHead, int]] = OrderedDict()
        self._bytes = 0

    def remember(self, path: str, doc: dict[str, Any], update_time: Any, size: int) -> None:
        with self._lock:
            self._drop(path)
            if update_time is None or size > self.MAX_BYTES // 16:
                return
            self._heads[path] = (_KnownHead(doc, update_time), size)  # a snapshot's copy, or a head just encoded
            self._bytes += size
            while self._bytes > self.MAX_BYTES:
                self._drop(next(iter(self._heads)))

    def recall(self, path: str) -> _KnownHead | None:
        with self._lock:
            known = self._heads.get(path)
            if known is None:
                return None
            self._heads.move_to_end(path)
            return known[0]

    def forget(self, path: str) -> None:
        with self._lock:
            self._drop(path)

    def _drop(self, path: str) -> None:
        known = self._heads.pop(path, None)
        if known is not None:
            self._bytes -= known[1]


def _head_changes(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``new`` whose values differ from ``stored``, and the deletion of those ``new`` has not: what
    an update must send to turn the stored head into the new one. Never empty: the update carries the head's
    precondition, so an unchanged head sends its ``seq`` again."""
    changes: dict[str, Any] = {k: v for k, v in new.items() if k not in stored or stored[k] != v}
    changes.update({k: firestore.DELETE_FIELD for k in stored if k not in new})
    return changes or {"seq": new["seq"]}


def _checked_size(ref: firestore.DocumentReference, doc: dict[str, Any]) -> int:
    return check_size(ref.path, doc)


def _valid_ids(*values: str) -> bool:
    return all(valid_document_id(v) for v in values)


def _check_id(what: str, value: str) -> None:
    if not valid_document_id(value):
        raise ValueError(f"invalid {what} {value!r}: Firestore document ids must be non-empty, without '/', "
                         f"not '.', '..' or '__...__', and at most 1500 bytes")


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
