"""The Postgres checkpoint store across processes, as step-function instances use it: two processes updating
one run serialize with no lost update, and a process killed (SIGKILL) between its writes and its commit
leaves nothing of that transaction behind, nor a lock."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from datetime import timedelta
from typing import Any

from agex.adapters.postgres.checkpoint_store import BEFORE_COMMIT, PostgresCheckpointStore
from agex.core.run import EventKind, RunHead, RunStatus
from agex.core.spend import LEDGER_RETENTION, SpendEntry
from agex.ports.checkpoint_store import Mutation

from .test_checkpoint_store import T0, append, create, make_approval, make_event, make_head, wait_for

_SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter, as another instance is: no inherited pool


def _append_many(dsn: str, schema: str, tenant: str, run_id: str, worker: int, n: int, start: Any) -> None:
    store = PostgresCheckpointStore(dsn, schema=schema, create_schema=False, max_connections=1)
    store.pool.wait()  # connected before the start: both then contend from their first update
    start.wait()
    for i in range(n):
        store.update_run(tenant, run_id, lambda h, i=i: append(h, make_event(h.seq + 1, h.step, worker=worker, i=i)))
    store.close()


def test_two_processes_updating_one_run_lose_no_update(postgres_dsn: str) -> None:
    schema = f"proc_{uuid.uuid4().hex[:10]}"
    store = PostgresCheckpointStore(postgres_dsn, schema=schema, max_connections=2)
    try:
        head = create(store, make_head(), n_events=0)
        n = 40
        start = _SPAWN.Barrier(2)
        workers = [_SPAWN.Process(target=_append_many, args=(postgres_dsn, schema, head.tenant, head.run_id, w, n,
                                                             start)) for w in range(2)]
        for p in workers:
            p.start()
        for p in workers:
            p.join(timeout=120)
        assert [p.exitcode for p in workers] == [0, 0]
        final = store.get_run(head.tenant, head.run_id)
        assert final is not None and final.seq == 2 * n
        events = store.list_events(head.tenant, head.run_id, limit=1000)
        assert [e.seq for e in events] == list(range(1, 2 * n + 1))
        assert sorted((e.data["worker"], e.data["i"]) for e in events) == [(w, i) for w in range(2) for i in range(n)]
        order = [e.data["worker"] for e in events]
        assert any(a != b for a, b in zip(order, order[1:], strict=False)), "the processes did interleave"
    finally:
        store.close()


class _PauseBeforeCommit:
    """Failpoints of the killed process: at :data:`BEFORE_COMMIT` it says so and waits to be killed."""

    def __init__(self, reached: Any) -> None:
        self.reached = reached

    def hit(self, point: str) -> str | None:
        if point == BEFORE_COMMIT:
            self.reached.set()
            time.sleep(120)
        return None


def _write_and_hang(dsn: str, schema: str, tenant: str, run_id: str, reached: Any) -> None:
    store = PostgresCheckpointStore(dsn, schema=schema, create_schema=False, max_connections=1,
                                    failpoints=_PauseBeforeCommit(reached))

    def mutate(h: RunHead) -> Mutation[str]:
        m = wait_for(h, make_approval(h, "apr_killed"), result="never committed")
        spend = SpendEntry(entry_id=f"{run_id}-{h.seq + 1}", tenant=tenant, principal=h.principal, agent=h.agent,
                           run_id=run_id, model="m", at=T0, cost_usd=1.0, tokens=10, expire_at=T0 + LEDGER_RETENTION)
        return Mutation(m.head, m.events, "x", m.approvals, [spend])

    store.update_run(tenant, run_id, mutate)


def test_a_process_killed_mid_transaction_leaves_nothing_of_it(postgres_dsn: str) -> None:
    schema = f"kill_{uuid.uuid4().hex[:10]}"
    store = PostgresCheckpointStore(postgres_dsn, schema=schema, max_connections=2, lock_timeout_s=5)
    try:
        head = create(store, make_head(status=RunStatus.running))
        reached = _SPAWN.Event()
        victim = _SPAWN.Process(target=_write_and_hang, args=(postgres_dsn, schema, head.tenant, head.run_id, reached))
        victim.start()
        assert reached.wait(timeout=60), "the writer never reached its commit"
        # every write is sent, none committed: invisible to others, and the run's row is locked
        assert store.get_run(head.tenant, head.run_id) == head
        assert [e.seq for e in store.list_events(head.tenant, head.run_id)] == [1]
        assert store.get_approval(head.tenant, "apr_killed") is None
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
        assert victim.exitcode == -signal.SIGKILL
        # the server saw the connection close and rolled the transaction back, releasing the lock at once
        t0 = time.monotonic()
        after = store.update_run(head.tenant, head.run_id, lambda h: append(
            h, make_event(h.seq + 1, 1, EventKind.step_started), updated_at=T0 + timedelta(hours=1)))
        assert time.monotonic() - t0 < 5
        assert after.head is not None and after.head.seq == 2 and after.head.result is None
        assert store.get_approval(head.tenant, "apr_killed") is None
        assert store.list_approvals(head.tenant) == []
        assert [e.kind for e in store.list_events(head.tenant, head.run_id)] == [EventKind.run_created,
                                                                                 EventKind.step_started]
        with store.pool.connection() as conn:
            spent = conn.execute(f'SELECT count(*) FROM "{schema}".spend').fetchone()
        assert spent == (0,)
    finally:
        store.close()
