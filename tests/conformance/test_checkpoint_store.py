"""Conformance of CheckpointStore implementations: the in-memory store, Firestore (on the emulator) and Postgres
(on a throwaway server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore
from agex.core.approval import Approval, ApprovalStatus
from agex.core.errors import AlreadyExists, ConfigurationError, DocumentTooLarge, NotFound, TransientError
from agex.core.run import Event, EventKind, Lease, Limits, RunError, RunHead, RunStatus, Usage
from agex.ports.checkpoint_store import CheckpointStore, Mutation

from .conftest import CHECKPOINT_STORES, at_once, checkpoint_store, fail_commits, unique

T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


@pytest.fixture(params=CHECKPOINT_STORES)
def store(request: pytest.FixtureRequest) -> CheckpointStore:
    return checkpoint_store(request)


def make_head(tenant: str | None = None, run_id: str | None = None, **changes: Any) -> RunHead:
    fields: dict[str, Any] = dict(
        run_id=run_id or unique("run-"),
        tenant=tenant or unique("tenant-"),
        agent="support",
        agent_version="v3",
        principal="user:alice@example.com",
        input="What is the refund status of order 1234?",
        metadata={"ticket": "T-1", "channel": "email", "é": "ü"},
        created_at=T0,
        updated_at=T0,
        expire_at=T0 + timedelta(days=7),
    )
    fields.update(changes)
    return RunHead(**fields)


def full_head(tenant: str | None = None, run_id: str | None = None) -> RunHead:
    """A head with every optional field and nested model set."""
    return make_head(
        tenant,
        run_id,
        status=RunStatus.running,
        step=3,
        seq=0,
        generation=2,
        limits=Limits(max_steps=40, max_tokens=123_456, max_cost_usd=2.5, max_wall_time_s=3600),
        usage=Usage(input_tokens=1000, output_tokens=250, cost_usd=0.012345678, model_calls=3),
        lease=Lease(owner="task-4#1@inst-a", task="task-4", attempt=1, step=4, until=T0 + timedelta(seconds=90)),
        result="partial",
        error=RunError(code="max_tokens", message="the run used too many tokens"),
        trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        idempotency_key="idem-1",
        request_hash="sha256:abc",
        updated_at=T0 + timedelta(minutes=5, microseconds=1),
    )


def make_event(seq: int, step: int = 0, kind: EventKind = EventKind.step_started, **data: Any) -> Event:
    return Event(
        seq=seq,
        step=step,
        kind=kind,
        at=T0 + timedelta(seconds=seq, microseconds=seq),
        expire_at=T0 + timedelta(days=7),
        data=data or {"n": seq},
    )


def append(head: RunHead, *events: Event, **changes: Any) -> Mutation[str]:
    """The Mutation of a decision that appends ``events`` to ``head``."""
    new = head.model_copy(update={"seq": head.seq + len(events), "updated_at": head.updated_at + timedelta(seconds=1),
                                  **changes})
    return Mutation(new, events, "ok")


def create(store: CheckpointStore, head: RunHead, n_events: int = 1, step: int = 0) -> RunHead:
    head = head.model_copy(update={"seq": n_events})
    store.create_run(head, [make_event(i, step, EventKind.run_created if i == 1 else EventKind.step_started)
                            for i in range(1, n_events + 1)])
    return head


# --- create / get -------------------------------------------------------------------------------------


def test_create_then_get_round_trips_every_field(store: CheckpointStore) -> None:
    head = full_head().model_copy(update={"seq": 2})
    events = [make_event(1, 0, EventKind.run_created, input="hi", nested={"a": [1, 2.5, None, True]}),
              make_event(2, 0)]
    assert store.create_run(head, events) == head
    got = store.get_run(head.tenant, head.run_id)
    assert got == head
    assert got is not None
    assert got.model_dump() == head.model_dump()
    assert got.updated_at.tzinfo is not None and got.updated_at.utcoffset() == timedelta(0)
    assert type(got.created_at) is datetime  # no SDK datetime subclass leaks out
    assert isinstance(got.status, RunStatus)
    assert store.list_events(head.tenant, head.run_id) == events


def test_minimal_head_round_trips(store: CheckpointStore) -> None:
    head = make_head(metadata={})
    store.create_run(head, [])
    assert store.get_run(head.tenant, head.run_id) == head
    assert store.list_events(head.tenant, head.run_id) == []


def test_datetimes_with_other_offsets_round_trip_equal(store: CheckpointStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    head = make_head(created_at=datetime(2026, 5, 1, 12, 0, 0, 999999, tzinfo=plus2))
    store.create_run(head, [])
    got = store.get_run(head.tenant, head.run_id)
    assert got is not None and got.created_at == head.created_at


def test_create_twice_raises_already_exists_with_the_stored_head(store: CheckpointStore) -> None:
    head = create(store, full_head())
    again = head.model_copy(update={"input": "different", "seq": 0})
    with pytest.raises(AlreadyExists) as info:
        store.create_run(again, [])
    assert info.value.existing == head
    assert store.get_run(head.tenant, head.run_id) == head
    assert len(store.list_events(head.tenant, head.run_id)) == 1


def test_same_run_id_in_two_tenants_are_two_runs(store: CheckpointStore) -> None:
    run_id = unique("run-")
    a = create(store, make_head(run_id=run_id, input="a"))
    b = create(store, make_head(run_id=run_id, input="b"))
    assert store.get_run(a.tenant, run_id) == a
    assert store.get_run(b.tenant, run_id) == b


def test_get_unknown_run_is_none(store: CheckpointStore) -> None:
    assert store.get_run(unique("tenant-"), unique("run-")) is None


def test_create_with_events_not_continuing_seq_raises_and_writes_nothing(store: CheckpointStore) -> None:
    head = make_head(seq=2)
    with pytest.raises(ValueError):
        store.create_run(head, [make_event(1), make_event(3)])
    assert store.get_run(head.tenant, head.run_id) is None


# --- update_run ---------------------------------------------------------------------------------------


def test_update_run_writes_head_and_events_and_returns_the_mutation(store: CheckpointStore) -> None:
    head = create(store, full_head())
    new_events = [make_event(2, 4, EventKind.model_response, text="x"), make_event(3, 4, EventKind.tool_intent)]
    seen: list[RunHead] = []

    def mutate(h: RunHead) -> Mutation[str]:
        seen.append(h)
        return append(h, *new_events, status=RunStatus.waiting_approval, lease=None,
                      metadata={"a.b": "dotted", "c d": "spaced", "`q`": "ticks", "é": "x"})

    result = store.update_run(head.tenant, head.run_id, mutate)
    assert seen[-1] == head
    assert result.value == "ok"
    assert result.head is not None and result.head.seq == 3
    assert store.get_run(head.tenant, head.run_id) == result.head
    assert store.list_events(head.tenant, head.run_id)[1:] == new_events


def test_update_with_head_none_writes_nothing(store: CheckpointStore) -> None:
    head = create(store, make_head())
    result = store.update_run(head.tenant, head.run_id, lambda h: Mutation(None, [make_event(2)], value=42))
    assert result.value == 42 and result.head is None
    assert store.get_run(head.tenant, head.run_id) == head
    assert [e.seq for e in store.list_events(head.tenant, head.run_id)] == [1]


class Boom(Exception):
    pass


def test_exception_in_mutate_propagates_unchanged_and_writes_nothing(store: CheckpointStore) -> None:
    head = create(store, make_head())
    error = Boom("decided to stop")

    def mutate(h: RunHead) -> Mutation[None]:
        raise error

    with pytest.raises(Boom) as info:
        store.update_run(head.tenant, head.run_id, mutate)
    assert info.value is error
    assert store.get_run(head.tenant, head.run_id) == head
    assert len(store.list_events(head.tenant, head.run_id)) == 1


def test_update_unknown_run_raises_not_found(store: CheckpointStore) -> None:
    calls = []
    with pytest.raises(NotFound):
        store.update_run(unique("tenant-"), unique("run-"), lambda h: calls.append(h) or Mutation(h))  # type: ignore[func-returns-value]
    assert calls == []


@pytest.mark.parametrize("seqs", [[3], [2, 2], [2, 4], [1]], ids=["gap", "duplicate", "hole", "overlap"])
def test_events_not_continuing_seq_raise_and_write_nothing(store: CheckpointStore, seqs: list[int]) -> None:
    head = create(store, make_head())
    with pytest.raises(ValueError):
        store.update_run(head.tenant, head.run_id, lambda h: append(h, *[make_event(s) for s in seqs]))
    assert store.get_run(head.tenant, head.run_id) == head
    assert [e.seq for e in store.list_events(head.tenant, head.run_id)] == [1]


def test_concurrent_updates_serialize(store: CheckpointStore) -> None:
    """N threads append k events each, one per transaction: no lost update, no gap, no duplicate."""
    n_threads, k = 8, 3
    if getattr(store, "concurrency", None) == "transaction":
        # The emulator deadlocks concurrent transactions on one document until its ~2 s lock timeout
        # (firebase/firebase-tools#6758); two writers prove the retry without minutes of waiting.
        n_threads, k = 2, 1
    head = create(store, make_head(), n_events=0)

    at_once(n_threads, lambda w, i: store.update_run(head.tenant, head.run_id, lambda h: append(
        h, make_event(h.seq + 1, h.step, worker=w, i=i))), per_thread=k)
    final = store.get_run(head.tenant, head.run_id)
    assert final is not None and final.seq == n_threads * k
    events = store.list_events(head.tenant, head.run_id, limit=1000)
    assert [e.seq for e in events] == list(range(1, n_threads * k + 1))
    per_worker = sorted((e.data["worker"], e.data["i"]) for e in events)
    assert per_worker == sorted((w, i) for w in range(n_threads) for i in range(k))


# --- reading events -----------------------------------------------------------------------------------


def test_list_events_pages_by_after_seq_and_limit(store: CheckpointStore) -> None:
    head = create(store, make_head(), n_events=12)
    t, r = head.tenant, head.run_id
    assert [e.seq for e in store.list_events(t, r)] == list(range(1, 13))
    assert [e.seq for e in store.list_events(t, r, limit=5)] == [1, 2, 3, 4, 5]
    assert [e.seq for e in store.list_events(t, r, after_seq=5, limit=5)] == [6, 7, 8, 9, 10]
    assert [e.seq for e in store.list_events(t, r, after_seq=10, limit=5)] == [11, 12]
    assert store.list_events(t, r, after_seq=12) == []
    pages, after = [], 0
    while page := store.list_events(t, r, after_seq=after, limit=4):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert store.list_events(unique("tenant-"), unique("run-")) == []


def test_list_events_orders_numerically_past_nine(store: CheckpointStore) -> None:
    head = create(store, make_head(), n_events=11)
    assert [e.seq for e in store.list_events(head.tenant, head.run_id, after_seq=8)] == [9, 10, 11]


def test_events_since_step_returns_later_steps_in_seq_order(store: CheckpointStore) -> None:
    head = create(store, make_head(), n_events=1, step=0)
    steps = [1, 1, 1, 2, 2, 3, 3, 3, 3, 4]  # seqs 2..11, several events per step
    for step in steps:
        store.update_run(head.tenant, head.run_id, lambda h, s=step: append(h, make_event(h.seq + 1, s)))
    got = store.events_since_step(head.tenant, head.run_id, 2)
    assert [(e.seq, e.step) for e in got] == [(5, 2), (6, 2), (7, 3), (8, 3), (9, 3), (10, 3), (11, 4)]
    assert [e.seq for e in store.events_since_step(head.tenant, head.run_id, 0)] == list(range(1, 12))
    assert store.events_since_step(head.tenant, head.run_id, 5) == []
    assert got == store.list_events(head.tenant, head.run_id, after_seq=4)


# --- find_runs ----------------------------------------------------------------------------------------
# Each store sees only its own runs: a fresh memory store, or a Firestore store on a unique prefix.


def test_find_runs_across_tenants_by_status_and_updated_before(store: CheckpointStore) -> None:
    ta, tb = unique("tenant-a-"), unique("tenant-b-")

    def run(tenant: str, status: RunStatus, minutes: int) -> RunHead:
        at = T0 + timedelta(minutes=minutes)
        return create(store, make_head(tenant, status=status, created_at=at, updated_at=at))

    r2 = run(tb, RunStatus.running, 2)
    q1 = run(ta, RunStatus.queued, 1)
    r3 = run(ta, RunStatus.running, 3)
    run(tb, RunStatus.succeeded, 4)
    w5 = run(ta, RunStatus.waiting_approval, 5)
    late = run(tb, RunStatus.running, 30)

    cutoff = T0 + timedelta(minutes=10)
    active = [RunStatus.queued, RunStatus.running]
    assert store.find_runs(active, cutoff) == [q1, r2, r3]
    assert store.find_runs([RunStatus.running], cutoff) == [r2, r3]
    assert store.find_runs([RunStatus.waiting_approval, RunStatus.expired], cutoff) == [w5]
    assert store.find_runs(active, T0 + timedelta(days=1)) == [q1, r2, r3, late]
    assert store.find_runs(active, T0 + timedelta(minutes=1)) == []  # strictly before
    assert store.find_runs([RunStatus.cancelled], cutoff) == []
    assert store.find_runs([], cutoff) == []
    # the drift collector's query: runs updated in a period (strictly after its start)
    assert store.find_runs(active, cutoff, updated_after=T0 + timedelta(minutes=1)) == [r2, r3]
    assert store.find_runs(active, T0 + timedelta(days=1), updated_after=T0 + timedelta(minutes=3)) == [late]


def test_find_runs_respects_limit_oldest_first(store: CheckpointStore) -> None:
    heads = []
    for i in [3, 0, 4, 1, 2]:
        at = T0 + timedelta(seconds=i)
        heads.append(create(store, make_head(status=RunStatus.queued, created_at=at, updated_at=at)))
    heads.sort(key=lambda h: h.updated_at)
    cutoff = T0 + timedelta(seconds=10)
    assert store.find_runs([RunStatus.queued], cutoff) == heads
    assert store.find_runs([RunStatus.queued], cutoff, limit=2) == heads[:2]
    assert store.find_runs([RunStatus.queued], cutoff, limit=1) == heads[:1]


def test_find_runs_sees_updates(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    cutoff = T0 + timedelta(hours=1)
    assert store.find_runs([RunStatus.running], cutoff) == [head]
    result = store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(h.seq + 1)))
    assert store.find_runs([RunStatus.running], cutoff) == [result.head]
    store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(h.seq + 1), status=RunStatus.succeeded))
    assert store.find_runs([RunStatus.running], cutoff) == []


# --- payloads -----------------------------------------------------------------------------------------


def test_large_legal_payloads_round_trip(store: CheckpointStore) -> None:
    big = "Ωx" * 150_000  # 450,000 UTF-8 bytes
    head = make_head(input=big, result=big[:100_000], metadata={f"k{i}": "v" * 100 for i in range(200)})
    events = [make_event(1, 0, EventKind.run_created, text=big),
              make_event(2, 0, EventKind.tool_result, rows=[{"id": i, "name": f"row {i}"} for i in range(5000)])]
    store.create_run(head.model_copy(update={"seq": 2}), events)
    got = store.get_run(head.tenant, head.run_id)
    assert got is not None and got.input == big and got.metadata == head.metadata
    assert store.list_events(head.tenant, head.run_id) == events
    more = make_event(3, 1, EventKind.model_response, text=big)
    store.update_run(head.tenant, head.run_id, lambda h: append(h, more, result=big))
    assert store.list_events(head.tenant, head.run_id, after_seq=2) == [more]


def test_any_json_event_data_round_trips(store: CheckpointStore) -> None:
    """Tool arguments and outputs are arbitrary JSON: nested arrays, odd keys, big integers."""
    data = {
        "matrix": [[1, 2], [3, [4, 5]], []],
        "__reserved__": {"": "empty key", "a.b": 1, "`q`": 2, "x/y": 3},
        "big": 2**70,
        "neg": -(2**63),
        "float": 1.5e-300,
        "unicode": "日本語 🎉",
        "null": None,
        "flags": [True, False],
        "empty": {},
    }
    head = make_head(metadata={"__x__": "reserved key", "": "empty key", "a.b": "dotted"})
    store.create_run(head.model_copy(update={"seq": 1}), [make_event(1, 0, EventKind.tool_result, **data)])
    [event] = store.list_events(head.tenant, head.run_id)
    assert event.data == data
    got = store.get_run(head.tenant, head.run_id)
    assert got is not None and got.metadata == head.metadata


# The document size limit. Firestore refuses documents over 1 MiB; every store refuses, before writing,
# any document over ~1,000,000 bytes, naming it.
def test_oversized_head_is_refused_before_writing(store: CheckpointStore) -> None:
    head = make_head(input="x" * 1_050_000)
    try:
        store.create_run(head, [])
    except (ConfigurationError, ValueError) as e:
        assert head.run_id in str(e)
    else:
        pytest.fail("an oversized head was accepted")
    assert store.get_run(head.tenant, head.run_id) is None


def test_oversized_event_is_refused_and_nothing_is_written(store: CheckpointStore) -> None:
    head = create(store, make_head())
    huge = make_event(2, 1, EventKind.tool_result, output="y" * 1_010_000)
    try:
        store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2, 1), huge.model_copy(
            update={"seq": 3})))
    except (ConfigurationError, ValueError) as e:
        assert head.run_id in str(e) and "0000000003" in str(e)
    else:
        pytest.fail("an oversized event was accepted")
    assert store.get_run(head.tenant, head.run_id) == head
    assert [e.seq for e in store.list_events(head.tenant, head.run_id)] == [1]


def test_document_just_under_the_limit_is_accepted(store: CheckpointStore) -> None:
    head = create(store, make_head())
    ok = make_event(2, 1, EventKind.tool_result, output="z" * 990_000)
    store.update_run(head.tenant, head.run_id, lambda h: append(h, ok))
    assert store.list_events(head.tenant, head.run_id, after_seq=1) == [ok]


# --- approvals ----------------------------------------------------------------------------------------


def make_approval(head: RunHead, approval_id: str | None = None, **changes: Any) -> Approval:
    """A pending approval of a call in ``head``'s run."""
    fields: dict[str, Any] = dict(
        approval_id=approval_id or unique("apr_"),
        tenant=head.tenant,
        run_id=head.run_id,
        agent=head.agent,
        step=head.step + 1,
        call_id="call-1",
        tool="refund",
        arguments={"order": "1234", "amount_usd": 120, "card": "[redacted]"},
        call_arguments={"order": "1234", "amount_usd": 120, "card": "4111"},
        redact=["card"],
        reason="refunds over $50 need a human",
        approvers=["*@finance.example.com"],
        four_eyes=True,
        allow_edits=True,
        on_expiry="reject",
        requested_by=head.principal,
        created_at=T0,
        expires_at=T0 + timedelta(days=1),
        updated_at=T0,
        expire_at=T0 + timedelta(days=7),
    )
    fields.update(changes)
    return Approval(**fields)


def wait_for(head: RunHead, *approvals: Approval, **changes: Any) -> Mutation[str]:
    """The Mutation of a decision that makes the run wait for ``approvals[0]`` and writes them all."""
    first = approvals[0] if approvals else None
    m = append(head, make_event(head.seq + 1, head.step + 1, EventKind.approval_requested),
               status=RunStatus.waiting_approval, approval_id=first.approval_id if first else None,
               wake_at=first.expires_at if first else None, **changes)
    return Mutation(m.head, m.events, m.value, approvals)


def settle(approval: Approval, status: ApprovalStatus = ApprovalStatus.approved, **changes: Any) -> Approval:
    return approval.model_copy(update={"status": status, "decision_id": "dec-1", "decided_by": "lee@finance.example.com",
                                       "decided_at": T0 + timedelta(minutes=5), "updated_at": T0 + timedelta(minutes=5),
                                       **changes})


def lose_first_commit(store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> Callable[[RunHead], int]:
    """A hook for ``mutate``: on the first attempt, another writer gets there first, so that attempt's commit
    loses and the store decides again. Returns the number of attempts the store should make.

    The memory store serializes updates under its lock: nothing can get in between. Optimistic Firestore:
    a raw write to the head invalidates the batch's update-time precondition. Transaction mode: the emulator
    blocks any other writer of a document the transaction read until its lock timeout, so the first commit
    is made to abort, as contention does. Postgres holds the head's row lock, so no writer can get in either:
    the server refuses the first commit as a serialization failure, as it would under contention."""
    calls = 0
    mode = getattr(store, "concurrency", None)
    if isinstance(store, PostgresCheckpointStore):
        fail_commits(store, 1)
    if mode == "transaction":
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.transaction import Transaction

        commit = Transaction._commit

        def abort_first(self: Any) -> Any:
            if calls == 1:
                self._rollback()  # as the server does when it aborts a transaction: its locks go with it
                raise gexc.Aborted("contention")
            return commit(self)

        monkeypatch.setattr(Transaction, "_commit", abort_first)

    def hook(head: RunHead) -> int:
        nonlocal calls
        calls += 1
        if calls == 1 and mode == "optimistic":
            prefix = store.prefix  # type: ignore[attr-defined]
            store.client.document(  # type: ignore[attr-defined]
                f"{prefix}tenants/{head.tenant}/{prefix}runs/{head.run_id}").update({"generation": head.generation + 1})
        return calls

    return hook


def test_approvals_are_written_with_the_head(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    a, b = make_approval(head), make_approval(head, call_id="call-2")
    result = store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a, b))
    assert result.head is not None and result.approvals == (a, b)
    assert store.get_run(head.tenant, head.run_id) == result.head
    assert store.get_approval(head.tenant, a.approval_id) == a
    assert store.get_approval(head.tenant, b.approval_id) == b
    assert [e.kind for e in store.list_events(head.tenant, head.run_id)][-1] == EventKind.approval_requested


def test_an_approval_is_replaced_whole(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    a = make_approval(head, edited_arguments={"order": "1234", "amount_usd": 100})
    store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a))
    decided = settle(a, edited_arguments=None, comment="ok")
    store.update_run(head.tenant, head.run_id,
                     lambda h: Mutation(append(h, status=RunStatus.running, approval_id=None, wake_at=None).head,
                                        approvals=[decided]))
    assert store.get_approval(head.tenant, a.approval_id) == decided


def test_approval_of_a_losing_attempt_is_never_written(store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head's precondition guards the approvals: an attempt that loses it writes neither."""
    head = create(store, make_head(status=RunStatus.running))
    hook = lose_first_commit(store, monkeypatch)
    seen: list[RunHead] = []

    def mutate(h: RunHead) -> Mutation[str]:
        seen.append(h)
        attempt = hook(h)
        return wait_for(h, make_approval(h, f"apr_attempt{attempt}"))

    result = store.update_run(head.tenant, head.run_id, mutate)
    expected = 1 if isinstance(store, InMemoryCheckpointStore) else 2
    assert len(seen) == expected
    assert store.get_approval(head.tenant, f"apr_attempt{expected}") is not None
    if expected == 2:
        assert store.get_approval(head.tenant, "apr_attempt1") is None
    assert store.get_run(head.tenant, head.run_id) == result.head
    assert result.head is not None and result.head.approval_id == f"apr_attempt{expected}"
    assert [a.approval_id for a in store.list_approvals(head.tenant)] == [f"apr_attempt{expected}"]


def test_no_approval_is_written_without_the_head(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    a = make_approval(head)
    store.update_run(head.tenant, head.run_id, lambda h: Mutation(None, approvals=[a]))

    def fails(h: RunHead) -> Mutation[str]:
        wait_for(h, a)
        raise Boom("decided to stop")

    with pytest.raises(Boom):
        store.update_run(head.tenant, head.run_id, fails)
    with pytest.raises(ValueError):  # events not continuing the sequence
        store.update_run(head.tenant, head.run_id, lambda h: Mutation(append(h).head, [make_event(9)], approvals=[a]))
    other = make_head(head.tenant)
    with pytest.raises(ValueError, match="cannot be written with run"):  # an approval of another run
        store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, make_approval(other)))
    assert store.get_approval(head.tenant, a.approval_id) is None
    assert store.list_approvals(head.tenant) == []
    assert store.get_run(head.tenant, head.run_id) == head


def test_oversized_approval_is_refused_and_nothing_is_written(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    small, huge = make_approval(head), make_approval(head, call_id="call-2", call_arguments={"body": "x" * 1_010_000})
    with pytest.raises(DocumentTooLarge) as info:
        store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, small, huge))
    assert info.value.path.endswith(f"/{huge.approval_id}") and huge.approval_id in str(info.value)
    assert store.get_run(head.tenant, head.run_id) == head
    assert [e.seq for e in store.list_events(head.tenant, head.run_id)] == [1]
    assert store.get_approval(head.tenant, small.approval_id) is None
    assert store.get_approval(head.tenant, huge.approval_id) is None


def test_any_json_approval_arguments_round_trip(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    odd = {"matrix": [[1, 2], [3, [4, 5]], []], "__x__": {"": "empty key", "a.b": 1, "`q`": 2, "x/y": 3},
           "big": 2**70, "float": 1.5e-300, "unicode": "日本語 🎉", "null": None, "flags": [True, False], "empty": {}}
    a = make_approval(head, arguments=odd, call_arguments={**odd, "secret": "s"}, edited_arguments={"__y__": [[odd]]},
                      approvers=["lee@finance.example.com", "*@ops.example.com"], redact=["secret", "a.b"],
                      trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                      late_decisions=[{"decision_id": "d0", "principal": "x@example.com", "decision": "reject"}])
    b = settle(make_approval(head, call_id="call-2", created_at=T0 + timedelta(seconds=1)),
               ApprovalStatus.rejected, comment="not this one: ünïcode", decided_at=datetime(2026, 5, 1, 12, 0, 0, 999999,
                                                                                        tzinfo=timezone(timedelta(hours=2))))
    store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a, b))
    got = store.get_approval(head.tenant, a.approval_id)
    assert got == a and got is not None and got.model_dump() == a.model_dump()
    assert type(got.created_at) is datetime and got.created_at.utcoffset() == timedelta(0)
    assert isinstance(got.status, ApprovalStatus)
    assert store.get_approval(head.tenant, b.approval_id) == b
    assert store.list_approvals(head.tenant) == [a, b]


def test_get_unknown_approval_is_none(store: CheckpointStore) -> None:
    head = create(store, make_head())
    assert store.get_approval(head.tenant, unique("apr_")) is None
    for tenant, approval_id in [(head.tenant, "a/b"), (head.tenant, "__x__"), (head.tenant, ""), ("", "apr_1"),
                                ("a/b", "apr_1")]:
        assert store.get_approval(tenant, approval_id) is None
        assert store.list_approvals(tenant) == []
        with pytest.raises(NotFound):
            store.add_late_decision(tenant, approval_id, {"decision_id": "d1"})


def _approvals_in(store: CheckpointStore, head: RunHead, *approvals: Approval) -> None:
    store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, *approvals))


def test_list_approvals_by_status_in_creation_order(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))

    def at(minutes: int, approval_id: str, status: ApprovalStatus = ApprovalStatus.pending) -> Approval:
        a = make_approval(head, approval_id, call_id=approval_id, created_at=T0 + timedelta(minutes=minutes))
        return a if status == ApprovalStatus.pending else settle(a, status)

    # created out of order; two share a creation time and are ordered by id
    p3, r1, p1b, p1a = at(3, "apr_p3"), at(1, "apr_r1", ApprovalStatus.rejected), at(1, "apr_p1b"), at(1, "apr_p1a")
    e2, x0 = at(2, "apr_e2", ApprovalStatus.expired), at(0, "apr_x0", ApprovalStatus.approved)
    _approvals_in(store, head, p3, r1, p1b)
    _approvals_in(store, head, p1a, e2, x0)
    ids = lambda approvals: [a.approval_id for a in approvals]  # noqa: E731
    assert ids(store.list_approvals(head.tenant)) == ["apr_x0", "apr_p1a", "apr_p1b", "apr_r1", "apr_e2", "apr_p3"]
    assert store.list_approvals(head.tenant, status=ApprovalStatus.pending) == [p1a, p1b, p3]
    assert store.list_approvals(head.tenant, status=ApprovalStatus.rejected) == [r1]
    assert store.list_approvals(head.tenant, status=ApprovalStatus.cancelled) == []
    assert ids(store.list_approvals(head.tenant, limit=2)) == ["apr_x0", "apr_p1a"]
    assert store.list_approvals(head.tenant, limit=0) == []
    # a settled approval leaves the pending list
    store.update_run(head.tenant, head.run_id, lambda h: Mutation(append(h).head, approvals=[settle(p1a)]))
    assert store.list_approvals(head.tenant, status=ApprovalStatus.pending) == [p1b, p3]
    assert ids(store.list_approvals(head.tenant, status=ApprovalStatus.approved)) == ["apr_x0", "apr_p1a"]


def test_list_approvals_pages_after_a_cursor(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    made = [make_approval(head, f"apr_{i:02d}", call_id=str(i), created_at=T0 + timedelta(seconds=i // 2))
            for i in range(7)]
    _approvals_in(store, head, *reversed(made))
    pages, after = [], None
    while page := store.list_approvals(head.tenant, limit=3, after=after):
        pages.append([a.approval_id for a in page])
        after = (page[-1].created_at, page[-1].approval_id)
    assert pages == [["apr_00", "apr_01", "apr_02"], ["apr_03", "apr_04", "apr_05"], ["apr_06"]]
    # within one creation time the id decides; a cursor need not be an existing approval
    assert [a.approval_id for a in store.list_approvals(head.tenant, after=(T0 + timedelta(seconds=1), "apr_02"))] \
        == ["apr_03", "apr_04", "apr_05", "apr_06"]
    assert [a.approval_id for a in store.list_approvals(head.tenant, after=(T0 + timedelta(seconds=1), "apr_025"))] \
        == ["apr_03", "apr_04", "apr_05", "apr_06"]
    assert [a.approval_id for a in store.list_approvals(head.tenant, after=(T0, "zzz"))] \
        == ["apr_02", "apr_03", "apr_04", "apr_05", "apr_06"]
    assert store.list_approvals(head.tenant, status=ApprovalStatus.pending, limit=2,
                                after=(made[4].created_at, made[4].approval_id)) == made[5:7]
    assert store.list_approvals(head.tenant, after=(T0 + timedelta(days=1), "")) == []


def test_approvals_of_another_tenant_are_invisible(store: CheckpointStore) -> None:
    approval_id = unique("apr_")
    a_head = create(store, make_head(status=RunStatus.running))
    b_head = create(store, make_head(status=RunStatus.running))
    a, b = make_approval(a_head, approval_id, tool="a"), make_approval(b_head, approval_id, tool="b")
    _approvals_in(store, a_head, a)
    assert store.get_approval(b_head.tenant, approval_id) is None
    assert store.list_approvals(b_head.tenant) == []
    with pytest.raises(NotFound):
        store.add_late_decision(b_head.tenant, approval_id, {"decision_id": "d1"})
    _approvals_in(store, b_head, b)  # the same id in another tenant is another approval
    assert store.get_approval(a_head.tenant, approval_id) == a
    assert store.get_approval(b_head.tenant, approval_id) == b
    assert store.list_approvals(a_head.tenant) == [a]
    assert store.list_approvals(b_head.tenant, status=ApprovalStatus.pending) == [b]
    assert store.get_approval(unique("tenant-"), approval_id) is None


@pytest.mark.parametrize("entry", [{"decision_id": 1}, {"": "empty name"}, {"__id__": "reserved name"},
                                   {"decision_id": {"nested": "map"}}], ids=["not-a-string", "empty-name",
                                                                              "reserved-name", "nested"])
def test_malformed_late_decisions_are_refused_by_every_store(store: CheckpointStore, entry: dict[str, Any]) -> None:
    # one rule (agex.ports.rules.check_late_decision) for both ways a late decision is written
    head = create(store, make_head(status=RunStatus.running))
    a = settle(make_approval(head))
    with pytest.raises(ValueError, match="late decision"):
        _approvals_in(store, head, a.model_copy(update={"late_decisions": [entry]}))
    assert store.get_run(head.tenant, head.run_id) == head
    _approvals_in(store, head, a)
    with pytest.raises(ValueError, match="late decision"):
        store.add_late_decision(head.tenant, a.approval_id, entry)
    assert store.get_approval(head.tenant, a.approval_id) == a


def test_late_decisions_are_recorded_once(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    a = settle(make_approval(head))
    _approvals_in(store, head, a)
    late = {"decision_id": "d2", "decision": "reject", "principal": "kim@finance.example.com",
            "decided_at": "2026-03-04T06:00:00Z", "comment": ""}
    store.add_late_decision(head.tenant, a.approval_id, late)
    store.add_late_decision(head.tenant, a.approval_id, dict(late))  # redelivered: an equal entry
    other = {**late, "decision_id": "d3"}
    store.add_late_decision(head.tenant, a.approval_id, other)
    store.add_late_decision(head.tenant, a.approval_id, dict(reversed(list(late.items()))))  # equal, keys reordered
    got = store.get_approval(head.tenant, a.approval_id)
    assert got is not None and got.late_decisions == [late, other]
    assert got == a.model_copy(update={"late_decisions": [late, other]})  # nothing else changed
    late["comment"] = "mutated by the caller afterwards"
    assert store.get_approval(head.tenant, a.approval_id) == got


def test_late_decision_on_a_missing_approval_is_not_found(store: CheckpointStore) -> None:
    head = create(store, make_head())
    with pytest.raises(NotFound):
        store.add_late_decision(head.tenant, unique("apr_"), {"decision_id": "d1"})
    assert store.list_approvals(head.tenant) == []


@pytest.mark.parametrize("entry", [{"n": 1}, {"at": T0}, {"nested": {"a": "b"}}, {"": "x"}, {"__x__": "y"}],
                         ids=["int", "datetime", "map", "empty-key", "reserved-key"])
def test_late_decision_must_be_a_flat_map_of_strings(store: CheckpointStore, entry: dict[str, Any]) -> None:
    head = create(store, make_head(status=RunStatus.running))
    a = settle(make_approval(head))
    _approvals_in(store, head, a)
    with pytest.raises(ValueError, match="strings"):
        store.add_late_decision(head.tenant, a.approval_id, entry)
    assert store.get_approval(head.tenant, a.approval_id) == a


def test_returned_approvals_are_copies(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    a = make_approval(head)
    _approvals_in(store, head, a)
    got = store.get_approval(head.tenant, a.approval_id)
    assert got is not None
    got.arguments["order"] = "changed"
    got.approvers.append("mallory@example.com")
    a.arguments["order"] = "changed too"  # nor is the stored document the caller's object
    [listed] = store.list_approvals(head.tenant)
    assert listed.arguments["order"] == "1234" and listed.approvers == ["*@finance.example.com"]


def test_find_waiting_across_tenants_earliest_first(store: CheckpointStore) -> None:
    ta, tb = unique("tenant-a-"), unique("tenant-b-")

    def run(tenant: str, status: RunStatus, wake_minutes: int | None) -> RunHead:
        wake = T0 + timedelta(minutes=wake_minutes) if wake_minutes is not None else None
        return create(store, make_head(tenant, status=status, wake_at=wake))

    t5 = run(tb, RunStatus.waiting_timer, 5)
    a2 = run(ta, RunStatus.waiting_approval, 2)
    a8 = run(tb, RunStatus.waiting_approval, 8)
    t3 = run(ta, RunStatus.waiting_timer, 3)
    run(ta, RunStatus.running, 1)  # not waiting, though it has a wake_at
    run(tb, RunStatus.succeeded, 1)
    run(ta, RunStatus.waiting_timer, None)  # waiting without a due time
    late = run(tb, RunStatus.waiting_approval, 60)

    assert store.find_waiting(T0 + timedelta(minutes=10)) == [a2, t3, t5, a8]
    assert store.find_waiting(T0 + timedelta(minutes=10), limit=2) == [a2, t3]
    assert store.find_waiting(T0 + timedelta(minutes=5)) == [a2, t3]  # strictly before
    assert store.find_waiting(T0 + timedelta(days=1)) == [a2, t3, t5, a8, late]
    assert store.find_waiting(T0) == []
    assert store.find_waiting(T0 + timedelta(days=1), limit=0) == []


def test_find_waiting_sees_updates(store: CheckpointStore) -> None:
    head = create(store, make_head(status=RunStatus.running))
    cutoff = T0 + timedelta(days=2)
    assert store.find_waiting(cutoff) == []
    a = make_approval(head)
    waiting = store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a)).head
    assert waiting is not None and waiting.wake_at == a.expires_at
    assert store.find_waiting(cutoff) == [waiting]
    store.update_run(head.tenant, head.run_id, lambda h: Mutation(
        append(h, status=RunStatus.running, approval_id=None, wake_at=None).head, approvals=[settle(a)]))
    assert store.find_waiting(cutoff) == []


# --- Firestore adapter only: layout, encoding, stats, error translation -------------------------------


@pytest.fixture
def fs_store(firestore_client: Any) -> Any:
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    return FirestoreCheckpointStore(firestore_client, prefix=unique("t") + "_", max_attempts=3)


def test_firestore_layout_and_native_types(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    store = FirestoreCheckpointStore(firestore_client)  # the production layout: no prefix
    head = create(store, full_head(), n_events=2)
    raw = firestore_client.document(f"tenants/{head.tenant}/runs/{head.run_id}").get().to_dict()
    assert isinstance(raw["expire_at"], datetime) and isinstance(raw["updated_at"], datetime)  # TTL needs this
    assert raw["status"] == "running" and type(raw["status"]) is str
    assert head.lease is not None and raw["lease"]["until"] == head.lease.until
    assert raw["metadata"] == head.metadata
    # the events of one commit share a document, named by the first one's seq
    ids = [d.id for d in firestore_client.collection(f"tenants/{head.tenant}/runs/{head.run_id}/events").stream()]
    assert ids == ["0000000001"]
    doc = firestore_client.document(f"tenants/{head.tenant}/runs/{head.run_id}/events/0000000001").get().to_dict()
    assert isinstance(doc["expire_at"], datetime)  # the TTL policy's field
    assert (doc["seq"], doc["last_seq"], doc["step"], doc["last_step"]) == (1, 2, 0, 0)
    items = json.loads(doc["events_json"])
    assert [(i["seq"], i["kind"]) for i in items] == [(1, "run_created"), (2, "step_started")]
    assert "expire_at" not in items[0] and "format" not in items[0]  # the document's


def test_firestore_events_too_large_to_share_a_document_are_split_in_order(fs_store: Any) -> None:
    """Three events of 400 KB in one commit: two documents (the third does not fit beside two), every event
    read back in order, and pages across the documents' boundaries."""
    head = create(fs_store, make_head())
    big = [make_event(seq, 1, pad="x" * 400_000) for seq in (2, 3, 4)]
    fs_store.update_run(head.tenant, head.run_id, lambda h: append(h, *big))
    fs_store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(5, 2), make_event(6, 2)))
    ref = fs_store.client.document(f"{fs_store.prefix}tenants/{head.tenant}/{fs_store.prefix}runs/{head.run_id}")
    ids = [d.id for d in ref.collection(f"{fs_store.prefix}events").stream()]
    assert ids == ["0000000001", "0000000002", "0000000004", "0000000005"]
    assert [e.seq for e in fs_store.list_events(head.tenant, head.run_id)] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in fs_store.list_events(head.tenant, head.run_id, after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in fs_store.list_events(head.tenant, head.run_id, after_seq=5, limit=3)] == [6]
    assert [e.seq for e in fs_store.events_since_step(head.tenant, head.run_id, 2)] == [5, 6]
    assert fs_store.list_events(head.tenant, head.run_id, after_seq=2, limit=1)[0].data["pad"] == "x" * 400_000


def test_firestore_stats_count_operations(fs_store: Any) -> None:
    head = create(fs_store, make_head(), n_events=2)
    assert fs_store.stats["writes"] == 2 and fs_store.stats["commits"] == 1  # the head, its events' document
    assert fs_store.stats["bytes_written"] > len(head.input)
    before = fs_store.reset_stats()
    assert before["writes"] == 2
    fs_store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(3, 1), make_event(4, 1)))
    fs_store.update_run(head.tenant, head.run_id, lambda h: Mutation(None))  # not trusted unread: read
    fs_store.list_events(head.tenant, head.run_id)
    s = fs_store.stats
    assert (s["reads"], s["writes"], s["commits"], s["queries"], s["retries"]) == (2 + 2, 2, 1, 1, 0)


def test_firestore_a_step_reads_its_head_once(fs_store: Any) -> None:
    """Read, commit, commit (a step): the commits decide on the version this store last saw, so the head
    is read once, and the commits are proved by their precondition."""
    head = create(fs_store, make_head())
    fs_store.reset_stats()
    assert fs_store.get_run(head.tenant, head.run_id) == head
    fs_store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2, 1)))
    fs_store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(3, 1), make_event(4, 1)))
    s = fs_store.stats
    assert (s["reads"], s["commits"], s["retries"]) == (1, 2, 0)
    assert fs_store.get_run(head.tenant, head.run_id).seq == 4


def test_firestore_a_head_changed_elsewhere_is_decided_on_again(firestore_client: Any) -> None:
    """Another process (another store) changes the head after this one saw it: the commit made on what this
    one saw fails its precondition, and the update is decided again on the stored head. Nothing is lost."""
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    prefix = unique("t") + "_"
    here, there = (FirestoreCheckpointStore(firestore_client, prefix=prefix) for _ in range(2))
    head = create(here, make_head())
    here.get_run(head.tenant, head.run_id)
    there.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2, 1), metadata={"by": "there"}))
    seen: list[dict[str, str]] = []
    here.update_run(head.tenant, head.run_id,
                    lambda h: seen.append(dict(h.metadata)) or append(h, make_event(h.seq + 1, 1)))
    assert seen[-1] == {"by": "there"}
    stored = here.get_run(head.tenant, head.run_id)
    assert stored.seq == 3 and stored.metadata == {"by": "there"}
    assert [e.seq for e in here.list_events(head.tenant, head.run_id)] == [1, 2, 3]


def test_firestore_known_heads_are_bounded_in_bytes_least_recently_used_first() -> None:
    from agex.adapters.gcp.firestore_store import _KnownHeads

    known = _KnownHeads()
    size = known.MAX_BYTES // 16  # the largest head kept: 16 fill the budget
    names = [f"h{i}" for i in range(16)]
    for name in names:
        known.remember(name, {"n": name}, update_time=1, size=size)
    assert known.recall("h0") is not None  # now the most recently used
    known.remember("new", {"n": "new"}, update_time=1, size=size)  # over the budget: the least recent goes
    assert known.recall("h1") is None and all(known.recall(n) is not None for n in [*names[2:], "h0", "new"])
    known.remember("h0", {"n": "again"}, update_time=2, size=size)  # replaced, not counted twice
    assert known.recall("h0").doc == {"n": "again"} and known.recall("h2") is not None
    known.remember("h2", {"n": "x"}, update_time=None, size=1)  # a version without its time: forgotten
    known.remember("h3", {"n": "x"}, update_time=3, size=size + 1)  # too large to keep: forgotten
    assert known.recall("h2") is None and known.recall("h3") is None
    known.forget("h4")
    assert known.recall("h4") is None and known.recall("new") is not None


def test_firestore_writers_in_several_processes_lose_nothing(firestore_client: Any) -> None:
    """Four stores (four processes' worth of known heads) append at once, each deciding first on the head it
    last saw: every stale decision fails its precondition and is taken again; no update is lost or doubled."""
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    prefix = unique("t") + "_"
    stores = [FirestoreCheckpointStore(firestore_client, prefix=prefix) for _ in range(4)]
    head = create(stores[0], make_head(), n_events=0)
    for s in stores:
        s.get_run(head.tenant, head.run_id)  # each knows the head as created
    at_once(8, lambda w, i: stores[w % 4].update_run(head.tenant, head.run_id, lambda h: append(
        h, make_event(h.seq + 1, h.step, worker=w, i=i))), per_thread=3)
    events = stores[1].list_events(head.tenant, head.run_id, limit=1000)
    assert [e.seq for e in events] == list(range(1, 25))
    assert sorted((e.data["worker"], e.data["i"]) for e in events) == sorted(
        (w, i) for w in range(8) for i in range(3))
    assert stores[2].get_run(head.tenant, head.run_id).seq == 24


def test_firestore_a_refusal_or_no_op_on_a_stale_head_is_not_trusted(firestore_client: Any) -> None:
    """A decision that writes nothing, or raises, proves nothing about the stored head: it is taken again on a
    fresh read. Here the head this store saw says "stop"; the stored one says "go"."""
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    prefix = unique("t") + "_"
    here, there = (FirestoreCheckpointStore(firestore_client, prefix=prefix) for _ in range(2))
    head = create(here, make_head(metadata={"state": "stop"}))
    here.get_run(head.tenant, head.run_id)
    there.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2, 1), metadata={"state": "go"}))

    def no_op_unless_go(h: RunHead) -> Mutation[str]:
        return append(h, make_event(h.seq + 1, 1)) if h.metadata["state"] == "go" else Mutation(None, (), "stop")

    assert here.update_run(head.tenant, head.run_id, no_op_unless_go).value == "ok"
    there.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(h.seq + 1, 1), metadata={"state": "x"}))

    def refuse_unless_x(h: RunHead) -> Mutation[str]:
        if h.metadata["state"] != "x":
            raise ValueError("not x")
        return append(h, make_event(h.seq + 1, 1))

    assert here.update_run(head.tenant, head.run_id, refuse_unless_x).value == "ok"
    assert here.get_run(head.tenant, head.run_id).seq == 5


def test_firestore_oversized_document_raises_document_too_large(fs_store: Any) -> None:
    from agex.core.errors import DocumentTooLarge
    from agex.ports.rules import MAX_DOCUMENT_BYTES

    head = make_head(input="x" * MAX_DOCUMENT_BYTES)
    with pytest.raises(DocumentTooLarge) as info:
        fs_store.create_run(head, [])
    assert info.value.path.endswith(f"/{head.run_id}") and info.value.size > MAX_DOCUMENT_BYTES
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, ValueError)
    assert fs_store.stats["commits"] == 0  # refused before sending


def test_firestore_non_json_event_data_is_refused(fs_store: Any) -> None:
    head = make_head(seq=1)
    with pytest.raises(ValueError, match="JSON"):
        fs_store.create_run(head, [make_event(1, 0, when=datetime.now(UTC))])
    assert fs_store.get_run(head.tenant, head.run_id) is None


def test_firestore_unavailable_is_transient(fs_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.document import DocumentReference

    def unavailable(*a: Any, **k: Any) -> None:
        raise gexc.ServiceUnavailable("down")

    monkeypatch.setattr(DocumentReference, "get", unavailable)
    with pytest.raises(TransientError) as info:
        fs_store.get_run("t", "r")
    assert isinstance(info.value.__cause__, gexc.ServiceUnavailable)
    with pytest.raises(TransientError):
        fs_store.update_run("t", "r", lambda h: Mutation(h))


def test_firestore_contention_beyond_retries_is_transient(fs_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.batch import WriteBatch

    from agex.core.errors import TransientError

    head = create(fs_store, make_head())

    def always_stale(*a: Any, **k: Any) -> None:
        raise gexc.FailedPrecondition("the stored version does not match")

    monkeypatch.setattr(WriteBatch, "commit", always_stale)
    calls = []
    with pytest.raises(TransientError, match="contention"):
        fs_store.update_run(head.tenant, head.run_id, lambda h: calls.append(1) or append(h, make_event(2)))
    assert len(calls) == 3  # max_attempts


def test_firestore_transaction_aborted_beyond_retries_is_transient(
    firestore_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.transaction import Transaction

    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore
    from agex.core.errors import TransientError

    store = FirestoreCheckpointStore(firestore_client, prefix=unique("t") + "_", concurrency="transaction",
                                     max_attempts=3)
    head = create(store, make_head())

    def aborted(self: Any) -> None:
        raise gexc.Aborted("contention")

    monkeypatch.setattr(Transaction, "_commit", aborted)
    with pytest.raises(TransientError, match="contention"):
        store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2)))
    monkeypatch.undo()
    assert store.get_run(head.tenant, head.run_id) == head


@pytest.mark.parametrize("tenant,run_id", [("acme", "a/b"), ("a/b", "run"), ("acme", ".."), ("acme", "__x__"),
                                           ("", "run"), ("acme", "")])
def test_ids_no_run_can_have_are_unknown_runs(store: CheckpointStore, tenant: str, run_id: str) -> None:
    """Reads by any id answer "no such run" (ids come from URLs); only creating refuses odd ids."""
    assert store.get_run(tenant, run_id) is None
    with pytest.raises(NotFound):
        store.update_run(tenant, run_id, lambda h: Mutation(h))
    assert store.list_events(tenant, run_id) == []
    assert store.events_since_step(tenant, run_id, 0) == []


def test_firestore_refuses_more_writes_than_one_commit_holds(fs_store: Any) -> None:
    from agex.adapters.gcp.firestore_store import MAX_WRITES_PER_COMMIT

    head = create(fs_store, make_head())
    many_events = [make_event(2 + i, 1) for i in range(MAX_WRITES_PER_COMMIT)]
    fs_store.update_run(head.tenant, head.run_id, lambda h: append(h, *many_events))  # one document holds them
    before = fs_store.get_run(head.tenant, head.run_id)
    too_many = [make_approval(before) for _ in range(MAX_WRITES_PER_COMMIT - 1)]  # and the head, an event
    with pytest.raises(ValueError, match="at most 500"):
        fs_store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, *too_many))
    assert fs_store.get_run(head.tenant, head.run_id) == before


def test_firestore_approval_layout_and_encoding(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    store = FirestoreCheckpointStore(firestore_client)  # the production layout: no prefix
    head = create(store, make_head(status=RunStatus.running))
    late = {"decision_id": "d9", "decision": "approve"}
    a = make_approval(head, edited_arguments={"m": [[1]]}, late_decisions=[late])
    store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a))
    raw = firestore_client.document(f"tenants/{head.tenant}/approvals/{a.approval_id}").get().to_dict()
    assert isinstance(raw["expire_at"], datetime) and isinstance(raw["created_at"], datetime)  # TTL needs this
    assert raw["status"] == "pending" and type(raw["status"]) is str and raw["approval_id"] == a.approval_id
    for name in ("arguments", "call_arguments", "edited_arguments"):
        assert isinstance(raw[f"{name}_json"], str) and name not in raw
    assert raw["late_decisions"] == [late] and raw["approvers"] == a.approvers
    store.add_late_decision(head.tenant, a.approval_id, {"decision_id": "d10", "decision": "reject"})
    raw = firestore_client.document(f"tenants/{head.tenant}/approvals/{a.approval_id}").get().to_dict()
    assert raw["late_decisions"] == [late, {"decision_id": "d10", "decision": "reject"}]


def test_firestore_counts_approvals_as_writes(fs_store: Any) -> None:
    from agex.adapters.gcp.firestore_store import MAX_WRITES_PER_COMMIT

    head = create(fs_store, make_head(status=RunStatus.running))
    fs_store.reset_stats()
    fs_store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, make_approval(h), make_approval(h)))
    assert fs_store.stats["writes"] == 4 and fs_store.stats["commits"] == 1  # head, event, two approvals

    def with_approvals(n: int) -> Callable[[RunHead], Mutation[str]]:
        def mutate(h: RunHead) -> Mutation[str]:
            events = [make_event(h.seq + 1 + i, 1) for i in range(3)]  # one document
            return Mutation(append(h, *events).head, events, approvals=[make_approval(h) for _ in range(n)])
        return mutate

    fs_store.update_run(head.tenant, head.run_id, with_approvals(MAX_WRITES_PER_COMMIT - 2))  # exactly 500 writes
    before = fs_store.get_run(head.tenant, head.run_id)
    with pytest.raises(ValueError, match="at most 500"):
        fs_store.update_run(head.tenant, head.run_id, with_approvals(MAX_WRITES_PER_COMMIT - 1))
    assert fs_store.get_run(head.tenant, head.run_id) == before


def test_firestore_late_decision_errors_are_translated(fs_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.firestore_v1.document import DocumentReference

    head = create(fs_store, make_head(status=RunStatus.running))
    a = settle(make_approval(head))
    _approvals_in(fs_store, head, a)

    def gone(*args: Any, **kwargs: Any) -> None:
        raise gexc.NotFound("no entity to update")

    monkeypatch.setattr(DocumentReference, "update", gone)  # deleted (TTL) between the read and the update
    with pytest.raises(NotFound):
        fs_store.add_late_decision(head.tenant, a.approval_id, {"decision_id": "d1"})

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise gexc.ServiceUnavailable("down")

    monkeypatch.setattr(DocumentReference, "update", unavailable)
    with pytest.raises(TransientError):
        fs_store.add_late_decision(head.tenant, a.approval_id, {"decision_id": "d1"})
    monkeypatch.setattr(DocumentReference, "get", unavailable)
    with pytest.raises(TransientError):
        fs_store.get_approval(head.tenant, a.approval_id)


def test_firestore_non_json_approval_arguments_are_refused(fs_store: Any) -> None:
    head = create(fs_store, make_head(status=RunStatus.running))
    a = make_approval(head, arguments={"when": datetime.now(UTC)})
    with pytest.raises(ValueError, match="JSON"):
        fs_store.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a))
    assert fs_store.get_run(head.tenant, head.run_id) == head
    assert fs_store.get_approval(head.tenant, a.approval_id) is None


# --- leases and late results ---------------------------------------------------------------------------
# The step protocol's writes for leases and late results go through update_run like every other: the
# renewal writes the head alone; a late result writes its event, the head and the reconciliation it
# settles or joins in one commit. Both stores must agree on all of it.


def _leased(store: CheckpointStore, owner: str = "task#0@a") -> RunHead:
    from agex.engine import decisions
    from agex.engine.decisions import Delivery

    head = create(store, make_head(status=RunStatus.queued, step=0))
    d = Delivery(tenant=head.tenant, run_id=head.run_id, step=1, task_name=owner.split("#")[0],
                 attempt=int(owner.split("#")[1].split("@")[0]), instance=owner.split("@")[1])
    claimed = store.update_run(head.tenant, head.run_id, lambda h: decisions.claim(h, d, T0, 30))
    assert claimed.head is not None
    return claimed.head


def test_a_lease_renewal_writes_the_head_alone(store: CheckpointStore) -> None:
    from agex.core.errors import LeaseLost
    from agex.engine import decisions

    head = _leased(store)
    assert head.lease is not None
    events = store.list_events(head.tenant, head.run_id)
    renewed = store.update_run(head.tenant, head.run_id, lambda h: decisions.renew_lease(
        h, "task#0@a", 1, T0 + timedelta(seconds=10), 30))
    assert renewed.value is True
    got = store.get_run(head.tenant, head.run_id)
    assert got is not None and got.lease is not None and got.lease.until == T0 + timedelta(seconds=40)
    assert got.seq == head.seq and got.updated_at == head.updated_at
    assert store.list_events(head.tenant, head.run_id) == events
    with pytest.raises(LeaseLost, match="took the lease over"):  # another attempt's renewal
        store.update_run(head.tenant, head.run_id, lambda h: decisions.renew_lease(
            h, "task#1@b", 1, T0 + timedelta(seconds=11), 30))
    assert store.get_run(head.tenant, head.run_id) == got


ODD_OUTPUT = {"matrix": [[1, 2], [3, [4, 5]], []], "__x__": {"": "empty key", "a.b": 1}, "big": 2**70,
              "unicode": "日本語 🎉", "null": None, "reference": "TX-1"}


def _waiting_for_reconciliation(store: CheckpointStore) -> tuple[RunHead, Approval, Any]:
    from agex.core.approval import ApprovalPolicy
    from agex.core.messages import FunctionCall
    from agex.engine import decisions

    head = _leased(store)
    call = FunctionCall(id="call-0", name="transfer", args={"to": "acme", "amount": 500})
    policy = ApprovalPolicy(tool="transfer", approvers=("ops@example.com",), four_eyes=False, on_expiry="fail",
                            reason="what is known")
    opened = store.update_run(head.tenant, head.run_id, lambda h: decisions.request_approval(
        h, "task#0@a", 1, call, policy, T0 + timedelta(seconds=40), "reconcile", 0))
    assert opened.head is not None and opened.value is not None
    return opened.head, opened.value, call


def test_a_late_result_settles_a_pending_reconciliation_in_one_commit(store: CheckpointStore) -> None:
    from agex.core.approval import Decision
    from agex.engine import decisions

    head, approval, call = _waiting_for_reconciliation(store)
    at = T0 + timedelta(seconds=50)
    result = store.update_run(head.tenant, head.run_id, lambda h: decisions.record_late_result(
        h, "task#0@old", 1, call, True, ODD_OUTPUT, 2, 0, approval, at))
    assert result.value == decisions.Late.settled
    got = store.get_run(head.tenant, head.run_id)
    assert got == result.head and got is not None
    assert got.status == RunStatus.queued and got.approval_id is None and got.generation == head.generation + 1
    settled = store.get_approval(head.tenant, approval.approval_id)
    assert settled is not None and settled.status == ApprovalStatus.resolved and settled.resolution == Decision.done
    assert settled.decided_by == "agex" and settled.late_result is not None
    assert settled.late_result["output"] == ODD_OUTPUT and settled.late_result["owner"] == "task#0@old"
    assert settled == result.approvals[0]
    late, decided = store.list_events(head.tenant, head.run_id, after_seq=head.seq)
    assert (late.kind, decided.kind) == (EventKind.tool_late_result, EventKind.approval_decided)
    assert late.data["output"] == ODD_OUTPUT and late.data["intent_seq"] == 2 and late.step == 1
    assert decided.data["decision"] == "done" and decided.data["by"] == "agex"


def test_a_late_result_joins_a_settled_reconciliation_and_a_finished_run(store: CheckpointStore) -> None:
    from agex.core.approval import Decision, DecisionMessage
    from agex.engine import decisions

    head, approval, call = _waiting_for_reconciliation(store)
    message = DecisionMessage(decision_id="dec-1", tenant=head.tenant, approval_id=approval.approval_id,
                              decision=Decision.retry, principal="ops@example.com", decided_at=T0)
    store.update_run(head.tenant, head.run_id, lambda h: decisions.decide_approval(h, approval, message, T0))
    stale = approval  # read before the decision: the store decides on what it reads now
    with pytest.raises(decisions.ApprovalMoved):
        store.update_run(head.tenant, head.run_id, lambda h: decisions.record_late_result(
            h, "task#0@old", 1, call, False, {"error": "bank timeout"}, 2, 0, stale, T0))
    current = store.get_approval(head.tenant, approval.approval_id)
    result = store.update_run(head.tenant, head.run_id, lambda h: decisions.record_late_result(
        h, "task#0@old", 1, call, False, {"error": "bank timeout"}, 2, 0, current, T0))
    assert result.value == decisions.Late.attached
    joined = store.get_approval(head.tenant, approval.approval_id)
    assert joined is not None and joined.resolution == Decision.retry and joined.decided_by == "ops@example.com"
    assert joined.late_result is not None and joined.late_result["ok"] is False
    # on a run that ended, the fact is recorded all the same: an event, nothing else changes
    ended = store.update_run(head.tenant, head.run_id, lambda h: decisions.finish(h, T0, RunStatus.cancelled))
    assert ended.head is not None
    again = store.update_run(head.tenant, head.run_id, lambda h: decisions.record_late_result(
        h, "task#0@old", 1, call, True, {"ok": 1}, 9, 1, None, T0))
    assert again.value == decisions.Late.recorded
    got = store.get_run(head.tenant, head.run_id)
    assert got is not None and got.status == RunStatus.cancelled
    assert store.list_events(head.tenant, head.run_id)[-1].kind == EventKind.tool_late_result


def test_firestore_late_result_is_stored_as_json(firestore_client: Any) -> None:
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore
    from agex.engine import decisions

    store = FirestoreCheckpointStore(firestore_client, prefix=unique("late"))
    head, approval, call = _waiting_for_reconciliation(store)
    store.update_run(head.tenant, head.run_id, lambda h: decisions.record_late_result(
        h, "task#0@old", 1, call, True, ODD_OUTPUT, 2, 0, approval, T0))
    p = store.prefix
    raw = firestore_client.document(f"{p}tenants/{head.tenant}/{p}approvals/{approval.approval_id}").get().to_dict()
    assert isinstance(raw["late_result_json"], str) and "late_result" not in raw
    assert raw["status"] == "resolved"
