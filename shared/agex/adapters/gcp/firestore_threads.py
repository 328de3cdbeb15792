"""Firestore adapter of the thread store port: ``{prefix}tenants/{tenant}/{prefix}threads/{thread_id}``, beside the
tenant's runs (the same prefix scheme as the checkpoint store, so a test prefix isolates both together).

Encoding: native, like a run head, so datetimes are Timestamps (the TTL policy on ``expire_at`` needs that) and
read back as aware UTC. ``context`` (the summary and the last turns, whose texts run to thousands of characters)
is stored as one JSON string, ``context_json``: never queried, and a map would have Firestore index every leaf of
every turn on each write. ``metadata`` is a native map unless one of its keys is a name Firestore refuses; then it
is stored as a JSON string in ``metadata_json``, as on run heads. Reading accepts both.

Concurrency: :meth:`FirestoreThreads.update_thread` reads, decides and writes atomically, in a read-write
transaction or optimistically (a write conditioned on the version read), retried on contention; a thread changes a
few times per turn, so contention is low. Every document is measured before it is sent: one over the size limit
raises ``DocumentTooLarge`` and nothing is written.

Indexes (Terraform): a TTL policy on ``threads.expire_at``; ``threads.context_json`` exempt from single-field
indexing. Threads are only read by id: no composite index.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from agex.adapters.gcp.firestore_calls import calling, native
from agex.core.errors import AlreadyExists, NotFound, TransientError
from agex.core.thread import Thread, ThreadContext
from agex.ports.metrics_rules import utc
from agex.ports.rules import RESERVED_NAME, check_collection_prefix, check_size, valid_document_id
from agex.ports.threads import ThreadStore

if TYPE_CHECKING:
    from google.cloud import firestore

T = TypeVar("T")

__all__ = ["FirestoreThreads"]


class FirestoreThreads(ThreadStore):
    """``concurrency`` of :meth:`update_thread`, as in ``FirestoreCheckpointStore``: ``"transaction"`` (default) a
    read-write transaction, ``"optimistic"`` a write conditioned on the update time of the version read, retried
    when another writer got there first (no locks: the one usable under contention on the emulator, which
    deadlocks concurrent transactions on one document until its lock timeout, firebase/firebase-tools#6758).
    ``max_attempts``: attempts of one update before contention becomes ``TransientError``."""

    def __init__(self, client: firestore.Client, *, prefix: str = "",
                 concurrency: Literal["transaction", "optimistic"] = "transaction", max_attempts: int = 20) -> None:
        if concurrency not in ("optimistic", "transaction"):
            raise ValueError(f"concurrency must be 'optimistic' or 'transaction', not {concurrency!r}")
        check_collection_prefix(prefix)
        self.concurrency = concurrency
        self._client = client
        self._tenants = f"{prefix}tenants"
        self._threads = f"{prefix}threads"
        self._max_attempts = max_attempts

    def _ref(self, tenant: str, thread_id: str) -> firestore.DocumentReference:
        for what, value in (("tenant", tenant), ("thread id", thread_id)):
            if not valid_document_id(value):
                raise ValueError(f"invalid {what} {value!r}: Firestore document ids must be non-empty, without "
                                 f"'/', not '.', '..' or '__...__', and at most 1500 bytes")
        return self._client.collection(self._tenants).document(tenant).collection(self._threads).document(thread_id)

    def create_thread(self, thread: Thread) -> Thread:
        from google.api_core import exceptions as gexc

        ref = self._ref(thread.tenant, thread.thread_id)
        doc = _encode(thread)
        check_size(ref.path, doc)
        with calling(f"creating thread {thread.thread_id}"):
            try:
                ref.create(doc)  # fails if the document exists: nothing is overwritten
                return thread
            except gexc.Conflict as e:
                taken = e
        # existing None: the TTL deleted the thread since; its id was still taken when the create ran.
        raise AlreadyExists(f"thread {thread.thread_id} exists",
                            existing=self.get_thread(thread.tenant, thread.thread_id)) from taken

    def get_thread(self, tenant: str, thread_id: str) -> Thread | None:
        if not (valid_document_id(tenant) and valid_document_id(thread_id)):
            return None  # no thread can have this name: create_thread refuses it
        with calling(f"reading thread {thread_id}"):
            snap = self._ref(tenant, thread_id).get()
        return _decode(snap.to_dict()) if snap.exists else None

    def update_thread(self, tenant: str, thread_id: str,
                      mutate: Callable[[Thread], tuple[Thread | None, T]]) -> tuple[Thread, T]:
        if not (valid_document_id(tenant) and valid_document_id(thread_id)):
            raise NotFound(f"thread {thread_id!r} not found")
        ref = self._ref(tenant, thread_id)
        if self.concurrency == "optimistic":
            return self._update_optimistic(ref, thread_id, mutate)
        return self._update_in_transaction(ref, thread_id, mutate)

    def _update_in_transaction(self, ref: firestore.DocumentReference, thread_id: str,
                               mutate: Callable[[Thread], tuple[Thread | None, T]]) -> tuple[Thread, T]:
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        attempts = 0

        def body(transaction: firestore.Transaction) -> tuple[Thread, T]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # The client retries at once, keeping its place in line on Firestore; the emulator keeps none, and
                # contenders retrying in step deadlock again until its lock timeout, round after round.
                time.sleep(_jitter(attempts))
            new, doc, value = _apply(ref, next(iter(transaction.get(ref))), thread_id, mutate)
            if doc is not None:
                transaction.set(ref, doc)
            return new, value

        what = f"updating thread {thread_id}"
        try:
            with calling(what):
                while True:
                    transaction = self._client.transaction(max_attempts=max(1, self._max_attempts - attempts))
                    try:
                        result: tuple[Thread, T] = firestore.transactional(body)(transaction)
                        return result
                    except gexc.Aborted:
                        # Aborted while reading: the client retries aborted commits only. Start over.
                        if attempts >= self._max_attempts:
                            raise
        except ValueError as e:
            if isinstance(e.__cause__, gexc.Aborted):  # the client's "failed to commit in N attempts"
                raise TransientError(f"{what}: too much contention, gave up after {attempts} attempts") from e
            raise

    def _update_optimistic(self, ref: firestore.DocumentReference, thread_id: str,
                           mutate: Callable[[Thread], tuple[Thread | None, T]]) -> tuple[Thread, T]:
        """Read, decide, then write on the precondition that the document is still the version read; a concurrent
        writer makes the write fail and the whole update is decided again on the new version."""
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        what = f"updating thread {thread_id}"
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                time.sleep(_jitter(attempt))  # de-synchronize contenders
            with calling(what):
                snap = ref.get()
            new, doc, value = _apply(ref, snap, thread_id, mutate)
            if doc is None:
                return new, value
            # update() of every field (and deletion of the others) replaces the document, and unlike set() it
            # takes a precondition.
            stale = {k: firestore.DELETE_FIELD for k in (snap.to_dict() or {}) if k not in doc}
            with calling(what):
                try:
                    ref.update({**doc, **stale}, option=self._client.write_option(last_update_time=snap.update_time))
                except (gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):
                    continue  # changed (or gone) since it was read: decide again on what is there now
            return new, value
        raise TransientError(f"{what}: too much contention, gave up after {self._max_attempts} attempts")


def _jitter(attempt: int) -> float:
    return random.uniform(0, min(0.5, 0.005 * 2**attempt))


def _apply(ref: firestore.DocumentReference, snap: Any, thread_id: str,
           mutate: Callable[[Thread], tuple[Thread | None, T]]) -> tuple[Thread, dict[str, Any] | None, T]:
    """``mutate`` on the thread read: the thread as it will be stored, its document (None: nothing to write), and
    the value handed back. Refuses a document over the size limit before anything is written."""
    if not snap.exists:
        raise NotFound(f"thread {thread_id!r} not found")
    current = _decode(snap.to_dict())
    new, value = mutate(current)
    if new is None:
        return current, None, value
    doc = _encode(new)
    check_size(ref.path, doc)
    return new, doc, value


def _encode(thread: Thread) -> dict[str, Any]:
    doc: dict[str, Any] = thread.model_dump(mode="python", exclude={"context"})
    doc["policy"] = thread.policy.value
    doc["context_json"] = thread.context.model_dump_json()
    if any(not k or RESERVED_NAME.match(k) for k in thread.metadata):
        doc["metadata_json"] = json.dumps(doc.pop("metadata"), ensure_ascii=False, separators=(",", ":"))
    return doc


def _decode(doc: dict[str, Any] | None) -> Thread:
    doc = native(doc or {})
    context = ThreadContext.model_validate_json(doc.pop("context_json", "{}"))
    # Turns' datetimes come back from JSON with the offset they were written with: aware UTC like the rest.
    context.turns = [turn.model_copy(update={"at": utc(turn.at)}) for turn in context.turns]
    if "metadata_json" in doc:
        doc["metadata"] = json.loads(doc.pop("metadata_json"))
    return Thread.model_validate({**doc, "context": context})
