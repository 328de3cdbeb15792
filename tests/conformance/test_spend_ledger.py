"""Conformance of SpendLedger implementations, each over the checkpoint store that writes its entries: in
memory, Firestore on the emulator (optimistic commits and transactions), and Postgres.

Entries go in the way the step writes them, in a ``Mutation`` of ``update_run``; the ledger sums what its
members spent in a window, lists the oldest entries, and lets exactly one caller claim each alert."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
from agex.adapters.inmemory.spend_ledger import InMemorySpendLedger
from agex.core.run import RunHead
from agex.core.spend import LEDGER_RETENTION, SpendEntry, Spent
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.ports.spend_ledger import Member, SpendLedger

from .conftest import CHECKPOINT_STORES, checkpoint_store, unique

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(params=CHECKPOINT_STORES)
def store(request: pytest.FixtureRequest) -> CheckpointStore:
    return checkpoint_store(request)


@pytest.fixture
def ledger(store: CheckpointStore) -> SpendLedger:
    if isinstance(store, InMemoryCheckpointStore):
        return InMemorySpendLedger(store)
    from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore

    if isinstance(store, PostgresCheckpointStore):
        from agex.adapters.postgres.spend_ledger import PostgresSpendLedger

        return PostgresSpendLedger(store.pool, schema=store.schema)
    from agex.adapters.gcp.firestore_spend import FirestoreSpendLedger
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore

    assert isinstance(store, FirestoreCheckpointStore)
    return FirestoreSpendLedger(store.client, prefix=store.prefix)


def _run(store: CheckpointStore, tenant: str, principal: str, agent: str) -> RunHead:
    head = RunHead(run_id=unique("run_"), tenant=tenant, agent=agent, agent_version="1", principal=principal,
                   input="hi", created_at=T0, updated_at=T0, expire_at=T0 + timedelta(days=7))
    return store.create_run(head, [])


def _spend(store: CheckpointStore, head: RunHead, at: datetime, cost: float, tokens: int) -> SpendEntry:
    """One model call's spend, committed with the run head as the step commits it."""
    current = store.get_run(head.tenant, head.run_id)
    assert current is not None
    entry = SpendEntry(entry_id=f"{head.run_id}-{current.seq + 1}", tenant=head.tenant, principal=head.principal,
                       agent=head.agent, run_id=head.run_id, model="gemini-2.5-flash", at=at, cost_usd=cost,
                       tokens=tokens, expire_at=at + LEDGER_RETENTION)
    store.update_run(head.tenant, head.run_id, lambda h: Mutation(
        h.model_copy(update={"seq": h.seq + 1, "updated_at": at}), (), None, spend=(entry,)))
    return entry


def test_sums_each_scope_over_its_window(store: CheckpointStore, ledger: SpendLedger) -> None:
    acme, globex = unique("acme"), unique("globex")
    alice, bob = _run(store, acme, "alice", "support"), _run(store, acme, "bob", "support")
    other = _run(store, globex, "alice", "billing")
    _spend(store, alice, T0 - timedelta(hours=30), 5.0, 500)  # outside a day, inside a month
    _spend(store, alice, T0 - timedelta(hours=2), 0.25, 25)
    _spend(store, alice, T0 - timedelta(minutes=1), 0.5, 50)
    _spend(store, bob, T0 - timedelta(hours=1), 1.0, 100)
    _spend(store, other, T0 - timedelta(hours=1), 2.0, 200)
    day = T0 - timedelta(days=1)
    assert ledger.spent(Member(tenant=acme, principal="alice"), day) == Spent(cost_usd=0.75, tokens=75)
    assert ledger.spent(Member(tenant=acme, principal="alice"), T0 - timedelta(days=30)) == Spent(cost_usd=5.75,
                                                                                                  tokens=575)
    assert ledger.spent(Member(tenant=acme), day) == Spent(cost_usd=1.75, tokens=175)
    assert ledger.spent(Member(tenant=globex, principal="alice"), day) == Spent(cost_usd=2.0, tokens=200)
    both = Member(tenants=(acme, globex))
    assert ledger.spent(both, day) == Spent(cost_usd=3.75, tokens=375)
    assert ledger.spent(Member(agent="billing", tenants=(acme, globex)), day) == Spent(cost_usd=2.0, tokens=200)
    assert ledger.spent(Member(tenant=acme, agents=("billing",)), day) == Spent()
    assert ledger.spent(Member(tenant=unique("nobody")), day) == Spent()


def test_oldest_entries_come_first(store: CheckpointStore, ledger: SpendLedger) -> None:
    tenant = unique("acme")
    run = _run(store, tenant, "alice", "support")
    made = [_spend(store, run, T0 - timedelta(minutes=m), 0.1 * m, m) for m in (5, 50, 20)]
    oldest = ledger.oldest(Member(tenant=tenant), T0 - timedelta(hours=1), 2)
    assert [e.entry_id for e in oldest] == [made[1].entry_id, made[2].entry_id]
    assert oldest[0] == made[1]


def test_an_entry_written_again_counts_once(store: CheckpointStore, ledger: SpendLedger) -> None:
    tenant = unique("acme")
    run = _run(store, tenant, "alice", "support")
    entry = _spend(store, run, T0, 0.5, 10)
    # a mutation carrying the same entry again (as a replayed decision would) writes the same document
    store.update_run(tenant, run.run_id, lambda h: Mutation(h.model_copy(update={"seq": h.seq + 1}), (), None,
                                                            spend=(entry,)))
    assert ledger.spent(Member(tenant=tenant), T0 - timedelta(days=1)) == Spent(cost_usd=0.5, tokens=10)


def test_nothing_is_written_when_the_mutation_writes_nothing(store: CheckpointStore, ledger: SpendLedger) -> None:
    tenant = unique("acme")
    run = _run(store, tenant, "alice", "support")
    entry = SpendEntry(entry_id=f"{run.run_id}-9", tenant=tenant, principal="alice", agent="support",
                       run_id=run.run_id, model="m", at=T0, cost_usd=1.0, tokens=1, expire_at=T0 + LEDGER_RETENTION)
    store.update_run(tenant, run.run_id, lambda h: Mutation(None, (), None, spend=(entry,)))
    assert ledger.spent(Member(tenant=tenant), T0 - timedelta(days=1)) == Spent()


def test_one_caller_claims_each_alert(ledger: SpendLedger) -> None:
    alert = f"budget:{unique('b')}:acme/alice@example.com:80:2026-03-04"
    wins: list[bool] = []
    lock = threading.Lock()

    def claim() -> None:
        won = ledger.claim_alert(alert, T0)
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert ledger.claim_alert(alert.replace(":80:", ":100:"), T0) is True
