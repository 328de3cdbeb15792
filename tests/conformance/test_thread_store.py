"""Conformance of ThreadStore implementations: the in-memory store and Firestore (on the emulator)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import pytest

from agex.adapters.inmemory.threads import InMemoryThreads
from agex.core.errors import AlreadyExists, DocumentTooLarge, NotFound, TransientError
from agex.core.thread import THREAD_RETENTION, Thread, ThreadContext, ThreadPolicy, Turn
from agex.ports.rules import MAX_DOCUMENT_BYTES
from agex.ports.threads import ThreadStore

from .conftest import at_once, unique

T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "firestore", "firestore-optimistic"])
def threads(request: pytest.FixtureRequest) -> ThreadStore:
    """``firestore`` updates in read-write transactions (the default), ``firestore-optimistic`` with writes
    conditioned on the version read. Each Firestore store gets a unique collection prefix: its own empty database."""
    if request.param == "memory":
        return InMemoryThreads()
    from agex.adapters.gcp.firestore_threads import FirestoreThreads

    mode: Literal["transaction", "optimistic"] = (
        "optimistic" if request.param == "firestore-optimistic" else "transaction")
    return FirestoreThreads(request.getfixturevalue("firestore_client"), prefix=unique("t") + "_", concurrency=mode)


def make_thread(tenant: str | None = None, thread_id: str | None = None, **changes: Any) -> Thread:
    fields: dict[str, Any] = dict(
        thread_id=thread_id or unique("thr_"),
        tenant=tenant or unique("tenant-"),
        agent="support",
        principal="user:alice@example.com",
        created_at=T0,
        updated_at=T0,
        expire_at=T0 + THREAD_RETENTION,
    )
    fields.update(changes)
    return Thread(**fields)


def full_thread(tenant: str | None = None) -> Thread:
    """A thread with every optional field and nested model set."""
    turns = [Turn(run_id=f"run_{i}", input=f"question {i} « é »", answer=f"answer {i}\nline 2",
                  at=T0 + timedelta(minutes=i, microseconds=i)) for i in range(3)]
    return make_thread(
        tenant,
        policy=ThreadPolicy.queue,
        metadata={"ticket": "T-1", "channel": "email", "é": "ü"},
        active_run="run_3",
        pending=["run_4", "run_5"],
        turns=7,
        context=ThreadContext(summary="They asked about order 1234.", summarized_turns=4, dropped_turns=1,
                              turns=turns),
        summary_calls=2,
        summary_cost_usd=0.000123456,
        idempotency_key="idem-1",
        request_hash="sha256:abc",
        updated_at=T0 + timedelta(minutes=5, microseconds=1),
    )


def counted(calls: list[Thread]) -> Callable[[Thread], tuple[Thread | None, None]]:
    """A mutation adding a turn, recording each thread it is given (once per attempt)."""
    def mutate(t: Thread) -> tuple[Thread | None, None]:
        calls.append(t)
        return t.model_copy(update={"turns": t.turns + 1}), None
    return mutate


def test_create_then_get_round_trips_every_field(threads: ThreadStore) -> None:
    thread = full_thread()
    assert threads.create_thread(thread) == thread
    got = threads.get_thread(thread.tenant, thread.thread_id)
    assert got == thread
    assert got.model_dump() == thread.model_dump()


def test_datetimes_read_back_aware_utc(threads: ThreadStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    turn = Turn(run_id="run_1", input="hi", answer="hello", at=T0.astimezone(plus2))
    thread = make_thread(created_at=T0.astimezone(plus2), context=ThreadContext(turns=[turn]))
    threads.create_thread(thread)
    got = threads.get_thread(thread.tenant, thread.thread_id)
    assert got == thread  # the same instants
    if not isinstance(threads, InMemoryThreads):
        stamps = [got.created_at, got.updated_at, got.expire_at, got.context.turns[0].at]
        assert all(d.utcoffset() == timedelta(0) for d in stamps)


def test_create_twice_raises_already_exists_with_the_stored_thread(threads: ThreadStore) -> None:
    thread = full_thread()
    threads.create_thread(thread)
    with pytest.raises(AlreadyExists) as info:
        threads.create_thread(thread.model_copy(update={"agent": "billing", "pending": []}))
    assert info.value.existing == thread
    assert threads.get_thread(thread.tenant, thread.thread_id) == thread


def test_same_thread_id_in_two_tenants_are_two_threads(threads: ThreadStore) -> None:
    a = threads.create_thread(make_thread(unique("acme-"), "thr_same"))
    b = threads.create_thread(make_thread(unique("globex-"), "thr_same", agent="billing"))
    assert threads.get_thread(a.tenant, "thr_same") == a
    assert threads.get_thread(b.tenant, "thr_same") == b


def test_thread_of_another_tenant_is_none(threads: ThreadStore) -> None:
    thread = threads.create_thread(make_thread())
    assert threads.get_thread(unique("other-"), thread.thread_id) is None
    assert threads.get_thread(thread.tenant, unique("thr_")) is None


def test_update_returning_none_writes_nothing_and_hands_back_the_value(threads: ThreadStore) -> None:
    thread = threads.create_thread(full_thread())
    seen: list[Thread] = []

    def look(t: Thread) -> tuple[Thread | None, str]:
        seen.append(t)
        return None, "unchanged"

    stored, value = threads.update_thread(thread.tenant, thread.thread_id, look)
    assert value == "unchanged" and stored == thread and seen[-1] == thread
    assert threads.get_thread(thread.tenant, thread.thread_id) == thread


def test_update_changes_persist(threads: ThreadStore) -> None:
    thread = threads.create_thread(full_thread())
    turn = Turn(run_id="run_3", input="and now?", answer="shipped", at=T0 + timedelta(hours=1))
    later = T0 + timedelta(hours=1)

    def end_turn(t: Thread) -> tuple[Thread | None, int]:
        context = t.context.model_copy(update={"turns": [*t.context.turns, turn]})
        return t.model_copy(update={"active_run": t.pending[0], "pending": t.pending[1:], "turns": t.turns + 1,
                                    "context": context, "updated_at": later,
                                    "expire_at": later + THREAD_RETENTION}), t.turns + 1

    stored, value = threads.update_thread(thread.tenant, thread.thread_id, end_turn)
    assert value == 8
    assert stored.active_run == "run_4" and stored.pending == ["run_5"] and stored.context.turns[-1] == turn
    assert threads.get_thread(thread.tenant, thread.thread_id) == stored
    cleared, _ = threads.update_thread(thread.tenant, thread.thread_id, lambda t: (t.model_copy(update={
        "active_run": None, "pending": [], "context": ThreadContext(), "metadata": {}, "idempotency_key": None}),
        None))
    assert threads.get_thread(thread.tenant, thread.thread_id) == cleared
    assert cleared.active_run is None and cleared.context.empty


def test_exception_in_mutate_propagates_and_writes_nothing(threads: ThreadStore) -> None:
    thread = threads.create_thread(full_thread())

    def boom(t: Thread) -> tuple[Thread | None, None]:
        raise RuntimeError("a bug in a decision")

    with pytest.raises(RuntimeError, match="a bug in a decision"):
        threads.update_thread(thread.tenant, thread.thread_id, boom)
    assert threads.get_thread(thread.tenant, thread.thread_id) == thread


def test_update_on_a_missing_thread_is_not_found(threads: ThreadStore) -> None:
    calls: list[Thread] = []
    with pytest.raises(NotFound):
        threads.update_thread(unique("tenant-"), unique("thr_"), counted(calls))
    assert calls == []


def test_concurrent_updates_all_land(threads: ThreadStore) -> None:
    """8 writers append to ``pending`` at once: every append is there, once (no lost update)."""
    n_threads = 8
    if getattr(threads, "concurrency", None) == "transaction":
        # The emulator deadlocks concurrent transactions on one document until its ~2 s lock timeout
        # (firebase/firebase-tools#6758): 8 writers take some 10 s there; two prove the retry.
        n_threads = 2
    thread = threads.create_thread(make_thread())
    at_once(n_threads, lambda w, _: threads.update_thread(thread.tenant, thread.thread_id, lambda t: (
        t.model_copy(update={"pending": [*t.pending, f"run_{w}"]}), None)))
    final = threads.get_thread(thread.tenant, thread.thread_id)
    assert final is not None
    assert sorted(final.pending) == sorted(f"run_{w}" for w in range(n_threads))


@pytest.mark.parametrize("tenant,thread_id", [("acme", "a/b"), ("a/b", "thr"), ("acme", ".."), ("acme", "__x__"),
                                              ("", "thr"), ("acme", "")])
def test_ids_no_thread_can_have_are_unknown_threads(threads: ThreadStore, tenant: str, thread_id: str) -> None:
    """Reads by any id answer "no such thread" (ids come from URLs)."""
    assert threads.get_thread(tenant, thread_id) is None
    with pytest.raises(NotFound):
        threads.update_thread(tenant, thread_id, lambda t: (t, None))


# --- Firestore only -----------------------------------------------------------------------------------


@pytest.fixture
def fs_threads(firestore_client: Any) -> Any:
    from agex.adapters.gcp.firestore_threads import FirestoreThreads

    return FirestoreThreads(firestore_client, prefix=unique("t") + "_", max_attempts=3)


def test_firestore_layout_and_encoding(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_threads import FirestoreThreads

    store = FirestoreThreads(firestore_client)  # the production layout: no prefix
    thread = store.create_thread(full_thread())
    raw = firestore_client.document(f"tenants/{thread.tenant}/threads/{thread.thread_id}").get().to_dict()
    assert isinstance(raw["expire_at"], datetime) and isinstance(raw["updated_at"], datetime)  # TTL needs this
    assert raw["policy"] == "queue" and type(raw["policy"]) is str
    assert raw["metadata"] == thread.metadata and raw["pending"] == ["run_4", "run_5"]
    assert isinstance(raw["context_json"], str) and "context" not in raw
    assert ThreadContext.model_validate_json(raw["context_json"]) == thread.context


def test_firestore_prefix_applies_to_every_collection(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_threads import FirestoreThreads

    prefix = unique("t") + "_"
    thread = FirestoreThreads(firestore_client, prefix=prefix).create_thread(make_thread())
    path = f"{prefix}tenants/{thread.tenant}/{prefix}threads/{thread.thread_id}"
    assert firestore_client.document(path).get().exists


def test_firestore_metadata_with_names_firestore_refuses_round_trips(fs_threads: Any, firestore_client: Any) -> None:
    thread = fs_threads.create_thread(make_thread(metadata={"__reserved__": "x", "": "empty", "ok": "y"}))
    assert fs_threads.get_thread(thread.tenant, thread.thread_id) == thread


def test_firestore_oversized_thread_is_refused_before_writing(fs_threads: Any) -> None:
    with pytest.raises(DocumentTooLarge):
        fs_threads.create_thread(make_thread(metadata={"big": "x" * MAX_DOCUMENT_BYTES}))
    thread = fs_threads.create_thread(make_thread())
    big = ThreadContext(summary="x" * MAX_DOCUMENT_BYTES)
    with pytest.raises(DocumentTooLarge) as info:
        fs_threads.update_thread(thread.tenant, thread.thread_id,
                                 lambda t: (t.model_copy(update={"context": big}), None))
    assert info.value.path.endswith(f"/{thread.thread_id}") and info.value.size > MAX_DOCUMENT_BYTES
    assert fs_threads.get_thread(thread.tenant, thread.thread_id) == thread


def test_firestore_creating_with_an_invalid_id_is_refused(fs_threads: Any) -> None:
    with pytest.raises(ValueError, match="invalid thread id"):
        fs_threads.create_thread(make_thread(thread_id="a/b"))


def test_firestore_unavailable_is_transient(fs_threads: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.document import DocumentReference

    def unavailable(*a: Any, **k: Any) -> None:
        raise gexc.ServiceUnavailable("down")

    monkeypatch.setattr(DocumentReference, "get", unavailable)
    monkeypatch.setattr(DocumentReference, "create", unavailable)
    with pytest.raises(TransientError):
        fs_threads.get_thread("acme", "thr_1")
    with pytest.raises(TransientError):
        fs_threads.create_thread(make_thread())


def test_firestore_metadata_moving_between_encodings_leaves_no_stale_field(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_threads import FirestoreThreads

    for mode in ("transaction", "optimistic"):
        store = FirestoreThreads(firestore_client, prefix=unique("t") + "_", concurrency=mode)
        thread = store.create_thread(make_thread(metadata={"__odd__": "x"}))
        changed, _ = store.update_thread(thread.tenant, thread.thread_id,
                                         lambda t: (t.model_copy(update={"metadata": {"plain": "y"}}), None))
        assert store.get_thread(thread.tenant, thread.thread_id) == changed
        path = f"{store._tenants}/{thread.tenant}/{store._threads}/{thread.thread_id}"
        raw = firestore_client.document(path).get().to_dict()
        assert raw["metadata"] == {"plain": "y"} and "metadata_json" not in raw


def test_firestore_optimistic_contention_beyond_retries_is_transient(
    firestore_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.document import DocumentReference

    from agex.adapters.gcp.firestore_threads import FirestoreThreads

    store = FirestoreThreads(firestore_client, prefix=unique("t") + "_", concurrency="optimistic", max_attempts=3)
    thread = store.create_thread(make_thread())
    calls: list[Thread] = []

    def always_stale(*a: Any, **k: Any) -> None:
        raise gexc.FailedPrecondition("the stored version does not match")

    monkeypatch.setattr(DocumentReference, "update", always_stale)
    with pytest.raises(TransientError, match="contention"):
        store.update_thread(thread.tenant, thread.thread_id, counted(calls))
    assert len(calls) == 3  # max_attempts
    assert store.get_thread(thread.tenant, thread.thread_id) == thread


def test_firestore_transaction_aborted_beyond_retries_is_transient(
    fs_threads: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.transaction import Transaction

    thread = fs_threads.create_thread(make_thread())
    calls: list[Thread] = []

    def aborted(self: Any) -> None:
        raise gexc.Aborted("contention")

    monkeypatch.setattr(Transaction, "_commit", aborted)
    with pytest.raises(TransientError, match="contention"):
        fs_threads.update_thread(thread.tenant, thread.thread_id, counted(calls))
    monkeypatch.undo()
    assert len(calls) == 3  # max_attempts
    assert fs_threads.get_thread(thread.tenant, thread.thread_id) == thread
